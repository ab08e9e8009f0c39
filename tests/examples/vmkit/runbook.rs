//! The emergency manual rollback of docs/runbooks/emergency-rollback.md, run literally in the
//! VM (part of `vm_apply`, tests/vm/apply-e2e.sh): the runbook's `sh emergency-rollback`
//! blocks are compiled in from the markdown, so the commands tested are the commands
//! documented. Checks: services back on kube-proxy's iptables path, nothing of ipvs-migrate's
//! left, the node as before the apply (except the IPVS sysctls the runbook leaves), and the
//! lost-journal recovery (journal deleted, the same blocks, a new apply without conflicts).

use super::*;

const RUNBOOK: &str = include_str!("../../../docs/runbooks/emergency-rollback.md");

/// The bodies of the runbook's ```` ```sh emergency-rollback ```` blocks, in order.
pub fn runbook_script() -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in RUNBOOK.lines() {
        if inside {
            if line.trim_start().starts_with("```") {
                inside = false;
            } else {
                out.push_str(line);
                out.push('\n');
            }
        } else if line.trim() == "```sh emergency-rollback" {
            inside = true;
        }
    }
    out
}

/// `node_state()` without the sysctls the runbook leaves as the migration set them.
fn comparable(state: &str) -> String {
    state
        .lines()
        .filter(|l| !l.starts_with("vs/") && !l.starts_with("ip_forward="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the runbook's blocks with `set -euo pipefail` and this suite's backend.
fn run_runbook(s: &Suite) -> (i32, String) {
    let script = format!(
        "set -euo pipefail\nIPT=iptables-{b} IP6T=ip6tables-{b} STATE={state}\n{body}",
        b = be(),
        state = s.state,
        body = runbook_script()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Nothing of ipvs-migrate's on the node: (ok, what is left). stderr is dropped: iptables-nft
/// warns there that legacy tables exist (the suite ran on legacy first).
fn nothing_left() -> (bool, String) {
    let b = be();
    let (_, left) = sh(&format!(
        "iptables-{b}-save 2>/dev/null | grep IPVSMIG; ip6tables-{b}-save 2>/dev/null | grep IPVSMIG; ipset list -n | grep IPVSMIG; ip link show kube-ipvs0 2>/dev/null"
    ));
    (left.trim().is_empty(), left)
}

/// The emergency rollback after an `apply` of `shop,many` (`common`: the suite's INPUTS),
/// then the lost-journal recovery. `before`: `node_state()` with nothing migrated.
pub fn emergency_rollback(s: &mut Suite, common: &str, before: &str) {
    let script = runbook_script();
    s.check(
        "the runbook has its emergency-rollback blocks (6), with ipset, iptables and ipvsadm commands",
        script.matches("ipset ").count() >= 4
            && script.contains("\"$ipt\" -t")
            && script.contains("ipvsadm -D")
            && RUNBOOK.matches("```sh emergency-rollback").count() == 6,
        &script,
    );
    let (rc, out) = s.migrate(&format!("apply --namespace shop,many --no-watch {common}"));
    let (rc2, _, via) = s.route("cli", "10.96.0.10:80");
    s.check(
        "runbook: apply --namespace shop,many, traffic through IPVS",
        rc == 0 && rc2 == 0 && via,
        &out,
    );
    let (rc, out) = run_runbook(s);
    s.check(
        "runbook: the emergency-rollback commands run without an error",
        rc == 0,
        &out,
    );
    let mut bad = Vec::new();
    for (vip, want) in [
        ("10.96.0.10:80", "pod"),
        ("10.96.0.13:443", "pod2:8083"),
        ("10.96.1.1:80", "pod1:8100"),
        ("192.168.0.2:30080", "pod"),
        ("203.0.113.10:80", "pod2:8084"),
        ("[fd00:96::10]:80", "pod1:8085"),
    ] {
        let (rc, answer, via) = s.route("cli", vip);
        if rc != 0 || via || !answer.starts_with(want) {
            bad.push(format!("{vip}: rc {rc}, via IPVS {via}, {answer:?}"));
        }
    }
    s.check(
        "runbook: afterwards the migrated services answer from their endpoints through iptables, not IPVS",
        bad.is_empty(),
        &bad.join("\n"),
    );
    let (ok, left) = nothing_left();
    s.check(
        "runbook: no IPVSMIG chain, rule or set and no kube-ipvs0 is left",
        ok,
        &left,
    );
    let now = node_state();
    s.check(
        "runbook: the node is as before the apply (the foreign virtual server too), IPVS sysctls aside",
        comparable(&now) == comparable(before),
        &first_diff(&comparable(before), &comparable(&now)),
    );
    let (_, moved) = sh(&format!("ls {}", s.state));
    let (_, st) = s.migrate("status");
    s.check(
        "runbook: the journal is moved aside and status says nothing is migrated",
        moved.contains("journal.jsonl.manual-rollback-") && st.contains("Nothing migrated"),
        &format!("{moved}\n{st}"),
    );

    // The journal lost while namespaces are migrated.
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let _ = sh(&format!("rm -f {}/journal.jsonl", s.state));
    let (rc2, conflict) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    s.check(
        "lost journal: the agent refuses to adopt its own objects (a conflict, nothing changed)",
        rc == 0 && rc2 != 0,
        &format!("{out}\n{conflict}"),
    );
    let (rc, out) = run_runbook(s);
    let (ok, left) = nothing_left();
    s.check(
        "lost journal: the same commands remove everything",
        rc == 0 && ok,
        &format!("{out}\n{left}"),
    );
    let (rc, out) = s.migrate(&format!("apply --namespace shop --no-watch {common}"));
    let (rc2, _, via) = s.route("cli", "10.96.0.10:80");
    let (rc3, out3) = s.migrate(&format!("rollback --all --drain 0s {common}"));
    let now = node_state();
    s.check(
        "lost journal: a new apply meets no conflict, and its rollback leaves the node as before",
        rc == 0 && rc2 == 0 && via && rc3 == 0 && comparable(&now) == comparable(before),
        &format!(
            "{out}\n{out3}\n{}",
            first_diff(&comparable(before), &comparable(&now))
        ),
    );
}
