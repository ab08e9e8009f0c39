//! `kpgen`: writes a kube-proxy-layout rule set (iptables-restore input) to stdout.
//!
//! ```text
//! kpgen [--services N] [--endpoints E] [--shape mix|clusterip] [--family 4|6] [--seed S]
//!       [--large-cluster auto|on|off] [--expected FILE]
//! ```
//! `--expected FILE` also writes the inventory the rules describe (JSON service ports),
//! derived from the generated cluster, not from the text.

use std::io::Write;
use std::process::ExitCode;

use ipvsmig_clustergen::{Shape, expected, generate, render};
use ipvsmig_engine::inventory::IpFamily;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kpgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut services = 100u32;
    let mut endpoints = 3u32;
    let mut shape = Shape::Mix;
    let mut family = IpFamily::IPv4;
    let mut seed = 1u64;
    let mut large: Option<bool> = None;
    let mut expected_path: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--services" => services = val()?.parse().map_err(|_| "--services: not a number")?,
            "--endpoints" => endpoints = val()?.parse().map_err(|_| "--endpoints: not a number")?,
            "--seed" => seed = val()?.parse().map_err(|_| "--seed: not a number")?,
            "--shape" => {
                shape = match val()?.as_str() {
                    "mix" => Shape::Mix,
                    "clusterip" => Shape::ClusterIp,
                    s => return Err(format!("--shape {s}: expected mix or clusterip")),
                }
            }
            "--family" => {
                family = match val()?.as_str() {
                    "4" => IpFamily::IPv4,
                    "6" => IpFamily::IPv6,
                    s => return Err(format!("--family {s}: expected 4 or 6")),
                }
            }
            "--large-cluster" => {
                large = match val()?.as_str() {
                    "auto" => None,
                    "on" => Some(true),
                    "off" => Some(false),
                    s => return Err(format!("--large-cluster {s}: expected auto, on or off")),
                }
            }
            "--expected" => expected_path = Some(val()?),
            "-h" | "--help" => {
                println!(
                    "kpgen [--services N] [--endpoints E] [--shape mix|clusterip] [--family 4|6] [--seed S] [--large-cluster auto|on|off] [--expected FILE]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    let mut cluster = generate(family, shape, services, endpoints, seed);
    if let Some(l) = large {
        cluster.node.large_cluster = l;
    }
    let text = render(&cluster);
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(p) = expected_path {
        let v = expected(&cluster);
        let json = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        std::fs::write(&p, json).map_err(|e| format!("{p}: {e}"))?;
    }
    Ok(())
}
