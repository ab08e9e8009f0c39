//! The `IPVSMigration` objects over the API (docs/rollout.md): the watch that tells the agent
//! when to decide again, the Nodes' labels the decision reads, and one round of the slot
//! protocol — decide (the engine's pure `rollout::decide`), write the status with the
//! `resourceVersion` read (`PUT …/ipvsmigrations/NAME/status`), and on `409 Conflict` read the
//! object again and decide again.
//!
//! Must not: change the node (the caller starts or rolls back a wave, and only after the
//! write that claims it succeeded), decide anything itself, or retry other failures (the
//! caller's next round is the retry).

use std::collections::BTreeMap;

use futures_util::Stream;
use ipvsmig_engine::rollout::{self, Decision, Input, Labels, Local, Plan, RolloutError, Status};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::watcher;

use crate::client::ApiClient;
use crate::error::{Call, KubeError};

/// The API group.
pub const GROUP: &str = "ipvs-migrate.io";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// The resource (plural).
pub const PLURAL: &str = "ipvsmigrations";
/// How often one round re-reads and re-decides after `409 Conflict` before giving up until
/// the next round (each conflict means another agent's write went through: progress).
pub const MAX_CONFLICTS: u32 = 5;

/// What can go wrong in a round.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The API call failed (403, 404, timeout, …; the message names the call).
    #[error(transparent)]
    Kube(Box<KubeError>),
    /// The object's spec is not acceptable; nothing is done for it.
    #[error("IPVSMigration {name}: {source}")]
    Invalid {
        /// The object.
        name: String,
        /// The field and what is wrong.
        source: RolloutError,
    },
    /// The object's status does not read as the CRD's (edited by hand?).
    #[error("IPVSMigration {name}: status: {message}")]
    Status {
        /// The object.
        name: String,
        /// The serde error.
        message: String,
    },
    /// Other agents kept writing first.
    #[error(
        "IPVSMigration {name}: {tries} status writes in a row met 409 Conflict; deciding again next round"
    )]
    Conflicts {
        /// The object.
        name: String,
        /// Attempts.
        tries: u32,
    },
}

impl From<KubeError> for MigrationError {
    fn from(e: KubeError) -> MigrationError {
        MigrationError::Kube(Box::new(e))
    }
}

/// The resource for kube's dynamic API.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "IPVSMigration"),
        PLURAL,
    )
}

/// The cluster-scoped collection.
pub fn api(c: &ApiClient) -> Api<DynamicObject> {
    Api::all_with(c.client().clone(), &resource())
}

fn call(verb: &str) -> Call {
    Call::new(verb, GROUP, PLURAL)
}

/// One object as read: its identity, its spec checked, its status.
#[derive(Debug, Clone)]
pub struct Migration {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339; empty when absent).
    pub created: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec, validated; an invalid spec is kept as its error, to be reported.
    pub plan: Result<Plan, RolloutError>,
    /// The status (empty when none yet).
    pub status: Status,
    object: DynamicObject,
}

impl Migration {
    /// Reads an object; a status that does not read is an error (the round would overwrite
    /// what it does not understand).
    pub fn from_object(object: DynamicObject) -> Result<Migration, MigrationError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let plan = match object.data.get("spec") {
            Some(spec) => serde_json::from_value::<rollout::Spec>(spec.clone())
                .map_err(|e| RolloutError::Invalid {
                    field: "spec".into(),
                    message: e.to_string(),
                })
                .and_then(|s| s.validate()),
            None => Err(RolloutError::Invalid {
                field: "spec".into(),
                message: "missing".into(),
            }),
        };
        let status = match object.data.get("status") {
            None | Some(serde_json::Value::Null) => Status::default(),
            Some(s) => serde_json::from_value(s.clone()).map_err(|e| MigrationError::Status {
                name: name.clone(),
                message: e.to_string(),
            })?,
        };
        Ok(Migration {
            created: object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            generation: object.metadata.generation,
            name,
            plan,
            status,
            object,
        })
    }

    /// `metadata.resourceVersion`, which the status write carries.
    pub fn resource_version(&self) -> Option<&str> {
        self.object.metadata.resource_version.as_deref()
    }
}

