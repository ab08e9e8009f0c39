//! Plan + diff benchmark (issue 4): from an already parsed 20,000-service × 5-endpoint
//! inventory, build the full IPVS-mode plan and diff it against (a) an empty node — the cold
//! apply — and (b) the same plan with one endpoint changed — the incremental case. Also the
//! hybrid plan for every namespace. Run: `cargo bench -p ipvsmig-tests --bench plan`.
//! Results: docs/benchmarks.md.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use ipvsmig_clustergen::{Shape, generate, render};
use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory};
use ipvsmig_engine::plan::diff::{State, diff};
use ipvsmig_engine::plan::hybrid::{HybridOptions, hybrid};
use ipvsmig_engine::plan::{PlanOptions, full};

fn plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(20);
    for (name, shape) in [
        ("20k-svc-x5-clusterip", Shape::ClusterIp),
        ("20k-svc-x5-mix", Shape::Mix),
    ] {
        let text = render(&generate(IpFamily::IPv4, shape, 20_000, 5, 1));
        let inv = inventory(vec![DumpInput {
            name: "bench".into(),
            family: IpFamily::IPv4,
            source: SourceKind::File {
                path: "bench".into(),
            },
            reader: text.as_bytes(),
        }])
        .unwrap();
        let opts = PlanOptions {
            scheduler: String::new(),
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        };
        let empty = State::default();
        // The plan, the desired state and the ops are the outputs: returned, so that freeing
        // them (the agent keeps them) is not timed (`iter_with_large_drop`).
        g.bench_function(format!("{name}/full+diff-cold"), |b| {
            b.iter_with_large_drop(|| {
                let p = full(&inv, &opts);
                let st = State::from_plan(&p);
                let (ops, conflicts) = diff(&empty, &st);
                (p, st, ops, conflicts)
            })
        });
        // The observed state: the plan applied, then one endpoint changes in the dump.
        let applied = State::from_plan(&full(&inv, &opts));
        let mut inv2 = inv.clone();
        let sp = inv2
            .service_ports
            .iter_mut()
            .find(|s| !s.endpoints.is_empty())
            .unwrap();
        sp.endpoints[0].port = sp.endpoints[0].port.wrapping_add(1);
        g.bench_function(format!("{name}/full+diff-one-endpoint"), |b| {
            b.iter_with_large_drop(|| {
                let p = full(&inv2, &opts);
                let st = State::from_plan(&p);
                let (ops, _) = diff(&applied, &st);
                assert_eq!(ops.len(), 2, "one destination out, one in");
                (p, st, ops)
            })
        });
        let namespaces: Vec<String> = inv.namespaces().into_iter().map(str::to_owned).collect();
        let p = full(&inv, &opts);
        g.bench_function(format!("{name}/hybrid-all-namespaces"), |b| {
            b.iter(|| {
                let h = hybrid(
                    &inv,
                    &p,
                    &opts,
                    &HybridOptions {
                        namespaces: namespaces.clone(),
                        ..Default::default()
                    },
                );
                std::hint::black_box(h.virtual_servers.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
