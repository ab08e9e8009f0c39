//! The table of per-service and per-endpoint chains, keyed by (kind, hash), each with a
//! [`ChainId`] assigned the first time its name is seen (usually its declaration).
//!
//! A dump of 20,000 services has ~120,000 such chains, each named several times (declared,
//! jumped to, then its rules appended), so the table is built for that: the 16 base32
//! characters and the kind pack into one `u128` key, facts and the resolver hold the id
//! instead of the name, and a lookup first tries the recently used chains and the ones
//! declared right after them — kube-proxy writes the declarations and the rules of a service
//! in the same order (SVC, then its SEPs), so almost every lookup is answered without
//! touching the hash index. Only a miss there (iptables-save's live form sorts rules by
//! chain) goes to the Fx-hashed index.

use rustc_hash::FxHashMap;

use super::facts::{ChainFacts, HKind, Hash};

/// Index of a chain in the table; stable for the life of the table, also across `-X`.
pub type ChainId = u32;

/// How many recently used chains a lookup tries before the hash index.
const RECENT: usize = 8;

/// Chains by (kind, hash).
#[derive(Debug, Default)]
pub struct ChainTable {
    /// Keys as four `u32`s: a `u128` is 16-byte aligned, which makes each entry of the
    /// table 32 bytes instead of 20 — at 120k chains, megabytes of fresh pages per rehash.
    index: FxHashMap<[u32; 4], ChainId>,
    /// Keys by id, apart from the facts so the sequential guess touches one cache line; a
    /// chain's kind and hash are read back from its key.
    keys: Vec<u128>,
    slots: Vec<ChainFacts>,
    /// Recently used (key, id) pairs, a ring.
    recent: [(u128, ChainId); RECENT],
    next_recent: usize,
}

fn key(kind: HKind, h: &Hash) -> u128 {
    // Base32 letters and digits are 7-bit ASCII: 16 × 7 bits, 3 bits of kind and a set bit so
    // that no key is 0 (the empty ring's entries).
    let mut k: u128 = (kind as u128) | 8;
    for &b in h {
        k = (k << 7) | u128::from(b & 0x7f);
    }
    k
}

fn words(k: u128) -> [u32; 4] {
    [
        k as u32,
        (k >> 32) as u32,
        (k >> 64) as u32,
        (k >> 96) as u32,
    ]
}

/// The kind and hash a key was made of.
fn unkey(k: u128) -> (HKind, Hash) {
    let kind = HKind::ALL
        .get(((k >> 112) & 7) as usize)
        .copied()
        .unwrap_or(HKind::Xlb);
    let mut h = [0u8; 16];
    for (i, b) in h.iter_mut().enumerate() {
        *b = ((k >> (7 * (15 - i))) & 0x7f) as u8;
    }
    (kind, h)
}

impl ChainTable {
    /// A recently used chain or the one declared right after it.
    fn find_recent(&self, k: u128) -> Option<ChainId> {
        for &(rk, id) in &self.recent {
            if rk == k {
                return Some(id);
            }
            if self.keys.get(id as usize + 1) == Some(&k) {
                return Some(id + 1);
            }
        }
        None
    }

    fn find(&self, k: u128) -> Option<ChainId> {
        self.find_recent(k)
            .or_else(|| self.index.get(&words(k)).copied())
    }

    fn remember(&mut self, k: u128, id: ChainId) {
        if self.recent.iter().any(|&(rk, _)| rk == k) {
            return;
        }
        self.recent[self.next_recent] = (k, id);
        self.next_recent = (self.next_recent + 1) % RECENT;
    }

    /// The chain's id, creating an undeclared, empty chain if the name is new.
    pub fn id(&mut self, kind: HKind, h: &Hash) -> ChainId {
        let k = key(kind, h);
        let id = match self.find_recent(k) {
            Some(i) => i,
            None => {
                let next = self.slots.len() as ChainId;
                let i = *self.index.entry(words(k)).or_insert(next);
                if i == next {
                    self.slots.push(ChainFacts::default());
                    self.keys.push(k);
                }
                i
            }
        };
        self.remember(k, id);
        id
    }

    /// The chain's id if its name has been seen.
    pub fn find_id(&mut self, kind: HKind, h: &Hash) -> Option<ChainId> {
        let k = key(kind, h);
        let id = self.find(k)?;
        self.remember(k, id);
        Some(id)
    }

    /// The facts of a chain by id.
    pub fn get(&self, id: ChainId) -> Option<&ChainFacts> {
        self.slots.get(id as usize)
    }

    /// Mutable facts of a chain by id.
    pub fn get_mut(&mut self, id: ChainId) -> Option<&mut ChainFacts> {
        self.slots.get_mut(id as usize)
    }

    /// Kind and hash of a chain by id.
    pub fn name(&self, id: ChainId) -> Option<(HKind, Hash)> {
        self.keys.get(id as usize).map(|&k| unkey(k))
    }

    /// Removes a chain (`-X`): it is undeclared and empty again, and keeps its id.
    pub fn remove(&mut self, kind: HKind, h: &Hash) {
        if let Some(id) = self.find_id(kind, h)
            && let Some(s) = self.slots.get_mut(id as usize)
        {
            *s = ChainFacts::default();
        }
    }

    /// Declared chains that match `keep`, in the order their names were first seen (names
    /// are decoded only for those).
    pub fn filtered(
        &self,
        keep: impl Fn(&ChainFacts) -> bool,
    ) -> impl Iterator<Item = (HKind, Hash, &ChainFacts)> {
        self.keys
            .iter()
            .zip(&self.slots)
            .filter(move |(_, s)| s.declared && keep(s))
            .map(|(&k, s)| {
                let (kind, h) = unkey(k);
                (kind, h, s)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [b'A'; 16];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn ids_are_stable_whichever_way_a_chain_is_found() {
        let mut t = ChainTable::default();
        let ids: Vec<ChainId> = (0..40)
            .map(|i| t.id(HKind::Sep, &h(&format!("X{i}"))))
            .collect();
        assert_eq!(ids, (0..40).collect::<Vec<_>>());
        // Far from the recent ones: answered by the index.
        assert_eq!(t.find_id(HKind::Sep, &h("X3")), Some(3));
        // The successor of a recent one: answered by the guess.
        assert_eq!(t.find_id(HKind::Sep, &h("X4")), Some(4));
        assert_eq!(t.id(HKind::Sep, &h("X17")), 17);
        // Same hash, other kind: another chain.
        assert_eq!(t.find_id(HKind::Svc, &h("X4")), None);
        assert_eq!(t.name(17), Some((HKind::Sep, h("X17"))));
        for kind in HKind::ALL {
            let id = t.id(kind, &h("ZZ7Y2"));
            assert_eq!(t.name(id), Some((kind, h("ZZ7Y2"))));
        }
    }

    #[test]
    fn a_removed_chain_keeps_its_id_and_loses_its_facts() {
        let mut t = ChainTable::default();
        let id = t.id(HKind::Svc, &h("A"));
        if let Some(c) = t.get_mut(id) {
            c.declared = true;
            c.decl_line = 7;
        }
        assert_eq!(t.filtered(|_| true).count(), 1);
        t.remove(HKind::Svc, &h("A"));
        assert_eq!(t.filtered(|_| true).count(), 0);
        assert_eq!(t.id(HKind::Svc, &h("A")), id);
        assert!(t.get(id).is_some_and(|c| !c.declared && c.decl_line == 0));
    }
}
