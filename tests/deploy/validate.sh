#!/usr/bin/env bash
# validate.sh — deploy/ against the Kubernetes API schemas and our CRD (scripts/test.sh runs it).
#
# 1. kubernetes-validate (PyPI) --strict on every manifest of a built-in kind, for each
#    Kubernetes version in VERSIONS: every document must pass (a WARN "couldn't find schema"
#    counts as a failure here), and a broken DaemonSet must fail (the check can fail).
# 2. tests/deploy/validate.py: the example IPVSMigration against the CRD's openAPIV3Schema
#    (jsonschema), broken examples refused, the PrometheusRule equal to rules/ and accepted by
#    promtool, the kustomization complete.
# The tools live in a venv under target/ (ignored), pinned; pip needs PyPI the first time.
# Exit: 0 all hold; 1 a check failed; 69 python3's venv module or promtool missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The Kubernetes versions we claim for deploy/: from 1.30 (the oldest minor still in a
# distribution's support window as this is written) to the newest kubernetes-validate knows.
VERSIONS=(1.30 1.31 1.32 1.33 1.34 1.35 1.36 1.37)
CORE=(deploy/crd.yaml deploy/serviceaccount.yaml deploy/rbac.yaml deploy/configmap.yaml
      deploy/daemonset.yaml deploy/service-metrics.yaml
      deploy/kube-proxy-ipvs/daemonset.yaml)

venv="${CARGO_TARGET_DIR:-target}/deploy-venv"
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "validate.sh: python3 with the venv module is needed (Debian: python3-venv)" >&2
  exit 69
fi
command -v promtool >/dev/null || { echo "validate.sh: promtool is needed (Debian: prometheus)" >&2; exit 69; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4

docs=0
for f in "${CORE[@]}"; do
  n=$("$venv/bin/python" -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$f")
  docs=$((docs + n))
done

failed=0
for v in "${VERSIONS[@]}"; do
  out=$("$venv/bin/kubernetes-validate" --strict -k "$v" "${CORE[@]}" 2>&1) || { echo "$out"; failed=1; continue; }
  passed=$(grep -c " passed for resource " <<<"$out" || true)
  if [ "$passed" != "$docs" ]; then
    echo "$out"
    echo "FAIL Kubernetes $v: $passed of $docs documents passed"
    failed=1
  else
    echo "ok   Kubernetes $v: $docs documents in ${#CORE[@]} manifests pass kubernetes-validate --strict"
  fi
done

# The check must be able to fail: a DaemonSet with a field of the wrong type, and one with a
# field the API does not have.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/hostNetwork: true/hostNetwork: "yes"/' deploy/daemonset.yaml >"$tmp/wrong-type.yaml"
sed 's/hostPID: true/hostPID: true\n      hostNetworking: true/' deploy/daemonset.yaml >"$tmp/unknown-field.yaml"
for b in wrong-type unknown-field; do
  if cmp -s deploy/daemonset.yaml "$tmp/$b.yaml"; then
    echo "FAIL the broken DaemonSet ($b) is not broken: the sed pattern no longer matches"
    failed=1
  elif "$venv/bin/kubernetes-validate" --strict -k "${VERSIONS[-1]}" --quiet "$tmp/$b.yaml" >/dev/null 2>&1; then
    echo "FAIL a broken DaemonSet ($b) passed kubernetes-validate"
    failed=1
  else
    echo "ok   a broken DaemonSet ($b) fails kubernetes-validate"
  fi
done

"$venv/bin/python" tests/deploy/validate.py || failed=1
exit "$failed"
