//! Replay: reads a journal file line by line into an [`Opened`], checking order and
//! sequence; decides which damage is a torn tail and which is corruption. Never writes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::line::{Bad, decode};
use super::{HEADER_KIND, JournalError, Opened, io_err};

pub(super) struct Replay<R> {
    pub(super) opened: Opened<R>,
    /// Bytes of intact lines; a torn tail starts here.
    pub(super) good_len: u64,
    pub(super) next_seq: u64,
}

pub(super) fn replay<R: DeserializeOwned>(
    path: &Path,
    file: &File,
    boot_id: &str,
) -> Result<Replay<R>, JournalError> {
    let corrupt = |line: u64, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut out = Replay {
        opened: Opened {
            snapshot: None,
            records: Vec::new(),
            boot_changed: false,
            recorded_boot: None,
            torn_tail: None,
        },
        good_len: 0,
        next_seq: 0,
    };
    let mut line: u64 = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        line += 1;
        let wire = match decode(&buf) {
            Ok(wire) => wire,
            Err(Bad::Damaged(reason)) => {
                let at_end = reader.fill_buf().map_err(io_err("read", path))?.is_empty();
                if at_end {
                    out.opened.torn_tail = Some(line);
                    break;
                }
                return Err(corrupt(line, reason));
            }
            Err(Bad::Version(found)) => {
                return Err(JournalError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    line,
                    found,
                });
            }
            Err(Bad::Invalid(reason)) => return Err(corrupt(line, reason)),
        };
        if line > 1 && wire.seq != out.next_seq {
            let reason = format!(
                "sequence number {} where {} was due",
                wire.seq, out.next_seq
            );
            return Err(corrupt(line, reason));
        }
        match (line, wire.kind.as_deref(), wire.rec, wire.snapshot) {
            (1, Some(HEADER_KIND), None, None) => {}
            (1, _, _, _) => {
                return Err(corrupt(
                    line,
                    "the first line is not a journal header".into(),
                ));
            }
            (_, Some(_), _, _) => {
                return Err(corrupt(line, "a header after the first line".into()));
            }
            (_, None, Some(rec), None) => {
                out.opened.records.push(decode_record(path, line, rec)?);
            }
            (2, None, None, Some(snapshot)) => {
                out.opened.snapshot = Some(decode_record(path, line, snapshot)?);
            }
            (_, None, None, Some(_)) => {
                return Err(corrupt(
                    line,
                    "a snapshot not right after the header".into(),
                ));
            }
            (_, None, _, _) => {
                let reason = "a line needs exactly one of \"rec\" and \"snapshot\"".into();
                return Err(corrupt(line, reason));
            }
        }
        out.next_seq = wire
            .seq
            .checked_add(1)
            .ok_or_else(|| corrupt(line, "sequence number out of range".into()))?;
        out.opened.recorded_boot = Some(wire.boot);
        out.good_len += n as u64;
    }
    out.opened.boot_changed = out
        .opened
        .recorded_boot
        .as_deref()
        .is_some_and(|b| b != boot_id);
    Ok(out)
}

fn decode_record<R: DeserializeOwned>(
    path: &Path,
    line: u64,
    raw: &RawValue,
) -> Result<R, JournalError> {
    serde_json::from_str(raw.get()).map_err(|source| JournalError::Record {
        path: path.to_path_buf(),
        line,
        source,
    })
}
