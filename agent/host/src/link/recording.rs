//! [`RecordingLinks`]: an in-memory model of links and addresses that records every call, for
//! unit tests of code that drives [`Links`]. It answers as the kernel does for the cases the
//! agent meets (EEXIST on a second create or add, ENODEV for a missing link, EADDRNOTAVAIL for
//! a missing address); the VM suite runs one scenario against both and compares the answers
//! (agent/host/examples/link_roundtrip.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{LinkError, LinkInfo, Links, check_name, host_net};

/// One call made on a [`RecordingLinks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCall {
    /// [`Links::link`].
    Link(String),
    /// [`Links::create_dummy`].
    CreateDummy(String),
    /// [`Links::delete_link`].
    DeleteLink(String),
    /// [`Links::addresses`].
    Addresses(String),
    /// [`Links::add_address`].
    AddAddress(String, IpAddr),
    /// [`Links::del_address`].
    DelAddress(String, IpAddr),
}

/// One link of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    /// Its state.
    pub info: LinkInfo,
    /// Its addresses.
    pub addresses: BTreeSet<IpNet>,
}

/// The fake: links by name, the calls made, and errors to inject.
#[derive(Debug, Clone, Default)]
pub struct RecordingLinks {
    /// The links, by name.
    pub links: BTreeMap<String, FakeLink>,
    /// Every call, in order (failed ones included).
    pub calls: Vec<LinkCall>,
    /// Errors to return instead of acting, each once, when the matching call arrives.
    pub fail: Vec<(LinkCall, LinkError)>,
    next_index: u32,
}

impl RecordingLinks {
    /// An empty model (no links at all, not even `lo`).
    pub fn new() -> RecordingLinks {
        RecordingLinks::default()
    }

    /// Adds a link to the model (e.g. a kube-ipvs0 kube-proxy left behind).
    pub fn with_link(mut self, name: &str, kind: Option<&str>, up: bool, addrs: &[IpNet]) -> Self {
        self.insert(name, kind, up, addrs);
        self
    }

    fn insert(&mut self, name: &str, kind: Option<&str>, up: bool, addrs: &[IpNet]) {
        let index = self.index();
        let info = LinkInfo {
            index,
            up,
            kind: kind.map(str::to_owned),
        };
        let addresses = addrs.iter().copied().collect();
        self.links
            .insert(name.to_owned(), FakeLink { info, addresses });
    }

    fn index(&mut self) -> u32 {
        // Index 1 is lo's on every Linux; the fake starts after it.
        self.next_index = self.next_index.max(1) + 1;
        self.next_index
    }

    /// Records the call; returns the injected error for it, if any.
    fn record(&mut self, call: LinkCall) -> Result<(), LinkError> {
        self.calls.push(call.clone());
        if let Some(i) = self.fail.iter().position(|(c, _)| *c == call) {
            return Err(self.fail.remove(i).1);
        }
        Ok(())
    }

    fn get(&mut self, name: &str) -> Result<&mut FakeLink, LinkError> {
        self.links
            .get_mut(name)
            .ok_or_else(|| LinkError::LinkNotFound {
                link: name.to_owned(),
            })
    }
}