/// The watch on every `IPVSMigration` (kube-runtime's watcher: list, then watch from the
/// list's `resourceVersion` with bookmarks; a `410 Gone` starts over with a new list). Each
/// event is a reason to decide again; the objects themselves come with it.
pub fn watch(
    c: &ApiClient,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + use<> {
    watcher::watcher(api(c), watcher::Config::default())
}

/// The objects as the watch last described them (a full list replaces them at once, as a
/// reflector's store does).
#[derive(Debug, Default)]
pub struct Objects {
    current: BTreeMap<String, DynamicObject>,
    listing: Option<BTreeMap<String, DynamicObject>>,
    listed: bool,
}

impl Objects {
    /// Takes one watch event; whether the objects changed (a listing counts once, when done).
    pub fn apply(&mut self, ev: watcher::Event<DynamicObject>) -> bool {
        let key = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        match ev {
            watcher::Event::Apply(o) => {
                self.current.insert(key(&o), o);
                true
            }
            watcher::Event::Delete(o) => {
                self.current.remove(&key(&o));
                true
            }
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                self.listing.get_or_insert_default().insert(key(&o), o);
                false
            }
            watcher::Event::InitDone => {
                self.current = self.listing.take().unwrap_or_default();
                self.listed = true;
                true
            }
        }
    }

    /// Whether a first listing completed (before it, no decision: the objects are unknown).
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The object every agent acts on ([`rollout::choose`]) and the names of the others
    /// (waiting, or unreadable).
    pub fn active(&self) -> (Option<Migration>, Vec<String>) {
        let mut ms: Vec<Migration> = Vec::new();
        let mut others: Vec<String> = Vec::new();
        for o in self.current.values() {
            match Migration::from_object(o.clone()) {
                Ok(m) => ms.push(m),
                Err(e) => {
                    tracing::warn!(error = %e, "an IPVSMigration that cannot be read is left alone");
                    others.push(o.metadata.name.clone().unwrap_or_default());
                }
            }
        }
        let keys: Vec<(&str, &str, Option<rollout::FleetPhase>)> = ms
            .iter()
            .map(|m| (m.name.as_str(), m.created.as_str(), m.status.phase))
            .collect();
        let Some(i) = rollout::choose(&keys) else {
            return (None, others);
        };
        let active = ms.swap_remove(i);
        others.extend(ms.into_iter().map(|m| m.name));
        others.sort();
        (Some(active), others)
    }
}

/// The Nodes the selector selects (`GET /api/v1/nodes?labelSelector=…`, metadata only: the
/// decision needs names and labels), name → labels.
pub async fn nodes(
    c: &ApiClient,
    selector: Option<&rollout::selector::LabelSelector>,
) -> Result<BTreeMap<String, Labels>, KubeError> {
    let api: Api<Node> = Api::all(c.client().clone());
    let mut lp = ListParams::default();
    let query = selector.map(|s| s.to_query()).unwrap_or_default();
    if !query.is_empty() {
        lp = lp.labels(&query);
    }
    let list = c
        .run(Call::new("list", "", "nodes"), api.list_metadata(&lp))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name?;
            Some((name, n.metadata.labels.unwrap_or_default()))
        })
        .collect())
}

/// This node's situation for one object.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// This node's name.
    pub node: &'a str,
    /// The selected Nodes' labels.
    pub nodes: &'a BTreeMap<String, Labels>,
    /// The node's own state.
    pub local: &'a Local,
    /// Now, unix seconds.
    pub now: u64,
}

/// One round of the slot protocol on `m`: decide; if the status must change, replace it with
/// the `resourceVersion` read; on `409 Conflict` get the object again and decide again. The
/// decision returned is the one whose write succeeded (or that needed none): only then may
/// its action run.
pub async fn sync(
    c: &ApiClient,
    mut m: Migration,
    ask: Ask<'_>,
) -> Result<Decision, MigrationError> {
    let api = api(c);
    for _ in 0..MAX_CONFLICTS {
        let plan = m.plan.as_ref().map_err(|e| MigrationError::Invalid {
            name: m.name.clone(),
            source: e.clone(),
        })?;
        let d = rollout::decide(&Input {
            plan,
            name: &m.name,
            generation: m.generation,
            status: &m.status,
            node: ask.node,
            nodes: ask.nodes,
            local: ask.local,
            now: ask.now,
        });
        let Some(status) = &d.status else {
            return Ok(d);
        };
        let mut obj = m.object.clone();
        let value = serde_json::to_value(status).map_err(|e| MigrationError::Status {
            name: m.name.clone(),
            message: e.to_string(),
        })?;
        obj.data["status"] = value;
        let put = c
            .run(
                Call::new("update", GROUP, "ipvsmigrations/status").named(&m.name),
                api.replace_status(&m.name, &PostParams::default(), &obj),
            )
            .await;
        match put {
            Ok(_) => return Ok(d),
            Err(KubeError::Api { code: 409, .. }) => {
                tracing::debug!(migration = %m.name, "status write conflicted: reading again");
                let fresh = c.run(call("get").named(&m.name), api.get(&m.name)).await?;
                m = Migration::from_object(fresh)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(MigrationError::Conflicts {
        name: m.name,
        tries: MAX_CONFLICTS,
    })
}

#[cfg(test)]
mod tests;
