//! A blocking client on one NETLINK_GENERIC socket. Requests are acknowledged one at a time
//! here; pipelining many requests per round trip comes with the kernel layer (issue 5).

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

use crate::codec::*;

/// IPVS client errors, from the kernel's errno where there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpvsError {
    /// The generic netlink family "IPVS" does not exist: the kernel has no (loaded) ip_vs.
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found; is ip_vs loaded or built in?)"
    )]
    NoIpvs,
    /// The object already exists (EEXIST).
    #[error("already exists")]
    Exists,
    /// No such object or scheduler (ENOENT / ESRCH).
    #[error("not found (no such service, destination or scheduler)")]
    NotFound,
    /// Not permitted (EPERM / EACCES): CAP_NET_ADMIN is needed.
    #[error("permission denied (needs CAP_NET_ADMIN)")]
    Permission,
    /// Another errno.
    #[error("kernel error {0}")]
    Errno(i32),
    /// Socket I/O.
    #[error("netlink socket: {0}")]
    Io(String),
    /// A reply that does not parse.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
}

fn errno(e: i32) -> IpvsError {
    match e {
        17 => IpvsError::Exists,
        2 | 3 => IpvsError::NotFound,
        1 | 13 => IpvsError::Permission,
        _ => IpvsError::Errno(e),
    }
}

/// A connected client with the resolved family id.
pub struct Client {
    socket: Socket,
    family: u16,
    seq: u32,
    rx_buf: usize,
}

