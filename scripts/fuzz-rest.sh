#!/usr/bin/env bash
# fuzz-rest.sh: the REST facade against its own OpenAPI document.
#
#   scripts/fuzz-rest.sh deps
#       Makes the virtualenv build/fuzz-venv with the pinned tools of scripts/fuzz/requirements.txt
#       (schemathesis 4.32.5, openapi-spec-validator 0.9.0). Idempotent: does nothing when the
#       venv already holds exactly those pins.
#
#   scripts/fuzz-rest.sh run [--url URL] [--username NAME] [--max-examples N] [--seed N]
#                            [--max-time SECONDS] [--workdir DIR]
#       1. fetches URL/openapi.json into the work directory and validates it (openapi-spec-validator);
#       2. logs in as the administrator NAME (default admin; the password from
#          GATEHOUSE_ADMIN_PASSWORD) with a session the run cannot end (scripts/fuzz/session.py,
#          scripts/fuzz/hooks.py);
#       3. runs schemathesis (every phase, N examples per operation, default 100) with the checks
#          for server errors, response schema and status code conformance and the rest, except
#          positive_data_acceptance (Swagger 2.0 cannot say which oneof member is required or what
#          a CEL rule allows, so "schema-valid" requests the node rightly refuses would fail it);
#       4. fails unless that session is still active, so that a green run is a meaningful one.
#       Without --url it starts a node of its own (go build ./cmd/gatehouse) on a fresh SQLite
#       database in the work directory, with a random administrator password, and stops it at the
#       end. Exit status: 0 clean; 1 schemathesis found failures (or the session ended); 2 a
#       usage, spec or set-up error.
#
# Excluded operations: WatchSession and WatchEvents (GET ...:watch), streams that do not end, so
# every call would run into the request timeout; Logout (POST /v1/sessions:logout), which ends the
# run's own session whatever the fuzzer sends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/build/fuzz-venv
requirements=$root/scripts/fuzz/requirements.txt

die() {
  echo "fuzz-rest: $*" >&2
  exit 2
}

deps() {
  if [ -x "$venv/bin/python" ] && diff -q <(grep -v '^#' "$requirements" | sort -f) <("$venv/bin/pip" freeze --all --exclude pip --exclude setuptools --exclude wheel | sort -f) > /dev/null 2>&1; then
    echo "fuzz-rest: $venv is up to date"
    return
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
  "$venv/bin/schemathesis" --version
  echo "fuzz-rest: tools installed in $venv"
}

need_venv() {
  for tool in schemathesis openapi-spec-validator python; do
    [ -x "$venv/bin/$tool" ] || die "$venv/bin/$tool is missing: run scripts/fuzz-rest.sh deps"
  done
}

# free_port prints a TCP port nothing listens on now.
free_port() {
  "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

node_pid=
stop_node() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2> /dev/null || true
    wait "$node_pid" 2> /dev/null || true
    node_pid=
  fi
}

# start_node starts a node of the script's own in $workdir and sets url.
start_node() {
  local http grpc
  http=$(free_port)
  grpc=$(free_port)
  echo "fuzz-rest: building and starting a node on 127.0.0.1:$http (log: $workdir/node.log)"
  go build -o "$workdir/gatehouse" ./cmd/gatehouse
  GATEHOUSE_ADMIN_PASSWORD=${GATEHOUSE_ADMIN_PASSWORD:-fuzz-$RANDOM$RANDOM$RANDOM}
  export GATEHOUSE_ADMIN_PASSWORD
  "$workdir/gatehouse" --database "sqlite://$workdir/gatehouse.db" \
    --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" > "$workdir/node.log" 2>&1 &
  node_pid=$!
  url=http://127.0.0.1:$http
  for _ in $(seq 1 100); do
    if "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=1)' "$url" 2> /dev/null; then
      return
    fi
    kill -0 "$node_pid" 2> /dev/null || die "the node exited: $(tail -5 "$workdir/node.log")"
    sleep 0.2
  done
  die "the node did not become ready: $(tail -5 "$workdir/node.log")"
}

run() {
  local url="" username=admin max_examples=100 seed="" max_time="" workdir=""
  while [ $# -gt 0 ]; do
    case $1 in
      --url) url=${2:?}; shift 2 ;;
      --username) username=${2:?}; shift 2 ;;
      --max-examples) max_examples=${2:?}; shift 2 ;;
      --seed) seed=${2:?}; shift 2 ;;
      --max-time) max_time=${2:?}; shift 2 ;;
      --workdir) workdir=${2:?}; shift 2 ;;
      *) die "unknown argument $1 (see the head of $0)" ;;
    esac
  done
  need_venv
  if [ -z "$workdir" ]; then
    workdir=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-rest.XXXXXX")
  fi
  mkdir -p "$workdir"
  workdir=$(cd "$workdir" && pwd)
  trap stop_node EXIT
  if [ -z "$url" ]; then
    start_node
  fi
  [ -n "${GATEHOUSE_ADMIN_PASSWORD:-}" ] || die "set GATEHOUSE_ADMIN_PASSWORD to the password of $username"
  url=${url%/}

  echo "fuzz-rest: validating $url/openapi.json"
  "$venv/bin/python" -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=30).read())' \
    "$url/openapi.json" "$workdir/openapi.json" || die "could not fetch $url/openapi.json"
  "$venv/bin/openapi-spec-validator" "$workdir/openapi.json" || die "$url/openapi.json is not a valid OpenAPI document"

  local vars
  vars=$(printf '%s\n' "$GATEHOUSE_ADMIN_PASSWORD" | "$venv/bin/python" scripts/fuzz/session.py setup "$url" "$username") || exit 2
  eval "$vars"
  export GATEHOUSE_FUZZ_PROTECT

  local args=(
    run "$workdir/openapi.json" --url "$url"
    --header "Authorization: Bearer $FUZZ_TOKEN"
    --checks all --exclude-checks positive_data_acceptance
    --exclude-path-regex '(:watch|:logout)$'
    --max-examples "$max_examples"
    --request-timeout 30
    --no-color
    --report junit --report-dir "$workdir/report"
  )
  [ -z "$seed" ] || args+=(--seed "$seed")
  [ -z "$max_time" ] || args+=(--max-time "$max_time")

  echo "fuzz-rest: schemathesis against $url as $username (work directory $workdir)"
  local status=0
  # NOTE: from the work directory: schemathesis writes .hypothesis/ into its working directory.
  (cd "$workdir" && SCHEMATHESIS_HOOKS=$root/scripts/fuzz/hooks.py "$venv/bin/schemathesis" "${args[@]}") || status=$?
  "$venv/bin/python" scripts/fuzz/session.py check "$url" "$FUZZ_TOKEN" || status=1
  return "$status"
}

case ${1:-} in
  deps) deps ;;
  run) shift; run "$@" ;;
  *) die "usage: $0 deps | run [--url URL] [--username NAME] [--max-examples N] [--seed N] [--max-time SECONDS] [--workdir DIR]" ;;
esac
