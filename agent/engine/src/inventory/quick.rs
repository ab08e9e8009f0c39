//! A quick reader for rules made only of the options of kube-proxy's commented service
//! rules: `-m M`, `-p P`, `[!] -s A`, `[!] -d A`, `--dport N`, `--comment C`, `-j T`.
//!
//! Those are the KUBE-SERVICES entries (`-m comment --comment "ns/svc:port cluster IP" -m tcp
//! -p tcp -d VIP --dport P -j KUBE-SVC-…`) and the dispatch chains' masquerade rules (the same
//! with `! -s CIDR -j KUBE-MARK-MASQ`), 40,000 of a 20,000-service dump, in either order of
//! options (restore form or live form). The general parser splits every rule into a token
//! vector and then matches each option against the whole option table; this reader walks the
//! text once and fills the same [`Rule`] fields.
//!
//! It is a subset of [`parse_rule`](super::rule::parse_rule): for any text it accepts, the
//! `Rule` it fills is the one `parse_rule` fills (a test compares the two on every rule of the
//! golden fixtures). Anything else — another option, a value that is quoted or missing, an
//! escape inside the comment, a `!` before an option that is not `-s`/`-d` — makes it answer
//! `false`, and the caller starts again with the general parser and a fresh `Rule`. Placement
//! (`place_nat_services`, `hashed_fact`) is the same code either way.

use std::borrow::Cow;

use super::rule::{Neg, Opt, Rule, opt_kind};

/// Fills `r` (a `Rule::default()`) from `rest`, the text after `-A CHAIN`; `false` when the
/// rule is not one this reader handles (then `r` is left partly filled and must be discarded).
pub fn quick_rule<'a>(rest: &'a str, r: &mut Rule<'a>) -> bool {
    let mut words = Words { rest };
    let mut negate = false;
    while let Some(opt) = words.plain() {
        let Some(opt) = opt else {
            return false;
        };
        let neg = std::mem::take(&mut negate);
        let kind = opt_kind(opt.as_bytes());
        if neg && !matches!(kind, Opt::Src | Opt::Dst) {
            return false;
        }
        match kind {
            Opt::Not => negate = true,
            Opt::Src | Opt::Dst => {
                let Some(value) = words.value() else {
                    return false;
                };
                let v = Some(Neg {
                    negated: neg,
                    value,
                });
                if kind == Opt::Src {
                    r.src = v;
                } else {
                    r.dst = v;
                }
            }
            Opt::Proto | Opt::Match | Opt::Dport | Opt::Jump => {
                let Some(value) = words.value() else {
                    return false;
                };
                match kind {
                    Opt::Proto => r.proto = Some(value),
                    Opt::Dport => r.dport = Some(value),
                    Opt::Jump => r.target = Some(value),
                    _ => {}
                }
            }
            Opt::Comment => {
                let Some(c) = words.comment() else {
                    return false;
                };
                r.comment = Some(Cow::Borrowed(c));
            }
            _ => return false,
        }
    }
    // A dangling `!` is an error of the general parser's to report.
    !negate
}

/// The words of a rule, split as the general tokenizer splits them for texts without escapes.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    /// The next word: `None` at the end, `Some(None)` for a word this reader does not handle
    /// (one with a quote in it).
    fn plain(&mut self) -> Option<Option<&'a str>> {
        let t = self.rest.trim_start_matches(' ');
        if t.is_empty() {
            self.rest = t;
            return None;
        }
        // One pass for the end and any quote: words are short, so a plain loop beats two
        // calls to a vector search.
        let b = t.as_bytes();
        let (mut end, mut quoted) = (0usize, false);
        while let Some(&c) = b.get(end) {
            if c == b' ' {
                break;
            }
            quoted |= c == b'"';
            end += 1;
        }
        let (word, rest) = t.split_at(end);
        self.rest = rest;
        Some((!quoted).then_some(word))
    }

    /// An option's value: a plain word (a missing or quoted value is left to the general parser).
    fn value(&mut self) -> Option<&'a str> {
        self.plain().flatten()
    }

    /// A comment: a plain word, or `"…"` without backslashes or inner quotes, ended by a space
    /// or the end of the rule (the tokenizer's unescaped quoted token).
    fn comment(&mut self) -> Option<&'a str> {
        let t = self.rest.trim_start_matches(' ');
        let Some(q) = t.strip_prefix('"') else {
            return self.value();
        };
        let close = memchr::memchr(b'"', q.as_bytes())?;
        let (inner, after) = (q.get(..close)?, q.get(close + 1..)?);
        if inner.contains('\\') || !(after.is_empty() || after.starts_with(' ')) {
            return None;
        }
        self.rest = after;
        Some(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::rule::parse_rule;

    /// The fields both readers fill, for comparison.
    fn fields<'a>(r: &'a Rule<'a>) -> String {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            r.src, r.dst, r.proto, r.dport, r.comment, r.target, r.unknown, r.in_iface
        )
    }

    fn agree(rest: &str) -> bool {
        let mut quick = Rule::default();
        if !quick_rule(rest, &mut quick) {
            return false;
        }
        let mut general = Rule::default();
        let mut scratch = Vec::new();
        assert_eq!(
            parse_rule(rest.as_bytes(), &mut scratch, &mut general),
            Ok(()),
            "{rest}"
        );
        assert_eq!(fields(&quick), fields(&general), "{rest}");
        // Every other field stays empty on both sides.
        assert_eq!(
            format!("{general:?}"),
            format!("{quick:?}"),
            "fields the quick reader never sets: {rest}"
        );
        true
    }

    #[test]
    fn both_forms_of_the_commented_service_rules_are_read_as_the_general_parser_reads_them() {
        for rest in [
            r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
            r#"-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
            r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ"#,
            r#"-m comment --comment ns1/svc1:p80  -p  udp -j X "#,
            r#"-m comment --comment "" -j X"#,
            "-d -j",
            "",
        ] {
            assert!(agree(rest), "not read quickly: {rest}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_general_parser() {
        for rest in [
            r#"-m comment --comment "a \"b\"" -j X"#,
            r#"-m comment --comment "a"b -j X"#,
            r#"-m comment --comment "unterminated -j X"#,
            r#"-d "1.2.3.4" -j X"#,
            "-m conntrack --ctstate NEW -j X",
            "! -p tcp -j X",
            "-s 1.2.3.4 !",
            "-j",
            "-m statistic --mode random --probability 0.5 -j X",
            "-i eth0 -j X",
        ] {
            assert!(!agree(rest), "read quickly: {rest}");
        }
    }

    /// Every rule of the golden fixtures the quick reader accepts is read as the general
    /// parser reads it.
    #[test]
    fn the_quick_reader_agrees_with_the_general_parser_on_every_golden_rule() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let (mut seen, mut quick) = (0, 0);
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            for f in ["restore.txt", "live-legacy.txt", "live-nft.txt"] {
                let Ok(text) = std::fs::read_to_string(dir.join(f)) else {
                    continue;
                };
                for line in text.lines() {
                    let line = match line.strip_prefix('[') {
                        Some(l) => l.split_once("] ").map_or("", |(_, r)| r),
                        None => line,
                    };
                    let Some(rule) = line.strip_prefix("-A ") else {
                        continue;
                    };
                    let rest = rule.split_once(' ').map_or("", |(_, r)| r);
                    seen += 1;
                    if agree(rest) {
                        quick += 1;
                    }
                }
            }
        }
        assert!(quick >= 50 && seen > quick, "{quick} of {seen}");
    }
}
