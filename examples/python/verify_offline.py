"""Verifies a Sigil access token the way off-the-shelf JWT middleware does:
configuration by discovery, keys by JWKS, no Sigil code and no gRPC.

    pip install "pyjwt[crypto]"
    SIGIL_HTTP=http://127.0.0.1:8080 SIGIL_TOKEN=<access token> python verify_offline.py
"""

import json
import os
import sys
import urllib.request

import jwt


def main() -> int:
    base = os.environ.get("SIGIL_HTTP", "http://127.0.0.1:8080")
    token = os.environ["SIGIL_TOKEN"]
    with urllib.request.urlopen(f"{base}/.well-known/openid-configuration") as response:
        discovery = json.load(response)
    keys = jwt.PyJWKClient(discovery["jwks_uri"])
    signing_key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience="sigil",
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "nbf", "sub", "jti"]},
    )
    print("verified offline: sub", claims["sub"], "sid", claims["sid"], "kid", signing_key.key_id)
    try:
        jwt.decode(token[:-4] + "AAAA", signing_key.key, algorithms=["EdDSA"], audience="sigil")
    except jwt.InvalidSignatureError:
        print("tampered token refused")
    else:
        raise AssertionError("a tampered token verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
