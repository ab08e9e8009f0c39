//! Message layout (netlink(7), genetlink, include/uapi/linux/ip_vs.h): `nlmsghdr` (16 bytes:
//! len u32, type u16, flags u16, seq u32, pid u32, native endian), `genlmsghdr` (cmd u8,
//! version u8, reserved u16), then attributes (`nlattr`: len u16, type u16, payload, padded
//! to 4 bytes; nested attributes carry NLA_F_NESTED).

use std::net::IpAddr;

/// `GENL_ID_CTRL`.
pub const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID`.
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME`.
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 0x8000;

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;
/// `IPVS_CMD_NEW_SERVICE`.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// `IPVS_CMD_DEL_SERVICE`.
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// `IPVS_CMD_GET_SERVICE`.
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// `IPVS_CMD_SET_SERVICE`.
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// `IPVS_CMD_NEW_DEST`.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// `IPVS_CMD_SET_DEST`.
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// `IPVS_CMD_DEL_DEST`.
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// `IPVS_CMD_GET_DEST`.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// `IPVS_CMD_ATTR_DEST`.
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
/// `IPVS_DEST_ATTR_ADDR`.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// `IPVS_DEST_ATTR_PORT`.
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
/// `IPVS_DEST_ATTR_FWD_METHOD`.
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// `IPVS_DEST_ATTR_WEIGHT`.
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// `IPVS_DEST_ATTR_U_THRESH`.
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// `IPVS_DEST_ATTR_L_THRESH`.
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// `IPVS_DEST_ATTR_ACTIVE_CONNS` (dump only).
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
/// `IPVS_DEST_ATTR_INACT_CONNS` (dump only).
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// `NLM_F_DUMP` (NLM_F_ROOT | NLM_F_MATCH).
pub const NLM_F_DUMP: u16 = 0x300;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service it returns.
pub const IP_VS_SVC_F_HASHED: u32 = 0x2;
/// `IP_VS_CONN_F_MASQ`: NAT forwarding.
pub const IP_VS_CONN_F_MASQ: u32 = 0;

/// `IPVS_CMD_SET_CONFIG`.
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
/// `IPVS_CMD_GET_CONFIG`.
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// `IPVS_CMD_GET_INFO`.
pub const IPVS_CMD_GET_INFO: u8 = 15;
/// `IPVS_CMD_ATTR_TIMEOUT_TCP`.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
/// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
/// `IPVS_CMD_ATTR_TIMEOUT_UDP`.
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;
/// `IPVS_INFO_ATTR_VERSION`.
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
/// `IPVS_INFO_ATTR_CONN_TAB_SIZE`.
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// IPVS connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`; 0 keeps a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// `IPVS_CMD_ATTR_SERVICE`.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// `IPVS_SVC_ATTR_AF`.
pub const IPVS_SVC_ATTR_AF: u16 = 1;
/// `IPVS_SVC_ATTR_PROTOCOL`.
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// `IPVS_SVC_ATTR_ADDR`.
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// `IPVS_SVC_ATTR_PORT`.
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
/// `IPVS_SVC_ATTR_SCHED_NAME`.
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// `IPVS_SVC_ATTR_FLAGS`.
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// `IPVS_SVC_ATTR_TIMEOUT`.
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// `IPVS_SVC_ATTR_NETMASK`.
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;

/// A virtual service as the kernel identifies and configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Address (AF_INET or AF_INET6 follows from it).
    pub address: IpAddr,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17), IPPROTO_SCTP (132).
    pub protocol: u16,
    /// Port.
    pub port: u16,
    /// Scheduler name.
    pub scheduler: String,
    /// Flags (IP_VS_SVC_F_*).
    pub flags: u32,
    /// Persistence timeout.
    pub timeout: u32,
    /// Netmask (0xffffffff for IPv4, 128 for IPv6).
    pub netmask: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute.
pub fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

/// Appends a nested attribute built by `f`.
pub fn put_nested(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A whole request: nlmsghdr + genlmsghdr + attributes.
pub fn message(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&family.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[cmd, version, 0, 0]);
    b.extend_from_slice(attrs);
    b
}

