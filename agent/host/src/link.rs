//! The dummy link `kube-ipvs0` and its addresses over rtnetlink (NETLINK_ROUTE), blocking, on
//! one socket opened in the calling thread's network namespace.
//!
//! What it mirrors is kube-proxy's `pkg/proxy/ipvs/netlink_linux.go`: `EnsureDummyDevice`
//! creates a `dummy` link and never sets it up (IPVS only needs the addresses to be local; a
//! down link answers no ARP and adds no connected routes); `EnsureAddressBind` adds the VIP as
//! `netlink.NewIPNet(ip)` — /32 or /128 — with no address flags, and treats EEXIST as "already
//! bound". We do the same: no `IFA_F_NODAD` for IPv6, because kube-proxy sets none and the
//! kernel skips duplicate address detection on IFF_NOARP links such as dummy
//! (net/ipv6/addrconf.c `addrconf_dad_begin`); the VM suite (tests/vm/host-kernel.sh) checks
//! that such an address is not left tentative. Unlike kube-proxy, an address that is already
//! there is an error of its own ([`LinkError::AddressExists`]): who owns it is the caller's
//! decision, not this layer's.
//!
//! This module only does what it is told: it never decides whether a link or an address is
//! ours. [`RecordingLinks`] (link/recording.rs) is the in-memory fake for the interpreter's
//! unit tests; it keeps the kernel's rules for the cases above.

mod recording;

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo as IflaInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

pub use recording::{FakeLink, LinkCall, RecordingLinks};

/// The link kube-proxy's IPVS mode binds service addresses to.
pub const KUBE_IPVS0: &str = "kube-ipvs0";

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// `IFF_UP` is set (kube-proxy leaves kube-ipvs0 down).
    pub up: bool,
    /// `IFLA_INFO_KIND` (`dummy`, `veth`, …); `None` for links without one, such as `lo`.
    pub kind: Option<String>,
}

/// Errors of link and address operations, each naming the link (and address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The name is not a valid interface name (1–15 bytes, no `/`, `:` or whitespace).
    #[error("invalid link name {link:?}: {reason}")]
    InvalidName {
        /// The name.
        link: String,
        /// Why.
        reason: &'static str,
    },
    /// A link of that name exists (EEXIST on create).
    #[error("link {link} already exists")]
    LinkExists {
        /// The link.
        link: String,
    },
    /// No link of that name (ENODEV).
    #[error("link {link} does not exist")]
    LinkNotFound {
        /// The link.
        link: String,
    },
    /// The address is already on the link (EEXIST on add).
    #[error("address {address} is already on link {link}")]
    AddressExists {
        /// The link.
        link: String,
        /// The address.
        address: IpAddr,
    },
    /// The address is not on the link with that prefix (EADDRNOTAVAIL on delete).
    #[error("address {address} is not on link {link}")]
    AddressNotFound {
        /// The link.
        link: String,
        /// The address.
        address: IpAddr,
    },
    /// EPERM / EACCES: CAP_NET_ADMIN is needed.
    #[error("{op} on link {link}: permission denied (needs CAP_NET_ADMIN)")]
    Permission {
        /// The operation.
        op: &'static str,
        /// The link.
        link: String,
    },
    /// EOPNOTSUPP, e.g. a kernel without the `dummy` driver.
    #[error("{op} on link {link}: not supported by this kernel ({detail})")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// The link.
        link: String,
        /// The kernel's extended-ack message, or the errno text.
        detail: String,
    },
    /// Another errno from the kernel.
    #[error("{op} on link {link}: {detail} (errno {errno})")]
    Errno {
        /// The operation.
        op: &'static str,
        /// The link.
        link: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, or the errno text.
        detail: String,
    },
    /// The netlink socket failed.
    #[error("{op} on link {link}: netlink socket: {detail}")]
    Socket {
        /// The operation.
        op: &'static str,
        /// The link.
        link: String,
        /// The I/O error.
        detail: String,
    },
    /// The kernel's reply does not parse.
    #[error("{op} on link {link}: malformed netlink reply: {detail}")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// The link.
        link: String,
        /// The decode error.
        detail: String,
    },
}

/// The link and address operations the agent needs (real: [`RtnlLinks`]; fake:
/// [`RecordingLinks`]).
pub trait Links {
    /// The link's index, state and kind; `None` when there is no such link.
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError>;
    /// Creates a `dummy` link, left down as kube-proxy leaves it.
    fn create_dummy(&mut self, name: &str) -> Result<(), LinkError>;
    /// Deletes a link (of any kind: the caller checks what it deletes).
    fn delete_link(&mut self, name: &str) -> Result<(), LinkError>;
    /// The link's addresses with their prefix lengths, sorted.
    fn addresses(&mut self, name: &str) -> Result<Vec<IpNet>, LinkError>;
    /// Adds `ip` as /32 (IPv4) or /128 (IPv6); [`LinkError::AddressExists`] when it is there.
    fn add_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError>;
    /// Deletes the /32 or /128 `ip`; [`LinkError::AddressNotFound`] when it is not there.
    fn del_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError>;
}

