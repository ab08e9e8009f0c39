# Sourced by the report suites (tests/report/chromium.sh, tests/vm/alerting-e2e.sh): renders a
# saved report page in Debian's headless Chromium inside a fresh network namespace that has
# only a loopback device (`unshare -n`), so the page cannot load anything from anywhere, and
# writes the DOM Chromium built (--dump-dom) and a screenshot.
#
#   report_render PAGE.html DOM_OUT PNG_OUT [WIDTHxHEIGHT]
#
# Chromium runs with --disable-javascript (the report has no script; the suites check that), its own throw-away profile, and
# --no-sandbox (root in a container has no user namespace sandbox; the page is our own file).
# Needs root for unshare -n; returns non-zero when Chromium fails.

report_chromium() {
  local b
  for b in chromium chromium-browser; do
    command -v "$b" >/dev/null 2>&1 && { echo "$b"; return 0; }
  done
  return 1
}

# report_netns_is_isolated: the namespace Chromium runs in has no device but lo (the control
# for "no network access").
report_netns_is_isolated() {
  [ "$(unshare -n -- ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')" = "lo " ]
}

report_render() {
  local page=$1 dom=$2 png=$3 size=${4:-1100x2400} browser profile rc=0
  browser=$(report_chromium) || { echo "report_render: chromium is not installed" >&2; return 69; }
  profile=$(mktemp -d "${TMPDIR:-/tmp}/report-chromium.XXXXXX")
  local flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-extensions
    --disable-javascript --user-data-dir="$profile" --hide-scrollbars)
  unshare -n -- timeout 90 "$browser" "${flags[@]}" --dump-dom "file://$(realpath "$page")" \
    > "$dom" 2> "$profile.dom.log" || rc=$?
  if [ "$rc" = 0 ]; then
    unshare -n -- timeout 90 "$browser" "${flags[@]}" --window-size="${size/x/,}" \
      --screenshot="$png" "file://$(realpath "$page")" > /dev/null 2> "$profile.png.log" || rc=$?
  fi
  [ "$rc" = 0 ] || tail -n 5 "$profile.dom.log" "$profile.png.log" >&2 2>/dev/null
  rm -rf "$profile" "$profile.dom.log" "$profile.png.log"
  return "$rc"
}

# report_png_size FILE: "WIDTH HEIGHT" from the PNG's IHDR chunk (bytes 16-23, big endian).
report_png_size() {
  [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || return 1
  local hex
  hex=$(od -An -j16 -N8 -tx1 "$1" | tr -d ' \n')
  echo "$((16#${hex:0:8})) $((16#${hex:8:8}))"
}
