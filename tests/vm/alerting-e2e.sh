#!/usr/bin/env bash
# Kernel suite: the alerting path of issue 6 with a real Prometheus and a real Alertmanager
# (Debian's packages, on the host's loopback) and `ipvs-migrate serve` in the VM, one boot.
# The VM is reached only through ports forwarded to the host's 127.0.0.1 on a restrict=on
# user network (ipvs-vm.sh --forward). Checked:
#   - Prometheus scrapes the agent through the forwarded port (up == 1, the agent's series with
#     node="vm-node") and evaluates a short-window variant of rules/ rendered from the very same
#     definition (agent/engine/examples/rules_variant.rs: window 20s, for 5s);
#   - an alert pushed into Alertmanager (POST /api/v2/alerts) with the labels rules/ puts on a
#     rollback alert reaches the agent's webhook with the bearer token from the token file:
#     exactly one trigger although it was pushed twice and Alertmanager notified repeatedly;
#     an alert for another node triggers nothing; a call with a wrong or no token is refused
#     (401, counted);
#   - an alert that Prometheus itself fires (a transport probe rule added at run time, SIGHUP)
#     goes Prometheus -> Alertmanager -> webhook and is counted as a trigger;
#   - the rollback itself, with the agent's built-in evaluator switched off: namespace `load`
#     (20 service ports, kube-proxy's rules and pods as in vm_cutover.rs) migrated through the
#     daemon (`cutover --soak 10m`), then a fault only the IPVS path suffers (`-m ipvs --ipvs -j DROP` in filter OUTPUT)
#     makes the agent's probes time out; Prometheus' short-window IPVSMigrateRejectionRatioHigh
#     fires, Alertmanager calls the webhook, the agent rolls `load` back, the recorded reason is
#     that alert from Alertmanager, and traffic is back on iptables;
#   - the readiness report (issue 7): `/api/v1/report` and `/` fetched through the forwarded
#     port while `load` soaks (the guest migrates it with `cutover`) and after its rollback:
#     phase rows, cutover line, rollback history, rejection chart, rendered on the host by
#     Chromium in a netns with only lo (tests/report/render.sh); IPVSMIG_UPDATE_DOCS=1 keeps the
#     screenshots in docs/img/;
#   - restrict=on isolates: from the guest, the host's Prometheus port (10.0.2.2) cannot be
#     reached, while the guest's own address can; the agent ends with exit 0 on SIGTERM.
# Prometheus and Alertmanager run in a temporary directory, started and stopped by pid.
# Missing packages are installed (scripts/apt-install.sh); without root that fails, never skips.
# Usage: tests/vm/alerting-e2e.sh [path/to/ipvs-migrate]      Ends with "alerting-e2e: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
bin=$(realpath "${1:-$target/debug/ipvs-migrate}")
[ -x "$bin" ] || { echo "alerting-e2e: $bin not built" >&2; exit 2; }
NODE=vm-node
GUEST_IP=10.0.2.15          # qemu user-net's guest address (tests/vm/guest/init)
AGENT_PORT=9964             # serve's default port, inside the guest
DONE_PORT=9965              # the guest waits for one connection here: "host side finished"
FAULT_PORT=9966             # ... and here: "inject the fault"

# ---- host tools (installed when missing; a missing tool is a failure, never a skip)
need=()
for tp in prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager curl:curl jq:jq ss:iproute2 chromium:chromium; do
  command -v "${tp%%:*}" >/dev/null 2>&1 || need+=("${tp#*:}")
