//! `ipset save` output → sets, as ipset 7.17 prints it (tests/data/ipset-save.txt was
//! captured from the kernel in a network namespace; the netns suite checks it still matches):
//!
//! ```text
//! create NAME TYPE [OPTION [VALUE]]…      e.g. family inet hashsize 1024 … timeout 600 …
//! add NAME MEMBER [timeout N] [packets N bytes N] [comment "…"]…
//! ```
//!
//! A member's `timeout` is the time it has left (0: never expires). Options and member extras
//! are kept as the tokens ipset printed (a quoted comment stays one token with its quotes).

use std::collections::BTreeMap;

use super::{IpsetError, SetFamily};

/// One set as `ipset save` printed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedSet {
    /// Type, e.g. `hash:ip,port`.
    pub set_type: String,
    /// The tokens after the type, in order (`family inet hashsize 1024 … initval 0x…`).
    pub options: Vec<String>,
    /// Members by their `ipset add` form.
    pub members: BTreeMap<String, SavedMember>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SavedMember {
    /// Seconds left before the kernel removes it (`Some(0)`: never); `None` in sets without
    /// timeouts.
    pub timeout: Option<u32>,
    /// Other tokens after the member (`packets 0 bytes 0 comment "…"`, `nomatch`).
    pub extra: Vec<String>,
}

impl SavedSet {
    /// The token after `key` in the options (`hashsize`, `timeout`, `range`, …).
    pub fn option(&self, key: &str) -> Option<&str> {
        let i = self.options.iter().position(|o| o == key)?;
        self.options.get(i + 1).map(String::as_str)
    }

    /// Whether a flag option (`counters`, `comment`, `forceadd`, …) is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }

    /// The set's default timeout: members of such a set can expire.
    pub fn timeout(&self) -> Option<u32> {
        self.option("timeout").and_then(|t| t.parse().ok())
    }

    /// `family` of a hash set.
    pub fn family(&self) -> Option<SetFamily> {
        match self.option("family")? {
            "inet" => Some(SetFamily::Inet),
            "inet6" => Some(SetFamily::Inet6),
            _ => None,
        }
    }
}

/// Splits on spaces; a double-quoted part (with `\"` escapes) stays in its token, quotes
/// included.
fn tokens(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == '"' {
            cur.push(c);
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err("unterminated quote");
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// One line of `ipset save` output (or of a restore script in the same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// Nothing on it.
    Empty,
    /// `create NAME TYPE …`.
    Create(String, SavedSet),
    /// `add NAME MEMBER …`.
    Add(String, String, SavedMember),
}

/// Parses one line; the error says why it does not parse.
pub(crate) fn parse_line(line: &str) -> Result<Line, &'static str> {
    let mut t = tokens(line)?.into_iter();
    match (t.next().as_deref(), t.next(), t.next()) {
        (None, _, _) => Ok(Line::Empty),
        (Some("create"), Some(name), Some(set_type)) => Ok(Line::Create(
            name,
            SavedSet {
                set_type,
                options: t.collect(),
                members: BTreeMap::new(),
            },
        )),
        (Some("add"), Some(name), Some(member)) => {
            let mut m = SavedMember::default();
            while let Some(tok) = t.next() {
                if tok == "timeout" && m.timeout.is_none() {
                    let v = t.next().ok_or("timeout without a value")?;
                    m.timeout = Some(v.parse().map_err(|_| "timeout is not a number")?);
                } else {
                    m.extra.push(tok);
                }
            }
            Ok(Line::Add(name, member, m))
        }
        _ => Err("expected `create NAME TYPE …` or `add NAME MEMBER …`"),
    }
}

/// Parses `ipset save` output (of one set or all) into sets by name.
pub fn parse_save(text: &str) -> Result<BTreeMap<String, SavedSet>, IpsetError> {
    let mut sets: BTreeMap<String, SavedSet> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: &str| IpsetError::Parse {
            line: i + 1,
            text: line.to_owned(),
            reason: reason.to_owned(),
        };
        match parse_line(line).map_err(err)? {
            Line::Empty => {}
            Line::Create(name, set) => {
                if sets.contains_key(&name) {
                    return Err(err("set created twice"));
                }
                sets.insert(name, set);
            }
            Line::Add(name, member, m) => {
                sets.get_mut(&name)
                    .ok_or_else(|| err("member of a set not created before"))?
                    .members
                    .insert(member, m);
            }
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = include_str!("../../tests/data/ipset-save.txt");

    #[test]
    fn captured_save_output_parses_into_sets_members_and_timeouts() {
        let sets = parse_save(CAPTURED).unwrap();
        assert_eq!(
            sets.keys().collect::<Vec<_>>(),
            [
                "IPVSMIG-CNT",
                "IPVSMIG-LOOP",
                "IPVSMIG-NP",
                "IPVSMIG-SRC",
                "IPVSMIG-TEST",
                "IPVSMIG-TEST6"
            ]
        );
        let t = &sets["IPVSMIG-TEST"];
        assert_eq!(t.set_type, "hash:ip,port");
        assert_eq!(
            (t.family(), t.timeout(), t.option("hashsize")),
            (Some(SetFamily::Inet), Some(600), Some("1024"))
        );
        let left: Vec<(&str, Option<u32>)> = t
            .members
            .iter()
            .map(|(k, m)| (k.as_str(), m.timeout))
            .collect();
        assert_eq!(
            left,
            [
                ("10.96.0.1,tcp:443", Some(0)),
                ("10.96.0.10,tcp:53", Some(299)),
                ("10.96.0.10,udp:53", Some(599)),
            ]
        );
        let t6 = &sets["IPVSMIG-TEST6"];
        assert_eq!(
            (t6.family(), t6.members["fd00::a,sctp:9000"].timeout),
            (Some(SetFamily::Inet6), Some(119))
        );
        let np = &sets["IPVSMIG-NP"];
        assert_eq!((np.option("range"), np.family()), (Some("0-65535"), None));
        assert_eq!(np.members["30080"].timeout, Some(20));
        assert_eq!(
            sets["IPVSMIG-SRC"].members["203.0.113.7,tcp:443,192.0.2.0/24"],
            SavedMember::default()
        );
        assert!(
            sets["IPVSMIG-LOOP"]
                .members
                .contains_key("10.244.1.5,tcp:8080,10.244.1.5")
        );
        let cnt = &sets["IPVSMIG-CNT"];
        assert!(cnt.has_flag("counters") && cnt.has_flag("comment"));
        assert_eq!(cnt.timeout(), None);
        assert_eq!(
            cnt.members["10.0.0.1"].extra,
            [
                "packets",
                "0",
                "bytes",
                "0",
                "comment",
                "\"owned by ipvs-migrate\""
            ]
        );
    }

    fn check(text: &str, line: usize) {
        match parse_save(text) {
            Err(IpsetError::Parse { line: l, .. }) => assert_eq!(l, line, "{text}"),
            r => panic!("{text}: {r:?}"),
        }
    }

    #[test]
    fn malformed_output_is_an_error_naming_the_line() {
        check("add S 1.2.3.4\n", 1);
        check("create S hash:ip\nadd S 1.2.3.4 timeout\n", 2);
        check("create S hash:ip\nadd S 1.2.3.4 timeout soon\n", 2);
        check("create S hash:ip\n\ncreate S hash:ip\n", 3);
        check("create S\n", 1);
        check("flush S\n", 1);
        check("create S hash:ip\nadd S 1.2.3.4 comment \"open\n", 2);
        assert!(parse_save("").unwrap().is_empty());
    }
}
