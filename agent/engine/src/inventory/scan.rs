//! A specialised scanner for the rule shapes that make up most of a large dump: the two
//! rules of an endpoint chain and a dispatch chain's jumps to its endpoint chains
//! (pkg/proxy/iptables/proxier.go `writeServiceToEndpointRules` and the SEP rules after it;
//! in large clusters kube-proxy drops their comments). At 20,000 services × 5 endpoints they
//! are 300,000 of 340,000 rules.
//!
//! The scanner matches the options while it walks the text — no token vector, no
//! [`Rule`](super::rule::Rule) — and accepts only the exact word sequences below, in both
//! kube-proxy's restore form and the kernel's live form:
//!
//! | chain | words |
//! |---|---|
//! | SEP | `-s IP[/32] -j KUBE-MARK-MASQ` |
//! | SEP | `-m P -p P -j DNAT --to-destination IP:PORT` or `-p P -m P …`, P = tcp, udp or sctp |
//! | SVC, SVL | `-j CHAIN` or `-m statistic --mode random --probability F -j CHAIN` |
//!
//! For anything else — another option, an option twice, a quote, a value that does not
//! parse — it answers `None` and the caller uses the general parser. It never guesses: a
//! `Some` means exactly what the general parser and `facts::hashed_fact` make of the same
//! text (a unit test compares the two).

use std::net::IpAddr;

use super::chains::ChainTable;
use super::facts::{
    ChainClass, Cond, Fact, HKind, classify, parse_endpoint, parse_host, quantize_probability,
};
use super::model::Protocol;
use super::num;

/// What a hot rule says, before its target is looked up in the chain table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hot<'a> {
    /// `-s IP -j KUBE-MARK-MASQ` in an endpoint chain.
    Hairpin(IpAddr),
    /// `-p P -j DNAT --to-destination IP:PORT` in an endpoint chain.
    Dnat(IpAddr, u16, Protocol),
    /// A jump, possibly with a `statistic` probability (already quantized), from a dispatch chain.
    Jump {
        /// Target chain name (the caller checks that it is a per-service or endpoint chain).
        target: &'a str,
        /// `lround(p * 2^31)`.
        probability: Option<u32>,
    },
}

/// Space-separated words; runs of spaces separate, as in the general tokenizer.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn next_text(&mut self) -> Option<&'a str> {
        let b = self.rest.as_bytes();
        let start = b.iter().position(|&c| c != b' ')?;
        let end = b[start..]
            .iter()
            .position(|&c| c == b' ')
            .map_or(b.len(), |e| start + e);
        // Both ends are at a space or the end: character boundaries.
        let word = self.rest.get(start..end)?;
        self.rest = self.rest.get(end..)?;
        Some(word)
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        self.next_text().map(str::as_bytes)
    }

    /// The next word is `word`. A fixed-size comparison, inlined: a slice comparison is a
    /// call to memcmp, and there are millions of these.
    fn is<const N: usize>(&mut self, word: &[u8; N]) -> Option<()> {
        (<&[u8; N]>::try_from(self.next()?).ok()? == word).then_some(())
    }

    /// The next word is `word` (of any length).
    fn is_slice(&mut self, word: &[u8]) -> Option<()> {
        (self.next()? == word).then_some(())
    }

    /// The next word as text, if it has no byte the general tokenizer treats specially.
    fn text(&mut self) -> Option<&'a str> {
        let w = self.next_text()?;
        if w.bytes().any(|b| b == b'"' || !b.is_ascii()) {
            return None;
        }
        Some(w)
    }

    fn end(&mut self) -> Option<()> {
        self.next().is_none().then_some(())
    }
}

/// Matches the text after `-A CHAIN` of a rule in a chain of kind `kind` against the hot shapes.
pub fn scan(kind: HKind, rest: &str) -> Option<Hot<'_>> {
    exact(kind, rest).or_else(|| by_words(kind, rest))
}