done
if ((${#need[@]})); then
  bash scripts/apt-install.sh "${need[@]}" || { echo "alerting-e2e: FAIL: cannot install ${need[*]}" >&2; exit 1; }
fi
cargo build -q -p ipvsmig-engine --example rules_variant
cargo build -q -p ipvsmig-tests --example vm_cutover
variant="$target/debug/examples/rules_variant"
examples=$(realpath "$target/debug/examples")

# ---- free loopback ports: below the ephemeral range (32768-60999), no socket of any state
taken=" "
pick_port() {  # pick_port VAR
  local p _
  for _ in $(seq 1 500); do
    p=$((20000 + RANDOM % 10000))
    case $taken in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "sport = :$p")" ]; then taken+="$p "; printf -v "$1" %s "$p"; return 0; fi
  done
  echo "alerting-e2e: no free port in 20000-29999" >&2; exit 1
}
pick_port AGENT_FWD; pick_port DONE_FWD; pick_port FAULT_FWD; pick_port PROM_PORT; pick_port AM_PORT
AGENT="http://127.0.0.1:$AGENT_FWD"; PROM="http://127.0.0.1:$PROM_PORT"; AM="http://127.0.0.1:$AM_PORT"

work=$(mktemp -d "${TMPDIR:-/tmp}/alerting-e2e.XXXXXX")
prom_pid="" am_pid="" vm_pid=""
cleanup() {
  local p
  for p in $prom_pid $am_pid $vm_pid; do kill "$p" 2>/dev/null || true; done
  for p in $prom_pid $am_pid $vm_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

pass=0; fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
not_ok() { echo "not ok - $1${2:+ ($2)}"; fail=$((fail + 1)); }
check() { if eval "$2"; then ok "$1"; else not_ok "$1"; fi; }
# wait_until SECS CMD...: poll CMD every 0.5 s until it succeeds or SECS pass
wait_until() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.5; done
}
# metric URL NAME LABEL=VALUE...: the sample's value on an OpenMetrics/Prometheus text page
metric() {
  local url=$1 name=$2; shift 2
  curl -sf --max-time 5 "$url/metrics" | awk -v name="$name" -v want="$*" '
    index($0, name "{") == 1 {
      n = split(want, w, " "); hit = 1
      for (i = 1; i <= n; i++) { split(w[i], kv, "="); if (index($0, kv[1] "=\"" kv[2] "\"") == 0) hit = 0 }
      if (hit) { print $NF; exit }
    }'
}
metric_is() { local want=$1; shift; [ "$(metric "$@")" = "$want" ]; }  # metric_is VALUE URL NAME LABEL=VALUE...
# promq EXPR: the value of the first sample of an instant query ("" when none)
promq() { curl -sf --max-time 5 -G --data-urlencode "query=$1" "$PROM/api/v1/query" | jq -r '.data.result[0].value[1] // empty'; }
promq_is() { [ "$(promq "$1")" = "$2" ]; }

# ---- the agent's files (shared read-write with the guest)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$token" > "$work/token"; chmod 600 "$work/token"
cat > "$work/serve.yaml" <<EOF
listen: $GUEST_IP:$AGENT_PORT
nodeName: $NODE
tokenFile: $work/token
builtinEvaluator: false
reconcilePeriod: 2s
switchTimeout: 10s
probeInterval: 1s
drain: 2s
nodeIPs: [192.168.0.2]
EOF

# ---- Prometheus: scrape the agent every second, the short-window rules, the local Alertmanager
mkdir -p "$work/rules" "$work/prom-data" "$work/am-data"
"$variant" --window 20s --for 5s --for-slow 10s > "$work/rules/ipvs-migrate.rules.yml"
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: ['$work/rules/*.yml']
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$AM_PORT']
scrape_configs:
  - job_name: ipvs-migrate
    static_configs:
      - targets: ['127.0.0.1:$AGENT_FWD']
EOF
# ---- Alertmanager: the route and receiver docs/serve.md documents, with short timers; under it,
# this node's alerts repeat every 2 s (the deduplication check), other nodes' are sent once
cat > "$work/alertmanager.yml" <<EOF
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
  routes:
    - matchers: ['ipvs_migrate_rollback="true"']
      receiver: ipvs-migrate
      group_by: [alertname, node, namespace]
      routes:
        - matchers: ['node="$NODE"']
        - repeat_interval: 1h
receivers:
  - name: blackhole
  - name: ipvs-migrate
    webhook_configs:
      - url: $AGENT/api/v1/alerts
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: $work/token
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --rules.alert.resend-delay=1s > "$work/prometheus.log" 2>&1 &
prom_pid=$!
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am-data" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= > "$work/alertmanager.log" 2>&1 &
am_pid=$!
ready() { curl -sf --max-time 2 -o /dev/null "$1/-/ready"; }
if ! wait_until 30 ready "$PROM" || ! wait_until 30 ready "$AM"; then
  echo "alerting-e2e: FAIL: Prometheus or Alertmanager did not become ready" >&2
  tail -n 20 "$work/prometheus.log" "$work/alertmanager.log" >&2; exit 1
fi

# ---- the guest: serve for the duration, the isolation checks, graceful shutdown
cat > "$work/guest.sh" <<'GUEST'
set -u
bin=$1 work=$2 prom_port=$3 ip=$4 port=$5 done_port=$6 examples=$7 fault_port=$8
pass=0; fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass + 1)); else echo "not ok - $1"; fail=$((fail + 1)); fi; }
connects() { timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
check "guest: kube-proxy's rules for namespace load, pods and echo servers are set up" \
  "'$examples/vm_cutover' setup > '$work/setup.log' 2>&1"
"$bin" --state-dir /tmp/state --iptables-backend legacy serve --config "$work/serve.yaml" 2> "$work/serve.log" &
serve=$!
up=1; for _ in $(seq 1 120); do connects "$ip" "$port" && { up=0; break; }; sleep 0.5; done
check "guest: the agent listens on the guest's address $ip:$port (the control for the next check)" "[ $up = 0 ]"
# restrict=on: the guest "will not be able to contact the host" (qemu(1)); 10.0.2.2 is the
# host as seen from slirp, where the host's 127.0.0.1:$prom_port has Prometheus listening
check "guest: restrict=on, the host's Prometheus (10.0.2.2:$prom_port) cannot be reached from the guest" "! connects 10.0.2.2 $prom_port"
check "guest: cutover --namespace load --soak 10m is handed to the daemon, verified and admitted" \
  "'$bin' --state-dir /tmp/state cutover --namespace load --soak 10m > '$work/apply.log' 2>&1 && grep -q 'admitted' '$work/apply.log'"
timeout 200 nc -l -p "$fault_port" > /dev/null 2>&1
iptables-legacy -A OUTPUT -m ipvs --ipvs -j DROP
echo "fault injected at $(date +%s)" > "$work/fault"
timeout 200 nc -l -p "$done_port" > /dev/null 2>&1
"$bin" --state-dir /tmp/state status -o json > "$work/status.json" 2>&1
check "guest: status names the rollback's reason, IPVSMigrateRejectionRatioHigh from alertmanager, and nothing is migrated" \
  "grep -q '\"reason\": \"IPVSMigrateRejectionRatioHigh\"' '$work/status.json' && grep -q '\"source\": \"alertmanager\"' '$work/status.json' && grep -q '\"namespaces\": \\[\\]' '$work/status.json'"
answer=$("$examples/vm_cutover" get 10.96.2.1:80 2>/dev/null)
check "guest: traffic is back on iptables (the node's own request passes the fault rule): $answer" "case '$answer' in pod*) true;; *) false;; esac"
iptables-legacy -D OUTPUT -m ipvs --ipvs -j DROP
kill -TERM "$serve"; wait "$serve"; rc=$?
check "guest: the agent exits 0 on SIGTERM (graceful shutdown)" "[ $rc = 0 ]"
echo "alerting-e2e guest: $pass passed, $fail failed"
[ "$fail" = 0 ]
GUEST
tests/vm/ipvs-vm.sh run --forward "$AGENT_FWD:$AGENT_PORT" --forward "$DONE_FWD:$DONE_PORT" \
  --forward "$FAULT_FWD:$FAULT_PORT" \
  --modprobe ip_vs --modprobe ip_vs_rr --modprobe veth --modprobe xt_ipvs \
  --share "$work" --share-ro "$(dirname "$bin")" --share-ro "$examples" --timeout 400 -- \
  bash "$work/guest.sh" "$bin" "$work" "$PROM_PORT" "$GUEST_IP" "$AGENT_PORT" "$DONE_PORT" "$examples" "$FAULT_PORT" \
  > "$work/guest.out" 2>&1 &
vm_pid=$!

# ---- host side
healthz() { [ "$(curl -sf --max-time 3 "$AGENT/healthz")" = ok ]; }
check "the agent in the VM answers /healthz through the forwarded port 127.0.0.1:$AGENT_FWD" "wait_until 150 healthz"
check "Prometheus scrapes the agent: up{job=\"ipvs-migrate\"} == 1" "wait_until 30 promq_is 'up{job=\"ipvs-migrate\",instance=\"127.0.0.1:$AGENT_FWD\"}' 1"
check "Prometheus has ipvs_migrate_rollback_triggers_total{node=\"$NODE\",source=\"alertmanager\"} = 0" \
  "wait_until 10 promq_is 'ipvs_migrate_rollback_triggers_total{node=\"$NODE\",source=\"alertmanager\"}' 0"
rules_json() { curl -sf --max-time 5 "$PROM/api/v1/rules"; }
evaluated() { rules_json | jq -e '[.data.groups[] | select(.name == "ipvs-migrate") | .rules[] | select(.health == "ok")] | length == 6' > /dev/null; }
check "Prometheus evaluates the 6 rules of the short-window variant, all healthy" "wait_until 15 evaluated"
check "the rollback rules use the variant's window and for (rate(...[20s]), for 5s)" \
  "rules_json | jq -e '[.data.groups[].rules[] | select(.name == \"IPVSMigrateRejectionRateHigh\" or .name == \"IPVSMigrateRejectionRatioHigh\") | select((.query | contains(\"[20s]\")) and .duration == 5)] | length == 2' > /dev/null"
am_known() { curl -sf --max-time 5 "$PROM/api/v1/alertmanagers" | jq -e --arg u "$AM/api/v2/alerts" '.data.activeAlertmanagers | map(.url) == [$u]' > /dev/null; }
check "Prometheus sends its alerts to the local Alertmanager ($AM)" "wait_until 10 am_known"

# An alert as rules/ labels a rollback alert (IPVSMigrateRejectionRatioHigh on a namespace),
# first for another node (notified once: the agent must ignore it), then for this node, pushed
# twice and repeated by Alertmanager every repeat_interval (2 s): one trigger.
alert_json() {  # alert_json NODE
  jq -nc --arg node "$1" '[{labels: {alertname: "IPVSMigrateRejectionRatioHigh", severity: "critical",
    ipvs_migrate_rollback: "true", node: $node, namespace: "shop"},
    annotations: {summary: "shop rejects more than its threshold"}}]'
}
push() { curl -sf --max-time 5 -o /dev/null -H 'Content-Type: application/json' -d "$(alert_json "$1")" "$AM/api/v2/alerts"; }
# completed webhook calls: Alertmanager observes a call's latency once the agent has answered
# (alertmanager_notifications_total counts a call when it starts)
notifications() { metric "$AM" alertmanager_notification_latency_seconds_count integration=webhook; }
notified() { local n; n=$(notifications); [ "${n:-0}" -ge "$1" ] 2>/dev/null; }
check "Alertmanager accepts an alert for another node (POST /api/v2/alerts)" "push other-node"
check "... and the webhook answered its notification (alertmanager_notification_latency_seconds_count{integration=\"webhook\"} 1)" "wait_until 30 notified 1"
check "an alert for another node triggers nothing (triggers 0)" \
  "metric_is 0 $AGENT ipvs_migrate_rollback_triggers_total source=alertmanager node=$NODE"
