#!/usr/bin/env bash
# Deployment checks that need no cluster and no container runtime: the
# Helm chart (helm/test.py: lint, render, validate, dashboard metrics) and
# the Dockerfile (hadolint). The proxy binary, when built, checks the
# configs the chart renders.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${VIGIL_PROXY_BIN:-${CARGO_TARGET_DIR:-target}/debug/vigil-proxy}
if [ -x "$bin" ]; then
  export VIGIL_PROXY_BIN=$bin
fi
python3 helm/test.py
hadolint Dockerfile
echo "hadolint Dockerfile: ok"
