//! The `iptables-save` / `iptables-restore` document: tables, chain declarations, rule lines.
//!
//! This layer knows the file format only (iptables-save(8), iptables-restore(8)); it knows
//! nothing about kube-proxy. It borrows from the input and never allocates per line, so a
//! 36 MB dump is split in a few milliseconds. Errors name the line.

mod tokens;
mod window;

use std::io::Read;

use memchr::memchr;

use self::window::{Borrowed, Copied, Window};
use super::InventoryError;

pub use self::tokens::{Token, tokenize, unescape};

/// Longest line accepted. iptables-restore itself reads rules into a fixed buffer; kube-proxy's
/// longest lines are a few hundred bytes. Anything this long is not an iptables dump.
pub const MAX_LINE: usize = 64 * 1024;

/// One structural event of a dump, borrowed from the current line.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// `*name`
    Table {
        /// Table name.
        name: &'a str,
    },
    /// `:NAME POLICY [p:b]` or `-N NAME`.
    Chain {
        /// Chain name.
        name: &'a str,
        /// A built-in chain has a policy other than `-`.
        builtin: bool,
    },
    /// `-A CHAIN rest…` (counters stripped), `rest` not yet tokenised.
    Rule {
        /// Chain the rule is appended to.
        chain: &'a str,
        /// Everything after the chain name.
        rest: &'a [u8],
    },
    /// `-X CHAIN` (restore input of a partial sync).
    Delete {
        /// Chain deleted.
        chain: &'a str,
    },
    /// `COMMIT`
    Commit,
}