/// The hot shapes spelled with single spaces, as both kube-proxy and iptables-save write
/// them: matched by comparing whole prefixes and suffixes instead of word by word. A `Some`
/// here is what [`by_words`] gives for the same text; anything else is left to it.
fn exact(kind: HKind, rest: &str) -> Option<Hot<'_>> {
    const MASQ: &str = " -j KUBE-MARK-MASQ";
    const DNAT: &str = " -j DNAT --to-destination ";
    const STATISTIC: &str = "-m statistic --mode random --probability ";
    // A single word: no space (the other bytes are checked by the parsers that follow).
    // Folds without an early exit, which the compiler turns into a few vector instructions
    // (the words are short; a call to a vector search costs more than the search).
    let word = |w: &str| !w.is_empty() && !w.bytes().fold(false, |sp, b| sp | (b == b' '));
    match kind {
        HKind::Sep => {
            if let Some(ip) = rest.strip_prefix("-s ").and_then(|r| r.strip_suffix(MASQ)) {
                return Some(Hot::Hairpin(parse_host(ip).filter(|_| word(ip))?));
            }
            // `-m P -p P` or `-p P -m P`, then the DNAT target.
            let b = rest.as_bytes();
            let first = b.get(..3)?;
            let other = match first {
                b"-m " => " -p ",
                b"-p " => " -m ",
                _ => return None,
            };
            let (proto, plen) = match b.get(3..7)? {
                [b't', b'c', b'p', b' '] => (Protocol::Tcp, 3),
                [b'u', b'd', b'p', b' '] => (Protocol::Udp, 3),
                [b's', b'c', b't', b'p'] => (Protocol::Sctp, 4),
                _ => return None,
            };
            let after = rest.get(3 + plen..)?;
            let after = after.strip_prefix(other)?;
            let after = after.strip_prefix(proto.as_str())?;
            let ep = after.strip_prefix(DNAT)?;
            let (ip, port) = parse_endpoint(ep).filter(|_| word(ep))?;
            Some(Hot::Dnat(ip, port, proto))
        }
        HKind::Svc | HKind::Svl => {
            let (probability, target) = match rest.strip_prefix("-j ") {
                Some(t) => (None, t),
                None => {
                    let r = rest.strip_prefix(STATISTIC)?;
                    let sp = r.bytes().position(|b| b == b' ')?;
                    let (p, t) = (r.get(..sp)?, r.get(sp..)?.strip_prefix(" -j ")?);
                    let p = num::probability(p).filter(|p| (0.0..=1.0).contains(p) && word(t))?;
                    (Some(quantize_probability(p)), t)
                }
            };
            if !word(target)
                || target
                    .bytes()
                    .fold(false, |bad, b| bad | (b == b'"') | !b.is_ascii())
            {
                return None;
            }
            Some(Hot::Jump {
                target,
                probability,
            })
        }
        _ => None,
    }
}

/// The hot shapes word by word, with any run of spaces between words.
fn by_words(kind: HKind, rest: &str) -> Option<Hot<'_>> {
    let mut w = Words { rest };
    match kind {
        HKind::Sep => match w.next()? {
            b"-s" => {
                let ip = parse_host(w.text()?)?;
                w.is(b"-j")?;
                w.is(b"KUBE-MARK-MASQ")?;
                w.end()?;
                Some(Hot::Hairpin(ip))
            }
            first @ (b"-m" | b"-p") => {
                let p = w.next()?;
                let proto = match p {
                    b"tcp" => Protocol::Tcp,
                    b"udp" => Protocol::Udp,
                    b"sctp" => Protocol::Sctp,
                    _ => return None,
                };
                w.is(if first == b"-m" { b"-p" } else { b"-m" })?;
                w.is_slice(p)?;
                w.is(b"-j")?;
                w.is(b"DNAT")?;
                w.is(b"--to-destination")?;
                let (ip, port) = parse_endpoint(w.text()?)?;
                w.end()?;
                Some(Hot::Dnat(ip, port, proto))
            }
            _ => None,
        },
        HKind::Svc | HKind::Svl => {
            let probability = match w.next()? {
                b"-j" => None,
                b"-m" => {
                    w.is(b"statistic")?;
                    w.is(b"--mode")?;
                    w.is(b"random")?;
                    w.is(b"--probability")?;
                    let p = num::probability(w.text()?).filter(|p| (0.0..=1.0).contains(p))?;
                    w.is(b"-j")?;
                    Some(quantize_probability(p))
                }
                _ => return None,
            };
            let target = w.text()?;
            w.end()?;
            Some(Hot::Jump {
                target,
                probability,
            })
        }
        _ => None,
    }
}

