//! Inventory CPU-time probe (docs/benchmarks.md): reads one dump into memory, builds its
//! inventory RUNS times in this process and prints the best and the median CPU time of the
//! thread per run, from `/proc/thread-self/schedstat` (proc(5): time spent on the CPU, in
//! ns). On the shared build machine a run that waits for a core shows in wall time (what
//! criterion measures) but not here, so two builds can be compared side by side while other
//! work runs; cache and page-fault costs other work causes still show.
//!
//! ```text
//! cargo run --release -p ipvsmig-engine --example inventory_cpu -- FILE [RUNS] [--read]
//! ```
//!
//! The dump is given to `inventory_of_bytes` (borrowed, as the criterion bench does), or to
//! the streaming `inventory` with `--read`. It measures only; a bad argument or file is a
//! message on stderr and exit 2.

use std::process::ExitCode;

use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory, inventory_of_bytes};

/// CPU time of the calling thread so far, in ns.
fn cpu_ns() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self/schedstat: unexpected {text:?}"))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read = args.iter().any(|a| a == "--read");
    let mut plain = args.iter().filter(|a| *a != "--read");
    let path = plain
        .next()
        .ok_or("usage: inventory_cpu FILE [RUNS] [--read]")?;
    let runs: usize = match plain.next() {
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("RUNS: {n:?} is not a positive number"))?,
        None => 21,
    };
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let input = DumpInput {
            name: path.clone(),
            family: IpFamily::IPv4,
            source: SourceKind::File { path: path.clone() },
            reader: &text[..],
        };
        let start = cpu_ns()?;
        // The inventory is dropped inside the measured time, as in the criterion bench.
        let ports = if read {
            inventory(vec![input])
        } else {
            inventory_of_bytes(vec![input])
        }
        .map(|inv| inv.service_ports.len())
        .map_err(|e| e.to_string())?;
        times.push(cpu_ns()?.saturating_sub(start));
        std::hint::black_box(ports);
    }
    times.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{} runs of {} ({} MB, {}): best {:.2} ms, median {:.2} ms CPU",
        runs,
        path,
        text.len() / 1_000_000,
        if read { "streamed" } else { "borrowed" },
        ms(times.first().copied().unwrap_or(0)),
        ms(times.get(runs / 2).copied().unwrap_or(0)),
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inventory_cpu: {e}");
            ExitCode::from(2)
        }
    }
}
