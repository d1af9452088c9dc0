#!/usr/bin/env bash
# Regenerates scripts/kubernetes/requirements.txt (hash-pinned, see scripts/py-lock.sh) from
# requirements.in.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/py-lock.sh scripts/kubernetes/requirements.in scripts/kubernetes/requirements.txt
