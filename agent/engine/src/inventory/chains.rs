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
//! chain) goes to the index ([`index`]).

mod index;
mod rules;

use self::index::{Index, Probe};
pub use self::rules::RuleStore;
use super::facts::{ChainFacts, HKind, Hash, PlacedFact};

/// Index of a chain in the table; stable for the life of the table, also across `-X`.
pub type ChainId = u32;

/// How many recently used chains a lookup tries before the hash index.
const RECENT: usize = 8;

/// Chains by (kind, hash).
#[derive(Debug, Default)]
pub struct ChainTable {
    /// Ids by key (the keys are in `keys`).
    index: Index,
    /// Keys by id, apart from the facts so the sequential guess touches one cache line; a
    /// chain's kind and hash are read back from its key.
    keys: Vec<u128>,
    slots: Vec<ChainFacts>,
    /// The rules of chains that have any (see [`ChainFacts::rules`]).
    rules: RuleStore,
    /// `keys[..indexed]` are in `index`; the rest are declarations not yet indexed.
    indexed: usize,
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
    /// A recently used chain or the one declared right after it, newest first: in
    /// kube-proxy's order the answer is nearly always the newest or its successor.
    fn find_recent(&self, k: u128) -> Option<ChainId> {
        for back in 1..=RECENT {
            let (rk, id) = self.recent[(self.next_recent + RECENT - back) % RECENT];
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
            .or_else(|| match self.index.probe(k, &self.keys) {
                Probe::Found(id) => Some(id),
                Probe::Vacant(_) => None,
            })
    }

    fn remember(&mut self, k: u128, id: ChainId) {
        if self.recent[(self.next_recent + RECENT - 1) % RECENT].0 == k
            || self.recent.iter().any(|&(rk, _)| rk == k)
        {
            return;
        }
        self.recent[self.next_recent] = (k, id);
        self.next_recent = (self.next_recent + 1) % RECENT;
    }

    /// The chain's id, creating an undeclared, empty chain if the name is new.
    pub fn id(&mut self, kind: HKind, h: &Hash) -> ChainId {
        self.flush();
        let k = key(kind, h);
        let id = match self.find_recent(k) {
            Some(i) => i,
            None => self.insert(k),
        };
        self.remember(k, id);
        id
    }

    /// The id of `k` in the index, added with a new empty slot if it is not there.
    fn insert(&mut self, k: u128) -> ChainId {
        self.index.reserve(1, &self.keys);
        match self.index.probe(k, &self.keys) {
            Probe::Found(id) => id,
            Probe::Vacant(pos) => {
                let id = self.slots.len() as ChainId;
                self.index.insert(pos, id);
                self.slots.push(ChainFacts::default());
                self.keys.push(k);
                self.indexed = self.keys.len();
                id
            }
        }
    }

    /// Declares a chain at `line`. The declarations of a table come in one block before its
    /// rules (120,000 of them in a large dump): they are appended here and indexed together
    /// when the next lookup comes ([`Self::flush`]), into an index sized once for all of them
    /// instead of grown (and rehashed into fresh memory) step by step.
    pub fn declare(&mut self, kind: HKind, h: &Hash, line: u32) {
        self.keys.push(key(kind, h));
        self.slots.push(ChainFacts {
            decl_line: line,
            declared: true,
            ..ChainFacts::default()
        });
    }

    /// Indexes the declarations appended since the last lookup. A name seen before (declared
    /// twice, or named by a rule before its declaration) keeps its first id and takes the
    /// later declaration's line, as if it had been looked up at its declaration; its second
    /// entry is dropped. Nothing holds the ids of the entries not yet indexed, so dropping
    /// one moves the ones after it down without changing any id given out.
    pub fn flush(&mut self) {
        if self.indexed == self.keys.len() {
            return;
        }
        self.index
            .reserve(self.keys.len() - self.indexed, &self.keys[..self.indexed]);
        let mut write = self.indexed;
        for read in self.indexed..self.keys.len() {
            let k = self.keys[read];
            // Only `keys[..write]` are indexed: the probe must not see the pending ones.
            match self.index.probe(k, &self.keys[..write]) {
                Probe::Vacant(pos) => {
                    self.index.insert(pos, write as ChainId);
                    self.keys[write] = k;
                    self.slots.swap(write, read);
                    write += 1;
                }
                Probe::Found(id) => {
                    let line = self.slots[read].decl_line;
                    if let Some(s) = self.slots.get_mut(id as usize) {
                        s.decl_line = line;
                        s.declared = true;
                    }
                }
            }
        }
        self.keys.truncate(write);
        self.slots.truncate(write);
        self.indexed = write;
    }

    /// The chain's id if its name has been seen.
    pub fn find_id(&mut self, kind: HKind, h: &Hash) -> Option<ChainId> {
        self.flush();
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

    /// Appends a rule to a chain's list.
    pub fn push_fact(&mut self, id: ChainId, fact: PlacedFact) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        self.rules.push(&mut slot.rules, fact);
    }

    /// Takes the rules of every chain out, to walk them while the chains' slots change
    /// ([`Self::put_rules`] puts them back).
    pub fn take_rules(&mut self) -> RuleStore {
        std::mem::take(&mut self.rules)
    }

    /// Puts back the rules [`Self::take_rules`] took.
    pub fn put_rules(&mut self, rules: RuleStore) {
        self.rules = rules;
    }

    /// Kind and hash of a chain by id.
    pub fn name(&self, id: ChainId) -> Option<(HKind, Hash)> {
        self.keys.get(id as usize).map(|&k| unkey(k))
    }

    /// Removes a chain (`-X`): it is undeclared and empty again, and keeps its id.
    pub fn remove(&mut self, kind: HKind, h: &Hash) {
        self.flush();
        if let Some(id) = self.find_id(kind, h)
            && let Some(s) = self.slots.get_mut(id as usize)
        {
            *s = ChainFacts::default();
        }
    }

    /// Declared chains that match `keep`, in the order their names were first seen (names
    /// are decoded only for those). Call after [`Self::flush`].
    pub fn filtered(
        &self,
        keep: impl Fn(&ChainFacts) -> bool,
    ) -> impl Iterator<Item = (HKind, Hash, &ChainFacts, &[PlacedFact])> {
        self.keys
            .iter()
            .zip(&self.slots)
            .filter(move |(_, s)| s.declared && keep(s))
            .map(|(&k, s)| {
                let (kind, h) = unkey(k);
                (kind, h, s, self.rules.of(s))
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
    fn declarations_are_indexed_together_as_if_each_had_been_looked_up() {
        let mut t = ChainTable::default();
        // Named by a rule before its declaration.
        let early = t.id(HKind::Svc, &h("E"));
        t.declare(HKind::Sep, &h("A"), 10);
        t.declare(HKind::Svc, &h("E"), 11);
        t.declare(HKind::Sep, &h("B"), 12);
        t.declare(HKind::Sep, &h("A"), 13);
        t.declare(HKind::Sep, &h("C"), 14);
        let ids: Vec<_> = ["A", "B", "C"]
            .iter()
            .map(|n| t.find_id(HKind::Sep, &h(n)))
            .collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        assert_eq!(t.find_id(HKind::Svc, &h("E")), Some(early));
        let lines: Vec<_> = (0..4)
            .map(|i| t.get(i).map(|c| (c.declared, c.decl_line)))
            .collect();
        assert_eq!(
            lines,
            [
                Some((true, 11)),
                Some((true, 13)),
                Some((true, 12)),
                Some((true, 14))
            ]
        );
        assert_eq!(t.get(4).map(|c| c.decl_line), None);
        assert_eq!(t.name(2), Some((HKind::Sep, h("B"))));
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
