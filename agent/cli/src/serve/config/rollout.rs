//! The `rollout:` block of serve's configuration (docs/rollout.md): whether the agent follows
//! the cluster's `IPVSMigration` objects and how often it decides. It reaches the API server
//! as the `kubernetes:` block says, which must be enabled too. Pure, like the rest of
//! config.rs: every bad value is an error naming its key.
//!
//! ```yaml
//! rollout:
//!   enabled: true          # default false (needs kubernetes.enabled: true)
//!   period: 30s            # decide at least this often (and at every change of an object)
//!   nodeListPeriod: 60s    # list the selected Nodes' labels at most this often
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Scalar, bad, duration};

/// Default decision period.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);
/// Default age of the Node list the decision reads.
pub const DEFAULT_NODE_LIST_PERIOD: Duration = Duration::from_secs(60);

/// The block as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRollout {
    enabled: Option<Scalar>,
    period: Option<Scalar>,
    node_list_period: Option<Scalar>,
}

/// The fleet rollout's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Follow the `IPVSMigration` objects.
    pub enabled: bool,
    /// Decide at least this often.
    pub period: Duration,
    /// List the Nodes at most this often.
    pub node_list_period: Duration,
}

impl Default for RolloutConfig {
    fn default() -> RolloutConfig {
        RolloutConfig {
            enabled: false,
            period: DEFAULT_PERIOD,
            node_list_period: DEFAULT_NODE_LIST_PERIOD,
        }
    }
}

/// Checks the block (absent: the defaults, disabled); `api`: whether `kubernetes:` is enabled.
pub(super) fn parse(raw: Option<RawRollout>, api: bool) -> Result<RolloutConfig, ConfigError> {
    let Some(r) = raw else {
        return Ok(RolloutConfig::default());
    };
    let enabled = match r.enabled {
        None => false,
        Some(Scalar(s)) => match s.trim() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(bad(
                    "rollout.enabled",
                    format!("{s:?} is not true or false"),
                ));
            }
        },
    };
    if enabled && !api {
        return Err(bad(
            "rollout.enabled",
            "needs the API: set kubernetes.enabled: true as well (its kubeconfig is used)",
        ));
    }
    let period = duration("rollout.period", r.period, DEFAULT_PERIOD)?;
    let node_list_period = duration(
        "rollout.nodeListPeriod",
        r.node_list_period,
        DEFAULT_NODE_LIST_PERIOD,
    )?;
    for (key, d) in [
        ("rollout.period", period),
        ("rollout.nodeListPeriod", node_list_period),
    ] {
        if d < Duration::from_secs(1) {
            return Err(bad(key, "must be 1s or longer"));
        }
    }
    Ok(RolloutConfig {
        enabled,
        period,
        node_list_period,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::parse as parse_config;
    use super::*;

    #[test]
    fn the_rollout_block_is_off_by_default_and_read_with_its_keys() {
        let c = parse_config("", None, Some("n1".into())).unwrap();
        assert_eq!(c.rollout, RolloutConfig::default());
        let c = parse_config(
            "kubernetes:\n  enabled: true\nrollout:\n  enabled: true\n  period: 15s\n  nodeListPeriod: 2m\n",
            None,
            Some("n1".into()),
        )
        .unwrap();
        assert_eq!(
            c.rollout,
            RolloutConfig {
                enabled: true,
                period: Duration::from_secs(15),
                node_list_period: Duration::from_secs(120),
            }
        );
    }

    #[test]
    fn bad_rollout_values_name_their_key() {
        for (text, key) in [
            ("rollout:\n  enabled: yes please\n", "rollout.enabled"),
            ("rollout:\n  enabled: true\n", "rollout.enabled"),
            ("rollout:\n  kubeconfig: /etc/kc\n", "rollout.kubeconfig"),
            ("rollout:\n  period: 0s\n", "rollout.period"),
            (
                "rollout:\n  nodeListPeriod: soon\n",
                "rollout.nodeListPeriod",
            ),
            ("rollout:\n  enable: true\n", "rollout.enable"),
        ] {
            let e = parse_config(text, None, Some("n1".into())).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
