#!/bin/sh
# Generate the Python gRPC code and mypy stubs of protos/ into OUT (default: client/src, where
# the vae-client distribution ships the `vae` package and the server imports it from). The code
# is committed; tests/client/test_contract.py fails when it no longer matches the .proto.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../client/src"}
python=${PYTHON:-python3}
mkdir -p "$out"
# The mypy plugins live beside the interpreter that has grpcio-tools.
PATH="$("$python" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH
"$python" -m grpc_tools.protoc -I "$here" \
    --python_out="$out" --grpc_python_out="$out" \
    --mypy_out="$out" --mypy_grpc_out="$out" \
    "$here/vae/v1/vae.proto"
touch "$out/vae/__init__.py" "$out/vae/v1/__init__.py" "$out/vae/py.typed"
