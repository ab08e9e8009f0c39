//! Fuzz target: any byte string through the whole inventory (reader, tokenizer, rule parser,
//! resolver). The property is "no panic, no hang"; errors are fine.
#![no_main]

use ipvsmig_engine::inventory::{DumpInput, IpFamily, SourceKind, inventory};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for family in [IpFamily::IPv4, IpFamily::IPv6] {
        let _ = inventory(vec![DumpInput { name: "fuzz".into(), family, source: SourceKind::File { path: "fuzz".into() }, reader: data }]);
    }
});