check "Alertmanager accepts the alert for this node, pushed twice" "push $NODE && sleep 1 && push $NODE"
check "the webhook answered at least 3 notifications of it (repeat_interval 2s)" "wait_until 30 notified 4"
check "Alertmanager's webhook calls all succeeded (alertmanager_notifications_failed_total = 0)" \
  "[ \"\$(metric $AM alertmanager_notifications_failed_total integration=webhook)\" = 0 ]"
check "the agent counted exactly one trigger: ipvs_migrate_rollback_triggers_total{source=\"alertmanager\"} 1" \
  "metric_is 1 $AGENT ipvs_migrate_rollback_triggers_total source=alertmanager"

# The webhook refuses a wrong token and a missing one.
hook() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
  -d '{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"IPVSMigrateRejectionRateHigh","ipvs_migrate_rollback":"true","node":"'"$NODE"'"}}]}' \
  "$AGENT/api/v1/alerts"; }
check "a webhook call with a wrong token is refused with 401" "[ \"\$(hook -H 'Authorization: Bearer wrong-$token')\" = 401 ]"
check "a webhook call without a token is refused with 401" "[ \"\$(hook)\" = 401 ]"
check "both are counted: ipvs_migrate_webhook_refused_total{reason=\"unauthorized\"} 2" \
  "metric_is 2 $AGENT ipvs_migrate_webhook_refused_total reason=unauthorized"
