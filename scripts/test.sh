#!/usr/bin/env bash
# Quick start, command 2: runs the whole test suite (as root: sandboxes need namespaces, cgroups
# and idmapped mounts). Installs what is missing, builds, builds the default image if it is not
# there yet, installs the npm client for the compatibility test, validates the Kubernetes
# manifests, fuzzes the HTTP API, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
install_debian_packages

echo "==> format and lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

build_sandpit dev

# Cheap and independent of the steps below: runs in the background, its output shown (and its
# status checked) before the tests.
echo "==> Kubernetes manifests: schema validation in the background (scripts/check-kubernetes.sh)"
kubernetes_log=${CARGO_TARGET_DIR:-target}/check-kubernetes.log
scripts/check-kubernetes.sh "$SANDPIT_BIN_DIR/sandpit" >"$kubernetes_log" 2>&1 &
kubernetes_pid=$!

export SANDPIT_IMAGES_DIR=${SANDPIT_IMAGES_DIR:-/var/lib/sandpit/images}
echo "==> default image in $SANDPIT_IMAGES_DIR"
"$SANDPIT_BIN_DIR/sandpit" image build --images-dir "$SANDPIT_IMAGES_DIR"

echo "==> npm client for the compatibility test"
(cd compat && npm ci --no-audit --no-fund)

echo "==> TypeScript SDK: pinned dependencies, build, type check, format (sdks/typescript)"
(cd sdks/typescript && npm ci --no-audit --no-fund && npm run build && npm run check)
(cd examples/typescript && npm ci --no-audit --no-fund)

echo "==> official MCP client for the MCP test (crates/mcp/tests/client)"
(cd crates/mcp/tests/client && npm ci --no-audit --no-fund)

echo "==> Python SDK: pinned venv, format, lint, type check (sdks/python)"
scripts/python-sdk.sh

echo "==> adversarial: API fuzzing (scripts/fuzz-api.sh)"
fuzz_started=$SECONDS
scripts/fuzz-api.sh
echo "==> API fuzzing took $((SECONDS - fuzz_started)) s"

echo "==> sustained load: 60 s soak (sandpit-bench --soak; bounds in crates/bench/src/soak.rs)"
soak_started=$SECONDS
"$SANDPIT_BIN_DIR/sandpit-bench" --soak 60 --soak-interval 10 \
  --soak-out "${CARGO_TARGET_DIR:-target}/soak"
echo "==> soak took $((SECONDS - soak_started)) s"

echo "==> Kubernetes manifests (scripts/check-kubernetes.sh, started after the build)"
kubernetes_status=0
wait "$kubernetes_pid" || kubernetes_status=$?
cat "$kubernetes_log"
[ "$kubernetes_status" -eq 0 ] || { echo "Kubernetes manifest check failed" >&2; exit 1; }

echo "==> tests (including serial_crash_safety_loop)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast -- --test-threads=1
fi
