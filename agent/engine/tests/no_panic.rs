//! The parser never panics, whatever it is fed: arbitrary bytes, and real dumps cut or
//! corrupted at random places. (The cargo-fuzz target in fuzz/ explores the same property
//! with coverage guidance; see docs/fuzzing.md.)

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory};
use proptest::prelude::*;

fn parse(bytes: &[u8]) {
    let _ = inventory(vec![DumpInput {
        name: "fuzz".into(),
        family: IpFamily::IPv4,
        source: SourceKind::File {
            path: "fuzz".into(),
        },
        reader: bytes,
    }]);
}

const SEED: &str = include_str!("golden/overall/restore.txt");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parse(&bytes);
    }

    #[test]
    fn a_dump_cut_anywhere_never_panics(cut in 0usize..SEED.len()) {
        parse(&SEED.as_bytes()[..cut]);
    }

    #[test]
    fn a_dump_with_corrupted_bytes_never_panics(edits in proptest::collection::vec((0usize..SEED.len(), any::<u8>()), 1..16)) {
        let mut b = SEED.as_bytes().to_vec();
        for (i, v) in edits {
            b[i] = v;
        }
        parse(&b);
    }

    #[test]
    fn a_dump_with_lines_swapped_never_panics(a in 0usize..200, c in 0usize..200) {
        let mut lines: Vec<&str> = SEED.lines().collect();
        let n = lines.len();
        lines.swap(a % n, c % n);
        parse(lines.join("\n").as_bytes());
    }
}
