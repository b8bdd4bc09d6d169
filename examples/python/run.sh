#!/usr/bin/env bash
# Generates the Python code from proto/ into a temporary folder and runs the
# example client against $SIGIL_ADDR. $PYTHON must have grpcio, grpcio-tools
# and grpcio-reflection installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"${PYTHON:-python3}" -m grpc_tools.protoc -I"$here/../../proto" --python_out="$out" --grpc_python_out="$out" \
  sigil/v1/resources.proto sigil/v1/identity.proto sigil/v1/admin.proto
cp "$here/sigil_client.py" "$out/"
cd "$out"
"${PYTHON:-python3}" sigil_client.py
