//! `finalize`'s kernel side: once kube-proxy runs in IPVS mode on the node (the caller checked
//! its `/proxyMode` and that IPVS holds the full plan), hand the node over in a safe order
//! (DESIGN.md "finalize"; docs/finalize.md):
//! 1. the agent's admission: its hooks and `IPVSMIG-` chains in every table of both families,
//!    then its `IPVSMIG-` sets (a set still referenced by a rule cannot be destroyed);
//! 2. the hand-over: virtual servers, kube-ipvs0 and its addresses, sysctls are *not* touched —
//!    kube-proxy's IPVS mode owns them now — the journal forgets them;
//! 3. kube-proxy's iptables-mode leftovers, as `kube-proxy --cleanup` removes the iptables
//!    proxier's objects but without what IPVS mode uses (`plan::leftovers`): jumps into them
//!    first, then flush, then delete, one table per `iptables-restore --noflush`.
//!
//! Each step journals an intent before it touches the kernel and the owned state after, as the
//! op interpreter does (apply.rs `Record`; docs/journal.md). [`survey`] only reads, for the dry
//! run. This module never decides whether the switch happened: that is the caller's check.

use ipvsmig_engine::inventory::IpFamily;
use ipvsmig_engine::plan::leftovers::{self, TableCleanup};

use crate::apply::{Log, Owned, Record, existing_sets, removal_script};
use crate::ipset::Ipsets;
use crate::restore::{IptablesRestore, RestoreError};

/// What finalize would remove, read from the kernel (nothing changed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// The agent's rule removal per family and table: `iptables-restore --noflush` input.
    pub ours: Vec<(IpFamily, String, String)>,
    /// The agent's sets.
    pub sets: Vec<String>,
    /// kube-proxy's iptables-mode leftovers per family.
    pub leftovers: Vec<(IpFamily, TableCleanup)>,
}

/// Why finalize stopped (the journal says what was done).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    /// A kernel step failed.
    #[error("step {step} failed: {error}")]
    Step {
        /// Step.
        step: String,
        /// Error.
        error: String,
    },
    /// The journal could not be written: stopped before touching the kernel further.
    #[error("journal: {0}")]
    Journal(String),
}

/// What finalize did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    /// Tables whose `IPVSMIG-` hooks and chains were removed (family, table).
    pub our_tables: Vec<(IpFamily, String)>,
    /// Sets destroyed.
    pub sets: Vec<String>,
    /// Leftovers removed per family and table.
    pub leftovers: Vec<(IpFamily, TableCleanup)>,
    /// Virtual servers and addresses the journal handed over (counts).
    pub handed_over: (usize, usize),
}

const FAMILIES: [IpFamily; 2] = [IpFamily::IPv4, IpFamily::IPv6];

/// Reads what [`hand_over`] would remove. A family without iptables tools is skipped.
pub fn survey(iptables: &mut dyn IptablesRestore, ipsets: &mut dyn Ipsets) -> Survey {
    let mut s = Survey::default();
    for fam in FAMILIES {
        for table in ipvsmig_engine::plan::hybrid::TABLES {
            let Ok(saved) = iptables.save_table(fam, table) else {
                continue;
            };
            if let Some(script) = removal_script(table, &saved) {
                s.ours.push((fam, (*table).to_owned(), script));
            }
        }
        for table in leftovers::TABLES {
            let Ok(saved) = iptables.save_table(fam, table) else {
                continue;
            };
            let c = leftovers::select(table, &saved);
            if !c.is_empty() {
                s.leftovers.push((fam, c));
            }
        }
    }
    s.sets = existing_sets(ipsets).into_iter().collect();
    s
}

struct Steps<'a> {
    owned: &'a mut Owned,
    log: &'a mut dyn Log,
}

impl Steps<'_> {
    fn intent(&mut self, step: &str, detail: String) -> Result<(), FinalizeError> {
        self.log
            .record(&Record::intent(step, detail))
            .map_err(FinalizeError::Journal)
    }
    fn done(&mut self, step: &str) -> Result<(), FinalizeError> {
        self.log
            .record(&Record::State {
                step: step.into(),
                owned: self.owned.clone(),
            })
            .map_err(FinalizeError::Journal)
    }
    fn fail(&mut self, step: &str, error: String) -> FinalizeError {
        // Best effort: the error reaches the user either way.
        let _ = self.log.record(&Record::Failed {
            step: step.into(),
            error: error.clone(),
            owned: self.owned.clone(),
        });
        FinalizeError::Step {
            step: step.into(),
            error,
        }
    }
}