/// The nested `IPVS_CMD_ATTR_SERVICE` for `svc` (all of it for NEW, the key only otherwise).
pub fn service_attrs(svc: &Service, full: bool) -> Vec<u8> {
    let mut b = Vec::new();
    put_nested(&mut b, IPVS_CMD_ATTR_SERVICE, |b| {
        let (af, addr) = addr_bytes(&svc.address);
        put_attr(b, IPVS_SVC_ATTR_AF, &af.to_ne_bytes());
        put_attr(b, IPVS_SVC_ATTR_PROTOCOL, &svc.protocol.to_ne_bytes());
        put_attr(b, IPVS_SVC_ATTR_ADDR, &addr);
        put_attr(b, IPVS_SVC_ATTR_PORT, &svc.port.to_be_bytes());
        if full {
            let mut name = svc.scheduler.as_bytes().to_vec();
            name.push(0);
            put_attr(b, IPVS_SVC_ATTR_SCHED_NAME, &name);
            let mut flags = svc.flags.to_ne_bytes().to_vec();
            flags.extend_from_slice(&u32::MAX.to_ne_bytes());
            put_attr(b, IPVS_SVC_ATTR_FLAGS, &flags);
            put_attr(b, IPVS_SVC_ATTR_TIMEOUT, &svc.timeout.to_ne_bytes());
            put_attr(b, IPVS_SVC_ATTR_NETMASK, &svc.netmask.to_ne_bytes());
        }
    });
    b
}

/// A real server (destination).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dest {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Forwarding method (0: masquerade/NAT).
    pub fwd: u32,
}

fn addr_bytes(ip: &IpAddr) -> (u16, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            (2, a)
        }
        IpAddr::V6(v6) => (10, v6.octets()),
    }
}

/// The nested `IPVS_CMD_ATTR_DEST` for `d` (all of it, or the key only).
pub fn dest_attrs(d: &Dest, full: bool) -> Vec<u8> {
    let mut b = Vec::new();
    put_nested(&mut b, IPVS_CMD_ATTR_DEST, |b| {
        let (af, addr) = addr_bytes(&d.address);
        put_attr(b, IPVS_DEST_ATTR_ADDR, &addr);
        put_attr(b, IPVS_DEST_ATTR_PORT, &d.port.to_be_bytes());
        put_attr(b, IPVS_DEST_ATTR_ADDR_FAMILY, &af.to_ne_bytes());
        if full {
            put_attr(b, IPVS_DEST_ATTR_FWD_METHOD, &d.fwd.to_ne_bytes());
            put_attr(b, IPVS_DEST_ATTR_WEIGHT, &d.weight.to_ne_bytes());
            put_attr(b, IPVS_DEST_ATTR_U_THRESH, &0u32.to_ne_bytes());
            put_attr(b, IPVS_DEST_ATTR_L_THRESH, &0u32.to_ne_bytes());
        }
    });
    b
}

fn u16_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes([*v.first()?, *v.get(1)?]))
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes([
        *v.first()?,
        *v.get(1)?,
        *v.get(2)?,
        *v.get(3)?,
    ]))
}

fn ip_of(af: u16, v: &[u8]) -> Option<IpAddr> {
    match af {
        2 => Some(IpAddr::from([
            *v.first()?,
            *v.get(1)?,
            *v.get(2)?,
            *v.get(3)?,
        ])),
        10 => {
            let b: [u8; 16] = v.get(..16)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// Parses the attributes inside a returned `IPVS_CMD_ATTR_SERVICE`.
pub fn parse_service(nested: &[u8]) -> Result<Service, String> {
    let a = attrs(nested)?;
    let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
    let af = get(IPVS_SVC_ATTR_AF)
        .and_then(u16_of)
        .ok_or("service without AF")?;
    let address = get(IPVS_SVC_ATTR_ADDR)
        .and_then(|v| ip_of(af, v))
        .ok_or("service without address")?;
    let port = get(IPVS_SVC_ATTR_PORT)
        .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])))
        .unwrap_or(0);
    let protocol = get(IPVS_SVC_ATTR_PROTOCOL).and_then(u16_of).unwrap_or(0);
    let scheduler = get(IPVS_SVC_ATTR_SCHED_NAME)
        .map(|v| String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or(&[])).into_owned())
        .unwrap_or_default();
    let flags = get(IPVS_SVC_ATTR_FLAGS).and_then(u32_of).unwrap_or(0) & !IP_VS_SVC_F_HASHED;
    let timeout = get(IPVS_SVC_ATTR_TIMEOUT).and_then(u32_of).unwrap_or(0);
    let netmask = get(IPVS_SVC_ATTR_NETMASK).and_then(u32_of).unwrap_or(0);
    Ok(Service {
        address,
        protocol,
        port,
        scheduler,
        flags,
        timeout,
        netmask,
    })
}