check "a refused call triggers nothing (triggers still 1)" \
  "metric_is 1 $AGENT ipvs_migrate_rollback_triggers_total source=alertmanager"

# Prometheus' own alert: a transport probe rule (not one of rules/: it only carries their
# rollback labels) added at run time, so it fires now, after the exact counts above.
cat > "$work/rules/transport-probe.yml" <<EOF
groups:
  - name: transport-probe
    rules:
      - alert: TransportProbe
        expr: up{job="ipvs-migrate"} == 1
        labels:
          ipvs_migrate_rollback: "true"
          node: $NODE
          namespace: transport-probe
EOF
# (A reload rebuilds the notifier's Alertmanager set: an alert fired before it is rediscovered
# is dropped and sent again only after --rules.alert.resend-delay, 1 m by default, 1 s here.)
kill -HUP "$prom_pid" || not_ok "Prometheus (pid $prom_pid) is still running for the reload"
check "Prometheus fires the probe alert after a reload (ALERTS{alertname=\"TransportProbe\",alertstate=\"firing\"})" \
  "wait_until 30 promq_is 'ALERTS{alertname=\"TransportProbe\",alertstate=\"firing\"}' 1"
check "Prometheus -> Alertmanager -> webhook: the agent counted the probe alert as a second trigger" \
  "wait_until 30 metric_is 2 $AGENT ipvs_migrate_rollback_triggers_total source=alertmanager"
