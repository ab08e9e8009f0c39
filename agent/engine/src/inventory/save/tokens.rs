//! The words of one rule, split the way iptables-restore splits them (quotes and backslash
//! escapes, as `xtables_save_string` writes them). Format only: no option is understood here,
//! and nothing is allocated except by [`unescape`].

/// One token of a rule: its bytes with surrounding quotes removed. `escaped` tells the caller
/// that backslash escapes remain to be undone (see [`unescape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// Raw bytes (quotes stripped when the whole token was quoted).
    pub raw: &'a [u8],
    /// The token contained quotes or backslashes beyond a simple `"…"` wrapper.
    pub escaped: bool,
}

/// Splits a rule's text the way iptables-restore does: spaces separate tokens, `"…"` groups,
/// and inside quotes a backslash escapes the next byte (xtables_save_string quotes any value
/// with a byte outside `[A-Za-z0-9_-]` and escapes `"`, `\` and `'`).
pub fn tokenize<'a>(rest: &'a [u8], out: &mut Vec<Token<'a>>) -> Result<(), &'static str> {
    out.clear();
    let mut i = 0usize;
    let n = rest.len();
    while i < n {
        while i < n && rest[i] == b' ' {
            i += 1;
        }
        if i >= n {
            break;
        }
        if rest[i] == b'"' {
            // Common case: a wholly quoted token.
            let start = i + 1;
            let mut j = start;
            let mut escaped = false;
            loop {
                if j >= n {
                    return Err("unterminated quote");
                }
                match rest[j] {
                    b'\\' => {
                        escaped = true;
                        j += 2;
                    }
                    b'"' => break,
                    _ => j += 1,
                }
            }
            if j > n {
                return Err("unterminated quote");
            }
            let end = j;
            j += 1;
            if j < n && rest[j] != b' ' {
                // Quote followed by more text: treat the whole run as one escaped token.
                let tok_start = i;
                let tok_end = scan_mixed(rest, i)?;
                out.push(Token {
                    raw: &rest[tok_start..tok_end],
                    escaped: true,
                });
                i = tok_end;
                continue;
            }
            // With escapes inside, keep the quotes so `unescape` sees where quoting starts.
            let raw = if escaped {
                &rest[i..j]
            } else {
                &rest[start..end]
            };
            out.push(Token { raw, escaped });
            i = j;
        } else {
            let start = i;
            while i < n && rest[i] != b' ' && rest[i] != b'"' {
                i += 1;
            }
            if i < n && rest[i] == b'"' {
                let tok_end = scan_mixed(rest, start)?;
                out.push(Token {
                    raw: &rest[start..tok_end],
                    escaped: true,
                });
                i = tok_end;
                continue;
            }
            out.push(Token {
                raw: &rest[start..i],
                escaped: false,
            });
        }
    }
    Ok(())
}

/// Scans a token mixing quoted and unquoted parts; returns its end.
fn scan_mixed(rest: &[u8], mut i: usize) -> Result<usize, &'static str> {
    let mut quoted = false;
    while i < rest.len() {
        match rest[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            b' ' if !quoted => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    if quoted {
        Err("unterminated quote")
    } else {
        Ok(rest.len())
    }
}

/// Undoes quoting of an `escaped` token: removes quote characters and backslash escapes.
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut quoted = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted && i + 1 < raw.len() => {
                out.push(raw[i + 1]);
                i += 1;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        tokenize(s.as_bytes(), &mut v).unwrap();
        v.iter()
            .map(|t| {
                let b = if t.escaped {
                    unescape(t.raw)
                } else {
                    t.raw.to_vec()
                };
                String::from_utf8(b).unwrap()
            })
            .collect()
    }

    #[test]
    fn quoted_comment_is_one_token() {
        assert_eq!(
            toks(r#"-m comment --comment "ns1/svc1:p80 cluster IP" -j X"#),
            [
                "-m",
                "comment",
                "--comment",
                "ns1/svc1:p80 cluster IP",
                "-j",
                "X"
            ]
        );
    }

    #[test]
    fn escapes_inside_quotes_are_undone() {
        assert_eq!(
            toks(r#"--comment "a \"b\" \\ c""#),
            ["--comment", r#"a "b" \ c"#]
        );
    }

    #[test]
    fn runs_of_spaces_separate_tokens() {
        // iptables-save prints `--nfacct-name  NAME` with two spaces.
        assert_eq!(
            toks("-m nfacct --nfacct-name  localhost_nps_accepted_pkts"),
            [
                "-m",
                "nfacct",
                "--nfacct-name",
                "localhost_nps_accepted_pkts"
            ]
        );
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let mut v = Vec::new();
        assert!(tokenize(br#"--comment "abc"#, &mut v).is_err());
    }
}
