//! [`RecordingIpsets`]: an in-memory model of the kernel's sets that applies restore scripts
//! line by line with `-exist` semantics and records every call, for unit tests of code that
//! drives [`Ipsets`]. It answers as ipset 7.17 does in the cases the netns suite checks: a
//! rejected line leaves the lines before it applied (as when the kernel rejects it; the real
//! ipset may also drop a pending batch of adds, see ipset.rs); adding a member that is there resets its
//! timeout (to the set's default when the line gives none); `timeout` on a set without
//! timeouts, members of missing sets, and re-creating a set with another type or timeout are
//! rejected. Simplifications: timeouts do not count down, and two creates are "the same" when
//! type and timeout match (the kernel compares every effective parameter).

use std::collections::VecDeque;
use std::collections::btree_map::Entry;

use super::save::{Line, parse_line};
use super::{IpsetError, Ipsets, SavedMember, SavedSet};

/// The fake. `sets` is the model (options as the create lines gave them).
#[derive(Debug, Clone, Default)]
pub struct RecordingIpsets {
    /// The sets by name.
    pub sets: std::collections::BTreeMap<String, SavedSet>,
    /// Every script given to `restore`, in order (rejected ones included).
    pub scripts: Vec<String>,
    /// Every `save` call's argument, in order.
    pub saves: Vec<Option<String>>,
    /// Errors for the next restores (returned instead of applying), first one first.
    pub fail: VecDeque<IpsetError>,
}

fn rejected(n: usize, line: &str, message: &str) -> IpsetError {
    IpsetError::Rejected {
        line: Some(n),
        text: Some(line.to_owned()),
        message: message.to_owned(),
    }
}

const NO_SET: &str = "The set with the given name does not exist";

impl RecordingIpsets {
    /// An empty model.
    pub fn new() -> RecordingIpsets {
        RecordingIpsets::default()
    }

    fn apply(&mut self, n: usize, line: &str) -> Result<(), IpsetError> {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        }
        // One line of a script has the shape of a line of `ipset save` output, or is one of
        // the commands that take only a set name.
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        match words.as_slice() {
            ["create", ..] | ["add", ..] => match parse_line(trimmed) {
                Ok(Line::Create(name, set)) => self.create(n, line, name, set),
                Ok(Line::Add(name, member, m)) => self.add(n, line, &name, member, m),
                Ok(Line::Empty) => Ok(()),
                Err(why) => Err(rejected(n, line, why)),
            },
            ["del", name, member] => match self.sets.get_mut(*name) {
                Some(s) => {
                    s.members.remove(*member);
                    Ok(())
                }
                None => Err(rejected(n, line, NO_SET)),
            },
            ["flush", name] => match self.sets.get_mut(*name) {
                Some(s) => {
                    s.members.clear();
                    Ok(())
                }
                None => Err(rejected(n, line, NO_SET)),
            },
            ["destroy", name] => {
                self.sets.remove(*name);
                Ok(())
            }
            _ => Err(rejected(n, line, "unknown or malformed command")),
        }
    }

    fn create(
        &mut self,
        n: usize,
        line: &str,
        name: String,
        new: SavedSet,
    ) -> Result<(), IpsetError> {
        match self.sets.entry(name) {
            Entry::Vacant(v) => {
                v.insert(new);
                Ok(())
            }
            Entry::Occupied(o) => {
                let old = o.get();
                if old.set_type == new.set_type && old.timeout() == new.timeout() {
                    Ok(())
                } else {
                    Err(rejected(
                        n,
                        line,
                        "Set cannot be created: set with the same name already exists",
                    ))
                }
            }
        }
    }

    fn add(
        &mut self,
        n: usize,
        line: &str,
        name: &str,
        member: String,
        mut m: SavedMember,
    ) -> Result<(), IpsetError> {
        let set = self
            .sets
            .get_mut(name)
            .ok_or_else(|| rejected(n, line, NO_SET))?;
        match (m.timeout, set.timeout()) {
            (Some(_), None) => {
                return Err(rejected(
                    n,
                    line,
                    "Timeout cannot be used: set was created without timeout support",
                ));
            }
            (None, Some(d)) => m.timeout = Some(d),
            _ => {}
        }
        set.members.insert(member, m);
        Ok(())
    }
}