/// Removes one table's leftovers: saved and selected right before the restore; when the
/// restore is rejected (kube-proxy rewrote a chain in between, so a `-D` names a rule that is
/// gone), saved and selected once more.
fn clean_table(
    iptables: &mut dyn IptablesRestore,
    fam: IpFamily,
    table: &str,
) -> Result<Option<TableCleanup>, RestoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let saved = iptables.save_table(fam, table)?;
        let c = leftovers::select(table, &saved);
        let Some(script) = c.render() else {
            return Ok(None);
        };
        match iptables.restore_noflush(fam, &script) {
            Ok(()) => return Ok(Some(c)),
            Err(RestoreError::Rejected { .. }) if attempt < 2 => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hands the node to kube-proxy's IPVS mode: our admission out, the journal forgets the rest,
/// iptables-mode leftovers removed. `owned` ends empty and `finalized`.
pub fn hand_over(
    iptables: &mut dyn IptablesRestore,
    ipsets: &mut dyn Ipsets,
    owned: &mut Owned,
    log: &mut dyn Log,
) -> Result<Done, FinalizeError> {
    let mut done = Done::default();
    let mut st = Steps { owned, log };

    // 1. Our hooks and chains, every table of both families (ours by name, journaled or not).
    let step = "finalize-admission";
    for fam in FAMILIES {
        let journaled = st.owned.rules.contains(&fam);
        let mut scripts = Vec::new();
        for table in ipvsmig_engine::plan::hybrid::TABLES {
            match iptables.save_table(fam, table) {
                Ok(saved) => {
                    if let Some(s) = removal_script(table, &saved) {
                        scripts.push(((*table).to_owned(), s));
                    }
                }
                Err(e) if journaled => return Err(st.fail(step, e.to_string())),
                Err(_) => {} // no tools for this family: nothing of ours there
            }
        }
        if scripts.is_empty() {
            st.owned.rules.retain(|f| *f != fam);
            continue;
        }
        st.intent(
            step,
            format!(
                "remove the {} IPVSMIG- hooks and chains: kube-proxy's IPVS-mode rules admit the traffic now",
                fam.as_str()
            ),
        )?;
        for (table, text) in scripts {
            if let Err(e) = iptables.restore_noflush(fam, &text) {
                return Err(st.fail(step, e.to_string()));
            }
            done.our_tables.push((fam, table));
        }
        st.owned.rules.retain(|f| *f != fam);
        st.done(step)?;
    }
    // …then our sets, no longer referenced by any rule.
    let mut sets = existing_sets(ipsets);
    sets.extend(st.owned.sets.keys().cloned());
    if !sets.is_empty() {
        let step = "finalize-sets";
        st.intent(step, format!("destroy {} IPVSMIG- set(s)", sets.len()))?;
        let script: String = sets.iter().map(|n| format!("destroy {n}\n")).collect();
        if let Err(e) = ipsets.restore(&script) {
            return Err(st.fail(step, e.to_string()));
        }
        st.owned.sets.clear();
        done.sets = sets.into_iter().collect();
        st.done(step)?;
    }

    // 2. The hand-over: nothing in the kernel changes; the journal forgets.
    let step = "finalize-handover";
    done.handed_over = (st.owned.services.len(), st.owned.addresses.len());
    st.intent(
        step,
        format!(
            "hand {} virtual server(s), {} kube-ipvs0 address(es){} and the IPVS sysctls to kube-proxy's IPVS mode (not deleted)",
            done.handed_over.0,
            done.handed_over.1,
            if st.owned.created_link { ", kube-ipvs0 itself" } else { "" }
        ),
    )?;
    // The rollback history stays (status shows it); a cutover's state goes with the rest.
    *st.owned = Owned {
        finalized: true,
        backend: st.owned.backend,
        rollbacks: std::mem::take(&mut st.owned.rollbacks),
        ..Owned::default()
    };
    st.done(step)?;

    // 3. kube-proxy's iptables-mode leftovers.
    let step = "finalize-leftovers";
    for fam in FAMILIES {
        let mut any = false;
        for table in leftovers::TABLES {
            // Read-only first: only a table holding leftovers gets an intent record.
            let Ok(saved) = iptables.save_table(fam, table) else {
                continue;
            };
            let c = leftovers::select(table, &saved);
            if c.is_empty() {
                continue;
            }
            any = true;
            st.intent(
                step,
                format!(
                    "{} {table}: delete {} jump(s) into iptables-mode chains, then flush and delete {} chain(s)",
                    fam.as_str(),
                    c.unhook.len(),
                    c.chains.len()
                ),
            )?;
            match clean_table(iptables, fam, table) {
                Ok(Some(c)) => done.leftovers.push((fam, c)),
                Ok(None) => {}
                Err(e) => return Err(st.fail(step, e.to_string())),
            }
        }
        if any {
            st.done(step)?;
        }
    }
    st.owned.backend = None;
    st.done("finalized")?;
    Ok(done)
}

#[cfg(test)]
mod tests;
