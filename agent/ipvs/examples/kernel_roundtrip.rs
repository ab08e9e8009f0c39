//! Kernel round trip of the IPVS client, run inside the VM test bed (tests/vm/ipvs-client.sh):
//! what we add, a dump returns and `ipvsadm -Sn` agrees (IPv4, IPv6, TCP, UDP, SCTP,
//! persistence, mh flags); edits and deletes; each error case. Prints TAP-like lines and
//! `ipvs-client: N passed, N failed`; exits non-zero on any failure. Not part of the host's
//! cargo test run: the build machines' kernel has no IPVS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use ipvsmig_ipvs::codec::{Dest, Service, Timeouts};
use ipvsmig_ipvs::{Client, IpvsError, Request};

fn svc(addr: &str, protocol: u16, port: u16, sched: &str, flags: u32, timeout: u32) -> Service {
    let address: std::net::IpAddr = addr.parse().unwrap();
    Service {
        address,
        protocol,
        port,
        scheduler: sched.into(),
        flags,
        timeout,
        netmask: if address.is_ipv4() { 0xffff_ffff } else { 128 },
    }
}

fn dest(addr: &str, port: u16, weight: u32) -> Dest {
    Dest {
        address: addr.parse().unwrap(),
        port,
        weight,
        fwd: 0,
    }
}

