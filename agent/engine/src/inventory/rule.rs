//! One rule's options, order-independent: the restore form kube-proxy writes
//! (`-m comment --comment … -m tcp -p tcp -d 10.0.0.1 --dport 80`) and the form the kernel
//! prints back (`-d 10.0.0.1/32 -p tcp -m comment … -m tcp --dport 80`) give the same `Rule`.
//!
//! Only the options kube-proxy uses are kept; any other option makes `unknown` non-empty so
//! callers never mistake a rule with extra conditions for one of kube-proxy's.

use std::borrow::Cow;

use super::save::{Token, tokenize, unescape};

/// A value with an optional `!` negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neg<T> {
    /// The `!` was present.
    pub negated: bool,
    /// The value.
    pub value: T,
}

/// Parsed options of one rule. Borrowed from the dump.
#[derive(Debug, Default)]
pub struct Rule<'a> {
    /// `-s`
    pub src: Option<Neg<&'a str>>,
    /// `-d`
    pub dst: Option<Neg<&'a str>>,
    /// `-p`
    pub proto: Option<&'a str>,
    /// `-i`
    pub in_iface: Option<Neg<&'a str>>,
    /// `--dport`
    pub dport: Option<&'a str>,
    /// `--comment`
    pub comment: Option<Cow<'a, str>>,
    /// `-j`
    pub target: Option<&'a str>,
    /// `--to-destination`
    pub to_destination: Option<&'a str>,
    /// `--or-mark`
    pub or_mark: Option<&'a str>,
    /// `--xor-mark`
    pub xor_mark: Option<&'a str>,
    /// `--set-xmark` (how iptables-save prints MARK --or-mark / --xor-mark)
    pub set_xmark: Option<&'a str>,
    /// `--mark` of `-m mark`
    pub mark: Option<Neg<&'a str>>,
    /// `--probability`
    pub probability: Option<&'a str>,
    /// `-m recent --name`
    pub recent_name: Option<&'a str>,
    /// `--rcheck`
    pub recent_rcheck: bool,
    /// `--set` (recent)
    pub recent_set: bool,
    /// `--seconds`
    pub recent_seconds: Option<&'a str>,
    /// `--src-type`
    pub src_type: Option<Neg<&'a str>>,
    /// `--dst-type`
    pub dst_type: Option<Neg<&'a str>>,
    /// `--ctstate`
    pub ctstate: Option<Neg<&'a str>>,
    /// `--nfacct-name`
    pub nfacct: Option<&'a str>,
    /// `--random-fully`
    pub random_fully: bool,
    /// `--reject-with`
    pub reject_with: Option<&'a str>,
    /// Options this model does not know, verbatim.
    pub unknown: Vec<&'a str>,
}

/// The options kube-proxy's rules use, recognised by length first: there are millions of
/// option tokens in a large dump, and a flat `match` on byte strings compares them one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opt {
    Not,
    Src,
    Dst,
    Proto,
    InIface,
    Match,
    Dport,
    Comment,
    Jump,
    ToDest,
    OrMark,
    XorMark,
    SetXmark,
    Mark,
    Mode,
    Probability,
    Name,
    Seconds,
    Rcheck,
    Set,
    Reap,
    Mask,
    SrcType,
    DstType,
    Ctstate,
    Nfacct,
    RandomFully,
    RejectWith,
    Unknown,
}

