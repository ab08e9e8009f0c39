//! deploy/rbac.yaml read as the API server's RBAC authorizer reads it, to check that every
//! call the code makes (recorded by the mock server) is allowed to the agent's service account.
//!
//! Must not: be a general RBAC implementation — it knows rules with apiGroups, resources
//! (with subresources), verbs and resourceNames, bound by (Cluster)RoleBindings to one
//! ServiceAccount; no aggregation, no non-resource URLs (none are used).
//! Semantics from the Kubernetes RBAC documentation ("Using RBAC Authorization"): a Role's
//! rules apply in its namespace only; a ClusterRole bound by a ClusterRoleBinding applies
//! everywhere; `resourceNames` restricts to those objects and cannot allow list, watch or
//! create (which carry no name).

use serde_json::Value;

use crate::error::Call;

/// The rules granted to one service account.
#[derive(Debug, Default)]
pub struct Grants {
    rules: Vec<(Option<String>, Value)>,
}

impl Grants {
    /// Reads a multi-document RBAC manifest and keeps the rules bound to the service account
    /// `namespace/name`.
    pub fn parse(yaml: &str, sa_namespace: &str, sa_name: &str) -> Result<Grants, String> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
        let mut grants = Grants::default();
        for binding in docs.iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            )
        }) {
            let bound = binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == sa_name
                        && s["namespace"] == sa_namespace
                })
            });
            if !bound {
                continue;
            }
            // A RoleBinding scopes whatever it binds to its own namespace.
            let scope = match binding["kind"].as_str() {
                Some("RoleBinding") => binding["metadata"]["namespace"].as_str().map(str::to_owned),
                _ => None,
            };
            let role_kind = binding["roleRef"]["kind"].as_str();
            let role_name = binding["roleRef"]["name"].as_str();
            let role = docs
                .iter()
                .find(|d| {
                    d["kind"].as_str() == role_kind
                        && d["metadata"]["name"].as_str() == role_name
                        && (role_kind == Some("ClusterRole")
                            || d["metadata"]["namespace"].as_str() == scope.as_deref())
                })
                .ok_or_else(|| {
                    format!("binding to {role_kind:?} {role_name:?}: no such role in the file")
                })?;
            for rule in role["rules"].as_array().into_iter().flatten() {
                grants.rules.push((scope.clone(), rule.clone()));
            }
        }
        Ok(grants)
    }

    /// The rules of one ClusterRole, as if bound cluster-wide (roles for people, which the
    /// file defines but does not bind).
    pub fn of_cluster_role(yaml: &str, name: &str) -> Result<Grants, String> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
        let role = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
            .ok_or_else(|| format!("no ClusterRole {name}"))?;
        Ok(Grants {
            rules: role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (None, r.clone()))
                .collect(),
        })
    }

    /// Whether some rule allows the call.
    pub fn allows(&self, call: &Call) -> bool {
        self.rules.iter().any(|(scope, rule)| {
            if let Some(ns) = scope
                && call.namespace.as_deref() != Some(ns.as_str())
            {
                return false;
            }
            let has = |field: &str, want: &str| {
                rule[field]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
            };
            let names_ok = match rule["resourceNames"].as_array() {
                Some(names) if !names.is_empty() => call
                    .name
                    .as_deref()
                    .is_some_and(|n| names.iter().any(|v| v == n)),
                _ => true,
            };
            has("apiGroups", &call.group)
                && has("resources", &call.resource)
                && has("verbs", &call.verb)
                && names_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RBAC: &str = include_str!("../../../../deploy/rbac.yaml");

    fn grants() -> Grants {
        Grants::parse(RBAC, "kube-system", "ipvs-migrate").expect("deploy/rbac.yaml parses")
    }

    #[test]
    fn the_shipped_rbac_allows_what_the_design_grants_and_nothing_more() {
        let grants = grants();
        // (verb, group, resource, namespace, name, allowed)
        let cases = [
            // The agent patches its Node; it never reads one by name.
            ("get", "", "nodes", "", "n1", false),
            ("patch", "", "nodes", "", "n1", true),
            ("update", "", "nodes", "", "n1", false),
            ("list", "", "services", "", "", true),
            ("get", "", "services", "web", "s", false),
            ("get", "", "configmaps", "kube-system", "kube-proxy", true),
            ("get", "", "configmaps", "kube-system", "coredns", false),
            ("get", "", "configmaps", "default", "kube-proxy", false),
            ("create", "", "events", "default", "", true),
            ("create", "", "events", "web", "", false),
            (
                "update",
                "ipvs-migrate.io",
                "ipvsmigrations/status",
                "",
                "m",
                true,
            ),
            (
                "update",
                "ipvs-migrate.io",
                "ipvsmigrations",
                "",
                "m",
                false,
            ),
        ];
        for (verb, group, resource, ns, name, expect) in cases {
            let mut call = Call::new(verb, group, resource);
            if !ns.is_empty() {
                call = call.in_namespace(ns);
            }
            if !name.is_empty() {
                call = call.named(name);
            }
            assert_eq!(grants.allows(&call), expect, "{call}");
        }
    }
}
