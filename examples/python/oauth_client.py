"""A service talking to Sigil's OAuth 2.0 endpoints with Authlib, configured
from the RFC 8414 metadata alone: the client credentials grant with
client_secret_basic and with private_key_jwt (an EdDSA key, no shared
secret), then introspection (RFC 7662) and revocation (RFC 7009).

    pip install authlib requests
    SIGIL_HTTP=http://127.0.0.1:8080 SIGIL_CLIENT_ID=<client id> \\
    SIGIL_CLIENT_SECRET=<its secret> SIGIL_CLIENT_KEY=<Ed25519 private key PEM file> \\
        python oauth_client.py

The client needs the `introspect` role for the introspection step, and the
public half of SIGIL_CLIENT_KEY registered (SetServiceAccountKey).
"""

import os
import sys

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import OKPKey


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt, with assertions that live one minute.

    Authlib signs assertions valid for an hour; Sigil accepts at most a few
    minutes (client_assertion_max_lifetime), as RFC 7523 §3 advises ("the
    authorization server may reject JWTs with an exp claim value that is
    unreasonably far in the future").
    """

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            expires_in=60,
        )


def main() -> int:
    base = os.environ.get("SIGIL_HTTP", "http://127.0.0.1:8080").rstrip("/")
    client_id = os.environ["SIGIL_CLIENT_ID"]
    secret = os.environ["SIGIL_CLIENT_SECRET"]
    with open(os.environ["SIGIL_CLIENT_KEY"], "rb") as pem:
        key = OKPKey.import_key(pem.read())

    metadata = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    token_url = metadata["token_endpoint"]

    basic = OAuth2Session(client_id, secret, token_endpoint_auth_method="client_secret_basic")
    token = basic.fetch_token(token_url, grant_type="client_credentials")
    print(f"client_secret_basic: {token['token_type']} token for {token['expires_in']}s, scope {token['scope']!r}")

    # Authlib revokes with client_secret_basic unless told otherwise, which
    # would send the key as a secret: a 401.
    signed = OAuth2Session(
        client_id,
        key,
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
    )
    signed.register_client_auth_method(ShortLivedPrivateKeyJWT(token_url, alg="EdDSA"))
    token = signed.fetch_token(token_url, grant_type="client_credentials")
    access_token = token["access_token"]
    print(f"private_key_jwt: {token['token_type']} token for {token['expires_in']}s")

    # Introspection and revocation authenticate the same way as the grant;
    # here with the key, a fresh assertion each time.
    introspection_url = metadata["introspection_endpoint"]
    answer = signed.introspect_token(introspection_url, token=access_token).json()
    print(f"introspected: active {answer['active']}, client_id {answer['client_id']}, sub {answer['sub']}")

    revoked = signed.revoke_token(metadata["revocation_endpoint"], token=access_token, token_type_hint="access_token")
    print(f"revoked: HTTP {revoked.status_code}")
    answer = basic.introspect_token(introspection_url, token=access_token).json()
    print(f"after revocation: active {answer['active']}, members {sorted(answer)}")

    try:
        OAuth2Session(client_id, "not-the-secret").fetch_token(token_url, grant_type="client_credentials")
        print("a wrong secret was accepted")
        return 1
    except OAuthError as refused:
        print(f"wrong secret: {refused.error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
