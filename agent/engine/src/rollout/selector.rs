//! Kubernetes label selectors (`metav1.LabelSelector`) as the `IPVSMigration`'s `nodeSelector`
//! and `canaryNodeSelector` carry them, and their matching against a Node's labels.
//!
//! Semantics from the Kubernetes API reference ("LabelSelector",
//! kubernetes.io/docs/reference/kubernetes-api/common-definitions/label-selector/): every
//! `matchLabels` pair and every `matchExpressions` requirement must hold (they are ANDed); an
//! empty selector matches everything. `In`: the label exists and its value is one of `values`;
//! `NotIn`: the label is absent or its value is none of them (apimachinery
//! `labels.Requirement.Matches`); `Exists` / `DoesNotExist`: the key is present / absent.
//! `values` must be non-empty for `In`/`NotIn` and empty for `Exists`/`DoesNotExist`.
//!
//! It never reads the cluster: the caller hands in the labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RolloutError;

/// A label selector as the API server stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `key: value` pairs that must all be present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values `In` and `NotIn` compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Refuses operators the API does not know and `values` that contradict the operator,
    /// naming `field` (e.g. `spec.nodeSelector`).
    pub fn validate(&self, field: &str) -> Result<(), RolloutError> {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            if r.key.is_empty() {
                return Err(RolloutError::invalid(
                    format!("{at}.key"),
                    "must not be empty",
                ));
            }
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Err(RolloutError::invalid(
                        format!("{at}.values"),
                        format!("must not be empty for operator {}", r.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                    return Err(RolloutError::invalid(
                        format!("{at}.values"),
                        format!("must be empty for operator {}", r.operator),
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(RolloutError::invalid(
                        format!("{at}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The selector in the `labelSelector` query syntax of list and watch requests
    /// (apimachinery `labels.Parse`: `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
    /// comma-separated and ANDed), so the API server sends only the selected objects.
    pub fn to_query(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator.as_str() {
                "In" => format!("{} in ({})", r.key, r.values.join(",")),
                "NotIn" => format!("{} notin ({})", r.key, r.values.join(",")),
                "Exists" => r.key.clone(),
                _ => format!("!{}", r.key),
            });
        }
        parts.join(",")
    }

    /// Whether a Node with these labels is selected. An operator [`LabelSelector::validate`]
    /// refuses matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => got.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => got.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(json: &str) -> LabelSelector {
        serde_json::from_str(json).unwrap()
    }

    /// Each row: selector, labels, whether it matches — from the API reference's definitions.
    #[test]
    fn selectors_match_as_the_api_reference_defines_each_operator() {
        let worker = labels(&[("role", "worker"), ("zone", "a")]);
        let bare = labels(&[]);
        for (s, l, want) in [
            (r#"{}"#, &bare, true),
            (r#"{"matchLabels":{"role":"worker"}}"#, &worker, true),
            (
                r#"{"matchLabels":{"role":"worker","zone":"b"}}"#,
                &worker,
                false,
            ),
            (r#"{"matchLabels":{"role":"worker"}}"#, &bare, false),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["a","b"]}]}"#,
                &worker,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["b"]}]}"#,
                &worker,
                false,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]}"#,
                &bare,
                false,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}"#,
                &worker,
                false,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["b"]}]}"#,
                &worker,
                true,
            ),
            // NotIn holds where the label is absent.
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}"#,
                &bare,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"Exists"}]}"#,
                &worker,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"Exists"}]}"#,
                &bare,
                false,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"DoesNotExist"}]}"#,
                &bare,
                true,
            ),
            (
                r#"{"matchExpressions":[{"key":"zone","operator":"DoesNotExist"}]}"#,
                &worker,
                false,
            ),
            // matchLabels and matchExpressions are ANDed.
            (
                r#"{"matchLabels":{"role":"worker"},"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}"#,
                &worker,
                false,
            ),
        ] {
            assert_eq!(sel(s).matches(l), want, "{s} on {l:?}");
        }
    }

    #[test]
    fn selectors_render_in_the_label_selector_query_syntax() {
        let s = sel(r#"{"matchLabels":{"role":"worker"},"matchExpressions":[
            {"key":"zone","operator":"In","values":["a","b"]},
            {"key":"pool","operator":"NotIn","values":["gpu"]},
            {"key":"canary","operator":"Exists"},
            {"key":"legacy","operator":"DoesNotExist"}]}"#);
        assert_eq!(
            s.to_query(),
            "role=worker,zone in (a,b),pool notin (gpu),canary,!legacy"
        );
        assert_eq!(LabelSelector::default().to_query(), "");
    }

    #[test]
    fn invalid_requirements_name_the_field() {
        for (s, field) in [
            (
                r#"{"matchExpressions":[{"key":"a","operator":"Equals","values":["x"]}]}"#,
                "spec.nodeSelector.matchExpressions[0].operator",
            ),
            (
                r#"{"matchExpressions":[{"key":"a","operator":"In"}]}"#,
                "spec.nodeSelector.matchExpressions[0].values",
            ),
            (
                r#"{"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]}"#,
                "spec.nodeSelector.matchExpressions[0].values",
            ),
            (
                r#"{"matchExpressions":[{"key":"","operator":"Exists"}]}"#,
                "spec.nodeSelector.matchExpressions[0].key",
            ),
        ] {
            let e = sel(s).validate("spec.nodeSelector").unwrap_err();
            assert!(e.to_string().starts_with(field), "{s}: {e}");
        }
    }
}
