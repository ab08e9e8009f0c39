//! Where the rules of per-service chains are kept: one shared run of rules while each
//! chain's rules arrive one after another, a list of its own for a chain whose rules are
//! interleaved with another's.
//!
//! kube-proxy writes all rules of a chain together (its restore input), and iptables-save
//! prints them chain by chain (the live form), so at 20,000 services the ~120,000 rules of
//! the dispatch, external and firewall chains go into one vector instead of 20,000 small
//! ones (each an allocation, a free and a few hundred bytes of fresh memory). A rule that
//! comes for a chain whose run is no longer the newest (a partial restore appending to an
//! earlier chain, a hand-edited dump) moves that chain to a list of its own: the order of
//! each chain's rules is kept either way. This module stores rules; it must not read them.

use crate::inventory::facts::{ChainFacts, PlacedFact};

/// The rules of one chain.
#[derive(Debug)]
enum Rules {
    /// `runs[start..start + len]`.
    Run { start: usize, len: usize },
    /// Rules that did not arrive together.
    List(Vec<PlacedFact>),
}

/// The rules of all chains that have any; a chain refers to its entry by
/// [`ChainFacts::rules`] (1 + the index; 0: no rules).
#[derive(Debug, Default)]
pub struct RuleStore {
    lists: Vec<Rules>,
    runs: Vec<PlacedFact>,
}

impl RuleStore {
    /// Appends `fact` to the rules `entry` refers to, creating them if it is 0.
    pub fn push(&mut self, entry: &mut u32, fact: PlacedFact) {
        let at = self.runs.len();
        let i = match (*entry as usize).checked_sub(1) {
            Some(i) => i,
            None => {
                let Ok(next) = u32::try_from(self.lists.len() + 1) else {
                    return;
                };
                self.lists.push(Rules::Run { start: at, len: 0 });
                *entry = next;
                self.lists.len() - 1
            }
        };
        let Some(rules) = self.lists.get_mut(i) else {
            return;
        };
        match rules {
            Rules::Run { start, len } if *start + *len == at => {
                self.runs.push(fact);
                *len += 1;
            }
            Rules::Run { start, len } => {
                let mut own = self
                    .runs
                    .get(*start..*start + *len)
                    .unwrap_or_default()
                    .to_vec();
                own.push(fact);
                *rules = Rules::List(own);
            }
            Rules::List(own) => own.push(fact),
        }
    }

    /// The rules of a chain, in the order they came.
    pub fn of(&self, chain: &ChainFacts) -> &[PlacedFact] {
        let Some(i) = (chain.rules as usize).checked_sub(1) else {
            return &[];
        };
        match self.lists.get(i) {
            Some(Rules::Run { start, len }) => self.runs.get(*start..*start + *len).unwrap_or(&[]),
            Some(Rules::List(own)) => own,
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::facts::Fact;

    fn fact(line: u32) -> PlacedFact {
        PlacedFact {
            fact: Fact::FallThrough,
            line,
        }
    }

    fn lines(store: &RuleStore, entry: u32) -> Vec<u32> {
        let chain = ChainFacts {
            rules: entry,
            ..ChainFacts::default()
        };
        store.of(&chain).iter().map(|f| f.line).collect()
    }

    #[test]
    fn rules_keep_their_order_whether_they_come_together_or_interleaved() {
        let mut store = RuleStore::default();
        let (mut a, mut b, mut c) = (0, 0, 0);
        for line in 1..=3 {
            store.push(&mut a, fact(line));
        }
        for line in 4..=5 {
            store.push(&mut b, fact(line));
        }
        // `a` again after `b`: it moves to a list of its own.
        store.push(&mut a, fact(6));
        store.push(&mut c, fact(7));
        store.push(&mut b, fact(8));
        store.push(&mut a, fact(9));
        store.push(&mut c, fact(10));
        assert_eq!(lines(&store, a), [1, 2, 3, 6, 9]);
        assert_eq!(lines(&store, b), [4, 5, 8]);
        assert_eq!(lines(&store, c), [7, 10]);
        assert_eq!(lines(&store, 0), Vec::<u32>::new());
        assert_eq!((a, b, c), (1, 2, 3));
    }
}
