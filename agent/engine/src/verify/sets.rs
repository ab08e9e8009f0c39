//! ipset membership as `-m set --match-set NAME dir,dir…` tests it (ipset(8), "SET TYPES"),
//! for the set types kube-proxy's IPVS mode and the hybrid plan use: `hash:ip`,
//! `hash:ip,port`, `hash:ip,port,ip`, `hash:ip,port,net` and `bitmap:port`. Members are
//! parsed from the text `ipset add` takes (`10.0.0.1,tcp:80,10.0.0.0/8`). Pure data.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::rules::{Dir, parse_net};

/// One component of a set type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Ip,
    Port,
    Net,
}

/// One member component.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Ip(IpAddr),
    /// Protocol (lowercase) and port range.
    Port(Option<String>, u16, u16),
    Net(IpNet),
}

/// A set: its type's components and its members. Members of single addresses and ports are
/// hashed (a hybrid's admission set has one per virtual server); ranges and nets are scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    parts: Vec<Part>,
    exact: HashSet<Vec<Exact>>,
    ranged: Vec<Vec<Value>>,
}

/// A member component that is one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Exact {
    Ip(IpAddr),
    /// Protocol (`None` for bitmap:port, which has none) and port.
    Port(Option<String>, u16),
}

/// What a set test looks at in a packet.
#[derive(Debug, Clone, Copy)]
pub struct SetQuery<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol, lowercase.
    pub proto: &'a str,
    /// Destination port.
    pub dport: u16,
}

impl IpSet {
    /// Builds a set from its type and members; an unsupported type or an unreadable member is
    /// an error naming it.
    pub fn new<'a>(
        set_type: &str,
        members: impl IntoIterator<Item = &'a String>,
    ) -> Result<IpSet, String> {
        let parts = match set_type {
            "hash:ip" => vec![Part::Ip],
            "hash:ip,port" => vec![Part::Ip, Part::Port],
            "hash:ip,port,ip" => vec![Part::Ip, Part::Port, Part::Ip],
            "hash:ip,port,net" => vec![Part::Ip, Part::Port, Part::Net],
            "bitmap:port" => vec![Part::Port],
            "hash:net" => vec![Part::Net],
            other => return Err(format!("set type {other} is not modelled")),
        };
        let bitmap = set_type.starts_with("bitmap:");
        let mut exact = HashSet::new();
        let mut ranged = Vec::new();
        for m in members {
            let text = m.split_whitespace().next().unwrap_or("");
            let fields: Vec<&str> = text.split(',').collect();
            if fields.len() != parts.len() {
                return Err(format!("member {m:?} does not fit {set_type}"));
            }
            let mut vals = Vec::new();
            for (f, p) in fields.iter().zip(&parts) {
                let v = match p {
                    Part::Ip => f.parse().ok().map(Value::Ip),
                    Part::Net => parse_net(f).map(Value::Net),
                    Part::Port => parse_port(f),
                };
                vals.push(v.ok_or_else(|| format!("member {m:?}: cannot read {f:?}"))?);
            }
            let single: Option<Vec<Exact>> = vals
                .iter()
                .map(|v| match v {
                    Value::Ip(ip) => Some(Exact::Ip(*ip)),
                    // ipset's hash types default to tcp when a member names no protocol.
                    Value::Port(proto, lo, hi) if lo == hi => Some(Exact::Port(
                        if bitmap {
                            None
                        } else {
                            Some(proto.clone().unwrap_or_else(|| "tcp".into()))
                        },
                        *lo,
                    )),
                    _ => None,
                })
                .collect();
            match single {
                Some(k) => {
                    exact.insert(k);
                }
                None => ranged.push(vals),
            }
        }
        Ok(IpSet {
            parts,
            exact,
            ranged,
        })
    }

    /// True if the packet's (dirs-selected) tuple is a member. An error when the test needs
    /// something the packet does not carry (a source port) or the directions do not fit.
    pub fn contains(&self, dirs: &[Dir], q: &SetQuery<'_>) -> Result<bool, String> {
        if dirs.len() < self.parts.len() {
            return Err(format!(
                "{} direction(s) for a set of {} components",
                dirs.len(),
                self.parts.len()
            ));
        }
        let mut key = Vec::new();
        for (p, d) in self.parts.iter().zip(dirs) {
            let ip = match d {
                Dir::Src => q.src,
                Dir::Dst => q.dst,
            };
            key.push(match p {
                Part::Ip | Part::Net => KeyPart::Ip(ip),
                Part::Port => match d {
                    Dir::Dst => KeyPart::Port(q.proto, q.dport),
                    Dir::Src => {
                        return Err("a source-port set test (no source port is modelled)".into());
                    }
                },
            });
        }
        let bitmap = self.parts == [Part::Port];
        let exact_key: Option<Vec<Exact>> = self
            .parts
            .iter()
            .zip(&key)
            .map(|(p, k)| match (p, k) {
                (Part::Ip, KeyPart::Ip(ip)) => Some(Exact::Ip(*ip)),
                (Part::Port, KeyPart::Port(proto, port)) => {
                    Some(Exact::Port((!bitmap).then(|| (*proto).to_owned()), *port))
                }
                _ => None,
            })
            .collect();
        if exact_key.is_some_and(|k| self.exact.contains(&k)) {
            return Ok(true);
        }
        Ok(self.ranged.iter().any(|m| {
            m.iter().zip(&key).all(|(v, k)| match (v, k) {
                (Value::Ip(a), KeyPart::Ip(b)) => a == b,
                (Value::Net(n), KeyPart::Ip(b)) => n.contains(b),
                (Value::Port(proto, lo, hi), KeyPart::Port(kp, port)) => {
                    let proto_ok = bitmap || proto.as_deref().unwrap_or("tcp") == *kp;
                    proto_ok && (*lo..=*hi).contains(port)
                }
                _ => false,
            })
        }))
    }
}

