#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/kubernetes without a cluster
# (scripts/kubernetes/check.py says exactly what is checked): the kustomization and its file
# list, the rendering (also with `kubectl kustomize` when kubectl is installed), every object
# against the Kubernetes API schema (strict, Kubernetes 1.30 and 1.37) with the PyPI package
# kubernetes-validate (pinned with hashes in scripts/kubernetes/requirements.txt, installed into
# a venv under target/), references between the objects and to docs/cluster.md, and, given a
# sandpit binary, the command-line options the manifests pass to it. Then a self-test breaks the
# manifests on purpose, one way at a time, and checks that each breakage is caught.
#
# Usage: scripts/check-kubernetes.sh [SANDPIT_BIN]   (scripts/test.sh passes the built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=${CARGO_TARGET_DIR:-$PWD/target}/kubernetes-venv
python_venv "$venv" scripts/kubernetes/requirements.txt
args=(deploy/kubernetes --docs docs/cluster.md --self-test)
[ $# -eq 0 ] || args+=(--sandpit "$1")
"$venv/bin/python" scripts/kubernetes/check.py "${args[@]}"