pub(super) fn opt_kind(o: &[u8]) -> Opt {
    use Opt::*;
    match o.len() {
        1 if o == b"!" => Not,
        2 => match o {
            b"-s" => Src,
            b"-d" => Dst,
            b"-p" => Proto,
            b"-i" => InIface,
            b"-m" => Match,
            b"-j" => Jump,
            _ => Unknown,
        },
        5 => match o {
            b"--src" => Src,
            b"--dst" => Dst,
            b"--set" => Set,
            _ => Unknown,
        },
        6 => match o {
            b"--mark" => Mark,
            b"--mode" => Mode,
            b"--name" => Name,
            b"--mask" => Mask,
            b"--reap" => Reap,
            b"--jump" => Jump,
            _ => Unknown,
        },
        7 => match o {
            b"--dport" => Dport,
            b"--match" => Match,
            b"--state" => Ctstate,
            _ => Unknown,
        },
        8 => match o {
            b"--source" => Src,
            b"--rcheck" => Rcheck,
            _ => Unknown,
        },
        9 => match o {
            b"--comment" => Comment,
            b"--seconds" => Seconds,
            b"--rsource" => Reap,
            b"--or-mark" => OrMark,
            b"--ctstate" => Ctstate,
            _ => Unknown,
        },
        10 => match o {
            b"--protocol" => Proto,
            b"--dst-type" => DstType,
            b"--src-type" => SrcType,
            b"--xor-mark" => XorMark,
            _ => Unknown,
        },
        11 if o == b"--set-xmark" => SetXmark,
        13 => match o {
            b"--probability" => Probability,
            b"--destination" => Dst,
            b"--nfacct-name" => Nfacct,
            b"--reject-with" => RejectWith,
            _ => Unknown,
        },
        14 => match o {
            b"--random-fully" => RandomFully,
            b"--in-interface" => InIface,
            _ => Unknown,
        },
        16 if o == b"--to-destination" => ToDest,
        18 if o == b"--destination-port" => Dport,
        _ => Unknown,
    }
}

/// Why a rule could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

