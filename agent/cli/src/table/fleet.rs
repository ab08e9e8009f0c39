//! `fleet status` as a table (docs/kubernetes.md "fleet status"), like `kubectl get`.
//!
//! Must not: call the API (the caller passes what `ipvsmig_kube::fleet::read_fleet` read).

use super::pad;

/// `fleet status` as a table, like `kubectl get`: one row per node (SINCE: time in its
/// phase; AGE: the Node object's), then the migrations and notes.
pub fn fleet(f: &ipvsmig_kube::fleet::FleetStatus, now: std::time::SystemTime) -> String {
    let mut rows = vec![
        [
            "NODE",
            "PHASE",
            "NAMESPACES",
            "ROLLBACKS",
            "KUBE-PROXY",
            "SINCE",
            "AGE",
            "FLAGS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &f.nodes {
        let st = n.status.as_ref();
        let namespaces = st.map_or(0, |s| s.namespaces.len());
        let proxies: Vec<String> = n
            .kube_proxies
            .iter()
            .map(|p| {
                format!(
                    "{}({})",
                    p.daemon_set.as_deref().unwrap_or(&p.name),
                    p.phase
                )
            })
            .collect();
        rows.push(vec![
            n.name.clone(),
            n.phase.clone().unwrap_or_else(|| "<none>".into()),
            namespaces.to_string(),
            st.map_or_else(|| "-".into(), |s| s.rollbacks.to_string()),
            if proxies.is_empty() {
                "<none>".into()
            } else {
                proxies.join(",")
            },
            st.and_then(|s| ipvsmig_kube::fleet::age(&s.since, now))
                .unwrap_or_else(|| "-".into()),
            n.created
                .as_deref()
                .and_then(|c| ipvsmig_kube::fleet::age(c, now))
                .unwrap_or_else(|| "-".into()),
            n.flags.join(","),
        ]);
    }
    let mut out = pad(&rows);
    if !f.migrations.is_empty() {
        let mut m = vec![
            ["MIGRATION", "STATE", "PHASE", "ROLLBACKS"]
                .map(String::from)
                .to_vec(),
        ];
        for mig in &f.migrations {
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            m.push(vec![
                mig.name.clone(),
                or_dash(&mig.state),
                or_dash(&mig.phase),
                mig.rollbacks.map_or_else(|| "-".into(), |r| r.to_string()),
            ]);
        }
        out.push('\n');
        out.push_str(&pad(&m));
    }
    for n in &f.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use ipvsmig_kube::fleet::{FleetNode, FleetStatus, KubeProxyPod};

    #[test]
    fn every_fleet_row_has_a_value_under_each_heading() {
        let node = FleetNode {
            name: "node-1".into(),
            phase: None,
            status: None,
            kube_proxies: vec![KubeProxyPod {
                name: "kube-proxy-a".into(),
                daemon_set: Some("kube-proxy".into()),
                phase: "Running".into(),
            }],
            flags: Vec::new(),
            created: Some("2026-11-20T00:00:00Z".into()),
        };
        let f = FleetStatus {
            api_version: "ipvs-migrate/v1",
            kind: "FleetStatus",
            nodes: vec![node],
            migrations: Vec::new(),
            notes: Vec::new(),
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_568_400);
        let text = super::fleet(&f, now);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0].len(), 8, "{text}");
        assert_eq!(
            lines[1],
            [
                "node-1",
                "<none>",
                "0",
                "-",
                "kube-proxy(Running)",
                "-",
                "5d"
            ],
            "{text}"
        );
    }
}
