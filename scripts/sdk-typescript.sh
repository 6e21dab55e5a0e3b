#!/usr/bin/env bash
# sdk-typescript.sh builds the TypeScript SDK in sdk/typescript (the npm package @gatehouse/sdk).
#
#   scripts/sdk-typescript.sh deps          install the pinned npm packages (npm ci; a no-op when
#                                           node_modules already matches package-lock.json)
#   scripts/sdk-typescript.sh browser-deps  install Debian's chromium for the browser tests
#   scripts/sdk-typescript.sh generate      regenerate gen/ts from the protos
#   scripts/sdk-typescript.sh check         fail if gen/ts differs from a fresh generation
#   scripts/sdk-typescript.sh build         compile the package into sdk/typescript/dist
#
# Several subcommands may be given at once (deps browser-deps); they run in order.
set -euo pipefail
cd "$(dirname "$0")/.."

sdk=sdk/typescript
buf=(go tool -modfile=tools/buf/go.mod buf)

# deps installs the exact packages of package-lock.json. A stamp in node_modules records the hash
# of the lockfile it was installed from, so that a second run costs nothing.
deps() {
  local want have=""
  want=$(sha256sum "$sdk/package-lock.json" | cut -d' ' -f1)
  [ -f "$sdk/node_modules/.gatehouse-lock-sha256" ] && have=$(cat "$sdk/node_modules/.gatehouse-lock-sha256")
  if [ "$want" = "$have" ] && [ -x "$sdk/node_modules/.bin/tsc" ] && [ -x "$sdk/node_modules/.bin/protoc-gen-es" ]; then
    return
  fi
  (cd "$sdk" && npm ci --no-audit --no-fund)
  echo "$want" > "$sdk/node_modules/.gatehouse-lock-sha256"
}

# browser_deps installs Debian's chromium, which the browser tests drive with playwright-core
# (playwright's own browser downloads are not available here).
browser_deps() {
  if [ -x /usr/bin/chromium ]; then
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium
}

# rpc_protos writes google/rpc/error_details.proto (ErrorInfo, BadRequest) as a descriptor set into
# build/protodeps-ts, where buf.gen.ts.yaml reads it: the descriptor of the pinned Go module the
# server sends its error details with (see sdk/typescript/scripts/errdetails.go).
rpc_protos() {
  mkdir -p build/protodeps-ts
  go run ./sdk/typescript/scripts/errdetails.go -o build/protodeps-ts/error_details.binpb
}

# generate_into runs buf with buf.gen.ts.yaml, writing below $1 (gen/ts inside it).
generate_into() {
  deps
  ./scripts/protodeps.sh
  rpc_protos
  "${buf[@]}" generate --template buf.gen.ts.yaml -o "$1"
}

generate() {
  rm -rf gen/ts
  generate_into .
}

check() {
  local status=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate_into "$tmp"
  diff -r -q "$tmp/gen/ts" gen/ts || status=1
  if [ "$status" -ne 0 ]; then
    echo "sdk-typescript: gen/ts differs from its sources; run 'scripts/sdk-typescript.sh generate' and commit the result" >&2
    exit 1
  fi
  echo "sdk-typescript: gen/ts is up to date"
}

build() {
  deps
  (cd "$sdk" && npm run --silent build)
}

if [ $# -eq 0 ]; then
  sed -n '2,12s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
for cmd in "$@"; do
  case "$cmd" in
    deps) deps ;;
    browser-deps) browser_deps ;;
    generate) generate ;;
    check) check ;;
    build) build ;;
    *)
      echo "sdk-typescript: unknown subcommand $cmd (deps, browser-deps, generate, check, build)" >&2
      exit 2
      ;;
  esac
done
