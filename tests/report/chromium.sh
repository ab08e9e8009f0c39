#!/usr/bin/env bash
# Report suite (issue 7): `ipvs-migrate audit --demo -o html` written with no network (the
# binary itself runs in `unshare -n`), then rendered by Debian's headless Chromium in a fresh
# network namespace with only loopback, --disable-javascript; asserts on the DOM Chromium built:
# the verdict, known findings of the demo snapshot with their runbook links, namespace rows,
# both SVG charts with their titles; the page loads nothing (no scheme URL, no src attribute);
# a screenshot is taken (docs/img/report-demo.png is refreshed with IPVSMIG_UPDATE_DOCS=1).
# The page of a node mid-cutover and after a rollback is checked by tests/vm/alerting-e2e.sh
# with the same helpers (tests/report/render.sh).
# Needs root (unshare -n) and chromium (installed when missing, scripts/test.sh).
# Usage: tests/report/chromium.sh [path/to/ipvs-migrate]     Ends with "report-chromium: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
bin=$(realpath "${1:-$target/debug/ipvs-migrate}")
[ -x "$bin" ] || { echo "report-chromium: $bin not built" >&2; exit 2; }
# shellcheck source=tests/report/render.sh
. tests/report/render.sh
if [ "$(id -u)" != 0 ]; then
  echo "report-chromium: needs root for unshare -n" >&2; exit 69
fi
if ! report_chromium > /dev/null; then
  bash scripts/apt-install.sh chromium || { echo "report-chromium: FAIL: cannot install chromium" >&2; exit 1; }
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/report-chromium.XXXXXX")
trap 'rm -rf "$work"' EXIT

pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass + 1)); else echo "not ok - $1"; fail=$((fail + 1)); fi; }
dom="$work/demo.dom.html"; png="$work/report-demo.png"

check "the network namespace the checks run in has only lo (the control for 'no network')" report_netns_is_isolated
rc=0; unshare -n -- "$bin" audit --demo -o html > "$work/demo.html" || rc=$?
check "audit --demo -o html runs with no network and exits 0 (the demo snapshot is ready): exit $rc" "[ $rc = 0 ]"
check "the page is one HTML document ($(wc -c < "$work/demo.html") bytes)" \
  "head -c 15 '$work/demo.html' | grep -qx '<!DOCTYPE html>' && tail -n 1 '$work/demo.html' | grep -qx '</body></html>'"
check "the page names no URL with a scheme and no src attribute (nothing to load)" \
  "! grep -Eqi 'https?://|[[:space:]]src=|<script|<link|url\\(' '$work/demo.html'"
check "every link is a relative runbook link (docs/runbooks/preflight.md#ID)" \
  "[ \"\$(grep -o 'href=\"[^\"]*\"' '$work/demo.html' | grep -vc '^href=\"docs/runbooks/preflight.md#[a-z0-9-]*\"$')\" = 0 ]"

rc=0; report_render "$work/demo.html" "$dom" "$png" 1100x3000 || rc=$?
check "Chromium renders the page in the isolated namespace, --disable-javascript (exit $rc)" "[ $rc = 0 ] && [ -s '$dom' ]"
has() { grep -qF -- "$1" "$dom"; }
count() { grep -oF -- "$1" "$dom" | wc -l; }
check "the DOM shows the verdict: READY, with the equivalence result" \
  "has 'Verdict: READY' && has 'the IPVS plan is equivalent to kube-proxy'"
check "the DOM shows the demo banner" "has 'DEMO: the node snapshot bundled with ipvs-migrate'"
check "the DOM has the demo's lb-strict-arp finding with evidence, remediation and runbook link" \
  "has 'id=\"finding-lb-strict-arp\"' && has '51 LoadBalancer or external IPs in the plan' && has 'href=\"docs/runbooks/preflight.md#lb-strict-arp\"'"
check "warnings come before notes (blockers first: the demo has none)" \
  "[ \$(grep -bo 'finding warning' '$dom' | head -1 | cut -d: -f1) -lt \$(grep -bo 'finding info' '$dom' | head -1 | cut -d: -f1) ]"
check "the DOM has the deprecation verdict (deprecation-timeline)" \
  "has 'id=\"deprecation\"' && has 'IPVS mode is deprecated in 1.35'"
check "the DOM has a row per namespace of the demo (20)" "[ \$(grep -o '<tr data-namespace=\"[^\"]*\"><td>' '$dom' | sort -u | wc -l) = 20 ]"
check "the DOM has the payments row: 13 service ports" "has '<tr data-namespace=\"payments\"><td>payments</td><td class=\"n\">13</td>'"
check "the DOM has the rules-vs-services chart with title, description and 15 bars" \
  "has '<svg class=\"chart\" id=\"chart-rules\"' && has 'iptables rules vs service ports per namespace</title>' && has '<desc id=\"chart-rules-desc\">' && [ \$(count '<g class=\"bar\"') = 15 ]"
check "the DOM has the plan summary and the equivalence check" \
  "has 'id=\"plan\"' && has 'virtual servers with' && has 'id=\"equivalence\"' && has 'case(s) traced, 0 mismatch(es)'"
size=$(report_png_size "$png" || echo none)
check "a screenshot was taken: a PNG of 1100x3000 ($size, $(wc -c < "$png") bytes)" \
  "[ '$size' = '1100 3000' ] && [ \$(wc -c < '$png') -gt 50000 ]"
if [ "${IPVSMIG_UPDATE_DOCS:-}" = 1 ]; then
  mkdir -p docs/img && cp "$png" docs/img/report-demo.png && echo "# docs/img/report-demo.png updated"
fi
echo "report-chromium: $pass passed, $fail failed"
[ "$fail" = 0 ]
