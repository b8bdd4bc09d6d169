"""A Sigil client in Python, generated from proto/ with grpcio-tools.

    python -m grpc_tools.protoc -I../../proto --python_out=. --grpc_python_out=. \
        sigil/v1/resources.proto sigil/v1/identity.proto sigil/v1/admin.proto
    SIGIL_ADDR=127.0.0.1:50051 SIGIL_PASSWORD=... python sigil_client.py

Lists the services by reflection, logs in, validates, refreshes, revokes,
and checks that the revoked token is refused. Prints one line per step and
exits non-zero on the first surprise.
"""

import os
import sys

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sigil.v1 import identity_pb2 as pb
from sigil.v1 import identity_pb2_grpc as rpc


def main() -> int:
    channel = grpc.insecure_channel(os.environ.get("SIGIL_ADDR", "127.0.0.1:50051"))
    password = os.environ["SIGIL_PASSWORD"]

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listing = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    services = sorted(s.name for s in listing.list_services_response.service)
    print("services:", ", ".join(services))
    assert "sigil.v1.IdentityService" in services, services

    identity = rpc.IdentityServiceStub(channel)
    login = identity.Authenticate(pb.AuthenticateRequest(username="admin", password=password, device_name="python"))
    print("logged in, session", login.session_id)

    verdict = identity.Validate(pb.ValidateRequest(token=login.access_token))
    assert verdict.valid and verdict.claims.username == "admin", verdict
    print("valid token of", verdict.claims.username, "with roles", list(verdict.claims.roles))

    rotated = identity.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    assert rotated.session_id == login.session_id
    print("refreshed")

    counts = identity.Revoke(pb.RevokeRequest(access_token=rotated.access_token, reason="python example"))
    print("revoked", counts.revoked_sessions, "session(s),", counts.revoked_tokens, "token(s)")

    after = identity.Validate(pb.ValidateRequest(token=rotated.access_token))
    failure = pb.ValidationFailure.Name(after.failure)
    assert not after.valid and failure == "VALIDATION_FAILURE_SESSION_REVOKED", failure
    print("after revoke:", failure)

    try:
        identity.Authenticate(pb.AuthenticateRequest(username="admin", password="not-the-password"))
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        print("wrong password:", error.code().name, "-", error.details())
    else:
        raise AssertionError("a wrong password was accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