/// The active plus inactive connection count of a returned `IPVS_CMD_ATTR_DEST` — what
/// kube-proxy's graceful termination waits to reach 0 before deleting a real server (its
/// pkg/proxy/ipvs graceful_termination.go reads ActiveConnections + InactiveConnections).
/// Missing attributes count as 0.
pub fn dest_connections(nested: &[u8]) -> Result<u64, String> {
    let a = attrs(nested)?;
    let get = |t: u16| {
        a.iter()
            .find(|(ty, _)| *ty == t)
            .and_then(|(_, v)| u32_of(v))
            .map_or(0, u64::from)
    };
    Ok(get(IPVS_DEST_ATTR_ACTIVE_CONNS) + get(IPVS_DEST_ATTR_INACT_CONNS))
}

/// Parses the attributes inside a returned `IPVS_CMD_ATTR_DEST`.
pub fn parse_dest(nested: &[u8], service_af: u16) -> Result<Dest, String> {
    let a = attrs(nested)?;
    let get = |t: u16| a.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
    let af = get(IPVS_DEST_ATTR_ADDR_FAMILY)
        .and_then(u16_of)
        .unwrap_or(service_af);
    let address = get(IPVS_DEST_ATTR_ADDR)
        .and_then(|v| ip_of(af, v))
        .ok_or("destination without address")?;
    let port = get(IPVS_DEST_ATTR_PORT)
        .and_then(|v| Some(u16::from_be_bytes([*v.first()?, *v.get(1)?])))
        .unwrap_or(0);
    let weight = get(IPVS_DEST_ATTR_WEIGHT).and_then(u32_of).unwrap_or(0);
    let fwd = get(IPVS_DEST_ATTR_FWD_METHOD).and_then(u32_of).unwrap_or(0) & 0x7;
    Ok(Dest {
        address,
        port,
        weight,
        fwd,
    })
}

/// Splits attributes; `Err` names what is malformed.
pub fn attrs(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(format!("attribute of length {len} in {} bytes", b.len()));
        }
        out.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// One message of a reply: (type, flags, seq, payload after the 16-byte header).
pub type Message<'a> = (u16, u16, u32, &'a [u8]);

