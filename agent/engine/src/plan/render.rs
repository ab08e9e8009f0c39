//! Plan renderers: `ipvsadm -R` input and a human table. (JSON is the serde form.)

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{FLAG_SCHED2, IpvsPlan, VirtualServer, VsKind};
use crate::inventory::Protocol;

fn addr(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn service_opt(vs: &VirtualServer) -> String {
    let a = addr(&vs.address, vs.port);
    match vs.protocol {
        Protocol::Tcp => format!("-t {a}"),
        Protocol::Udp => format!("-u {a}"),
        Protocol::Sctp => format!("--sctp-service {a}"),
    }
}

/// `ipvsadm -R` input (ipvsadm(8): `-A` adds a virtual service, `-a` a real server; `-m` is
/// masquerading/NAT, `-p` persistence, `-b` scheduler flags).
pub fn ipvsadm(plan: &IpvsPlan) -> String {
    let mut out = String::new();
    for vs in &plan.virtual_servers {
        let svc = service_opt(vs);
        let _ = write!(out, "-A {svc} -s {}", vs.scheduler);
        if vs.flags & super::FLAG_PERSISTENT != 0 {
            let _ = write!(out, " -p {}", vs.timeout);
        }
        if vs.flags & FLAG_SCHED2 != 0 {
            let _ = write!(
                out,
                " -b {}",
                if &*vs.scheduler == "mh" {
                    "mh-port"
                } else {
                    "flag-2"
                }
            );
        }
        out.push('\n');
        for rs in &vs.real_servers {
            let _ = writeln!(
                out,
                "-a {svc} -r {} -m -w {}",
                addr(&rs.address, rs.port),
                rs.weight
            );
        }
    }
    out
}

/// A human summary: one line per virtual server.
pub fn table(plan: &IpvsPlan) -> String {
    let mut out = String::new();
    let rs: usize = plan
        .virtual_servers
        .iter()
        .map(|v| v.real_servers.len())
        .sum();
    let _ = writeln!(
        out,
        "{} virtual servers, {} real servers, {} addresses on kube-ipvs0\n",
        plan.virtual_servers.len(),
        rs,
        plan.addresses.len()
    );
    let kind = |k: VsKind| match k {
        VsKind::ClusterIp => "cluster-ip",
        VsKind::ExternalIp => "external-ip",
        VsKind::LoadBalancer => "load-balancer",
        VsKind::ExternalOrLoadBalancer => "external-or-lb",
        VsKind::NodePort => "node-port",
    };
    let mut rows: Vec<[String; 6]> = vec![
        [
            "PROTO",
            "VIRTUAL",
            "SCHED",
            "SERVICE",
            "KIND",
            "REAL SERVERS",
        ]
        .map(String::from),
    ];
    for vs in &plan.virtual_servers {
        let persist = if vs.timeout > 0 {
            format!(" (persistent {}s)", vs.timeout)
        } else {
            String::new()
        };
        let real = if vs.real_servers.is_empty() {
            "(none: connections are refused)".to_owned()
        } else {
            vs.real_servers
                .iter()
                .map(|r| addr(&r.address, r.port))
                .collect::<Vec<_>>()
                .join(" ")
        };
        rows.push([
            vs.protocol.as_str().to_owned(),
            addr(&vs.address, vs.port),
            vs.scheduler.to_string(),
            vs.service.to_string(),
            kind(vs.kind).to_owned(),
            format!("{real}{persist}"),
        ]);
    }
    let mut width = [0usize; 6];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !plan.findings.is_empty() {
        let _ = writeln!(out, "\nbehaviour differences:");
        for f in &plan.findings {
            let _ = writeln!(out, "  {} [{}]: {}", f.service, f.id, f.message);
        }
    }
    out
}

/// `ipset restore` input creating kube-proxy's sets (ipset(8): bitmap:port needs a range,
/// IPv6 hash sets `family inet6`) and adding their members.
pub fn ipset_restore(plan: &IpvsPlan) -> String {
    let mut out = String::new();
    for (name, set) in &plan.ipsets {
        let family = if name.starts_with("KUBE-6-") {
            " family inet6"
        } else {
            " family inet"
        };
        let opts = if set.set_type.starts_with("bitmap:port") {
            " range 0-65535".to_owned()
        } else {
            format!("{family} hashsize 1024 maxelem 65536")
        };
        let _ = writeln!(out, "create {name} {}{opts}", set.set_type);
        for m in &set.members {
            let _ = writeln!(out, "add {name} {m}");
        }
    }
    out
}
