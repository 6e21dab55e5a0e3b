#!/usr/bin/env bash
# protodeps.sh copies the third-party .proto files that buf compiles against (google/api and
# buf/validate) out of the Go module cache into build/protodeps. The versions are pinned in
# tools/protodeps/go.mod and verified against tools/protodeps/go.sum by `go mod download`, so
# nothing is fetched from buf.build.
set -euo pipefail
cd "$(dirname "$0")/.."

dir() { go mod download -modfile=tools/protodeps/go.mod -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }

gw=$(dir github.com/grpc-ecosystem/grpc-gateway)
gw2=$(dir github.com/grpc-ecosystem/grpc-gateway/v2)
pv=$(dir github.com/bufbuild/protovalidate)
[ -n "$gw" ] && [ -n "$gw2" ] && [ -n "$pv" ] || { echo "protodeps: could not locate pinned modules" >&2; exit 1; }

out=build/protodeps
rm -rf "$out"
mkdir -p "$out/googleapis/google/api" "$out/protovalidate/buf/validate" "$out/openapiv2/protoc-gen-openapiv2/options"
cp "$gw2/protoc-gen-openapiv2/options/annotations.proto" "$gw2/protoc-gen-openapiv2/options/openapiv2.proto" "$out/openapiv2/protoc-gen-openapiv2/options/"
cp "$gw/third_party/googleapis/google/api/annotations.proto" "$gw/third_party/googleapis/google/api/http.proto" "$out/googleapis/google/api/"
cp "$pv/proto/protovalidate/buf/validate/validate.proto" "$out/protovalidate/buf/validate/"
chmod -R u+w "$out"
