//! Fast parsers for the addresses, ports and probabilities of a dump, used before the
//! standard library's.
//!
//! A 20,000-service dump holds 200,000 IPv4 addresses, 100,000 ports and 80,000
//! `--probability` values in the shapes kube-proxy writes (`10.128.0.7`, `8080`,
//! `0.2000000000`). `str::parse` handles every notation and checks
//! IPv6 too, which costs several times more than reading four octets. These parsers accept
//! only a strict subset of what `str::parse` accepts — and give the same value for it — and
//! answer `None` for everything else, so callers fall back to `str::parse` and keep its
//! exact behaviour (the tests compare the two).

use std::net::Ipv4Addr;

/// Dotted-quad IPv4 as `Ipv4Addr::from_str` reads it: four decimal octets of one to three
/// digits, no leading zero, each at most 255. `None` means "ask `str::parse`", not "invalid".
pub fn ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0usize;
    for (n, slot) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while let Some(&c) = s.get(i) {
            if !c.is_ascii_digit() || i - start == 3 {
                break;
            }
            v = v * 10 + u32::from(c - b'0');
            i += 1;
        }
        let len = i - start;
        // std rejects a leading zero ("01") and more than three digits.
        if len == 0 || (len > 1 && s[start] == b'0') || v > 255 {
            return None;
        }
        *slot = v as u8;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

/// A port of one to five decimal digits, as `u16::from_str` reads it (which also takes a
/// leading `+`: that and anything else is left to it).
pub fn port(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    u16::try_from(v).ok()
}

/// Exact powers of ten: every `10^k` up to `10^22` is a double (5^22 < 2^53).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A decimal `D+.D+` of at most 15 digits in all (kube-proxy prints probabilities with
/// `%0.10f`, iptables-save with 11 decimals), as `f64::from_str` reads it. The digits as an
/// integer `n < 10^15 < 2^53` and `10^k` are both exact doubles, and IEEE 754 division
/// rounds the exact quotient `n / 10^k` correctly — the correctly rounded value of the
/// decimal, which is what `f64::from_str` returns (Clinger's fast path, the one
/// `core::num::dec2flt` takes first). Anything else (exponents, signs, a missing side of the
/// point, more digits) is `None`: "ask `str::parse`".
pub fn decimal(s: &[u8]) -> Option<f64> {
    let dot = s.iter().position(|&c| c == b'.')?;
    let (int, frac) = (&s[..dot], &s[dot + 1..]);
    if int.is_empty() || frac.is_empty() || int.len() + frac.len() > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in int.iter().chain(frac) {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n as f64 / POW10.get(frac.len())?)
}

/// A `--probability` value as `str::parse::<f64>` reads it, through [`decimal`] first.
pub fn probability(s: &str) -> Option<f64> {
    decimal(s.as_bytes()).or_else(|| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_std_wherever_it_answers() {
        let cases = [
            "10.128.0.7",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4 ",
            "1..2.3",
            "1.2.3.1000",
            "1234.1.1.1",
            "+1.2.3.4",
            "",
            "fd00::1",
            "::ffff:1.2.3.4",
            "1.2.3.4/32",
            "10.0.0.10",
            "100.200.30.4",
        ];
        for c in cases {
            let ours = ipv4(c.as_bytes());
            let std = c.parse::<Ipv4Addr>().ok();
            if ours.is_some() {
                assert_eq!(ours, std, "{c:?}");
            }
        }
        assert_eq!(ipv4(b"10.128.0.7"), Some(Ipv4Addr::new(10, 128, 0, 7)));
        for c in [
            "80", "0", "65535", "65536", "080", "+80", "", "123456", "8a", "-1",
        ] {
            let ours = port(c.as_bytes());
            if ours.is_some() {
                assert_eq!(ours, c.parse::<u16>().ok(), "{c:?}");
            }
        }
        assert_eq!(port(b"8080"), Some(8080));
        assert_eq!(port(b"65536"), None);
    }

    #[test]
    fn every_ipv4_octet_agrees_with_std() {
        for a in 0..=1000u32 {
            for text in [
                format!("{a}.0.0.1"),
                format!("1.2.3.{a:03}"),
                format!("9.{a}.9.9"),
            ] {
                let ours = ipv4(text.as_bytes());
                let std = text.parse::<Ipv4Addr>().ok();
                assert!(ours.is_none() || ours == std, "{text}");
                // Canonical text is always read here, never left to std.
                if std.is_some_and(|ip| ip.to_string() == text) {
                    assert_eq!(ours, std, "{text}");
                }
            }
        }
    }

    #[test]
    fn decimals_agree_with_std_bit_for_bit_wherever_they_answer() {
        let mut cases: Vec<String> = [
            "0.2000000000",
            "0.33333333349",
            "1.0000000000",
            "0.0000000001",
            "0.5",
            "00.5",
            "123456789012.345",
            "0.1234567890123456",
            ".5",
            "5.",
            "1e-1",
            "+0.5",
            "-0.5",
            "0.5.5",
            "",
            ".",
            "0,5",
            "inf",
            "NaN",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        // kube-proxy's spellings of 1/n (proxier.go: fmt.Sprintf("%0.10f", ...)) and
        // iptables-save's 11-decimal form of the kernel's quantum, for every n it writes.
        for n in 1..=2000u32 {
            let p = 1.0 / f64::from(n);
            cases.push(format!("{p:.10}"));
            cases.push(format!("{p:.11}"));
            cases.push(format!(
                "{:.11}",
                (p * 2_147_483_648.0).round() / 2_147_483_648.0
            ));
        }
        // Digit strings spread over the whole 15-digit range.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = format!("{:015}", x % 1_000_000_000_000_000);
            let split = 1 + (x >> 60) as usize % 14;
            cases.push(format!("{}.{}", &digits[..split], &digits[split..]));
        }
        let mut answered = 0;
        for c in &cases {
            if let Some(ours) = decimal(c.as_bytes()) {
                answered += 1;
                let std = c.parse::<f64>().ok();
                assert_eq!(Some(ours.to_bits()), std.map(f64::to_bits), "{c:?}");
            }
        }
        // Every kube-proxy spelling is answered here, not left to std.
        assert_eq!(decimal(b"0.2000000000"), Some(0.2));
        assert!(answered > 26_000, "{answered}");
        for c in [
            ".5",
            "5.",
            "1e-1",
            "+0.5",
            "-0.5",
            "0.1234567890123456",
            "inf",
        ] {
            assert_eq!(decimal(c.as_bytes()), None, "{c:?}");
        }
    }
}
