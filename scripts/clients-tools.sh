#!/usr/bin/env bash
# clients-tools.sh: the standard gRPC client tools, built from pinned versions into build/bin.
#
#   scripts/clients-tools.sh deps
#       grpcurl v1.9.4 and grpc-health-probe v0.4.61 (go install, each with its own module's pinned
#       dependencies, checked against the Go checksum database), and buf v1.75.0 from the tools
#       module tools/buf (go build -modfile). Idempotent: a binary already built from the pinned
#       version is kept. The first build takes a few minutes; integration/tools_test.go uses them.
#
# Examples against a node (gRPC on :9090, HTTP on :8080, a token in $TOKEN):
#   build/bin/grpcurl -plaintext localhost:9090 list
#   build/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{"user_id": "..."}' \
#     localhost:9090 gatehouse.v1.IdentityService/GetEffectiveRoles
#   build/bin/buf curl --protocol grpc --http2-prior-knowledge -H "Authorization: Bearer $TOKEN" \
#     -d '{"userId": "..."}' http://localhost:9090/gatehouse.v1.IdentityService/GetEffectiveRoles
#   build/bin/buf curl --protocol connect --http2-prior-knowledge -H "Authorization: Bearer $TOKEN" \
#     -d '{"userId": "..."}' http://localhost:8080/gatehouse.v1.IdentityService/GetEffectiveRoles
#   build/bin/grpc-health-probe -addr localhost:9090
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/build/bin

# have BINARY MODULE VERSION: whether build/bin/BINARY was built from MODULE at VERSION.
have() {
  [ -x "$bin/$1" ] && go version -m "$bin/$1" 2> /dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3([[:space:]]|$)"
}

# install BINARY PACKAGE MODULE VERSION
install() {
  if have "$1" "$3" "$4"; then
    echo "clients-tools: $1 $4 is up to date"
    return
  fi
  echo "clients-tools: building $1 $4"
  GOBIN=$bin go install "$2@$4"
}

deps() {
  mkdir -p "$bin"
  install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/fullstorydev/grpcurl v1.9.4
  install grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe v0.4.61
  # NOTE: buf's version is the one tools/buf/go.mod pins (make generate uses the same).
  local bufv
  bufv=$(go list -modfile=tools/buf/go.mod -m -f '{{.Version}}' github.com/bufbuild/buf)
  if have buf github.com/bufbuild/buf "$bufv"; then
    echo "clients-tools: buf $bufv is up to date"
  else
    echo "clients-tools: building buf $bufv"
    go build -modfile=tools/buf/go.mod -o "$bin/buf" github.com/bufbuild/buf/cmd/buf
  fi
  for b in grpcurl grpc-health-probe buf; do
    echo "clients-tools: $bin/$b: $(go version -m "$bin/$b" | awk '$1 == "mod" {print $2, $3; exit}')"
  done
}

case ${1:-} in
  deps) deps ;;
  *)
    echo "usage: $0 deps" >&2
    exit 2
    ;;
esac
