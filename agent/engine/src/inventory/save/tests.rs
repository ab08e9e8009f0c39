//! The reader's tests: structure, errors, and the two windows giving the same lines.
use super::*;

fn events(input: &str) -> Result<Vec<String>, InventoryError> {
    let mut v = Vec::new();
    read_dump("f", input.as_bytes(), &["nat"], |e, line| {
        v.push(format!("{line}:{e:?}"));
        Ok(())
    })?;
    Ok(v)
}

#[test]
fn missing_commit_is_a_truncation_error() {
    let e = events("*nat\n:KUBE-SERVICES - [0:0]\n").unwrap_err();
    assert!(
        matches!(e, InventoryError::Truncated { line: 1, .. }),
        "{e}"
    );
}

#[test]
fn counters_prefix_is_stripped() {
    let v = events("*nat\n:A - [0:0]\n[5:300] -A A -j B\nCOMMIT\n").unwrap();
    assert_eq!(v[2], r#"3:Rule { chain: "A", rest: [45, 106, 32, 66] }"#);
}

#[test]
fn other_tables_are_checked_but_not_reported() {
    let v = events(
        "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j CT --notrack\nCOMMIT\n*nat\nCOMMIT\n",
    )
    .unwrap();
    assert_eq!(v, ["5:Table { name: \"nat\" }", "6:Commit"]);
}

#[test]
fn lines_longer_than_the_limit_are_rejected_with_their_number() {
    let long = format!("*nat\n-A X {}\nCOMMIT\n", "a".repeat(MAX_LINE + 10));
    let e = events(&long).unwrap_err();
    assert!(e.to_string().starts_with("f:2: "), "{e}");
}

/// Every event with its text and line, then the result, one string each.
fn trace(input: &[u8], window: &str) -> Vec<String> {
    let mut v = Vec::new();
    let visit = |e: Event<'_>, t: Option<&str>, line: u32| {
        v.push(format!("{line}:{e:?}:{t:?}"));
        Ok(())
    };
    let r = match window {
        "borrowed" => read_dump_bytes("f", input, &["nat"], visit),
        "copied" => read_dump_text("f", input, &["nat"], visit),
        // A pipe gives short reads: 4093 bytes at a time.
        _ => read_dump_text("f", Trickle(input), &["nat"], visit),
    };
    v.push(format!("{r:?}"));
    v
}

struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(4093);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A dump of several chunks: `*nat`, a declaration, numbered rules, COMMIT.
fn big_dump() -> Vec<u8> {
    let mut d = b"*nat\n:KUBE-SERVICES - [0:0]\n".to_vec();
    for i in 0..12_000 {
        d.extend_from_slice(
            format!("-A KUBE-SERVICES -m comment --comment \"ns/svc-{i} cluster IP\" -j RETURN\n")
                .as_bytes(),
        );
    }
    d.extend_from_slice(b"COMMIT\n");
    d
}

#[test]
fn a_dump_in_memory_gives_the_same_lines_borrowed_as_copied() {
    let d = big_dump();
    assert!(d.len() > 2 * CHUNK, "the dump spans several chunks");
    let borrowed = trace(&d, "borrowed");
    // Independent count: one event per line (the result is the last entry).
    assert_eq!(
        borrowed.len() - 1,
        d.iter().filter(|b| **b == b'\n').count()
    );
    assert_eq!(borrowed.last(), Some(&format!("Ok({})", d.len())));
    assert_eq!(borrowed, trace(&d, "copied"));
    assert_eq!(borrowed, trace(&d, "short reads"));
}

#[test]
fn odd_lines_anywhere_give_the_same_events_and_errors_borrowed_as_copied() {
    let base = big_dump();
    // Where the odd line goes: the start of the rules, around the first chunk's end, near
    // the end of the input.
    let at = [
        29,
        CHUNK - 40,
        CHUNK - 1,
        CHUNK + 7,
        CHUNK + MAX_LINE - 3,
        base.len() - 8,
    ];
    let odd: [&[u8]; 8] = [
        &[b'x'; MAX_LINE - 1],
        &[b'x'; MAX_LINE],
        &[b'x'; MAX_LINE + 1],
        &[b'x'; 2 * MAX_LINE + 3],
        b"-A KUBE-SERVICES -j \xff\xfe RETURN",
        b"-A KUBE-SERVICES -j RETURN\r",
        b"",
        b"# a comment",
    ];
    let mut errors = 0;
    for &pos in &at {
        // Insert at the start of the line that holds `pos`.
        let start = base[..pos]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        for line in odd {
            let mut d = base[..start].to_vec();
            d.extend_from_slice(line);
            d.push(b'\n');
            d.extend_from_slice(&base[start..]);
            let borrowed = trace(&d, "borrowed");
            assert_eq!(borrowed, trace(&d, "copied"), "line {line:.20?} at {start}");
            errors += usize::from(borrowed.last().is_some_and(|r| r.starts_with("Err")));
        }
        // And as the last line, without a newline.
        let mut d = base.clone();
        d.extend_from_slice(&[b'y'; MAX_LINE + 5]);
        assert_eq!(trace(&d, "borrowed"), trace(&d, "copied"));
    }
    // Lines of `x` are not iptables-save lines: each of those 4 × 6 cases is an error.
    assert_eq!(errors, 4 * at.len());
}
