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
    fn base32_of_known_bytes_matches_rfc4648() {
        // RFC 4648 §10: BASE32("fooba") = "MZXW6YTB"
        let out = base32_16(b"foobafooba");
        assert_eq!(&out, b"MZXW6YTBMZXW6YTB");
    }
}