/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`, doubled).
const RX_BUF_WANTED: usize = 8 << 20;
/// Receive-buffer cost of one acknowledgement, generously rounded.
const ACK_TRUESIZE: usize = 1024;

impl Client {
    /// Opens a socket and resolves the IPVS family.
    pub fn open() -> Result<Client, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(|e| IpvsError::Io(e.to_string()))?;
        socket
            .bind_auto()
            .map_err(|e| IpvsError::Io(e.to_string()))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| IpvsError::Io(e.to_string()))?;
        // Pipelined acknowledgements all queue before we read them (the kernel handles a
        // datagram's messages synchronously), so ask for a large receive buffer and small
        // acknowledgements; `batch` sizes its window to what the kernel granted.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_rx_buf_sz(RX_BUF_WANTED);
        let rx_buf = socket.get_rx_buf_sz().unwrap_or(212_992);
        let mut c = Client {
            socket,
            family: 0,
            seq: 1,
            rx_buf,
        };
        let mut name = IPVS_GENL_NAME.as_bytes().to_vec();
        name.push(0);
        let mut a = Vec::new();
        put_attr(&mut a, CTRL_ATTR_FAMILY_NAME, &name);
        let replies = c
            .request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, &a, false)
            .map_err(|e| match e {
                IpvsError::NotFound => IpvsError::NoIpvs,
                e => e,
            })?;
        for payload in replies {
            let body = payload
                .get(4..)
                .ok_or_else(|| IpvsError::Malformed("short genl header".into()))?;
            for (ty, v) in attrs(body).map_err(IpvsError::Malformed)? {
                if ty == CTRL_ATTR_FAMILY_ID && v.len() >= 2 {
                    c.family = u16::from_ne_bytes([v[0], v[1]]);
                }
            }
        }
        if c.family == 0 {
            return Err(IpvsError::NoIpvs);
        }
        Ok(c)
    }

    /// Sends one request and collects the payloads of its replies (genl header included);
    /// an acknowledgement with errno 0 ends it.
    fn request(
        &mut self,
        family: u16,
        cmd: u8,
        version: u8,
        attrs: &[u8],
        dump: bool,
    ) -> Result<Vec<Vec<u8>>, IpvsError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let msg = message(family, flags, seq, cmd, version, attrs);
        self.socket
            .send(&msg, 0)
            .map_err(|e| IpvsError::Io(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| IpvsError::Io(e.to_string()))?;
            for (ty, _flags, rseq, payload) in messages(&buf).map_err(IpvsError::Malformed)? {
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| IpvsError::Malformed("short error".into()))?;
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(errno(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push(payload.to_vec()),
                }
            }
        }
    }

    fn top_level_u32s(&mut self, cmd: u8) -> Result<Vec<(u16, u32)>, IpvsError> {
        let replies = self.request(self.family, cmd, IPVS_GENL_VERSION, &[], false)?;
        let mut out = Vec::new();
        for payload in replies {
            let body = payload
                .get(4..)
                .ok_or_else(|| IpvsError::Malformed("short genl header".into()))?;
            for (ty, v) in attrs(body).map_err(IpvsError::Malformed)? {
                if let Some(b) = v.get(..4) {
                    out.push((ty, u32::from_ne_bytes([b[0], b[1], b[2], b[3]])));
                }
            }
        }
        Ok(out)
    }

    /// `IPVS_CMD_GET_INFO`: (IPVS version as 0x00MMmmpp, connection table size).
    pub fn info(&mut self) -> Result<(u32, u32), IpvsError> {
        let a = self.top_level_u32s(IPVS_CMD_GET_INFO)?;
        let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
        match (
            get(IPVS_INFO_ATTR_VERSION),
            get(IPVS_INFO_ATTR_CONN_TAB_SIZE),
        ) {
            (Some(v), Some(s)) => Ok((v, s)),
            _ => Err(IpvsError::Malformed(
                "GET_INFO reply without version or table size".into(),
            )),
        }
    }

    /// `IPVS_CMD_GET_CONFIG`: the connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let a = self.top_level_u32s(IPVS_CMD_GET_CONFIG)?;
        let get = |t: u16| {
            a.iter()
                .find(|(ty, _)| *ty == t)
                .map(|(_, v)| *v)
                .unwrap_or(0)
        };
        Ok(Timeouts {
            tcp: get(IPVS_CMD_ATTR_TIMEOUT_TCP),
            tcp_fin: get(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN),
            udp: get(IPVS_CMD_ATTR_TIMEOUT_UDP),
        })
    }

    /// `IPVS_CMD_SET_CONFIG`: sets the connection timeouts (0 leaves one unchanged).
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), IpvsError> {
        let mut a = Vec::new();
        put_attr(&mut a, IPVS_CMD_ATTR_TIMEOUT_TCP, &t.tcp.to_ne_bytes());
        put_attr(
            &mut a,
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            &t.tcp_fin.to_ne_bytes(),
        );
        put_attr(&mut a, IPVS_CMD_ATTR_TIMEOUT_UDP, &t.udp.to_ne_bytes());
        self.request(
            self.family,
            IPVS_CMD_SET_CONFIG,
            IPVS_GENL_VERSION,
            &a,
            false,
        )
        .map(|_| ())
    }

    /// Sends `requests` pipelined — up to `window` in flight before their acknowledgements are
    /// read — instead of one round trip each. Returns one result per request, in order. The
    /// kernel handles every request it was sent, so a failure does not stop the others in its
    /// window; callers that must stop at the first failure use a window of 1.
    pub fn batch(
        &mut self,
        requests: &[Request],
        window: usize,
    ) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        // An acknowledgement occupies about 1 KiB of receive buffer (skb overhead included);
        // a window larger than the buffer holds would lose acknowledgements (ENOBUFS).
        let window = window.clamp(1, (self.rx_buf / ACK_TRUESIZE).max(1));
        let mut results = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(window) {
            let first_seq = self.seq.wrapping_add(1);
            let mut buf = Vec::with_capacity(chunk.len() * 128);
            for r in chunk {
                self.seq = self.seq.wrapping_add(1);
                let (cmd, attrs) = r.encode();
                buf.extend_from_slice(&message(
                    self.family,
                    NLM_F_REQUEST | NLM_F_ACK,
                    self.seq,
                    cmd,
                    IPVS_GENL_VERSION,
                    &attrs,
                ));
            }
            // Several messages in one datagram: netlink processes them in order.
            self.socket
                .send(&buf, 0)
                .map_err(|e| IpvsError::Io(e.to_string()))?;
            let mut acks: Vec<Option<Result<(), IpvsError>>> =
                (0..chunk.len()).map(|_| None).collect();
            let mut pending = chunk.len();
            while pending > 0 {
                let (reply, _) = self
                    .socket
                    .recv_from_full()
                    .map_err(|e| IpvsError::Io(e.to_string()))?;
                for (ty, _flags, rseq, payload) in messages(&reply).map_err(IpvsError::Malformed)? {
                    if ty != NLMSG_ERROR {
                        continue;
                    }
                    let idx = rseq.wrapping_sub(first_seq) as usize;
                    let Some(slot) = acks.get_mut(idx) else {
                        continue;
                    };
                    if slot.is_some() {
                        continue;
                    }
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or_else(|| IpvsError::Malformed("short error".into()))?;
                    *slot = Some(if code == 0 { Ok(()) } else { Err(errno(-code)) });
                    pending -= 1;
                }
            }
            results.extend(
                acks.into_iter().map(|a| {
                    a.unwrap_or(Err(IpvsError::Malformed("missing acknowledgement".into())))
                }),
            );
        }
        Ok(results)
    }

    /// `IPVS_CMD_NEW_SERVICE`.
    pub fn add_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        let a = service_attrs(svc, true);
        self.request(
            self.family,
            IPVS_CMD_NEW_SERVICE,
            IPVS_GENL_VERSION,
            &a,
            false,
        )
        .map(|_| ())
    }

    /// `IPVS_CMD_GET_SERVICE` for one key: the scheduler the kernel holds, if the service exists.
    pub fn get_service_scheduler(&mut self, svc: &Service) -> Result<Option<String>, IpvsError> {
        let a = service_attrs(svc, false);
        let replies = match self.request(
            self.family,
            IPVS_CMD_GET_SERVICE,
            IPVS_GENL_VERSION,
            &a,
            false,
        ) {
            Ok(r) => r,
            Err(IpvsError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        for payload in replies {
            let body = payload
                .get(4..)
                .ok_or_else(|| IpvsError::Malformed("short genl header".into()))?;
            for (ty, nested) in attrs(body).map_err(IpvsError::Malformed)? {
                if ty != IPVS_CMD_ATTR_SERVICE {
                    continue;
                }
                for (t, v) in attrs(nested).map_err(IpvsError::Malformed)? {
                    if t == IPVS_SVC_ATTR_SCHED_NAME {
                        let name = v.split(|b| *b == 0).next().unwrap_or(&[]);
                        return Ok(Some(String::from_utf8_lossy(name).into_owned()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// `IPVS_CMD_SET_SERVICE` (scheduler, flags, timeout, netmask of an existing service).
    pub fn edit_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        let a = service_attrs(svc, true);
        self.request(
            self.family,
            IPVS_CMD_SET_SERVICE,
            IPVS_GENL_VERSION,
            &a,
            false,
        )
        .map(|_| ())
    }

    /// Every virtual service in this network namespace (`IPVS_CMD_GET_SERVICE`, dump).
    pub fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        // An empty nested service attribute, as moby/ipvs sends it (the dump ignores its content).
        let mut a = Vec::new();
        put_nested(&mut a, IPVS_CMD_ATTR_SERVICE, |_| {});
        let replies = self.request(
            self.family,
            IPVS_CMD_GET_SERVICE,
            IPVS_GENL_VERSION,
            &a,
            true,
        )?;
        let mut out = Vec::new();
        for payload in replies {
            let body = payload
                .get(4..)
                .ok_or_else(|| IpvsError::Malformed("short genl header".into()))?;
            for (ty, nested) in attrs(body).map_err(IpvsError::Malformed)? {
                if ty == IPVS_CMD_ATTR_SERVICE {
                    out.push(parse_service(nested).map_err(IpvsError::Malformed)?);
                }
            }
        }
        Ok(out)
    }

    /// The destinations of one service (`IPVS_CMD_GET_DEST`, dump).
    pub fn dests(&mut self, svc: &Service) -> Result<Vec<Dest>, IpvsError> {
        Ok(self
            .dests_with_connections(svc)?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// The destinations of `svc` with their active + inactive connection counts, sorted.
    pub fn dests_with_connections(&mut self, svc: &Service) -> Result<Vec<(Dest, u64)>, IpvsError> {
        let a = service_attrs(svc, false);
        let replies = self.request(self.family, IPVS_CMD_GET_DEST, IPVS_GENL_VERSION, &a, true)?;
        let af = if svc.address.is_ipv4() { 2 } else { 10 };
        let mut out = Vec::new();
        for payload in replies {
            let body = payload
                .get(4..)
                .ok_or_else(|| IpvsError::Malformed("short genl header".into()))?;
            for (ty, nested) in attrs(body).map_err(IpvsError::Malformed)? {
                if ty == IPVS_CMD_ATTR_DEST {
                    out.push((
                        parse_dest(nested, af).map_err(IpvsError::Malformed)?,
                        dest_connections(nested).map_err(IpvsError::Malformed)?,
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn dest_request(
        &mut self,
        cmd: u8,
        svc: &Service,
        d: &Dest,
        full: bool,
    ) -> Result<(), IpvsError> {
        let mut a = service_attrs(svc, false);
        a.extend(dest_attrs(d, full));
        self.request(self.family, cmd, IPVS_GENL_VERSION, &a, false)
            .map(|_| ())
    }

    /// `IPVS_CMD_NEW_DEST`.
    pub fn add_dest(&mut self, svc: &Service, d: &Dest) -> Result<(), IpvsError> {
        self.dest_request(IPVS_CMD_NEW_DEST, svc, d, true)
    }

    /// `IPVS_CMD_SET_DEST` (weight).
    pub fn edit_dest(&mut self, svc: &Service, d: &Dest) -> Result<(), IpvsError> {
        self.dest_request(IPVS_CMD_SET_DEST, svc, d, true)
    }

    /// `IPVS_CMD_DEL_DEST`.
    pub fn del_dest(&mut self, svc: &Service, d: &Dest) -> Result<(), IpvsError> {
        self.dest_request(IPVS_CMD_DEL_DEST, svc, d, false)
    }

    /// `IPVS_CMD_DEL_SERVICE`.
    pub fn del_service(&mut self, svc: &Service) -> Result<(), IpvsError> {
        let a = service_attrs(svc, false);
        self.request(
            self.family,
            IPVS_CMD_DEL_SERVICE,
            IPVS_GENL_VERSION,
            &a,
            false,
        )
        .map(|_| ())
    }
}

/// One request of a [`Client::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Add a virtual service.
    AddService(Service),
    /// Delete a virtual service.
    DelService(Service),
    /// Change a virtual service's scheduler, flags, timeout or netmask.
    EditService(Service),
    /// Add a destination to a service.
    AddDest(Service, Dest),
    /// Change a destination (weight).
    EditDest(Service, Dest),
    /// Delete a destination.
    DelDest(Service, Dest),
}