/// Reads a dump line by line from `input` (any `Read`: a file, stdin, a pipe from
/// iptables-save) and calls `visit` with each event and its 1-based line number. Only a chunk
/// of the input is in memory at a time. Events of tables not in `keep` are not reported, but
/// their structure is still checked.
pub fn read_dump<R: Read>(
    source: &str,
    input: R,
    keep: &[&str],
    mut visit: impl FnMut(Event<'_>, u32) -> Result<(), InventoryError>,
) -> Result<u64, InventoryError> {
    read_dump_text(source, input, keep, |event, _, line| visit(event, line))
}

/// As [`read_dump`], and with each [`Event::Rule`] also its `rest` as text when it is valid
/// UTF-8 (the reader checks a chunk once, so callers need not check each rule again);
/// `None` for other events and for rules after an invalid byte.
pub fn read_dump_text<R: Read>(
    source: &str,
    input: R,
    keep: &[&str],
    visit: impl FnMut(Event<'_>, Option<&str>, u32) -> Result<(), InventoryError>,
) -> Result<u64, InventoryError> {
    read_lines(source, Copied::new(input, BUFFER), keep, visit)
}

/// As [`read_dump_text`] for a dump already in memory: the lines are borrowed from `input`
/// instead of copied out of it, with the same events, texts, line numbers and errors.
pub fn read_dump_bytes(
    source: &str,
    input: &[u8],
    keep: &[&str],
    visit: impl FnMut(Event<'_>, Option<&str>, u32) -> Result<(), InventoryError>,
) -> Result<u64, InventoryError> {
    read_lines(source, Borrowed::new(input), keep, visit)
}

/// Bytes read at a time. Small enough that a chunk stays in the core's L2 cache while it is
/// split, checked and parsed.
const CHUNK: usize = 1 << 18;

/// Room of the window: a chunk and the longest line that may straddle its end.
const BUFFER: usize = CHUNK + MAX_LINE + 1;

fn read_lines(
    source: &str,
    mut window: impl Window,
    keep: &[&str],
    mut visit: impl FnMut(Event<'_>, Option<&str>, u32) -> Result<(), InventoryError>,
) -> Result<u64, InventoryError> {
    let mut filled = 0usize;
    let mut eof = false;
    let mut state = ReaderState {
        line_no: 0,
        open: None,
        keeping: false,
    };
    let mut total: u64 = 0;
    loop {
        if !eof && filled < BUFFER {
            let n = window.fill(source, filled, BUFFER)?;
            if n == 0 {
                eof = true;
            }
            filled += n;
            total += n as u64;
        }
        let buf = window.bytes(filled);
        // The chunk's complete lines are checked as UTF-8 once (a dump is ASCII), so names
        // and values are sliced out as text without a check each. Lines past an invalid
        // byte are checked one by one, as before.
        let complete = if eof {
            filled
        } else {
            memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1)
        };
        let text = match std::str::from_utf8(&buf[..complete]) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
        };
        let mut pos = 0usize;
        // One scan of the chunk for all its newlines: a search per line pays the set-up of
        // a vector search for lines of ~80 bytes.
        for nl in memchr::memchr_iter(b'\n', &buf[..complete]) {
            let line = Line {
                bytes: &buf[pos..nl],
                text: text.get(pos..nl),
            };
            state.line(source, keep, line, &mut visit)?;
            pos = nl + 1;
        }
        if eof {
            if pos < filled {
                let line = Line {
                    bytes: &buf[pos..filled],
                    text: text.get(pos..filled),
                };
                state.line(source, keep, line, &mut visit)?;
            }
            break;
        }
        if pos == 0 && filled == BUFFER {
            return Err(InventoryError::malformed(
                source,
                state.line_no + 1,
                format!("line is longer than {MAX_LINE} bytes; this is not an iptables-save dump"),
            ));
        }
        window.consume(pos, filled);
        filled -= pos;
        if filled > MAX_LINE {
            return Err(InventoryError::malformed(
                source,
                state.line_no + 1,
                format!("line is longer than {MAX_LINE} bytes; this is not an iptables-save dump"),
            ));
        }
    }
    if let Some((name, line)) = state.open {
        return Err(InventoryError::Truncated {
            input: source.to_owned(),
            table: name,
            line,
        });
    }
    Ok(total)
}

/// One line, and the same bytes as text when its chunk was valid UTF-8 up to its end.
#[derive(Clone, Copy)]
struct Line<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Line<'a> {
    /// A part of the line (a subslice of `bytes`) as text: sliced from `text` when there is
    /// one, checked on its own otherwise.
    fn text_of(
        &self,
        source: &str,
        line_no: u32,
        part: &'a [u8],
    ) -> Result<&'a str, InventoryError> {
        if let Some(t) = self.text {
            let off = (part.as_ptr() as usize).wrapping_sub(self.bytes.as_ptr() as usize);
            if let Some(s) = t.get(off..off.saturating_add(part.len())) {
                return Ok(s);
            }
        }
        ascii(source, line_no, part)
    }

    /// A part of the line as text if it is valid UTF-8, without an error.
    fn try_text_of(&self, part: &'a [u8]) -> Option<&'a str> {
        let off = (part.as_ptr() as usize).wrapping_sub(self.bytes.as_ptr() as usize);
        self.text?.get(off..off.saturating_add(part.len()))
    }
}

struct ReaderState {
    line_no: u32,
    open: Option<(String, u32)>,
    keeping: bool,
}

impl ReaderState {
    fn line(
        &mut self,
        source: &str,
        keep: &[&str],
        whole: Line<'_>,
        visit: &mut impl FnMut(Event<'_>, Option<&str>, u32) -> Result<(), InventoryError>,
    ) -> Result<(), InventoryError> {
        let mut line = whole.bytes;
        self.line_no = self.line_no.saturating_add(1);
        let line_no = self.line_no;
        if line.len() > MAX_LINE {
            return Err(InventoryError::malformed(
                source,
                line_no,
                format!(
                    "line is {} bytes long (limit {MAX_LINE}); this is not an iptables-save dump",
                    line.len()
                ),
            ));
        }
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let Some(&first) = line.first() else {
            return Ok(());
        };
        match first {
            b'#' => Ok(()),
            b'*' => {
                if let Some((name, at)) = &self.open {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        format!(
                            "table {name} (opened at line {at}) has no COMMIT before the next table"
                        ),
                    ));
                }
                let name = whole.text_of(source, line_no, &line[1..])?.trim_end();
                if name.is_empty() || name.contains(' ') {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "malformed table header",
                    ));
                }
                self.keeping = keep.contains(&name);
                self.open = Some((name.to_owned(), line_no));
                if self.keeping {
                    visit(Event::Table { name }, None, line_no)
                } else {
                    Ok(())
                }
            }
            b':' => {
                if self.open.is_none() {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "chain declared outside a table (no *table line before it)",
                    ));
                }
                if !self.keeping {
                    return Ok(());
                }
                let body = &line[1..];
                let name_end = body.iter().position(|&b| b == b' ').unwrap_or(body.len());
                let name = whole.text_of(source, line_no, &body[..name_end])?;
                if name.is_empty() {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "chain declaration without a name",
                    ));
                }
                let policy = body[name_end..]
                    .split(|&b| b == b' ')
                    .find(|p| !p.is_empty())
                    .unwrap_or(b"-");
                visit(
                    Event::Chain {
                        name,
                        builtin: policy != b"-",
                    },
                    None,
                    line_no,
                )
            }
            b'C' if line.starts_with(b"COMMIT") && line[6..].iter().all(|b| *b == b' ') => {
                if self.open.take().is_none() {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "COMMIT without a table",
                    ));
                }
                let k = std::mem::take(&mut self.keeping);
                if k {
                    visit(Event::Commit, None, line_no)
                } else {
                    Ok(())
                }
            }
            b'-' | b'[' => {
                if self.open.is_none() {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "rule outside a table (no *table line before it)",
                    ));
                }
                if !self.keeping {
                    return Ok(());
                }
                // `-A CHAIN …`, nearly every line of a dump, skips the general split.
                let (cmd, after) = match line.strip_prefix(b"-A ") {
                    Some(after) => (&b"-A"[..], trim_start(after)),
                    None => split_word(strip_counters(source, line_no, line)?),
                };
                let (chain_b, rest) = split_word(after);
                let chain = whole.text_of(source, line_no, chain_b)?;
                if chain.is_empty() {
                    return Err(InventoryError::malformed(
                        source,
                        line_no,
                        "command without a chain name",
                    ));
                }
                match cmd {
                    b"-A" | b"--append" => visit(
                        Event::Rule { chain, rest },
                        whole.try_text_of(rest),
                        line_no,
                    ),
                    b"-X" | b"--delete-chain" => visit(Event::Delete { chain }, None, line_no),
                    b"-N" | b"--new-chain" => visit(
                        Event::Chain {
                            name: chain,
                            builtin: false,
                        },
                        None,
                        line_no,
                    ),
                    _ => Err(InventoryError::malformed(
                        source,
                        line_no,
                        format!(
                            "unsupported command {:?} (an iptables-save dump has only -A lines)",
                            String::from_utf8_lossy(&cmd[..cmd.len().min(32)])
                        ),
                    )),
                }
            }
            _ => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
                Err(InventoryError::malformed(
                    source,
                    line_no,
                    format!(
                        "unrecognised line {shown:?} (expected *table, :chain, -A rule, COMMIT or # comment)"
                    ),
                ))
            }
        }
    }
}

