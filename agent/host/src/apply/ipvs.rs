//! The IPVS side of the interpreter: a small interface over the netlink client, and a fake
//! that behaves like the kernel (Exists / NotFound) for unit tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvsmig_engine::inventory::Protocol;
use ipvsmig_engine::plan::diff::VsKey;
use ipvsmig_ipvs::codec::{Dest, Service};
use ipvsmig_ipvs::{Client, IpvsError, Request};

/// Window of pipelined requests (the client shrinks it to its receive buffer).
pub const WINDOW: usize = 256;

/// What the interpreter needs of IPVS.
pub trait IpvsOps {
    /// Every virtual service in the kernel (one dump), without destinations.
    fn services(&mut self) -> Result<Vec<Service>, IpvsError>;
    /// The destinations of one service.
    fn dests(&mut self, svc: &Service) -> Result<Vec<Dest>, IpvsError>;
    /// Pipelined requests; one result per request, in order.
    fn batch(&mut self, reqs: &[Request]) -> Result<Vec<Result<(), IpvsError>>, IpvsError>;
    /// The destinations of one service with their active + inactive connection counts.
    fn dest_connections(&mut self, svc: &Service) -> Result<Vec<(Dest, u64)>, IpvsError>;
}

impl IpvsOps for Client {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        Client::services(self)
    }
    fn dests(&mut self, svc: &Service) -> Result<Vec<Dest>, IpvsError> {
        Client::dests(self, svc)
    }
    fn batch(&mut self, reqs: &[Request]) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        Client::batch(self, reqs, WINDOW)
    }
    fn dest_connections(&mut self, svc: &Service) -> Result<Vec<(Dest, u64)>, IpvsError> {
        Client::dests_with_connections(self, svc)
    }
}

/// A kernel without IPVS (ip_vs not loaded): nothing to read, nothing can be changed. Lets a
/// rollback that owns no virtual server run anyway.
#[derive(Debug, Default)]
pub struct NoIpvs;

impl IpvsOps for NoIpvs {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        Ok(Vec::new())
    }
    fn dests(&mut self, _: &Service) -> Result<Vec<Dest>, IpvsError> {
        Ok(Vec::new())
    }
    fn batch(&mut self, _: &[Request]) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        Err(IpvsError::NoIpvs)
    }
    fn dest_connections(&mut self, _: &Service) -> Result<Vec<(Dest, u64)>, IpvsError> {
        Ok(Vec::new())
    }
}

/// IPPROTO number of a protocol.
pub fn proto_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The protocol of an IPPROTO number, if kube-proxy uses it.
pub fn protocol_of(n: u16) -> Option<Protocol> {
    match n {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// The kernel key of a service.
pub fn key_of(s: &Service) -> Option<VsKey> {
    Some((protocol_of(s.protocol)?, s.address, s.port))
}

/// A service as the client sends it; only the key matters for deletes.
pub fn service(key: &VsKey, scheduler: &str, flags: u32, timeout: u32, netmask: u32) -> Service {
    Service {
        address: key.1,
        protocol: proto_number(key.0),
        port: key.2,
        scheduler: scheduler.to_owned(),
        flags,
        timeout,
        netmask,
    }
}

/// A NAT destination.
pub fn dest(address: IpAddr, port: u16, weight: u32) -> Dest {
    Dest {
        address,
        port,
        weight,
        fwd: 0,
    }
}

/// A fake service's key: (protocol number, address, port).
pub type FakeKey = (u16, IpAddr, u16);

/// A fake service: its attributes and destinations by (address, port).
pub type FakeService = (Service, BTreeMap<(IpAddr, u16), Dest>);

/// An in-memory IPVS table with the kernel's answers, recording every request.
#[derive(Debug, Default)]
pub struct RecordingIpvs {
    /// Services and their destinations.
    pub table: BTreeMap<(u16, IpAddr, u16), FakeService>,
    /// Every request, in order.
    pub requests: Vec<Request>,
    /// Fail (with `Errno(12)`, ENOMEM) the request with this index in `requests`.
    pub fail_at: Option<usize>,
    /// Connections per destination (service key, destination): what the kernel would count.
    pub connections: BTreeMap<(FakeKey, (IpAddr, u16)), u64>,
}

impl RecordingIpvs {
    /// With a foreign service already present.
    pub fn with_service(mut self, s: Service, dests: &[Dest]) -> RecordingIpvs {
        self.table.insert(
            (s.protocol, s.address, s.port),
            (
                s,
                dests
                    .iter()
                    .map(|d| ((d.address, d.port), d.clone()))
                    .collect(),
            ),
        );
        self
    }

    fn one(&mut self, r: &Request) -> Result<(), IpvsError> {
        let k = |s: &Service| (s.protocol, s.address, s.port);
        match r {
            Request::AddService(s) => {
                if self.table.contains_key(&k(s)) {
                    return Err(IpvsError::Exists);
                }
                self.table.insert(k(s), (s.clone(), BTreeMap::new()));
            }
            Request::DelService(s) => {
                self.table.remove(&k(s)).ok_or(IpvsError::NotFound)?;
            }
            Request::EditService(s) => {
                let e = self.table.get_mut(&k(s)).ok_or(IpvsError::NotFound)?;
                e.0 = s.clone();
            }
            Request::AddDest(s, d) | Request::EditDest(s, d) => {
                let (_, ds) = self.table.get_mut(&k(s)).ok_or(IpvsError::NotFound)?;
                let add = matches!(r, Request::AddDest(..));
                match (add, ds.contains_key(&(d.address, d.port))) {
                    (true, true) => return Err(IpvsError::Exists),
                    (false, false) => return Err(IpvsError::NotFound),
                    _ => {}
                }
                ds.insert((d.address, d.port), d.clone());
            }
            Request::DelDest(s, d) => {
                let (_, ds) = self.table.get_mut(&k(s)).ok_or(IpvsError::NotFound)?;
                ds.remove(&(d.address, d.port)).ok_or(IpvsError::NotFound)?;
            }
        }
        Ok(())
    }
}

impl IpvsOps for RecordingIpvs {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        Ok(self.table.values().map(|(s, _)| s.clone()).collect())
    }
    fn dests(&mut self, svc: &Service) -> Result<Vec<Dest>, IpvsError> {
        self.table
            .get(&(svc.protocol, svc.address, svc.port))
            .map(|(_, ds)| ds.values().cloned().collect())
            .ok_or(IpvsError::NotFound)
    }
    fn dest_connections(&mut self, svc: &Service) -> Result<Vec<(Dest, u64)>, IpvsError> {
        let k = (svc.protocol, svc.address, svc.port);
        Ok(self
            .dests(svc)?
            .into_iter()
            .map(|d| {
                let n = self
                    .connections
                    .get(&(k, (d.address, d.port)))
                    .copied()
                    .unwrap_or(0);
                (d, n)
            })
            .collect())
    }
    fn batch(&mut self, reqs: &[Request]) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            let idx = self.requests.len();
            self.requests.push(r.clone());
            if self.fail_at == Some(idx) {
                out.push(Err(IpvsError::Errno(12)));
                continue;
            }
            out.push(self.one(r));
        }
        Ok(out)
    }
}