impl Request {
    fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Request::AddService(s) => (IPVS_CMD_NEW_SERVICE, service_attrs(s, true)),
            Request::DelService(s) => (IPVS_CMD_DEL_SERVICE, service_attrs(s, false)),
            Request::EditService(s) => (IPVS_CMD_SET_SERVICE, service_attrs(s, true)),
            Request::AddDest(s, d) | Request::EditDest(s, d) | Request::DelDest(s, d) => {
                let (cmd, full) = match self {
                    Request::AddDest(..) => (IPVS_CMD_NEW_DEST, true),
                    Request::EditDest(..) => (IPVS_CMD_SET_DEST, true),
                    _ => (IPVS_CMD_DEL_DEST, false),
                };
                let mut a = service_attrs(s, false);
                a.extend(dest_attrs(d, full));
                (cmd, a)
            }
        }
    }
}

/// kube-proxy's `CanUseIPVSProxier` probe: create a throw-away virtual server
/// 198.51.100.0:20000/TCP (TEST-NET-2) with the scheduler, read it back, delete it. An
/// existing one is not ours and is left alone.
pub fn probe(scheduler: &str) -> Result<String, IpvsError> {
    let mut c = Client::open()?;
    let svc = Service {
        address: std::net::IpAddr::from([198, 51, 100, 0]),
        protocol: 6,
        port: 20000,
        scheduler: if scheduler.is_empty() {
            "rr".into()
        } else {
            scheduler.to_owned()
        },
        flags: 0,
        timeout: 0,
        netmask: 0xffff_ffff,
    };
    match c.add_service(&svc) {
        Ok(()) => {}
        Err(IpvsError::Exists) => {
            return Ok("198.51.100.0:20000/TCP already exists (not created by ipvs-migrate; left alone): IPVS works".into());
        }
        Err(e) => return Err(e),
    }
    let read = c.get_service_scheduler(&svc);
    let deleted = c.del_service(&svc);
    let got = read?;
    deleted?;
    match got {
        Some(s) if s == svc.scheduler => Ok(format!(
            "created, read back (scheduler {s}) and deleted 198.51.100.0:20000/TCP"
        )),
        Some(s) => Err(IpvsError::Malformed(format!(
            "read back scheduler {s}, asked for {}",
            svc.scheduler
        ))),
        None => Err(IpvsError::Malformed(
            "the probe virtual server was not there after creation".into(),
        )),
    }
}