/// Splits a receive buffer into messages.
pub fn messages(mut b: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            return Err(format!("message of length {len} in {} bytes", b.len()));
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let flags = u16::from_ne_bytes([b[6], b[7]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((ty, flags, seq, &b[16..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected bytes written out by hand from the uapi layout (x86_64, little endian).
    #[test]
    fn a_new_service_request_has_the_uapi_layout() {
        let svc = Service {
            address: "198.51.100.0".parse().unwrap(),
            protocol: 6,
            port: 20000,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: 0xffff_ffff,
        };
        let attrs = service_attrs(&svc, true);
        let want: Vec<u8> = [
            // nested IPVS_CMD_ATTR_SERVICE: len 4 + 8+8+20+8+8+12+8+8 = 84, type 1 | NLA_F_NESTED
            &[84, 0, 0x01, 0x80][..],
            &[6, 0, 1, 0, 2, 0, 0, 0], // AF = AF_INET (2), padded
            &[6, 0, 2, 0, 6, 0, 0, 0], // PROTOCOL = 6 (TCP), padded
            &[
                20, 0, 3, 0, 198, 51, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // ADDR, 16 bytes
            &[6, 0, 4, 0, 0x4e, 0x20, 0, 0], // PORT 20000 big-endian, padded
            &[7, 0, 6, 0, b'r', b'r', 0, 0], // SCHED_NAME "rr\0", padded
            &[12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], // FLAGS {0, mask ~0}
            &[8, 0, 8, 0, 0, 0, 0, 0], // TIMEOUT 0
            &[8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff], // NETMASK
        ]
        .concat();
        assert_eq!(attrs, want);
        let msg = message(
            0x1c,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            IPVS_CMD_NEW_SERVICE,
            IPVS_GENL_VERSION,
            &attrs,
        );
        assert_eq!(
            &msg[..20],
            &[
                104, 0, 0, 0, 0x1c, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0
            ]
        );
    }

    #[test]
    fn services_and_destinations_parse_back_from_their_attributes() {
        let svc = Service {
            address: "fd00::a".parse().unwrap(),
            protocol: 132,
            port: 3868,
            scheduler: "mh".into(),
            flags: 0x10 | 0x1,
            timeout: 300,
            netmask: 128,
        };
        let b = service_attrs(&svc, true);
        let outer = attrs(&b).unwrap();
        assert_eq!(parse_service(outer[0].1).unwrap(), svc);
        let d = Dest {
            address: "10.1.2.3".parse().unwrap(),
            port: 8080,
            weight: 1,
            fwd: IP_VS_CONN_F_MASQ,
        };
        let b = dest_attrs(&d, true);
        let outer = attrs(&b).unwrap();
        assert_eq!(parse_dest(outer[0].1, 2).unwrap(), d);
        assert!(parse_service(&[]).is_err());
    }

    #[test]
    fn a_dumped_destination_counts_active_plus_inactive_connections() {
        // As the kernel's ip_vs_genl_fill_dest writes them: u32 attributes 7 and 8 beside
        // the key (include/uapi/linux/ip_vs.h).
        let mut b = Vec::new();
        put_nested(&mut b, IPVS_CMD_ATTR_DEST, |b| {
            put_attr(
                b,
                IPVS_DEST_ATTR_ADDR,
                &[10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            );
            put_attr(b, IPVS_DEST_ATTR_PORT, &8080u16.to_be_bytes());
            put_attr(b, IPVS_DEST_ATTR_ACTIVE_CONNS, &3u32.to_ne_bytes());
            put_attr(b, IPVS_DEST_ATTR_INACT_CONNS, &4u32.to_ne_bytes());
        });
        let outer = attrs(&b).unwrap();
        assert_eq!(dest_connections(outer[0].1).unwrap(), 7);
        // No counters (an older kernel, a fake): none.
        let plain = dest_attrs(
            &Dest {
                address: "10.1.2.3".parse().unwrap(),
                port: 1,
                weight: 1,
                fwd: 0,
            },
            true,
        );
        assert_eq!(dest_connections(attrs(&plain).unwrap()[0].1).unwrap(), 0);
        assert!(
            dest_connections(&[12, 0, 7, 0, 1, 0]).is_err(),
            "length past the end"
        );
    }

    #[test]
    fn attributes_parse_back_and_bad_lengths_are_errors() {
        let svc = Service {
            address: "fd00::1".parse().unwrap(),
            protocol: 17,
            port: 53,
            scheduler: "mh".into(),
            flags: 0x10,
            timeout: 0,
            netmask: 128,
        };
        let b = service_attrs(&svc, true);
        let outer = attrs(&b).unwrap();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, IPVS_CMD_ATTR_SERVICE);
        let inner = attrs(outer[0].1).unwrap();
        let get = |t: u16| inner.iter().find(|(ty, _)| *ty == t).unwrap().1;
        assert_eq!(get(IPVS_SVC_ATTR_AF), &10u16.to_ne_bytes());
        assert_eq!(get(IPVS_SVC_ATTR_PORT), &53u16.to_be_bytes());
        assert_eq!(get(IPVS_SVC_ATTR_SCHED_NAME), b"mh\0");
        assert!(attrs(&[200, 0, 1, 0]).is_err());
        assert!(messages(&[40, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
