#!/usr/bin/env bash
# Drives a `sandpit-agent serve` with the published @cloudflare/sandbox client (SandboxClient,
# unmodified) from plain Node, through a loopback TCP -> Unix socket relay.
# Usage: crates/agent/compat/run.sh [path/to/sandpit-agent]   (needs node >= 20 and npm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
agent="${1:-$here/../../../target/debug/sandpit-agent}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$here"/*.mjs "$work"/
(cd "$work" && npm init -y >/dev/null && npm install --silent @cloudflare/sandbox@0.12.10)
mkdir -p "$work/ws"
"$agent" serve --socket "$work/agent.sock" --workspace "$work/ws" &
pid=$!
for _ in $(seq 50); do [ -S "$work/agent.sock" ] && break; sleep 0.1; done
(cd "$work" && node --import ./register.mjs client-test.mjs "$work/agent.sock") | tee "$work/result.json"
! grep -q FAIL "$work/result.json"