/// Checks an interface name as the kernel's `dev_valid_name` does (net/core/dev.c).
pub fn check_name(name: &str) -> Result<(), LinkError> {
    let bad = |reason| {
        Err(LinkError::InvalidName {
            link: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 15 {
        return bad("longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// The host prefix of an address: /32 or /128.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// A kernel refusal: errno and the extended-ack message when the kernel gave one.
struct Nack {
    errno: i32,
    message: Option<String>,
}

enum Failure {
    Nack(Nack),
    Socket(String),
    Malformed(String),
}

/// rtnetlink on a socket bound in the network namespace of the thread that opened it.
pub struct RtnlLinks {
    socket: Socket,
    seq: u32,
}

impl RtnlLinks {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace (a test or the
    /// agent points it at another namespace by opening it from a thread that entered it).
    pub fn open() -> Result<RtnlLinks, LinkError> {
        let err = |e: std::io::Error| LinkError::Socket {
            op: "open",
            link: String::new(),
            detail: e.to_string(),
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        // Errors carry the kernel's text ("Unknown device type", …) and not our request.
        socket.set_ext_ack(true).map_err(err)?;
        socket.set_cap_ack(true).map_err(err)?;
        Ok(RtnlLinks { socket, seq: 0 })
    }

    /// Sends one request; returns the messages of the reply, which ends with an ACK (requests)
    /// or NLMSG_DONE (dumps).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| Failure::Socket(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| Failure::Socket(e.to_string()))?;
            let mut off = 0;
            while off < buf.len() {
                let rest = buf.get(off..).unwrap_or_default();
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| Failure::Malformed(e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(Failure::Malformed("zero-length message".into()));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                let capped = msg.header.flags & NLM_F_CAPPED != 0;
                match msg.payload {
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return Err(Failure::Nack(Nack {
                            errno: -e.raw_code(),
                            message: ext_ack_message(&e.header, capped),
                        }));
                    }
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(Failure::Nack(Nack {
                            errno: -d.code,
                            message: None,
                        }));
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    fn index(&mut self, name: &str) -> Result<u32, LinkError> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| LinkError::LinkNotFound {
                link: name.to_owned(),
            })
    }

    fn address_request(&mut self, name: &str, ip: IpAddr, add: bool) -> Result<(), LinkError> {
        let op = if add { "add address" } else { "delete address" };
        let index = self.index(name)?;
        let mut m = AddressMessage::default();
        m.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = host_net(ip).prefix_len();
        m.header.index = index;
        // As `ip address add`: IFA_LOCAL is the address, IFA_ADDRESS the same (no peer).
        m.attributes.push(AddressAttribute::Local(ip));
        m.attributes.push(AddressAttribute::Address(ip));
        let (msg, flags) = if add {
            (
                RouteNetlinkMessage::NewAddress(m),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
        } else {
            (
                RouteNetlinkMessage::DelAddress(m),
                NLM_F_REQUEST | NLM_F_ACK,
            )
        };
        self.request(msg, flags).map(drop).map_err(|f| match f {
            Failure::Nack(Nack { errno: 17, .. }) if add => LinkError::AddressExists {
                link: name.to_owned(),
                address: ip,
            },
            Failure::Nack(Nack { errno: 99, .. }) if !add => LinkError::AddressNotFound {
                link: name.to_owned(),
                address: ip,
            },
            f => failure(op, name, f),
        })
    }
}

/// The NLMSGERR_ATTR_MSG of an extended ACK (include/uapi/linux/netlink.h): the TLVs follow
/// the echoed request, which is only its header when the kernel capped it.
fn ext_ack_message(echo: &[u8], capped: bool) -> Option<String> {
    let len = if capped {
        16
    } else {
        let b = echo.get(..4)?;
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    let tlvs = echo.get(((len + 3) & !3)..)?;
    NlasIterator::new(tlvs).flatten().find_map(|nla| {
        (nla.kind() == 1).then(|| {
            String::from_utf8_lossy(nla.value())
                .trim_end_matches('\0')
                .to_owned()
        })
    })
}

fn failure(op: &'static str, link: &str, f: Failure) -> LinkError {
    let link = link.to_owned();
    match f {
        Failure::Socket(detail) => LinkError::Socket { op, link, detail },
        Failure::Malformed(detail) => LinkError::Malformed { op, link, detail },
        Failure::Nack(n) => {
            let detail = n.message.unwrap_or_else(|| {
                let e = std::io::Error::from_raw_os_error(n.errno);
                let s = e.to_string();
                s.split(" (os error").next().unwrap_or(&s).to_owned()
            });
            match n.errno {
                19 => LinkError::LinkNotFound { link },
                1 | 13 => LinkError::Permission { op, link },
                95 => LinkError::Unsupported { op, link, detail },
                errno => LinkError::Errno {
                    op,
                    link,
                    errno,
                    detail,
                },
            }
        }
    }
}

fn name_message(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m
}

impl Links for RtnlLinks {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        check_name(name)?;
        let replies = match self.request(
            RouteNetlinkMessage::GetLink(name_message(name)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Err(Failure::Nack(Nack { errno: 19, .. })) => return Ok(None),
            r => r.map_err(|f| failure("get link", name, f))?,
        };
        for r in replies {
            if let RouteNetlinkMessage::NewLink(m) = r {
                let kind = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                        IflaInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    }),
                    _ => None,
                });
                return Ok(Some(LinkInfo {
                    index: m.header.index,
                    up: m.header.flags.contains(LinkFlags::Up),
                    kind,
                }));
            }
        }
        Err(LinkError::Malformed {
            op: "get link",
            link: name.to_owned(),
            detail: "no RTM_NEWLINK in the reply".into(),
        })
    }

    fn create_dummy(&mut self, name: &str) -> Result<(), LinkError> {
        check_name(name)?;
        let mut m = name_message(name);
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![IflaInfo::Kind(
                InfoKind::Dummy,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(|f| match f {
            Failure::Nack(Nack { errno: 17, .. }) => LinkError::LinkExists {
                link: name.to_owned(),
            },
            f => failure("create dummy link", name, f),
        })
    }

    fn delete_link(&mut self, name: &str) -> Result<(), LinkError> {
        check_name(name)?;
        self.request(
            RouteNetlinkMessage::DelLink(name_message(name)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(drop)
        .map_err(|f| failure("delete link", name, f))
    }

    fn addresses(&mut self, name: &str) -> Result<Vec<IpNet>, LinkError> {
        let index = self.index(name)?;
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(|f| failure("list addresses", name, f))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewAddress(m) = r else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
            // point-to-point links); IPv6 usually sends only IFA_ADDRESS.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(addr) {
                let net =
                    IpNet::new(ip, m.header.prefix_len).map_err(|e| LinkError::Malformed {
                        op: "list addresses",
                        link: name.to_owned(),
                        detail: format!("{ip}/{}: {e}", m.header.prefix_len),
                    })?;
                out.push(net);
            }
        }
        out.sort();
        Ok(out)
    }

    fn add_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        check_name(name)?;
        self.address_request(name, ip, true)
    }

    fn del_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        check_name(name)?;
        self.address_request(name, ip, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(check_name(name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn link_names_are_checked_as_the_kernel_does() {
        check("kube-ipvs0", true);
        check("a", true);
        check("fifteen-chars15", true);
        check("sixteen-chars-16", false);
        check("", false);
        check(".", false);
        check("..", false);
        check("a/b", false);
        check("eth0:1", false);
        check("a b", false);
    }

    #[test]
    fn host_addresses_are_slash_32_and_slash_128() {
        assert_eq!(
            host_net("10.96.0.1".parse().unwrap()).to_string(),
            "10.96.0.1/32"
        );
        assert_eq!(
            host_net("fd00::1".parse().unwrap()).to_string(),
            "fd00::1/128"
        );
    }

    #[test]
    fn the_extended_ack_message_is_read_after_a_capped_echo() {
        // An echoed nlmsghdr (16 bytes), then NLMSGERR_ATTR_MSG "Unknown device type\0".
        let mut echo = vec![0u8; 16];
        let text = b"Unknown device type\0";
        let len = 4 + text.len();
        echo.extend_from_slice(&u16::try_from(len).unwrap().to_ne_bytes());
        echo.extend_from_slice(&1u16.to_ne_bytes());
        echo.extend_from_slice(text);
        echo.resize((echo.len() + 3) & !3, 0);
        assert_eq!(
            ext_ack_message(&echo, true).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(ext_ack_message(&echo[..16], true), None);
        assert_eq!(ext_ack_message(&[], false), None);
    }

    #[test]
    fn errnos_become_typed_errors_naming_the_link() {
        let nack = |errno| {
            failure(
                "create dummy link",
                "kube-ipvs0",
                Failure::Nack(Nack {
                    errno,
                    message: None,
                }),
            )
        };
        assert_eq!(
            nack(19),
            LinkError::LinkNotFound {
                link: "kube-ipvs0".into()
            }
        );
        assert_eq!(
            nack(1),
            LinkError::Permission {
                op: "create dummy link",
                link: "kube-ipvs0".into()
            }
        );
        assert!(matches!(nack(95), LinkError::Unsupported { .. }));
        let e = nack(22);
        assert!(matches!(e, LinkError::Errno { errno: 22, .. }));
        assert_eq!(
            e.to_string(),
            "create dummy link on link kube-ipvs0: Invalid argument (errno 22)"
        );
    }
}
