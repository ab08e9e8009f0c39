//! kube-proxy's chain-name hashes.
//!
//! `portProtoHash` in pkg/proxy/iptables/proxier.go: the first 16 characters of
//! `base32.StdEncoding(sha256(servicePortName + protocol))`; endpoint chains hash
//! `servicePortName + protocol + "ip:port"`. Sixteen base32 characters are exactly the first
//! 10 bytes of the digest, so only those are encoded.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The 16-character hash kube-proxy appends to `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`,
/// `KUBE-FW-` (and, with the endpoint, `KUBE-SEP-`).
pub fn port_proto_hash(service_port_name: &str, protocol: &str, endpoint: &str) -> [u8; 16] {
    short_digest10([service_port_name, protocol, endpoint]).map_or_else(
        || digest_hash(service_port_name, protocol, endpoint),
        |d| base32_16(&d),
    )
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The first 10 bytes of the SHA-256 of the concatenated parts, for messages of at most
/// 119 bytes (two blocks once padded; every service and endpoint name kube-proxy hashes):
/// padded on the stack and compressed directly. The `Digest` wrapper's buffering and
/// finalisation cost as much as the compression itself for these short names, and the
/// resolver hashes one per endpoint. `None` for a longer message.
fn short_digest10(parts: [&str; 3]) -> Option<[u8; 10]> {
    use sha2::digest::generic_array::GenericArray;
    let mut buf = [0u8; 128];
    let mut len = 0usize;
    for p in parts {
        buf.get_mut(len..len + p.len())?
            .copy_from_slice(p.as_bytes());
        len += p.len();
    }
    if len > 119 {
        return None;
    }
    // Padding: 0x80, zeros, then the length in bits as a 64-bit big-endian number.
    buf[len] = 0x80;
    let blocks = if len + 9 <= 64 { 1 } else { 2 };
    let end = blocks * 64;
    buf[end - 8..end].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    let mut state = H0;
    // Blocks by reference (`from_slice` is a cast): building `GenericArray`s by value goes
    // through an iterator byte by byte and costs more than the compression.
    for block in buf.chunks_exact(64).take(blocks) {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
    let mut out = [0u8; 10];
    out[..4].copy_from_slice(&state[0].to_be_bytes());
    out[4..8].copy_from_slice(&state[1].to_be_bytes());
    out[8..].copy_from_slice(&state[2].to_be_bytes()[..2]);
    Some(out)
}

/// The hash through the `Digest` interface, for names of any length.
fn digest_hash(service_port_name: &str, protocol: &str, endpoint: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(service_port_name.as_bytes());
    h.update(protocol.as_bytes());
    h.update(endpoint.as_bytes());
    let digest = h.finalize();
    base32_16(&digest[..10])
}

fn base32_16(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // Two groups of 5 bytes -> 8 characters each.
    for (group, chunk) in bytes.chunks(5).take(2).enumerate() {
        let mut v: u64 = 0;
        for b in chunk {
            v = (v << 8) | u64::from(*b);
        }
        for i in 0..8 {
            let idx = ((v >> (35 - 5 * i)) & 0x1f) as usize;
            out[group * 8 + i] = ALPHABET[idx];
        }
    }
    out
}

/// Full chain name, e.g. `chain_name("KUBE-SVC-", "ns1/svc1:p80", "tcp", "")`.
pub fn chain_name(prefix: &str, service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    let h = port_proto_hash(service_port_name, protocol, endpoint);
    let mut s = String::with_capacity(prefix.len() + 16);
    s.push_str(prefix);
    s.extend(h.iter().map(|&b| b as char));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are kube-proxy's own test fixtures (pkg/proxy/iptables/proxier_test.go,
    // TestOverallIPTablesRules), recorded in shared/reference/kube-proxy-facts.md §1.2.
    #[test]
    fn service_chain_hashes_match_kube_proxy_fixtures() {
        assert_eq!(
            chain_name("KUBE-SVC-", "ns1/svc1:p80", "tcp", ""),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            chain_name("KUBE-FW-", "ns5/svc5:p80", "tcp", ""),
            "KUBE-FW-NUKIZ6OKUXPJNT4C"
        );
        assert_eq!(
            chain_name("KUBE-SVC-", "ns2/svc2:p80", "tcp", ""),
            "KUBE-SVC-GNZBNJ2PO5MGZ6GT"
        );
    }

    #[test]
    fn endpoint_chain_hash_matches_kube_proxy_fixture() {
        assert_eq!(
            chain_name("KUBE-SEP-", "ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn the_short_path_agrees_with_the_digest_for_every_length() {
        for n in 0..200 {
            let spn: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            for ep in ["", "10.1.2.3:8080", "[fd00::1]:80"] {
                assert_eq!(
                    port_proto_hash(&spn, "tcp", ep),
                    digest_hash(&spn, "tcp", ep),
                    "{n} {ep}"
                );
            }
        }
    }

    #[test]
    fn base32_of_known_bytes_matches_rfc4648() {
        // RFC 4648 §10: BASE32("fooba") = "MZXW6YTB"
        let out = base32_16(b"foobafooba");
        assert_eq!(&out, b"MZXW6YTBMZXW6YTB");
    }
}
