//! Inventory behaviour on hand-made variations of a golden dump.

use super::*;

const OVERALL: &str = include_str!("../../tests/golden/overall/restore.txt");

fn inv(text: &str) -> Result<Inventory, InventoryError> {
    inventory_from_str("t", text)
}

/// The dump is rejected at the first line `at` matches, with a message containing `needle`.
fn check_error(text: &str, at: impl Fn(&str) -> bool, needle: &str) {
    let want = text.lines().position(at).unwrap() as u32 + 1;
    match inv(text) {
        Err(InventoryError::Malformed { line, message, .. }) => {
            assert_eq!(line, want, "{message}");
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_renamed_endpoint_chain_is_a_hash_mismatch() {
    // Rename ns1/svc1's only endpoint chain everywhere: the graph still holds, the hash does not.
    let text = OVERALL.replace("KUBE-SEP-SXIVWICOYRO3J4NJ", "KUBE-SEP-AAAAAAAAAAAAAAAA");
    let inv = inv(&text).unwrap();
    let sp = inv
        .service_ports
        .iter()
        .find(|s| s.name.to_string() == "ns1/svc1:p80")
        .unwrap();
    assert_eq!(sp.hash_mismatches, ["KUBE-SEP-AAAAAAAAAAAAAAAA"]);
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.code == "hash-mismatch" && w.chain == "KUBE-SEP-AAAAAAAAAAAAAAAA")
    );
    assert_eq!(sp.endpoints.len(), 1, "the endpoint is still inventoried");
}

#[test]
fn a_jump_to_an_undeclared_endpoint_chain_is_an_error_with_its_line() {
    let text = OVERALL.replace(":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]\n", "");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("-A KUBE-SEP-SXIVWICOYRO3J4NJ "))
        .map(|l| format!("{l}\n"))
        .collect();
    check_error(
        &text,
        |l| l.contains("-j KUBE-SEP-SXIVWICOYRO3J4NJ"),
        "KUBE-SEP-SXIVWICOYRO3J4NJ",
    );
}

#[test]
fn deleting_a_chain_with_x_removes_it() {
    // Partial-sync restore input deletes stale chains with -X after declaring them.
    let (head, nat) = OVERALL.split_at(OVERALL.find("*nat\n").unwrap());
    let nat = nat
        .replacen(
            ":KUBE-SERVICES - [0:0]\n",
            ":KUBE-SERVICES - [0:0]\n:KUBE-SEP-ZZZZZZZZZZZZZZZZ - [0:0]\n",
            1,
        )
        .replacen("\nCOMMIT\n", "\n-X KUBE-SEP-ZZZZZZZZZZZZZZZZ\nCOMMIT\n", 1);
    let text = format!("{head}{nat}");
    let inv = inv(&text).unwrap();
    assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
}

#[test]
fn an_invalid_byte_before_the_kube_rules_gives_the_same_model() {
    // A non-UTF-8 comment in another program's rule: the chunk is then read line by line
    // (and the hot shapes by the general parser), with the same result.
    let large = include_str!("../../tests/golden/large-cluster/restore.txt");
    let (head, nat) = large.split_at(large.find("*nat\n").unwrap());
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(b"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment \"\xff\xfe\" -j CT --notrack\nCOMMIT\n");
    bytes.extend_from_slice(nat.as_bytes());
    let read = |b: &[u8]| {
        inventory(vec![DumpInput {
            name: "t".into(),
            family: IpFamily::IPv4,
            source: SourceKind::File { path: "t".into() },
            reader: b,
        }])
    };
    let plain = read(large.as_bytes()).unwrap();
    let mixed = read(&bytes).unwrap();
    assert_eq!(
        serde_json::to_value(&mixed.service_ports).unwrap(),
        serde_json::to_value(&plain.service_ports).unwrap()
    );
    assert!(!plain.service_ports.is_empty());
    assert_eq!(mixed.warnings.len(), plain.warnings.len());
}

#[test]
fn normalize_puts_ports_in_order_whatever_order_they_came_in() {
    let sorted = inv(OVERALL).unwrap();
    let names = |i: &Inventory| -> Vec<String> {
        i.service_ports
            .iter()
            .map(|s| format!("{} {:?}", s.name, s.protocol))
            .collect()
    };
    assert!(sorted.service_ports.len() > 4);
    let n = sorted.service_ports.len();
    // Reversed, rotated, and one swap: cycles of every length.
    for perm in [
        (0..n).rev().collect::<Vec<_>>(),
        (0..n).map(|i| (i + 3) % n).collect(),
        (0..n).map(|i| if i < 2 { 1 - i } else { i }).collect(),
    ] {
        let mut shuffled = inv(OVERALL).unwrap();
        shuffled.service_ports = perm
            .iter()
            .map(|&i| sorted.service_ports[i].clone())
            .collect();
        shuffled.normalize();
        assert_eq!(names(&shuffled), names(&sorted), "{perm:?}");
    }
}

#[test]
fn a_rule_after_its_chain_was_deleted_is_an_error_even_right_after_another_rule_of_it() {
    // The collector remembers the previous rule's chain; -X between two rules must forget it.
    let large = include_str!("../../tests/golden/large-cluster/restore.txt");
    let hairpin = "-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1 -j KUBE-MARK-MASQ\n";
    assert!(large.contains(hairpin));
    let text = large.replacen(
        hairpin,
        &format!("{hairpin}-X KUBE-SEP-SXIVWICOYRO3J4NJ\n"),
        1,
    );
    check_error(
        &text,
        |l| l.starts_with("-A KUBE-SEP-SXIVWICOYRO3J4NJ -m tcp"),
        "not declared",
    );
}