check "Prometheus scrapes the agent's trigger count back (ipvs_migrate_rollback_triggers_total = 2)" \
  "wait_until 15 promq_is 'ipvs_migrate_rollback_triggers_total{node=\"$NODE\",source=\"alertmanager\"}' 2"

# The rollback itself (the agent's built-in evaluator is off): a fault only the IPVS path
# suffers; Prometheus' alert, through Alertmanager, makes the agent roll `load` back.
status_json() { curl -sf --max-time 5 "$AGENT/api/v1/status"; }
migrated_load() { status_json | jq -e '.owned.namespaces | index("load")' > /dev/null; }
check "the guest migrated namespace load through the daemon (status: load migrated)" "wait_until 120 migrated_load"
probed() { local v; v=$(promq "ipvs_connections_total{node=\"$NODE\",namespace=\"load\"}"); [ -n "$v" ] && [ "${v%.*}" -gt 0 ]; }
check "the agent probes load: Prometheus scrapes ipvs_connections_total{namespace=\"load\"} > 0" "wait_until 30 probed"
# The readiness report of the node mid-cutover (issue 7): fetched through the forwarded port,
# rendered on the host by Chromium in a netns after the VM is done (tests/report/render.sh).
report_json() { curl -sf --max-time 60 -o "$work/report-$1.json" "$AGENT/api/v1/report" && curl -sf --max-time 60 -o "$work/report-$1.html" "$AGENT/"; }
load_phase() { jq -r '.migration.namespaces[] | select(.namespace == "load") | .phase' "$work/report-$1.json"; }
soaking() { report_json soak && [ "$(load_phase soak)" = soak ] && jq -e '.migration.rejections.load | length >= 2' "$work/report-soak.json" > /dev/null; }
check "GET /api/v1/report mid-cutover: kind Report, namespace load in phase soak, its probe history" "wait_until 60 soaking"
check "... the report's cutover is wave 1 of 1 (load), phase soak, and the audit's verdict is there" \
  "jq -e '.kind == \"Report\" and .migration.cutover.phase == \"soak\" and .migration.cutover.waves == [[\"load\"]] and (.verdict.status | length > 0) and .summary.perNamespace.load.servicePorts == 20' '$work/report-soak.json' > /dev/null"
t_fault=$SECONDS
bash -c "exec 3<>/dev/tcp/127.0.0.1/$FAULT_FWD" 2>/dev/null || not_ok "the fault signal reached the guest"
check "Prometheus fires IPVSMigrateRejectionRatioHigh for load (short-window rules/ variant)" \
  "wait_until 90 promq_is 'ALERTS{alertname=\"IPVSMigrateRejectionRatioHigh\",namespace=\"load\",alertstate=\"firing\"}' 1"
rolled() { status_json | jq -e '(.owned.namespaces | index("load") | not) and (.owned.rollbacks[-1].source == "alertmanager") and (.owned.rollbacks[-1].reason == "IPVSMigrateRejectionRatioHigh")' > /dev/null; }
check "the agent rolled load back by itself, the recorded reason the Alertmanager alert" "wait_until 60 rolled"
echo "# rollback: load back on iptables $((SECONDS - t_fault)) s after the fault (window 20s, for 5s, Alertmanager group_wait 1s)"
# (the cutover's phase is rolling-back while the drain runs, then rolled-back)
rolled_back_report() {
  report_json rollback && [ "$(load_phase rollback)" = rolled-back ] && jq -e '.migration.rollbacks[0].reason == "IPVSMigrateRejectionRatioHigh" and .migration.rollbacks[0].source == "alertmanager" and .migration.cutover.phase == "rolled-back" and (.migration.rejections.load | map(.rejected) | max > 0)' "$work/report-rollback.json" > /dev/null
}
check "GET /api/v1/report after the rollback: load rolled back, the rollback's reason and source, rejected probes in its history" \
  "wait_until 30 rolled_back_report"