fn strip_counters<'a>(
    source: &str,
    line_no: u32,
    line: &'a [u8],
) -> Result<&'a [u8], InventoryError> {
    if line.first() == Some(&b'[') {
        // `[packets:bytes] -A …` (iptables-save -c)
        let Some(close) = memchr(b']', line) else {
            return Err(InventoryError::malformed(
                source,
                line_no,
                "unterminated [packets:bytes] counter",
            ));
        };
        return Ok(trim_start(&line[close + 1..]));
    }
    if let Some(rest) = line.strip_prefix(b"-c ") {
        // `-c packets bytes -A …` (iptables-restore input)
        let (_, r) = split_word(rest);
        let (_, r) = split_word(r);
        return Ok(r);
    }
    Ok(line)
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| **c == b' ').count();
    &b[n..]
}

/// Splits off the first space-separated word; the rest has leading spaces removed.
pub fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    let b = trim_start(b);
    // A plain loop: the words split off here (`-A`, a chain name) are short.
    match b.iter().position(|&c| c == b' ') {
        Some(i) => (&b[..i], trim_start(&b[i + 1..])),
        None => (b, &[]),
    }
}

fn ascii<'a>(source: &str, line_no: u32, b: &'a [u8]) -> Result<&'a str, InventoryError> {
    std::str::from_utf8(b).map_err(|_| {
        InventoryError::malformed(source, line_no, "invalid UTF-8 in a table or chain name")
    })
}

#[cfg(test)]
mod tests;
