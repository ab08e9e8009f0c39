//! Inventory parse benchmark (issue 2): a 20,000-service × 5-endpoint dump in kube-proxy's
//! large-cluster layout (~340k rules, ~35 MB), parsed and resolved including chain-hash
//! verification of every service and endpoint chain. The dump is in memory, so it is read in
//! place (`inventory_of_bytes`), as `plan --verify` reads it; files and pipes stream.
//! Run: `cargo bench -p ipvsmig-tests --bench inventory`. Results and the RSS measurement:
//! docs/benchmarks.md.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory_of_bytes};

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("inventory");
    g.sample_size(20);
    for (name, services, endpoints, shape) in [
        ("20k-svc-x5-clusterip", 20_000, 5, Shape::ClusterIp),
        ("5k-svc-x3-mix", 5_000, 3, Shape::Mix),
    ] {
        let text = render(&generate(IpFamily::IPv4, shape, services, endpoints, 1));
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let inv = inventory_of_bytes(vec![DumpInput {
                    name: "bench".into(),
                    family: IpFamily::IPv4,
                    source: SourceKind::File {
                        path: "bench".into(),
                    },
                    reader: text.as_bytes(),
                }]);
                std::hint::black_box(inv.map(|i| i.service_ports.len()).unwrap_or(0))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