/// Parses the text after `-A CHAIN`. `scratch` is reused between calls to avoid allocation.
/// Fills `r` (which must be `Rule::default()`) in place: a rule is a few hundred bytes and
/// there are hundreds of thousands of them, so it is not returned by value.
pub fn parse_rule<'a>(
    rest: &'a [u8],
    scratch: &mut Vec<Token<'a>>,
    r: &mut Rule<'a>,
) -> Result<(), RuleError> {
    tokenize(rest, scratch).map_err(|e| RuleError(e.to_owned()))?;
    // One UTF-8 check for the whole rule; tokens end at ASCII delimiters, so slicing the
    // checked text at their offsets needs no further validation.
    let rest_str = std::str::from_utf8(rest).map_err(|_| RuleError("invalid UTF-8".into()))?;
    let base = rest.as_ptr() as usize;
    let toks = &scratch[..];
    let mut i = 0usize;
    let mut negate = false;

    // Plain token as &str; quoted tokens that need unescaping are only allowed for comments.
    let text = |t: &Token<'a>| -> Result<&'a str, RuleError> {
        if t.escaped {
            return Err(RuleError("unexpected quoting in an option value".into()));
        }
        let off = (t.raw.as_ptr() as usize).wrapping_sub(base);
        rest_str
            .get(off..off + t.raw.len())
            .ok_or_else(|| RuleError("invalid UTF-8 in an option value".into()))
    };
    while i < toks.len() {
        let opt = toks[i].raw;
        let value = |j: usize| -> Result<&'a str, RuleError> {
            let Some(t) = toks.get(j) else {
                return Err(RuleError(format!(
                    "option {} without a value",
                    String::from_utf8_lossy(opt)
                )));
            };
            text(t)
        };
        let neg = negate;
        negate = false;
        let mut consumed = 2usize;
        match opt_kind(opt) {
            Opt::Not => {
                negate = true;
                consumed = 1;
            }
            Opt::Src => {
                r.src = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Dst => {
                r.dst = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Proto => r.proto = Some(value(i + 1)?),
            Opt::InIface => {
                r.in_iface = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Match => {
                value(i + 1)?;
            }
            Opt::Dport => r.dport = Some(value(i + 1)?),
            Opt::Comment => {
                let Some(t) = toks.get(i + 1) else {
                    return Err(RuleError("--comment without a value".into()));
                };
                let c = if t.escaped {
                    Cow::Owned(
                        String::from_utf8(unescape(t.raw))
                            .map_err(|_| RuleError("invalid UTF-8 in a comment".into()))?,
                    )
                } else {
                    Cow::Borrowed(
                        std::str::from_utf8(t.raw)
                            .map_err(|_| RuleError("invalid UTF-8 in a comment".into()))?,
                    )
                };
                r.comment = Some(c);
            }
            Opt::Jump => r.target = Some(value(i + 1)?),
            Opt::ToDest => r.to_destination = Some(value(i + 1)?),
            Opt::OrMark => r.or_mark = Some(value(i + 1)?),
            Opt::XorMark => r.xor_mark = Some(value(i + 1)?),
            Opt::SetXmark => r.set_xmark = Some(value(i + 1)?),
            Opt::Mark => {
                r.mark = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Mode => {
                if value(i + 1)? != "random" {
                    r.unknown.push("--mode");
                }
            }
            Opt::Probability => r.probability = Some(value(i + 1)?),
            Opt::Name => r.recent_name = Some(value(i + 1)?),
            Opt::Seconds => r.recent_seconds = Some(value(i + 1)?),
            Opt::Rcheck => {
                r.recent_rcheck = true;
                consumed = 1;
            }
            Opt::Set => {
                r.recent_set = true;
                consumed = 1;
            }
            // `recent` defaults that iptables-save prints back; they change nothing.
            Opt::Reap => consumed = 1,
            Opt::Mask => {
                let m = value(i + 1)?;
                if m != "255.255.255.255" && m != "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" {
                    r.unknown.push("--mask");
                }
            }
            Opt::SrcType => {
                r.src_type = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::DstType => {
                r.dst_type = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Ctstate => {
                r.ctstate = Some(Neg {
                    negated: neg,
                    value: value(i + 1)?,
                })
            }
            Opt::Nfacct => r.nfacct = Some(value(i + 1)?),
            Opt::RandomFully => {
                r.random_fully = true;
                consumed = 1;
            }
            Opt::RejectWith => r.reject_with = Some(value(i + 1)?),
            Opt::Unknown => {
                let o = text(&toks[i]).unwrap_or("?");
                r.unknown.push(o);
                // Swallow a following value, if any.
                consumed = match toks.get(i + 1) {
                    Some(t) if !t.raw.starts_with(b"-") && t.raw != b"!" => 2,
                    _ => 1,
                };
            }
        }
        i += consumed;
    }
    if negate {
        return Err(RuleError("dangling '!' at the end of the rule".into()));
    }
    Ok(())
}

impl Rule<'_> {
    /// The target, or "" for a rule without `-j`.
    pub fn target(&self) -> &str {
        self.target.unwrap_or("")
    }

    /// The rule's comment, or "".
    pub fn comment(&self) -> &str {
        self.comment.as_deref().unwrap_or("")
    }

    /// True if the rule has only options this model understands.
    pub fn is_plain(&self) -> bool {
        self.unknown.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Rule<'_> {
        let mut scratch = Vec::new();
        let mut r = Rule::default();
        parse_rule(s.as_bytes(), &mut scratch, &mut r).unwrap();
        r
    }

    #[test]
    fn restore_and_live_forms_give_the_same_options() {
        let a = p(
            r#"-m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
        );
        let b = p(
            r#"-d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
        );
        assert_eq!(a.comment(), b.comment());
        assert_eq!(a.proto, b.proto);
        assert_eq!(a.dport, b.dport);
        assert_eq!(a.target, b.target);
        assert_eq!(a.dst.unwrap().value, "172.30.0.41");
        assert_eq!(b.dst.unwrap().value, "172.30.0.41/32");
    }

    #[test]
    fn negations_apply_to_the_next_option_only() {
        let r = p("! -s 10.0.0.0/8 -d 1.2.3.4 -j KUBE-MARK-MASQ");
        assert!(r.src.unwrap().negated);
        assert!(!r.dst.unwrap().negated);
    }

    #[test]
    fn live_recent_match_options_are_understood() {
        let r = p(
            "-m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j KUBE-SEP-X",
        );
        assert!(r.recent_rcheck);
        assert_eq!(r.recent_seconds, Some("10800"));
        assert_eq!(r.recent_name, Some("KUBE-SEP-X"));
        assert!(r.is_plain());
    }

    #[test]
    fn unknown_options_are_kept() {
        let r = p("-m limit --limit 5/s -j ACCEPT");
        assert_eq!(r.unknown, ["--limit"]);
    }

    #[test]
    fn option_without_value_is_an_error() {
        let mut scratch = Vec::new();
        assert!(parse_rule(b"-d", &mut scratch, &mut Rule::default()).is_err());
    }
}
