//! The chain table's index: chain ids by key, in one array of `u32`s.
//!
//! The keys themselves are already in the table (`keys[id]`), so the index holds only ids
//! (open addressing, linear probing, at most half full). At 120,000 chains that is 1 MiB,
//! where a map holding key and id in each of its (7/8-full, power-of-two) buckets needs
//! 5 MiB: every insert touches a random place of it, and each fresh page costs a fault.

/// Ids by key; a slot holds `id + 1`, 0 when empty.
#[derive(Debug, Default)]
pub struct Index {
    slots: Vec<u32>,
    len: usize,
}

/// Where a key is, or where it would go.
pub enum Probe {
    /// The key's id.
    Found(u32),
    /// The empty slot where the key would be inserted.
    Vacant(usize),
}

/// Spreads a key over the slots. The keys are packed base32 text of sha256 digests, so any
/// of their bits are nearly random; the multiply mixes the two halves anyway.
fn spread(k: u128) -> usize {
    let x = (k as u64) ^ ((k >> 64) as u64).rotate_left(29);
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

impl Index {
    /// Finds `k`, whose candidates' keys are read from `keys`.
    pub fn probe(&self, k: u128, keys: &[u128]) -> Probe {
        let mask = self.slots.len().wrapping_sub(1);
        if self.slots.is_empty() {
            return Probe::Vacant(0);
        }
        let mut pos = spread(k) & mask;
        loop {
            match self.slots.get(pos).copied() {
                Some(0) | None => return Probe::Vacant(pos),
                Some(s) => {
                    if keys.get(s as usize - 1) == Some(&k) {
                        return Probe::Found(s - 1);
                    }
                }
            }
            pos = (pos + 1) & mask;
        }
    }

    /// Makes room for `additional` more ids (the slots of ids `< keys.len()` are kept, found
    /// again by their keys), so that [`Index::insert`] at a probed place stays valid.
    pub fn reserve(&mut self, additional: usize, keys: &[u128]) {
        let need = (self.len + additional).saturating_mul(2).max(16);
        if need <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0; need.next_power_of_two()]);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|&s| s != 0) {
            let Some(&k) = keys.get(s as usize - 1) else {
                continue;
            };
            let mut pos = spread(k) & mask;
            while self.slots.get(pos).is_some_and(|&t| t != 0) {
                pos = (pos + 1) & mask;
            }
            if let Some(slot) = self.slots.get_mut(pos) {
                *slot = s;
            }
        }
    }

    /// Puts `id` at the vacant place a [`Index::probe`] (after a [`Index::reserve`]) gave.
    pub fn insert(&mut self, pos: usize, id: u32) {
        if let Some(slot) = self.slots.get_mut(pos) {
            *slot = id + 1;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_through_growth_and_collisions() {
        let mut keys: Vec<u128> = Vec::new();
        let mut ix = Index::default();
        let mut x: u128 = 0x1234_5678_9abc_def0;
        for id in 0..5000u32 {
            // Some keys differ only in bits the spread folds together.
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let k = if id % 7 == 0 {
                u128::from(id) << 64 | u128::from(id)
            } else {
                x
            };
            ix.reserve(1, &keys);
            match ix.probe(k, &keys) {
                Probe::Found(_) => panic!("{id} found before insertion"),
                Probe::Vacant(pos) => {
                    keys.push(k);
                    ix.insert(pos, id);
                }
            }
        }
        for (id, &k) in keys.iter().enumerate() {
            assert!(matches!(ix.probe(k, &keys), Probe::Found(i) if i as usize == id));
        }
        assert!(matches!(ix.probe(7, &keys), Probe::Vacant(_)));
        assert!(matches!(Index::default().probe(7, &[]), Probe::Vacant(_)));
    }
}