fn render(out: &mut String, name: &str, set: &SavedSet) {
    out.push_str(&format!("create {name} {}", set.set_type));
    for o in &set.options {
        out.push(' ');
        out.push_str(o);
    }
    out.push('\n');
    for (member, SavedMember { timeout, extra }) in &set.members {
        out.push_str(&format!("add {name} {member}"));
        if let Some(t) = timeout {
            out.push_str(&format!(" timeout {t}"));
        }
        for e in extra {
            out.push(' ');
            out.push_str(e);
        }
        out.push('\n');
    }
}

impl Ipsets for RecordingIpsets {
    fn restore(&mut self, script: &str) -> Result<(), IpsetError> {
        self.scripts.push(script.to_owned());
        if let Some(e) = self.fail.pop_front() {
            return Err(e);
        }
        for (i, line) in script.lines().enumerate() {
            self.apply(i + 1, line)?;
        }
        Ok(())
    }

    fn save(&mut self, set: Option<&str>) -> Result<String, IpsetError> {
        self.saves.push(set.map(str::to_owned));
        let mut out = String::new();
        match set {
            Some(name) => {
                let s = self.sets.get(name).ok_or_else(|| IpsetError::NoSuchSet {
                    set: name.to_owned(),
                })?;
                render(&mut out, name, s);
            }
            None => {
                for (name, s) in &self.sets {
                    render(&mut out, name, s);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::parse_save;

    const SCRIPT: &str = include_str!("../../tests/data/ipset-restore.txt");

    #[test]
    fn the_fixture_script_gives_the_captured_sets_members_and_timeouts() {
        let mut f = RecordingIpsets::new();
        f.restore(SCRIPT).unwrap();
        let got = parse_save(&f.save(None).unwrap()).unwrap();
        let kernel = parse_save(include_str!("../../tests/data/ipset-save.txt")).unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            kernel.keys().collect::<Vec<_>>()
        );
        for (name, k) in &kernel {
            let g = &got[name];
            assert_eq!(g.set_type, k.set_type, "{name}");
            assert_eq!(g.timeout(), k.timeout(), "{name}");
            assert_eq!(
                g.members.keys().collect::<Vec<_>>(),
                k.members.keys().collect::<Vec<_>>(),
                "{name}"
            );
            for (m, km) in &k.members {
                // The kernel's timeouts have counted down by up to a second since the add.
                let (gt, kt) = (g.members[m].timeout, km.timeout);
                assert!(
                    gt == kt
                        || (gt.is_some() && kt.is_some() && gt.unwrap_or(0) - kt.unwrap_or(0) <= 1),
                    "{name} {m}: {gt:?} vs {kt:?}"
                );
            }
        }
    }

    #[test]
    fn a_rejected_line_is_named_and_the_lines_before_it_stay() {
        let mut f = RecordingIpsets::new();
        let e = f
            .restore("create E hash:ip\nadd E 1.1.1.1\nadd E 2.2.2.2 timeout 5\n")
            .unwrap_err();
        assert_eq!(
            e,
            IpsetError::Rejected {
                line: Some(3),
                text: Some("add E 2.2.2.2 timeout 5".into()),
                message: "Timeout cannot be used: set was created without timeout support".into()
            }
        );
        assert!(f.sets["E"].members.contains_key("1.1.1.1"));
        assert!(matches!(
            f.restore("add NOPE 1.2.3.4\n"),
            Err(IpsetError::Rejected { line: Some(1), .. })
        ));
        assert!(matches!(
            f.save(Some("NOPE")),
            Err(IpsetError::NoSuchSet { .. })
        ));
        assert_eq!(f.scripts.len(), 2);
    }

    #[test]
    fn re_adding_refreshes_the_timeout_and_exist_makes_repeats_harmless() {
        let mut f = RecordingIpsets::new();
        let script =
            "create B hash:ip,port family inet timeout 600\nadd B 10.0.0.1,tcp:80 timeout 30\n";
        f.restore(script).unwrap();
        f.restore(script).unwrap();
        f.restore("add B 10.0.0.1,tcp:80 timeout 90\n").unwrap();
        assert_eq!(f.sets["B"].members["10.0.0.1,tcp:80"].timeout, Some(90));
        f.restore("add B 10.0.0.1,tcp:80\ndel B 10.9.9.9,tcp:80\ndestroy NONE\n")
            .unwrap();
        assert_eq!(f.sets["B"].members["10.0.0.1,tcp:80"].timeout, Some(600));
        assert!(
            f.restore("create B hash:ip,port family inet timeout 60\n")
                .is_err()
        );
        f.restore("flush B\n").unwrap();
        assert!(f.sets["B"].members.is_empty());
        f.restore("destroy B\n").unwrap();
        assert!(f.sets.is_empty());
    }
}