enum KeyPart<'a> {
    Ip(IpAddr),
    Port(&'a str, u16),
}

/// `tcp:80`, `80` (hash types default to tcp; bitmap:port members have no protocol),
/// `30000-30010`.
fn parse_port(f: &str) -> Option<Value> {
    let (proto, port) = match f.split_once(':') {
        Some((p, n)) => (Some(p.to_ascii_lowercase()), n),
        None => (None, f),
    };
    let (lo, hi) = match port.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let v = port.parse().ok()?;
            (v, v)
        }
    };
    Some(Value::Port(proto, lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(src: &str, dst: &str, dport: u16) -> SetQuery<'static> {
        SetQuery {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: "tcp",
            dport,
        }
    }

    #[test]
    fn ip_port_members_match_on_address_protocol_and_port() {
        let s = IpSet::new("hash:ip,port", &["10.0.0.1,tcp:80".to_owned()]).unwrap();
        let d = [Dir::Dst, Dir::Dst];
        assert!(s.contains(&d, &q("1.1.1.1", "10.0.0.1", 80)).unwrap());
        assert!(!s.contains(&d, &q("1.1.1.1", "10.0.0.1", 81)).unwrap());
        let udp = SetQuery {
            proto: "udp",
            ..q("1.1.1.1", "10.0.0.1", 80)
        };
        assert!(!s.contains(&d, &udp).unwrap());
    }

    #[test]
    fn ip_port_net_members_match_sources_inside_the_range() {
        let s = IpSet::new(
            "hash:ip,port,net",
            &["5.6.7.8,tcp:80,203.0.113.0/25".to_owned()],
        )
        .unwrap();
        let d = [Dir::Dst, Dir::Dst, Dir::Src];
        assert!(s.contains(&d, &q("203.0.113.9", "5.6.7.8", 80)).unwrap());
        assert!(!s.contains(&d, &q("203.0.113.200", "5.6.7.8", 80)).unwrap());
    }

    #[test]
    fn members_without_a_protocol_are_tcp_and_bitmap_ports_have_none() {
        let s = IpSet::new("hash:ip,port", &["10.0.0.1,80".to_owned()]).unwrap();
        let d = [Dir::Dst, Dir::Dst];
        assert!(s.contains(&d, &q("1.1.1.1", "10.0.0.1", 80)).unwrap());
        let udp = SetQuery {
            proto: "udp",
            ..q("1.1.1.1", "10.0.0.1", 80)
        };
        assert!(!s.contains(&d, &udp).unwrap());
        let b = IpSet::new(
            "bitmap:port",
            &["30000-30002".to_owned(), "31000".to_owned()],
        )
        .unwrap();
        let udp = SetQuery {
            proto: "udp",
            ..q("1.1.1.1", "2.2.2.2", 30001)
        };
        assert!(b.contains(&[Dir::Dst], &udp).unwrap());
        assert!(
            b.contains(&[Dir::Dst], &q("1.1.1.1", "2.2.2.2", 31000))
                .unwrap()
        );
        assert!(
            !b.contains(&[Dir::Dst], &q("1.1.1.1", "2.2.2.2", 30003))
                .unwrap()
        );
    }

    #[test]
    fn source_port_tests_are_reported_not_guessed() {
        let s = IpSet::new("bitmap:port", &["30000".to_owned()]).unwrap();
        assert!(
            s.contains(&[Dir::Src], &q("1.1.1.1", "2.2.2.2", 1))
                .is_err()
        );
        assert!(
            s.contains(&[Dir::Dst], &q("1.1.1.1", "2.2.2.2", 30000))
                .unwrap()
        );
    }
}
