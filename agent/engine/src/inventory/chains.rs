//! The table of per-service and per-endpoint chains, keyed by (kind, hash).
//!
//! A dump of 20,000 services has ~120,000 such chains, each touched several times, so the
//! table is built for that: the 16 base32 characters and the kind pack into one `u128` key
//! (hashed with Fx), and the map holds only a slot index into a dense `Vec`.

use rustc_hash::FxHashMap;

use super::facts::{ChainFacts, HKind, Hash};

/// Chains by (kind, hash).
#[derive(Debug, Default)]
pub struct ChainTable {
    index: FxHashMap<u128, u32>,
    slots: Vec<Slot>,
    /// The last chain looked up: iptables-save prints a chain's rules together, so most
    /// lookups repeat the previous one.
    last: Option<(u128, u32)>,
}

#[derive(Debug)]
struct Slot {
    kind: HKind,
    hash: Hash,
    live: bool,
    facts: ChainFacts,
}

fn key(kind: HKind, h: &Hash) -> u128 {
    // Base32 letters and digits are 7-bit ASCII: 16 × 7 bits + 3 bits of kind.
    let mut k: u128 = kind as u128;
    for &b in h {
        k = (k << 7) | u128::from(b & 0x7f);
    }
    k
}

impl ChainTable {
    /// The chain's facts, created empty if absent.
    pub fn entry(&mut self, kind: HKind, h: &Hash) -> &mut ChainFacts {
        let k = key(kind, h);
        let idx = match self.find(k) {
            Some(i) => i as usize,
            None => {
                let i = self.slots.len();
                self.slots.push(Slot {
                    kind,
                    hash: *h,
                    live: true,
                    facts: ChainFacts::default(),
                });
                self.index.insert(k, i as u32);
                i
            }
        };
        self.last = Some((k, idx as u32));
        &mut self.slots[idx].facts
    }

    fn find(&self, k: u128) -> Option<u32> {
        match self.last {
            Some((lk, i)) if lk == k => Some(i),
            _ => self.index.get(&k).copied(),
        }
    }

    /// The chain's facts, if present.
    pub fn get(&self, kind: HKind, h: &Hash) -> Option<&ChainFacts> {
        self.find(key(kind, h))
            .map(|i| &self.slots[i as usize].facts)
    }

    /// Mutable facts, if present.
    pub fn get_mut(&mut self, kind: HKind, h: &Hash) -> Option<&mut ChainFacts> {
        let k = key(kind, h);
        let i = self.find(k)?;
        self.last = Some((k, i));
        Some(&mut self.slots[i as usize].facts)
    }

    /// Removes a chain (`-X`).
    pub fn remove(&mut self, kind: HKind, h: &Hash) {
        self.last = None;
        if let Some(i) = self.index.remove(&key(kind, h)) {
            let s = &mut self.slots[i as usize];
            s.live = false;
            s.facts = ChainFacts::default();
        }
    }

    /// Live chains in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (HKind, &Hash, &ChainFacts)> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| (s.kind, &s.hash, &s.facts))
    }
}