impl Links for RecordingLinks {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        self.record(LinkCall::Link(name.to_owned()))?;
        check_name(name)?;
        Ok(self.links.get(name).map(|l| l.info.clone()))
    }

    fn create_dummy(&mut self, name: &str) -> Result<(), LinkError> {
        self.record(LinkCall::CreateDummy(name.to_owned()))?;
        check_name(name)?;
        if self.links.contains_key(name) {
            return Err(LinkError::LinkExists {
                link: name.to_owned(),
            });
        }
        self.insert(name, Some("dummy"), false, &[]);
        Ok(())
    }

    fn delete_link(&mut self, name: &str) -> Result<(), LinkError> {
        self.record(LinkCall::DeleteLink(name.to_owned()))?;
        check_name(name)?;
        self.links
            .remove(name)
            .map(drop)
            .ok_or_else(|| LinkError::LinkNotFound {
                link: name.to_owned(),
            })
    }

    fn addresses(&mut self, name: &str) -> Result<Vec<IpNet>, LinkError> {
        self.record(LinkCall::Addresses(name.to_owned()))?;
        check_name(name)?;
        Ok(self.get(name)?.addresses.iter().copied().collect())
    }

    fn add_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        self.record(LinkCall::AddAddress(name.to_owned(), ip))?;
        check_name(name)?;
        let link = self.get(name)?;
        // The kernel refuses an IPv6 address already there with any prefix, an IPv4 one only
        // with the same prefix (net/ipv6/addrconf.c ipv6_add_addr, net/ipv4/devinet.c
        // __inet_insert_ifa).
        let exists = link.addresses.iter().any(|n| {
            n.addr() == ip && (ip.is_ipv6() || n.prefix_len() == host_net(ip).prefix_len())
        });
        if exists {
            return Err(LinkError::AddressExists {
                link: name.to_owned(),
                address: ip,
            });
        }
        link.addresses.insert(host_net(ip));
        Ok(())
    }

    fn del_address(&mut self, name: &str, ip: IpAddr) -> Result<(), LinkError> {
        self.record(LinkCall::DelAddress(name.to_owned(), ip))?;
        check_name(name)?;
        if self.get(name)?.addresses.remove(&host_net(ip)) {
            Ok(())
        } else {
            Err(LinkError::AddressNotFound {
                link: name.to_owned(),
                address: ip,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_fake_answers_as_the_kernel_does_and_records_every_call() {
        let mut l = RecordingLinks::new();
        assert_eq!(l.link("kube-ipvs0"), Ok(None));
        l.create_dummy("kube-ipvs0").unwrap();
        let info = l.link("kube-ipvs0").unwrap().unwrap();
        assert_eq!((info.up, info.kind.as_deref()), (false, Some("dummy")));
        assert_eq!(
            l.create_dummy("kube-ipvs0"),
            Err(LinkError::LinkExists {
                link: "kube-ipvs0".into()
            })
        );
        l.add_address("kube-ipvs0", ip("10.96.0.1")).unwrap();
        l.add_address("kube-ipvs0", ip("fd00::1")).unwrap();
        assert_eq!(
            l.add_address("kube-ipvs0", ip("10.96.0.1")),
            Err(LinkError::AddressExists {
                link: "kube-ipvs0".into(),
                address: ip("10.96.0.1")
            })
        );
        assert_eq!(
            l.addresses("kube-ipvs0").unwrap(),
            vec![
                "10.96.0.1/32".parse::<IpNet>().unwrap(),
                "fd00::1/128".parse().unwrap()
            ]
        );
        l.del_address("kube-ipvs0", ip("10.96.0.1")).unwrap();
        assert!(matches!(
            l.del_address("kube-ipvs0", ip("10.96.0.1")),
            Err(LinkError::AddressNotFound { .. })
        ));
        l.delete_link("kube-ipvs0").unwrap();
        assert!(matches!(
            l.add_address("kube-ipvs0", ip("10.96.0.2")),
            Err(LinkError::LinkNotFound { .. })
        ));
        assert_eq!(l.calls.len(), 12);
        assert_eq!(l.calls[1], LinkCall::CreateDummy("kube-ipvs0".into()));
    }

    #[test]
    fn an_injected_error_is_returned_once_and_nothing_changes() {
        let denied = LinkError::Permission {
            op: "create dummy link",
            link: "kube-ipvs0".into(),
        };
        let mut l = RecordingLinks::new();
        l.fail
            .push((LinkCall::CreateDummy("kube-ipvs0".into()), denied.clone()));
        assert_eq!(l.create_dummy("kube-ipvs0"), Err(denied));
        assert!(l.links.is_empty());
        assert_eq!(l.create_dummy("kube-ipvs0"), Ok(()));
    }

    #[test]
    fn a_prepared_link_keeps_its_addresses_and_kind() {
        let mut l = RecordingLinks::new().with_link(
            "kube-ipvs0",
            Some("dummy"),
            false,
            &["10.96.0.10/32".parse().unwrap()],
        );
        assert!(matches!(
            l.add_address("kube-ipvs0", ip("10.96.0.10")),
            Err(LinkError::AddressExists { .. })
        ));
        assert_eq!(l.link("kube-ipvs0").unwrap().unwrap().index, 2);
    }
}
