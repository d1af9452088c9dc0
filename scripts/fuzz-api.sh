#!/usr/bin/env bash
# Fuzzes the HTTP API described by docs/openapi.json with schemathesis (pinned in
# scripts/fuzz/requirements.txt, installed into a venv under target/) against a real
# `sandpit serve` on loopback with a temporary data dir: once with the admin key, once with a
# tenant key. Checks: no 5xx, and every response (status, content type, body) is documented.
# Bounded: a few examples per operation, a time budget per run, small sandbox limits
# (scripts/fuzz/hooks.py), and every sandbox destroyed afterwards. Exits non-zero on any failure.
#
# Env: SANDPIT_BIN_DIR (default target/debug), SANDPIT_IMAGES_DIR, SANDPIT_FUZZ_EXAMPLES (10),
# SANDPIT_FUZZ_SECONDS (per run, 60), SANDPIT_FUZZ_SEED (random), SANDPIT_FUZZ_CHECKS
# (schemathesis --checks list).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bin_dir=${SANDPIT_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}
images=${SANDPIT_IMAGES_DIR:-/var/lib/sandpit/images}
examples=${SANDPIT_FUZZ_EXAMPLES:-10}
seconds=${SANDPIT_FUZZ_SECONDS:-60}
seed=${SANDPIT_FUZZ_SEED:-$RANDOM$RANDOM}
checks=${SANDPIT_FUZZ_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance}
venv=$PWD/target/fuzz-venv
lock=scripts/fuzz/requirements.txt

source scripts/lib.sh
python_venv "$venv" "$lock"

data=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    # SIGTERM, not SIGINT: background jobs of a script start with SIGINT ignored, so a SIGINT
    # that comes before the server installs its handler would be lost.
    kill -TERM "$server_pid"
    for _ in $(seq 1 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

: >"$data/serve.log"
"$bin_dir/sandpit" serve --listen 127.0.0.1:0 --data-dir "$data" --images-dir "$images" \
  >>"$data/serve.log" 2>&1 &
server_pid=$!
url=
for _ in $(seq 1 600); do
  url=$(sed -n 's/^sandpit listening on \(http:[^ ]*\)$/\1/p' "$data/serve.log")
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$data/serve.log"; echo "sandpit serve exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$data/serve.log"; echo "sandpit serve did not start" >&2; exit 1; }
admin_key=$(cat "$data/admin.key")
# A fresh key of tenant "fuzz". The admin run may revoke any key it sees (it lists them), so
# the tenant run and the clean-up each get one made after the runs before them.
tenant_key() {
  curl -fsS -X POST "$url/v1/keys" -H "Authorization: Bearer $admin_key" \
    -H 'Content-Type: application/json' -d '{"tenant":"fuzz"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'
}

# One bounded schemathesis run with the given key. `GET /v1/events` is a stream that never ends
# by itself (each example would wait out the request timeout): its tests are
# crates/server/tests/suite/events.rs.
fuzz() {
  local who=$1 key=$2
  shift 2
  echo "==> API fuzzing as $who ($examples examples per operation, ${seconds}s budget, seed $seed)"
  # Run from the temp dir: schemathesis keeps its example database in the working directory.
  (cd "$data" && SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$repo/scripts/fuzz" \
    timeout --kill-after=10 $((seconds + 60)) \
    "$venv/bin/schemathesis" run "$repo/docs/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $key" \
    --checks "$checks" \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" \
    --max-time "$seconds" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 30 \
    --exclude-operation-id streamEvents \
    --no-color "$@")
}

status=0
fuzz "the admin key" "$admin_key" || status=1
# The tenant run leaves its own key alone (revoking it would turn the rest of the run into 401s);
# the admin run covers revoke and rotate.
fuzz "a tenant key" "$(tenant_key)" --exclude-operation-id revokeKey \
  --exclude-operation-id rotateKey || status=1

# Destroy what the runs created (each key sees its own tenant's sandboxes).
python3 scripts/fuzz/destroy_all.py "$url" "$admin_key" "$(tenant_key)" || status=1

if [ "$status" -ne 0 ]; then
  echo "API fuzzing FAILED (seed $seed; repeat with SANDPIT_FUZZ_SEED=$seed)" >&2
  exit 1
fi
echo "API fuzzing passed"