check "the evaluator stayed off: ipvs_migrate_rollback_triggers_total{source=\"builtin\"} 0, {source=\"alertmanager\"} 3" \
  "metric_is 0 $AGENT ipvs_migrate_rollback_triggers_total source=builtin && metric_is 3 $AGENT ipvs_migrate_rollback_triggers_total source=alertmanager"
check "the rollback is counted by reason: ipvs_migrate_rollbacks_total{reason=\"alertmanager\"} 1" \
  "metric_is 1 $AGENT ipvs_migrate_rollbacks_total reason=alertmanager"

# ---- done: release the guest, wait for the VM (bounded by its --timeout)
bash -c "exec 3<>/dev/tcp/127.0.0.1/$DONE_FWD" 2>/dev/null || echo "alerting-e2e: could not signal the guest; it ends at its own timeout" >&2
vm_rc=0; wait "$vm_pid" || vm_rc=$?; vm_pid=""
cat "$work/guest.out"
gpass=$(grep -c '^ok - guest:' "$work/guest.out" || true)
gfail=$(grep -c '^not ok - guest:' "$work/guest.out" || true)
pass=$((pass + gpass)); fail=$((fail + gfail))
if [ "$gpass" != 7 ] || [ "$vm_rc" != 0 ]; then not_ok "the guest ran its 7 checks and exited 0" "vm exit $vm_rc, $gpass ok"; fi

# ---- the two report pages in Chromium (a netns with only lo, --disable-javascript)
# shellcheck source=tests/report/render.sh
. tests/report/render.sh
for page in soak rollback; do
  if [ -s "$work/report-$page.html" ] && report_render "$work/report-$page.html" "$work/report-$page.dom" "$work/report-$page.png" 1100x2200; then
    ok "Chromium renders the agent's / page ($page) in an isolated netns"
  else
    not_ok "Chromium renders the agent's / page ($page) in an isolated netns"
  fi
done
dom_has() { grep -qF -- "$2" "$work/report-$1.dom"; }
check "page mid-cutover: load's row says soak; the cutover line says wave 1 of 1, phase soak; node vm-node" \
  "dom_has soak '<tr data-namespace=\"load\"><td>load</td><td>soak</td>' && dom_has soak 'Cutover: wave 1 of 1 (<code>load</code>), phase <strong>soak</strong>' && dom_has soak 'node vm-node'"
check "page mid-cutover: the rejection chart draws load's series; no rollback yet" \
  "dom_has soak '<polyline class=\"series\" data-namespace=\"load\"' && dom_has soak 'No rollback recorded.'"
check "page after the rollback: load's row says rolled-back; the rollback history names the alert and alertmanager" \
  "dom_has rollback '<tr data-namespace=\"load\"><td>load</td><td>rolled-back</td>' && dom_has rollback '<table id=\"rollbacks\">' && dom_has rollback '<td>load</td><td>IPVSMigrateRejectionRatioHigh</td><td>alertmanager</td>'"
check "page after the rollback: the rejection chart still draws load's last hour, with its rules chart" \
  "dom_has rollback '<polyline class=\"series\" data-namespace=\"load\"' && dom_has rollback 'id=\"chart-rules\"'"
check "the pages name no URL with a scheme and nothing to load" \
  "! grep -Eqi 'https?://|[[:space:]]src=|<script|<link' '$work/report-soak.html' '$work/report-rollback.html'"
if [ "${IPVSMIG_UPDATE_DOCS:-}" = 1 ]; then
  cp "$work/report-soak.png" docs/img/report-cutover.png && cp "$work/report-rollback.png" docs/img/report-rollback.png \
    && echo "# docs/img/report-cutover.png and report-rollback.png updated"
fi
if [ "$fail" != 0 ]; then
  { echo "---- serve.log (guest)"; tail -n 30 "$work/serve.log" 2>/dev/null
    echo "---- prometheus.log"; tail -n 20 "$work/prometheus.log"
    echo "---- alertmanager.log"; tail -n 20 "$work/alertmanager.log"
    echo "---- Prometheus' notifier"; curl -sf --max-time 5 "$PROM/metrics" | grep '^prometheus_notifications_'
    echo "---- Alertmanager's alerts"; curl -sf --max-time 5 "$AM/api/v2/alerts" | jq -c '.[] | [.labels, .status.state]'; } >&2
fi
echo "alerting-e2e: $pass passed, $fail failed"
[ "$fail" = 0 ]
