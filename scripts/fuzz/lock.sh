#!/usr/bin/env bash
# Regenerates scripts/fuzz/requirements.txt (hash-pinned, see scripts/py-lock.sh) from
# requirements.in.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/py-lock.sh scripts/fuzz/requirements.in scripts/fuzz/requirements.txt
