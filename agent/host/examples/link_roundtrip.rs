//! Kernel round trip of the link layer (agent/host/src/link.rs), run inside the VM test bed
//! (tests/vm/host-kernel.sh), whose kernel has the dummy driver the build machines lack:
//! kube-ipvs0 is created as a dummy link left down (`ip -d link show` agrees), takes an IPv4
//! /32 and an IPv6 /128 (`ip address show` agrees, the IPv6 one not tentative without
//! IFA_F_NODAD), refuses each a second time, loses them and goes away. The same steps on
//! `RecordingLinks` must give the same answers. Prints `ok - …` / `not ok - …` and
//! `host-kernel: N passed, N failed`; exits non-zero on any failure. Changes the network
//! namespace it runs in: run it only in the VM (or a namespace of its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::process::Command;

use ipvsmig_host::link::{KUBE_IPVS0, LinkError, Links, RecordingLinks, RtnlLinks};

/// One step of the scenario.
#[derive(Clone, Copy)]
enum Step {
    Get,
    Create,
    Delete,
    List,
    Add(&'static str),
    Del(&'static str),
    AddOn(&'static str, &'static str),
}

/// The kind of answer, without what differs between kernel and fake (link index, errno text).
fn outcome(l: &mut dyn Links, step: Step) -> String {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let r = match step {
        Step::Get => l.link(KUBE_IPVS0).map(|i| match i {
            None => "none".to_owned(),
            Some(i) => format!(
                "{} {}",
                if i.up { "up" } else { "down" },
                i.kind.unwrap_or_default()
            ),
        }),
        Step::Create => l.create_dummy(KUBE_IPVS0).map(|()| String::new()),
        Step::Delete => l.delete_link(KUBE_IPVS0).map(|()| String::new()),
        Step::List => l.addresses(KUBE_IPVS0).map(|a| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }),
        Step::Add(a) => l.add_address(KUBE_IPVS0, ip(a)).map(|()| String::new()),
        Step::Del(a) => l.del_address(KUBE_IPVS0, ip(a)).map(|()| String::new()),
        Step::AddOn(link, a) => l.add_address(link, ip(a)).map(|()| String::new()),
    };
    match r {
        Ok(s) if s.is_empty() => "ok".into(),
        Ok(s) => format!("ok: {s}"),
        Err(e) => format!("error: {}", kind(&e)),
    }
}

fn kind(e: &LinkError) -> &'static str {
    match e {
        LinkError::InvalidName { .. } => "InvalidName",
        LinkError::LinkExists { .. } => "LinkExists",
        LinkError::LinkNotFound { .. } => "LinkNotFound",
        LinkError::AddressExists { .. } => "AddressExists",
        LinkError::AddressNotFound { .. } => "AddressNotFound",
        LinkError::Permission { .. } => "Permission",
        LinkError::Unsupported { .. } => "Unsupported",
        LinkError::Errno { .. } => "Errno",
        LinkError::Socket { .. } => "Socket",
        LinkError::Malformed { .. } => "Malformed",
    }
}

/// What `ip` says (stdout and stderr, and whether it succeeded).
fn ip_cmd(args: &[&str]) -> (bool, String) {
    match Command::new("ip").args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("ip: {e}")),
    }
}

const STEPS: &[(&str, Step, &str)] = &[
    ("there is no kube-ipvs0 yet", Step::Get, "ok: none"),
    ("create the dummy link", Step::Create, "ok"),
    (
        "creating it again is LinkExists",
        Step::Create,
        "error: LinkExists",
    ),
    ("it is a dummy link, down", Step::Get, "ok: down dummy"),
    ("add 10.96.0.10 (/32)", Step::Add("10.96.0.10"), "ok"),
    ("add fd00::10 (/128)", Step::Add("fd00::10"), "ok"),
    (
        "add 10.96.0.10 again is AddressExists",
        Step::Add("10.96.0.10"),
        "error: AddressExists",
    ),
    (
        "add fd00::10 again is AddressExists",
        Step::Add("fd00::10"),
        "error: AddressExists",
    ),
    (
        "list gives both host addresses",
        Step::List,
        "ok: 10.96.0.10/32 fd00::10/128",
    ),
    ("delete 10.96.0.10", Step::Del("10.96.0.10"), "ok"),
    (
        "delete 10.96.0.10 again is AddressNotFound",
        Step::Del("10.96.0.10"),
        "error: AddressNotFound",
    ),
    ("list gives the IPv6 one", Step::List, "ok: fd00::10/128"),
    ("delete the link", Step::Delete, "ok"),
    ("it is gone", Step::Get, "ok: none"),
    (
        "deleting it again is LinkNotFound",
        Step::Delete,
        "error: LinkNotFound",
    ),
    (
        "listing a missing link is LinkNotFound",
        Step::List,
        "error: LinkNotFound",
    ),
    (
        "adding to a missing link is LinkNotFound",
        Step::AddOn("ipvsmig-none", "10.96.0.11"),
        "error: LinkNotFound",
    ),
    (
        "an invalid name is refused before the kernel sees it",
        Step::AddOn("kube-ipvs0-much-too-long", "10.96.0.11"),
        "error: InvalidName",
    ),
];

fn main() {
    let mut pass = 0;
    let mut fail = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        if ok {
            println!("ok - {name}");
            pass += 1;
        } else {
            println!("not ok - {name}: {detail}");
            fail += 1;
        }
    };
    let mut real = RtnlLinks::open().expect("rtnetlink socket");
    let mut fake = RecordingLinks::new();
    for (name, step, want) in STEPS {
        let got = outcome(&mut real, *step);
        check(name, got == *want, format!("got {got:?}, want {want:?}"));
        let faked = outcome(&mut fake, *step);
        check(
            &format!("the fake agrees: {name}"),
            faked == got,
            format!("fake {faked:?}, kernel {got:?}"),
        );
        match *name {
            "it is a dummy link, down" => {
                let (ok, out) = ip_cmd(&["-d", "link", "show", KUBE_IPVS0]);
                let flags = out
                    .split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(f, _)| f.split(',').map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default();
                check(
                    "ip -d link show: kind dummy, state DOWN, no UP flag",
                    ok && out.lines().any(|l| l.trim_start().starts_with("dummy"))
                        && out.contains("state DOWN")
                        && !flags.is_empty()
                        && !flags.iter().any(|f| f == "UP"),
                    out,
                );
            }
            "list gives both host addresses" => {
                let (ok, out) = ip_cmd(&["-o", "address", "show", "dev", KUBE_IPVS0]);
                check(
                    "ip address show: 10.96.0.10/32 and fd00::10/128, none tentative",
                    ok && out.contains("inet 10.96.0.10/32")
                        && out.contains("inet6 fd00::10/128")
                        && !out.contains("tentative"),
                    out,
                );
            }
            "it is gone" => {
                let (ok, out) = ip_cmd(&["link", "show", KUBE_IPVS0]);
                check("ip link show: no kube-ipvs0", !ok, out);
            }
            _ => {}
        }
    }
    println!("host-kernel: {pass} passed, {fail} failed");
    if fail > 0 {
        std::process::exit(1);
    }
}
