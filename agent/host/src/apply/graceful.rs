//! kube-proxy-like graceful removal of real servers (kube-proxy's pkg/proxy/ipvs
//! graceful_termination.go): when an endpoint leaves a TCP or SCTP virtual server, its real
//! server first gets weight 0 — no new connections are scheduled to it, established ones keep
//! flowing — and it is deleted once the kernel counts no active or inactive connection on it
//! (a later pass sees the count drop). UDP real servers have no connection state worth waiting
//! for and go at once, as do the real servers of a virtual server that is deleted itself.
//! The only I/O is one destination dump per virtual server with a weight-0 leaver.

use std::collections::{BTreeMap, BTreeSet};

use ipvsmig_engine::inventory::Protocol;
use ipvsmig_engine::plan::diff::{DestKey, Op, State, VsKey};
use ipvsmig_ipvs::IpvsError;

use super::ipvs::{self, IpvsOps};

/// What softening did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Softened {
    /// The ops to run.
    pub ops: Vec<Op>,
    /// Real servers kept at weight 0 because connections remain (or just set to 0).
    pub terminating: usize,
}

/// Rewrites the `DelDest` ops of `ops` as graceful removals against `observed` (the weights we
/// last set) and the kernel's connection counts.
pub fn soften(
    ops: Vec<Op>,
    observed: &State,
    kernel: &mut dyn IpvsOps,
) -> Result<Softened, IpvsError> {
    let deleted: BTreeSet<VsKey> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DelService { service } => Some(*service),
            _ => None,
        })
        .collect();
    let mut counts: BTreeMap<VsKey, BTreeMap<DestKey, u64>> = BTreeMap::new();
    let mut out = Softened::default();
    for op in ops {
        let Op::DelDest { service, dest } = &op else {
            out.ops.push(op);
            continue;
        };
        if service.0 == Protocol::Udp || deleted.contains(service) {
            out.ops.push(op);
            continue;
        }
        let weight = observed
            .services
            .get(service)
            .and_then(|v| v.dests.get(dest))
            .copied()
            .unwrap_or(0);
        if weight > 0 {
            out.terminating += 1;
            out.ops.push(Op::EditDest {
                service: *service,
                dest: *dest,
                weight: 0,
            });
            continue;
        }
        if !counts.contains_key(service) {
            let svc = ipvs::service(service, "rr", 0, 0, 0);
            let per_dest = kernel
                .dest_connections(&svc)?
                .into_iter()
                .map(|(d, n)| ((d.address, d.port), n))
                .collect();
            counts.insert(*service, per_dest);
        }
        let live = counts
            .get(service)
            .and_then(|m| m.get(dest))
            .copied()
            .unwrap_or(0);
        if live > 0 {
            out.terminating += 1;
        } else {
            out.ops.push(op);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipvsmig_engine::plan::diff::{Owner, VsState};

    use super::super::ipvs::{RecordingIpvs, dest, proto_number, service};
    use super::*;

    fn key(p: Protocol) -> VsKey {
        (p, "10.96.0.10".parse().unwrap(), 80)
    }
    fn ep(last: u8) -> DestKey {
        (IpAddr::from([10, 244, 0, last]), 8080)
    }

    /// A kernel holding `svc` with two destinations, `ep(1)` at `w1` with `conns` connections.
    fn kernel(p: Protocol, w1: u32, conns: u64) -> (RecordingIpvs, State) {
        let k = key(p);
        let svc = service(&k, "rr", 0, 0, 0);
        let mut fake = RecordingIpvs::default().with_service(
            svc.clone(),
            &[dest(ep(1).0, 8080, w1), dest(ep(2).0, 8080, 1)],
        );
        fake.connections
            .insert(((proto_number(p), k.1, k.2), (ep(1).0, 8080)), conns);
        let mut st = State::default();
        st.services.insert(
            k,
            VsState {
                scheduler: "rr".into(),
                flags: 0,
                timeout: 0,
                netmask: 0xffff_ffff,
                dests: [(ep(1), w1), (ep(2), 1)].into_iter().collect(),
                owner: Owner::Us,
            },
        );
        (fake, st)
    }

    fn del(p: Protocol) -> Op {
        Op::DelDest {
            service: key(p),
            dest: ep(1),
        }
    }

    #[test]
    fn a_tcp_endpoint_leaving_first_gets_weight_zero_and_goes_when_its_connections_end() {
        let (mut k, st) = kernel(Protocol::Tcp, 1, 5);
        let s = soften(vec![del(Protocol::Tcp)], &st, &mut k).unwrap();
        assert_eq!(
            s.ops,
            [Op::EditDest {
                service: key(Protocol::Tcp),
                dest: ep(1),
                weight: 0
            }]
        );
        assert_eq!(s.terminating, 1);
        // At weight 0 with connections left: nothing to do yet.
        let (mut k, st) = kernel(Protocol::Tcp, 0, 5);
        let s = soften(vec![del(Protocol::Tcp)], &st, &mut k).unwrap();
        assert!(s.ops.is_empty());
        assert_eq!(s.terminating, 1);
        // Connections gone: deleted.
        let (mut k, st) = kernel(Protocol::Tcp, 0, 0);
        let s = soften(vec![del(Protocol::Tcp)], &st, &mut k).unwrap();
        assert_eq!(s.ops, [del(Protocol::Tcp)]);
        assert_eq!(s.terminating, 0);
    }

    #[test]
    fn udp_endpoints_and_the_real_servers_of_a_deleted_service_go_at_once() {
        let (mut k, st) = kernel(Protocol::Udp, 1, 5);
        let s = soften(vec![del(Protocol::Udp)], &st, &mut k).unwrap();
        assert_eq!(s.ops, [del(Protocol::Udp)]);
        let (mut k, st) = kernel(Protocol::Tcp, 1, 5);
        let ops = vec![
            del(Protocol::Tcp),
            Op::DelService {
                service: key(Protocol::Tcp),
            },
        ];
        let s = soften(ops.clone(), &st, &mut k).unwrap();
        assert_eq!(s.ops, ops);
        // Other ops pass through untouched, and no dump was needed.
        assert!(k.requests.is_empty());
    }
}