/// The fact of a recognised rule, as `facts::hashed_fact` gives it for the parsed rule; `None`
/// (nothing changed) when the target is not a per-service or endpoint chain.
pub fn fact(hot: Hot<'_>, chains: &mut ChainTable) -> Option<Fact> {
    Some(match hot {
        Hot::Hairpin(ip) => Fact::Hairpin { ip },
        Hot::Dnat(ip, port, proto) => Fact::Dnat {
            ip,
            port,
            proto: Some(proto),
            recent_set: false,
        },
        Hot::Jump {
            target,
            probability,
        } => {
            let ChainClass::Hashed(tk, th) = classify(target) else {
                return None;
            };
            Fact::Jump {
                kind: tk,
                to: chains.id(tk, &th),
                probability,
                cond: Cond::Always,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::facts::hashed_fact;
    use crate::inventory::rule::{Rule, parse_rule};

    fn hot(kind: HKind, s: &str) -> Option<Hot<'_>> {
        scan(kind, s)
    }

    #[test]
    fn both_forms_of_the_endpoint_rules_are_recognised() {
        let ip: IpAddr = "10.128.0.7".parse().unwrap();
        for s in [
            "-s 10.128.0.7 -j KUBE-MARK-MASQ",
            "-s 10.128.0.7/32 -j KUBE-MARK-MASQ",
        ] {
            assert_eq!(hot(HKind::Sep, s), Some(Hot::Hairpin(ip)), "{s}");
        }
        for s in [
            "-m tcp -p tcp -j DNAT --to-destination 10.128.0.7:8080",
            "-p tcp -m tcp -j DNAT --to-destination 10.128.0.7:8080",
            "-p udp  -m udp -j DNAT --to-destination 10.128.0.7:8080 ",
        ] {
            let proto = if s.contains("udp") {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            assert_eq!(hot(HKind::Sep, s), Some(Hot::Dnat(ip, 8080, proto)), "{s}");
        }
    }

    #[test]
    fn dispatch_jumps_are_recognised() {
        assert_eq!(
            hot(
                HKind::Svc,
                "-m statistic --mode random --probability 0.20000000019 -j KUBE-SEP-ABC"
            ),
            Some(Hot::Jump {
                target: "KUBE-SEP-ABC",
                probability: Some(quantize_probability(0.2)),
            })
        );
        assert_eq!(
            hot(HKind::Svl, "-j KUBE-SEP-ABC"),
            Some(Hot::Jump {
                target: "KUBE-SEP-ABC",
                probability: None,
            })
        );
    }

    /// Every rule of the golden fixtures (restore form, live iptables-legacy and iptables-nft
    /// forms) that the scanner accepts gives the fact the general parser gives.
    #[test]
    fn the_scanner_agrees_with_the_general_parser_on_every_golden_rule() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let (mut seen, mut hot_rules) = (0, 0);
        let mut extra = vec![
            "-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-MARK-MASQ".to_owned(),
            "-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-aaaaaaaaaaaaaaaa".to_owned(),
            "-A KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random --probability 0 -j KUBE-SVL-AAAAAAAAAAAAAAAA".to_owned(),
            "-A KUBE-SEP-AAAAAAAAAAAAAAAA -s fd00::1/128 -j KUBE-MARK-MASQ".to_owned(),
            "-A KUBE-SEP-AAAAAAAAAAAAAAAA -p sctp -m sctp -j DNAT --to-destination [fd00::1]:80".to_owned(),
        ];
        let mut lines = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            for f in ["restore.txt", "live-legacy.txt", "live-nft.txt"] {
                if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
                    lines.extend(text.lines().map(str::to_owned));
                }
            }
        }
        lines.append(&mut extra);
        let mut chains = ChainTable::default();
        for line in &lines {
            let line = match line.strip_prefix('[') {
                Some(l) => l.split_once("] ").map_or("", |(_, r)| r),
                None => line.as_str(),
            };
            let Some(rule) = line.strip_prefix("-A ") else {
                continue;
            };
            let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
            let ChainClass::Hashed(kind, _) = classify(chain) else {
                continue;
            };
            seen += 1;
            let Some(h) = scan(kind, rest) else {
                continue;
            };
            let Some(fast) = fact(h, &mut chains) else {
                continue;
            };
            hot_rules += 1;
            let mut scratch = Vec::new();
            let mut r = Rule::default();
            parse_rule(rest.as_bytes(), &mut scratch, &mut r).unwrap();
            assert_eq!(
                hashed_fact(kind, &r, &mut chains),
                Ok(fast),
                "{chain} {rest}"
            );
        }
        assert!(hot_rules >= 50 && seen > hot_rules, "{hot_rules} of {seen}");
    }

    #[test]
    fn anything_else_goes_to_the_general_parser() {
        for (kind, s) in [
            (HKind::Sep, "-s 10.0.0.0/8 -j KUBE-MARK-MASQ"),
            (
                HKind::Sep,
                "-s 10.128.0.7 -m comment --comment x -j KUBE-MARK-MASQ",
            ),
            (HKind::Sep, "-s 10.128.0.7 -j KUBE-MARK-MASQ -m limit"),
            (HKind::Sep, "! -s 10.128.0.7 -j KUBE-MARK-MASQ"),
            (HKind::Sep, "-s \"10.128.0.7\" -j KUBE-MARK-MASQ"),
            (
                HKind::Sep,
                "-m udp -p tcp -j DNAT --to-destination 10.1.1.1:80",
            ),
            (
                HKind::Sep,
                "-m tcp -p tcp -j DNAT --to-destination 10.1.1.1",
            ),
            (
                HKind::Sep,
                "-p tcp -m recent --set --name KUBE-SEP-X --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.1.1.1:80",
            ),
            (
                HKind::Svc,
                "-m statistic --mode nth --every 2 -j KUBE-SEP-X",
            ),
            (
                HKind::Svc,
                "-m statistic --mode random --probability 1.5 -j KUBE-SEP-X",
            ),
            (HKind::Svc, "-j KUBE-SEP-X --limit 5"),
            (HKind::Svc, "-j"),
            (HKind::Svc, "! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"),
            (HKind::Ext, "-j KUBE-SVC-X"),
            (HKind::Fw, "-j KUBE-EXT-X"),
        ] {
            assert_eq!(hot(kind, s), None, "{s}");
        }
    }
}
