//! Kernel benchmark, run inside the VM test bed (tests/vm/ipvs-bench.sh; docs/benchmarks.md):
//! a cold apply of N services x 5 destinations through our pipelined client against
//! `ipvsadm -R` of the very same configuration, and one destination change with N services
//! present. Prints one `bench:` line per measurement and the ratios. Usage:
//! `apply_bench [SERVICES] [WINDOW]` (defaults 20000, 256).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipvsmig_ipvs::codec::{Dest, Service};
use ipvsmig_ipvs::{Client, Request};

fn config(n: u32) -> Vec<(Service, Vec<Dest>)> {
    (0..n)
        .map(|i| {
            let vip = std::net::Ipv4Addr::from(0x0a60_0000 + i); // 10.96.0.0/12 onwards
            let s = Service {
                address: vip.into(),
                protocol: 6,
                port: 80,
                scheduler: "rr".into(),
                flags: 0,
                timeout: 0,
                netmask: 0xffff_ffff,
            };
            let ds = (0..5u32)
                .map(|j| Dest {
                    address: std::net::Ipv4Addr::from(0x0af4_0000 + i * 5 + j).into(),
                    port: 8080,
                    weight: 1,
                    fwd: 0,
                })
                .collect();
            (s, ds)
        })
        .collect()
}

fn ipvsadm_restore_text(cfg: &[(Service, Vec<Dest>)]) -> String {
    let mut t = String::with_capacity(cfg.len() * 300);
    for (s, ds) in cfg {
        t.push_str(&format!(
            "-A -t {}:{} -s {}\n",
            s.address, s.port, s.scheduler
        ));
        for d in ds {
            t.push_str(&format!(
                "-a -t {}:{} -r {}:{} -m -w {}\n",
                s.address, s.port, d.address, d.port, d.weight
            ));
        }
    }
    t
}

fn delete_all(c: &mut Client, cfg: &[(Service, Vec<Dest>)], window: usize) {
    let dels: Vec<Request> = cfg
        .iter()
        .map(|(s, _)| Request::DelService(s.clone()))
        .collect();
    let r = c.batch(&dels, window).unwrap();
    assert!(r.iter().all(Result::is_ok), "cleanup failed");
    assert!(c.services().unwrap().is_empty(), "services left behind");
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(20_000, |a| a.parse().expect("SERVICES"));
    let window: usize = args.next().map_or(256, |a| a.parse().expect("WINDOW"));
    let cfg = config(n);
    let mut c = Client::open().expect("open the IPVS family");
    assert!(
        c.services().unwrap().is_empty(),
        "the VM must start with no virtual servers"
    );

    // Ours: one pipelined batch, services before their destinations.
    let mut reqs = Vec::with_capacity(cfg.len() * 6);
    for (s, ds) in &cfg {
        reqs.push(Request::AddService(s.clone()));
        reqs.extend(ds.iter().map(|d| Request::AddDest(s.clone(), d.clone())));
    }
    let t = Instant::now();
    let r = c.batch(&reqs, window).unwrap();
    let ours = t.elapsed();
    assert!(
        r.iter().all(Result::is_ok),
        "our apply failed: {:?}",
        r.iter().find(|x| x.is_err())
    );
    assert_eq!(c.services().unwrap().len(), cfg.len());

    // One destination change with every service present: replace one endpoint.
    let (s0, d0) = (&cfg[cfg.len() / 2].0, &cfg[cfg.len() / 2].1[0]);
    let moved = Dest {
        address: "10.255.255.254".parse().unwrap(),
        ..d0.clone()
    };
    let change = [
        Request::AddDest(s0.clone(), moved),
        Request::DelDest(s0.clone(), d0.clone()),
    ];
    let t = Instant::now();
    let r = c.batch(&change, window).unwrap();
    let one = t.elapsed();
    assert!(r.iter().all(Result::is_ok), "endpoint change failed: {r:?}");
    delete_all(&mut c, &cfg, window);

    // ipvsadm -R of the same configuration.
    let text = ipvsadm_restore_text(&cfg);
    let t = Instant::now();
    let mut child = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .expect("ipvsadm");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let st = child.wait().unwrap();
    let theirs = t.elapsed();
    assert!(st.success(), "ipvsadm -R failed");
    assert_eq!(c.services().unwrap().len(), cfg.len());
    delete_all(&mut c, &cfg, window);

    let ops = reqs.len();
    println!(
        "bench: services={n} destinations={} requests={ops} window={window}",
        n * 5
    );
    println!(
        "bench: ours cold apply {:.3} s ({:.0} requests/s)",
        secs(ours),
        ops as f64 / secs(ours)
    );
    println!(
        "bench: ipvsadm -R cold apply {:.3} s ({:.0} requests/s)",
        secs(theirs),
        ops as f64 / secs(theirs)
    );
    println!(
        "bench: one endpoint change with {n} services present {:.3} ms",
        secs(one) * 1000.0
    );
    println!(
        "bench: ratio ours/ipvsadm = {:.3} (goal <= 0.5)",
        secs(ours) / secs(theirs)
    );
    println!(
        "bench: ratio endpoint change/cold apply = {:.5} (goal < 0.01)",
        secs(one) / secs(ours)
    );
}
