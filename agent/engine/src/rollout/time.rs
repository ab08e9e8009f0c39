//! The two time spellings of the `IPVSMigration` object: durations as the CRD's pattern
//! `^([0-9]+(ms|s|m|h|d))+$` writes them (`5m`, `1h30m`, `500ms`), and timestamps as
//! Kubernetes' `metav1.Time` serialises them (RFC 3339, UTC, whole seconds:
//! `2026-11-25T02:00:00Z`, apimachinery `pkg/apis/meta/v1/time.go` `MarshalJSON`).
//!
//! Pure conversions to and from unix seconds; no clock is read here.

use std::time::Duration;

/// Parses a CRD duration (`5m`, `1h30m`, `500ms`, `2d`); `None` when it does not match the
/// schema's pattern or overflows.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first()? {
                b's' => (1_000, 1),
                b'm' => (60_000, 1),
                b'h' => (3_600_000, 1),
                b'd' => (86_400_000, 1),
                _ => return None,
            }
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        rest = &rest[len..];
    }
    u64::try_from(total).ok().map(Duration::from_millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`] (same source, `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds as `metav1.Time` writes them: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX / 2);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An RFC 3339 timestamp (`Z` or `±HH:MM`, optional fraction, which is dropped) as unix
/// seconds; `None` for anything else or a time before 1970.
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let t = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset;
    u64::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_every_unit_of_the_crd_pattern_and_their_sums() {
        for (text, ms) in [
            ("5m", 300_000),
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("2d", 172_800_000),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_outside_the_crd_pattern_are_refused() {
        for text in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "5 m",
            "1.5h",
            "5M",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn timestamps_match_known_dates() {
        // `date -u -d @SECS +%Y-%m-%dT%H:%M:%SZ` (GNU coreutils) for each.
        for (unix, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (1_795_572_000, "2026-11-25T02:00:00Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ] {
            assert_eq!(format_time(unix), text);
            assert_eq!(parse_time(text), Some(unix), "{text}");
        }
    }

    #[test]
    fn timestamps_with_offsets_and_fractions_are_read_as_utc_seconds() {
        assert_eq!(parse_time("2026-11-25T03:00:00+01:00"), Some(1_795_572_000));
        assert_eq!(
            parse_time("2026-11-25T02:00:00.123456Z"),
            Some(1_795_572_000)
        );
        for bad in [
            "2026-11-25 02:00:00Z",
            "2026-13-25T02:00:00Z",
            "2026-11-25T02:00:00",
            "1969-12-31T23:59:59Z",
            "2026-11-25T02:00:00.Z",
            "yesterday",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
