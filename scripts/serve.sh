#!/usr/bin/env bash
# Quick start, command 1: installs what is missing, builds sandpit, and runs `sandpit serve`
# (which builds the default image on first use, with a progress bar). Extra arguments go to
# `sandpit serve`, e.g. --listen 127.0.0.1:7070 --data-dir /var/lib/sandpit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
install_debian_packages
build_sandpit release
exec "$SANDPIT_BIN_DIR/sandpit" serve "$@"