fn ipvsadm_save() -> String {
    let out = Command::new("ipvsadm")
        .arg("-Sn")
        .output()
        .expect("ipvsadm");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines.join("\n")
}

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
    let mut c = Client::open().expect("open the IPVS family");
    let (version, tab) = c.info().unwrap();
    check(
        "GET_INFO returns the IPVS version and the default 4096-entry table",
        version >= 0x010201 && tab == 4096,
        format!("{version:#x} {tab}"),
    );
    let before = c.timeouts().unwrap();
    check(
        "GET_CONFIG returns the kernel's default timeouts 900/120/300",
        before
            == Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            },
        format!("{before:?}"),
    );
    let r = c.set_timeouts(Timeouts {
        tcp: 3600,
        tcp_fin: 0,
        udp: 60,
    });
    let after = c.timeouts().unwrap();
    check(
        "SET_CONFIG changes tcp and udp and leaves tcp_fin (0) alone",
        r.is_ok()
            && after
                == Timeouts {
                    tcp: 3600,
                    tcp_fin: 120,
                    udp: 60,
                },
        format!("{r:?} {after:?}"),
    );
    let _ = c.set_timeouts(before);
    let services = vec![
        (
            svc("10.96.0.1", 6, 443, "rr", 0, 0),
            vec![dest("10.244.1.2", 6443, 1), dest("10.244.2.3", 6443, 1)],
        ),
        (
            svc("10.96.0.10", 17, 53, "rr", 0x1, 10800),
            vec![dest("10.244.1.5", 53, 1)],
        ),
        (
            svc("fd00:96::a", 6, 80, "mh", 0x10, 0),
            vec![dest("fd00:244::7", 8080, 1), dest("fd00:244::8", 8080, 1)],
        ),
        (svc("10.96.0.20", 132, 3868, "rr", 0, 0), vec![]),
    ];
    for (s, ds) in &services {
        let r = c.add_service(s);
        check(
            &format!("add {}:{}", s.address, s.port),
            r.is_ok(),
            format!("{r:?}"),
        );
        for d in ds {
            let r = c.add_dest(s, d);
            check(
                &format!("add dest {}:{}", d.address, d.port),
                r.is_ok(),
                format!("{r:?}"),
            );
        }
    }
    let mut got = c.services().unwrap();
    got.sort_by_key(|s| (s.address, s.port));
    let mut want: Vec<Service> = services.iter().map(|(s, _)| s.clone()).collect();
    want.sort_by_key(|s| (s.address, s.port));
    check(
        "a dump returns what was added (scheduler, flags, timeout, netmask)",
        got == want,
        format!("{got:#?}"),
    );
    for (s, ds) in &services {
        let mut w = ds.clone();
        w.sort();
        let g = c.dests(s).unwrap();
        check(
            &format!("destinations of {}:{} dump back", s.address, s.port),
            g == w,
            format!("{g:?}"),
        );
    }
    let saved = ipvsadm_save();
    let expect = [
        "-A -t 10.96.0.1:443 -s rr",
        "-a -t 10.96.0.1:443 -r 10.244.1.2:6443 -m -w 1",
        "-A -u 10.96.0.10:53 -s rr -p 10800",
        "-A -t [fd00:96::a]:80 -s mh -b mh-port",
        "-A --sctp-service 10.96.0.20:3868 -s rr",
    ];
    for e in expect {
        check(
            &format!("ipvsadm -Sn agrees: {e}"),
            saved.lines().any(|l| l == e),
            saved.clone(),
        );
    }
    // Edits.
    let (s0, d0) = (&services[0].0, &services[0].1[0]);
    let r = c.edit_dest(
        s0,
        &Dest {
            weight: 0,
            ..d0.clone()
        },
    );
    check(
        "a destination's weight can be set to 0 (graceful removal)",
        r.is_ok()
            && c.dests(s0)
                .unwrap()
                .iter()
                .any(|d| d.address == d0.address && d.weight == 0),
        format!("{r:?}"),
    );
    let r = c.edit_service(&Service {
        scheduler: "wrr".into(),
        ..s0.clone()
    });
    check(
        "a service's scheduler can be changed",
        r.is_ok() && ipvsadm_save().contains("-A -t 10.96.0.1:443 -s wrr"),
        format!("{r:?}"),
    );
    // Errors.
    let r = c.add_service(s0);
    check(
        "adding an existing service is Exists",
        r == Err(IpvsError::Exists),
        format!("{r:?}"),
    );
    let r = c.add_dest(s0, d0);
    check(
        "adding an existing destination is Exists",
        r == Err(IpvsError::Exists),
        format!("{r:?}"),
    );
    let r = c.del_service(&svc("10.96.9.9", 6, 1, "rr", 0, 0));
    check(
        "deleting a missing service is NotFound",
        r == Err(IpvsError::NotFound),
        format!("{r:?}"),
    );
    let r = c.del_dest(s0, &dest("10.9.9.9", 1, 1));
    check(
        "deleting a missing destination is NotFound",
        r == Err(IpvsError::NotFound),
        format!("{r:?}"),
    );
    let r = c.add_service(&svc("10.96.0.99", 6, 80, "nosuch", 0, 0));
    check(
        "an unknown scheduler is NotFound",
        r == Err(IpvsError::NotFound),
        format!("{r:?}"),
    );
    // Cleanup: destinations before their services, as the diff orders them.
    for (s, ds) in &services {
        for d in ds {
            let _ = c.del_dest(s, d);
        }
        let r = c.del_service(s);
        check(
            &format!("delete {}:{}", s.address, s.port),
            r.is_ok(),
            format!("{r:?}"),
        );
    }
    let left = c.services().unwrap();
    check(
        "nothing is left behind",
        left.is_empty(),
        format!("{left:?}"),
    );
    // Pipelined batches: 1,000 services x 5 destinations in windows of 256 requests.
    let many: Vec<(Service, Vec<Dest>)> = (0..1000u32)
        .map(|i| {
            let s = svc(
                &format!("10.97.{}.{}", i / 250, i % 250 + 1),
                6,
                80,
                "rr",
                0,
                0,
            );
            let ds = (0..5u32)
                .map(|j| {
                    dest(
                        &format!("10.245.{}.{}", i / 250, i % 250 + 1),
                        8000 + j as u16,
                        1,
                    )
                })
                .collect();
            (s, ds)
        })
        .collect();
    let mut reqs = Vec::new();
    for (s, ds) in &many {
        reqs.push(Request::AddService(s.clone()));
        reqs.extend(ds.iter().map(|d| Request::AddDest(s.clone(), d.clone())));
    }
    let r = c.batch(&reqs, 256).unwrap();
    check(
        "a pipelined batch of 6,000 requests: every one acknowledged, in order, all ok",
        r.len() == reqs.len() && r.iter().all(|x| x.is_ok()),
        format!(
            "{} results, first error {:?}",
            r.len(),
            r.iter().find(|x| x.is_err())
        ),
    );
    let dumped = c.services().unwrap();
    let total_dests: usize = many.iter().map(|(s, _)| c.dests(s).unwrap().len()).sum();
    check(
        "the kernel holds all 1,000 services and 5,000 destinations",
        dumped.len() == 1000 && total_dests == 5000,
        format!("{} services, {total_dests} destinations", dumped.len()),
    );
    let (s1, d1) = (&many[7].0, &many[7].1[2]);
    let mixed = vec![
        Request::EditDest(
            s1.clone(),
            Dest {
                weight: 0,
                ..d1.clone()
            },
        ),
        Request::AddService(s1.clone()),
        Request::DelDest(s1.clone(), dest("10.9.9.9", 1, 1)),
        Request::DelDest(s1.clone(), d1.clone()),
    ];
    let r = c.batch(&mixed, 256).unwrap();
    check(
        "a batch reports each request's own result (ok, Exists, NotFound, ok)",
        r == vec![
            Ok(()),
            Err(IpvsError::Exists),
            Err(IpvsError::NotFound),
            Ok(()),
        ],
        format!("{r:?}"),
    );
    check(
        "after the mixed batch the edited destination is gone and its siblings remain",
        c.dests(s1).unwrap().len() == 4,
        format!("{:?}", c.dests(s1)),
    );
    let dels: Vec<Request> = many
        .iter()
        .map(|(s, _)| Request::DelService(s.clone()))
        .collect();
    let r = c.batch(&dels, 4096).unwrap();
    check(
        "a batch larger than the receive buffer allows is windowed, not lost",
        r.len() == 1000 && r.iter().all(|x| x.is_ok()),
        format!("{:?}", r.iter().find(|x| x.is_err())),
    );
    let left = c.services().unwrap();
    check(
        "nothing is left behind after the batches",
        left.is_empty(),
        format!("{} left", left.len()),
    );
    println!("ipvs-client: {pass} passed, {fail} failed");
    std::process::exit(if fail == 0 { 0 } else { 1 });
}
