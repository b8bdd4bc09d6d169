"""A Sigil edge verifier in Python: follows RevocationService.WatchRevocations
with grpcio and verifies access tokens locally with PyJWT.

It shows that the stream is language-neutral: the key set arrives as JWKS
JSON, revocations as plain ids and instants. Environment: SIGIL_ADDR
(host:port), SIGIL_VERIFIER_TOKEN (an access token with role `verifier`),
SIGIL_TOKEN (the token to judge; its verdict is printed whenever it
changes), SIGIL_ISSUER (default "sigil"), SIGIL_MAX_STALENESS (seconds,
default 5).
"""

import json
import os
import threading
import time
import uuid

import grpc
import jwt

from sigil.v1 import revocation_pb2, revocation_pb2_grpc

ISSUER = os.environ.get("SIGIL_ISSUER", "sigil")
MAX_STALENESS = float(os.environ.get("SIGIL_MAX_STALENESS", "5"))


def minted_millis(text):
    """The UUIDv7 time of an id (Sigil's jti and sid), in milliseconds."""
    value = uuid.UUID(text)
    return value.int >> 80 if value.version == 7 else None


class Revocations:
    """What the stream told us, applied the way the server applies it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys = {}
        self.tokens, self.sessions, self.disabled = {}, {}, {}
        self.not_before, self.sessions_before = {}, {}
        self.epoch, self.sequence, self.heard = "", 0, None

    def take_keys(self, jwks_json):
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(jwks_json).keys}
        with self.lock:
            self.keys = keys

    def apply(self, entry):
        until = entry.expires_at.seconds
        kind = entry.WhichOneof("target")
        if kind == "token_id":
            self.tokens[entry.token_id] = until
        elif kind == "session_id":
            self.sessions[entry.session_id] = until
        elif kind == "user_disabled":
            self.disabled[entry.user_disabled] = until
        elif kind == "user_enabled":
            self.disabled.pop(entry.user_enabled, None)
        elif kind == "user_not_before":
            bound = entry.user_not_before
            at = bound.not_before.seconds * 1000 + bound.not_before.nanos // 1_000_000
            self.not_before[bound.user_id] = max(at, self.not_before.get(bound.user_id, 0))
        elif kind == "user_sessions_before":
            bound = entry.user_sessions_before
            at = bound.created_before.seconds * 1000 + bound.created_before.nanos // 1_000_000
            self.sessions_before[bound.user_id] = max(at, self.sessions_before.get(bound.user_id, 0))
        else:
            raise RuntimeError(f"revocation {entry.sequence} has a target this verifier does not know")

    def verdict(self, token):
        with self.lock:
            if self.heard is None or time.monotonic() - self.heard > MAX_STALENESS:
                return "stale"
            try:
                header = jwt.get_unverified_header(token)
                if header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
                    return "VALIDATION_FAILURE_MALFORMED"
                key = self.keys.get(header.get("kid"))
                if key is None:
                    return "VALIDATION_FAILURE_UNKNOWN_KEY"
                claims = jwt.decode(token, key, algorithms=["EdDSA"], issuer=ISSUER,
                                    options={"verify_aud": False, "require": ["exp", "nbf", "iss", "sub"]})
            except jwt.ExpiredSignatureError:
                return "VALIDATION_FAILURE_EXPIRED"
            except jwt.ImmatureSignatureError:
                return "VALIDATION_FAILURE_NOT_YET_VALID"
            except jwt.InvalidIssuerError:
                return "VALIDATION_FAILURE_WRONG_ISSUER"
            except jwt.InvalidSignatureError:
                return "VALIDATION_FAILURE_BAD_SIGNATURE"
            except jwt.PyJWTError:
                return "VALIDATION_FAILURE_MALFORMED"
            user, session, token_id = claims["sub"], claims["sid"], claims["jti"]
            if user in self.disabled:
                return "VALIDATION_FAILURE_USER_DISABLED"
            if session in self.sessions:
                return "VALIDATION_FAILURE_SESSION_REVOKED"
            if token_id in self.tokens:
                return "VALIDATION_FAILURE_TOKEN_REVOKED"
            created = minted_millis(session)
            if user in self.sessions_before and (created is None or created < self.sessions_before[user]):
                return "VALIDATION_FAILURE_SESSION_REVOKED"
            minted = minted_millis(token_id)
            if user in self.not_before and (minted is None or minted < self.not_before[user]):
                return "VALIDATION_FAILURE_TOKEN_REVOKED"
            return "valid"


def follow(state, address, bearer):
    """Follows the stream, reconnecting and resuming, forever."""
    while True:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = revocation_pb2_grpc.RevocationServiceStub(channel)
                request = revocation_pb2.WatchRevocationsRequest(after_sequence=state.sequence, epoch=state.epoch)
                snapshot = None
                for response in stub.WatchRevocations(request, metadata=[("authorization", f"Bearer {bearer}")]):
                    kind = response.WhichOneof("message")
                    if kind == "keys":
                        state.take_keys(response.keys.jwks_json)
                    elif kind == "snapshot_begin":
                        snapshot = Revocations()
                    elif kind == "revocation":
                        with state.lock:
                            (snapshot or state).apply(response.revocation)
                            if snapshot is None:
                                state.sequence = max(state.sequence, response.revocation.sequence)
                                state.heard = time.monotonic()
                    elif kind == "snapshot_end":
                        with state.lock:
                            for name in ("tokens", "sessions", "disabled", "not_before", "sessions_before"):
                                setattr(state, name, getattr(snapshot, name))
                            state.epoch, state.sequence = response.snapshot_end.epoch, response.snapshot_end.sequence
                            state.heard = time.monotonic()
                        count = sum(len(getattr(snapshot, n)) for n in ("tokens", "sessions", "disabled"))
                        print(f"snapshot {count} entries at sequence {state.sequence}", flush=True)
                        snapshot = None
                    elif kind == "heartbeat" and snapshot is None:
                        with state.lock:
                            state.sequence = max(state.sequence, response.heartbeat.latest_sequence)
                            state.heard = time.monotonic()
        except grpc.RpcError as error:
            print(f"stream ended: {error.code().name}; reconnecting", flush=True)
        time.sleep(0.2)


def main():
    state = Revocations()
    threading.Thread(target=follow, args=(state, os.environ["SIGIL_ADDR"], os.environ["SIGIL_VERIFIER_TOKEN"]),
                     daemon=True).start()
    token, last = os.environ["SIGIL_TOKEN"], None
    while True:
        verdict = state.verdict(token)
        if verdict != last:
            print(f"verdict: {verdict}", flush=True)
            last = verdict
        time.sleep(0.02)


if __name__ == "__main__":
    main()
