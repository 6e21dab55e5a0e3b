#!/usr/bin/env bash
# checkgenerate.sh regenerates gen/ (buf) and the ent code into a temporary directory and fails if
# anything differs from the working tree: generated code must match its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

./scripts/protodeps.sh
go tool -modfile=tools/buf/go.mod buf generate -o "$tmp"
go run ./ent/entc.go -schema ./ent/schema -target "$tmp/ent"

status=0
diff -r -q "$tmp/gen/go" gen/go || status=1
diff -q "$tmp/gen/openapi/gatehouse.swagger.json" gen/openapi/gatehouse.swagger.json || status=1
diff -r -q -x schema -x generate.go -x entc.go "$tmp/ent" ent || status=1
if [ "$status" -ne 0 ]; then
  echo "checkgenerate: generated code differs from its sources; run 'make generate' and commit the result" >&2
  exit 1
fi
echo "checkgenerate: generated code is up to date"
