#!/usr/bin/env bash
# The Python SDK's install and static checks (scripts/test.sh runs this; its tests run in
# nextest: crates/cli/tests/suite/sdk_python.rs). Makes target/sdk-python-venv from the
# hash-pinned lock sdks/python/requirements-dev.txt, installs the SDK into it the way users do
# (`pip install ./sdks/python`, offline: the build backend comes from the lock), then checks
# format (ruff format), lint (ruff check), types (mypy --strict) and that the generated files
# (sync client, error classes) match their sources.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=$PWD/target/sdk-python-venv
python_venv "$venv" sdks/python/requirements-dev.txt
echo "==> Python SDK: install, format, lint, types"
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --force-reinstall ./sdks/python
# Installed, not from the source tree: import it from elsewhere.
(cd /tmp && "$venv/bin/python" -c 'import sandpit; sandpit.Sandpit, sandpit.AsyncSandpit')
cd sdks/python
"$venv/bin/ruff" format --check . ../../examples/python
"$venv/bin/ruff" check . ../../examples/python
"$venv/bin/mypy"
"$venv/bin/python" tools/unasync.py --check
"$venv/bin/python" tools/gen_errors.py --check
