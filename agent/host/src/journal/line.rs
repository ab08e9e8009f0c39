//! One journal line: encoding with its trailing checksum, and the checks that tell a torn
//! line (crash while writing) from a wrong one. Knows nothing of files or of line order.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::JournalError;

/// Hex digits of the checksum: the first 64 bits of SHA-256 over the rest of the line.
const CRC_HEX: usize = 16;
/// The line ending that carries the checksum: `,"crc":"<16 hex>"}`.
const CRC_OPEN: &[u8] = b",\"crc\":\"";
const CRC_CLOSE: &[u8] = b"\"}";

#[derive(Serialize)]
pub(super) struct HeaderLine<'a> {
    pub(super) v: u64,
    pub(super) kind: &'a str,
    pub(super) seq: u64,
    pub(super) boot: &'a str,
}

#[derive(Serialize)]
pub(super) struct RecordLine<'a, R> {
    pub(super) v: u64,
    pub(super) seq: u64,
    pub(super) boot: &'a str,
    pub(super) rec: &'a R,
}

#[derive(Serialize)]
pub(super) struct SnapshotLine<'a, R> {
    pub(super) v: u64,
    pub(super) seq: u64,
    pub(super) boot: &'a str,
    pub(super) snapshot: &'a R,
}

/// Serializes one line and appends its checksum as the last field: the checksum covers the
/// exact bytes before it (with the closing brace), so checking needs no re-serialization.
pub(super) fn encode<T: Serialize>(line: &T) -> Result<Vec<u8>, JournalError> {
    let mut bytes = serde_json::to_vec(line).map_err(|source| JournalError::Encode { source })?;
    let crc = checksum(&bytes);
    // A struct always serializes to an object, so the last byte is its closing brace.
    bytes.pop();
    bytes.extend_from_slice(CRC_OPEN);
    bytes.extend_from_slice(crc.as_bytes());
    bytes.extend_from_slice(CRC_CLOSE);
    bytes.push(b'\n');
    Ok(bytes)
}

fn checksum(canonical: &[u8]) -> String {
    let digest = Sha256::digest(canonical);
    digest[..CRC_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the trailing checksum of `body` (one line without its newline).
fn checksum_ok(body: &[u8]) -> bool {
    let tail = CRC_OPEN.len() + CRC_HEX + CRC_CLOSE.len();
    let Some(start) = body.len().checked_sub(tail) else {
        return false;
    };
    let (rest, end) = body.split_at(start);
    if !end.starts_with(CRC_OPEN) || !end.ends_with(CRC_CLOSE) {
        return false;
    }
    let mut canonical = rest.to_vec();
    canonical.push(b'}');
    end[CRC_OPEN.len()..CRC_OPEN.len() + CRC_HEX] == *checksum(&canonical).as_bytes()
}

/// First pass over a line: only its version, ignoring every other field (a later version
/// may have other fields and another checksum).
#[derive(Deserialize)]
struct VersionProbe<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    v: Option<&'a RawValue>,
}

/// Second pass, once version and checksum are right: exactly version 1's fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Wire<'a> {
    #[serde(rename = "v")]
    _v: IgnoredAny,
    #[serde(rename = "crc")]
    _crc: IgnoredAny,
    pub(super) seq: u64,
    pub(super) boot: String,
    pub(super) kind: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) rec: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub(super) snapshot: Option<&'a RawValue>,
}

/// A field that is present is `Some`, even when its value is `null` (a record may be null).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Why a line was not accepted.
pub(super) enum Bad {
    /// Not a whole, intact line: a torn tail when it is the last line, corruption otherwise.
    Damaged(String),
    /// A version this build does not know.
    Version(String),
    /// Intact but wrong (fields, order, sequence): always corruption.
    Invalid(String),
}

pub(super) fn decode(line: &[u8]) -> Result<Wire<'_>, Bad> {
    let Some(body) = line.strip_suffix(b"\n") else {
        return Err(Bad::Damaged("no newline at the end".into()));
    };
    let probe: VersionProbe<'_> = serde_json::from_slice(body)
        .map_err(|e| Bad::Damaged(format!("not a JSON object: {e}")))?;
    match probe.v.map(RawValue::get) {
        None => return Err(Bad::Damaged("no format version \"v\"".into())),
        Some("1") => {}
        Some(other) => return Err(Bad::Version(other.to_owned())),
    }
    if !checksum_ok(body) {
        return Err(Bad::Damaged("checksum mismatch".into()));
    }
    serde_json::from_slice(body).map_err(|e| Bad::Invalid(e.to_string()))
}
