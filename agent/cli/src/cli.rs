//! The command line (DESIGN.md "Command line"): one clap definition, the single source of the
//! CLI reference in docs/cli.md.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Moves a Kubernetes node from kube-proxy's iptables mode to IPVS mode, one namespace at a time,
/// with automatic rollback.
///
/// Start with `ipvs-migrate audit` on the node (or `audit --demo` to see a report for a bundled
/// node snapshot). Exit codes: 0 ok/ready · 1 not ready, check or verification failed · 2 usage ·
/// 3 operation failed · 65 bad input data · 66 input missing · 69 required tool or kernel feature
/// unavailable.
#[derive(Debug, Parser)]
#[command(
    name = "ipvs-migrate",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// State directory (journal and lock), shared by the CLI and the daemon.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/ipvs-migrate",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// iptables backend to read and write; `auto` detects the one kube-proxy uses (kubelet's
    /// KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY marker chains).
    #[arg(long, global = true, value_enum, default_value_t = BackendArg::Auto)]
    pub iptables_backend: BackendArg,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--iptables-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Detect.
    Auto,
    /// iptables-legacy.
    Legacy,
    /// iptables-nft.
    Nft,
}

/// Where the node's facts come from. Without any of these, the live node.
#[derive(Debug, Args, Clone, Default)]
pub struct Inputs {
    /// Read IPv4 rules from an iptables-save file (`-` for stdin) instead of the live node.
    #[arg(long, value_name = "FILE")]
    pub iptables_save: Option<PathBuf>,
    /// Read IPv6 rules from an ip6tables-save file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub ip6tables_save: Option<PathBuf>,
    /// Root of the host's filesystem (/proc, /sys, /etc are read below it).
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// kube-proxy's KubeProxyConfiguration (config.conf) instead of the ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub kube_proxy_config: Option<PathBuf>,
    /// kube-proxy's ConfigMap (NAMESPACE/NAME or NAME in kube-system) read through the
    /// Kubernetes API when --kube-proxy-config is not given (with --kubeconfig or --kube-api).
    #[arg(long, value_name = "NS/NAME", default_value = "kube-system/kube-proxy")]
    pub kube_proxy_configmap: String,
    /// The key of kube-proxy's ConfigMap holding its KubeProxyConfiguration.
    #[arg(long, value_name = "KEY", default_value = "config.conf")]
    pub kube_proxy_configmap_key: String,
    #[command(flatten)]
    pub api: ApiArgs,
    /// The node's IPs (for NodePort virtual servers); repeatable.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// The cluster's Kubernetes version (e.g. 1.34), for the IPVS deprecation timeline; by
    /// default read from a kube-proxy static pod's image tag when there is one.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,
    /// Do not look at the machine this runs on: no tool versions, no kube-proxy /healthz, no
    /// live iptables read (for checking a copied host tree with --host-root).
    #[arg(long)]
    pub offline: bool,
}

/// Whether and how to use the Kubernetes API (docs/kubernetes.md). Without either flag no
/// command talks to the API server.
#[derive(Debug, Args, Clone, Default)]
pub struct ApiArgs {
    /// Use the Kubernetes API with this kubeconfig (kube-proxy's ConfigMap; the api-drift
    /// check against Services and EndpointSlices).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Use the Kubernetes API as configured by KUBECONFIG, ~/.kube/config or the pod's service
    /// account.
    #[arg(long)]
    pub kube_api: bool,
    /// Deadline of each API request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub kube_api_timeout: u64,
}

impl ApiArgs {
    /// True if the API was asked for.
    pub fn enabled(&self) -> bool {
        self.kubeconfig.is_some() || self.kube_api
    }
}

impl Inputs {
    /// True if any file input was given (the live node is not read then).
    pub fn has_files(&self) -> bool {
        self.iptables_save.is_some() || self.ip6tables_save.is_some()
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// JSON (apiVersion ipvs-migrate/v1; schemas in docs/schemas/).
    Json,
    /// A self-contained HTML page.
    Html,
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 (iptables, inet sets).
    Ipv4,
    /// IPv6 (ip6tables, inet6 sets).
    Ipv6,
}

/// Plan output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Human-readable table.
    Table,
    /// JSON.
    Json,
    /// `ipvsadm -R` input.
    Ipvsadm,
    /// The hybrid admission rules as `iptables-restore --noflush` input (only `IPVSMIG-`
    /// chains; one family, see --family). Without --namespace: every namespace.
    Iptables,
    /// The hybrid plan's ipsets as `ipset restore -exist` input (one family, see --family).
    Ipset,
    /// KubeProxyConfiguration with mode ipvs.
    KubeProxyConfig,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory + preflight + plan summary in one verdict: "is this node ready, and what would
    /// move?" The main job.
    Audit {
        /// Audit the node snapshot bundled with ipvs-migrate (a realistic cluster of a few hundred
        /// service ports) instead of this node.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        inputs: Inputs,
        /// Output format: a table, JSON (`kind: Audit`, docs/schemas/report.md) or the
        /// readiness report as one self-contained HTML page (no script, nothing loaded;
        /// docs/report.md).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Every service port kube-proxy serves through iptables: VIPs, NodePorts, endpoints,
    /// policies, affinity, masquerade settings; every KUBE-* rule not understood is listed.
    Inventory {
        #[command(flatten)]
        inputs: Inputs,
        /// Output format (table or json).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Can this node run IPVS safely? Kernel, modules, OS, CNI, sysctls, tools, kube-proxy's
    /// configuration and health, other IPVS users, the deprecation timeline. Exit 0 ready, 1
    /// blockers found.
    Preflight {
        #[command(flatten)]
        inputs: Inputs,
        /// Also create, read back and delete a throw-away IPVS virtual server
        /// (198.51.100.0:20000/TCP) in this network namespace, as kube-proxy does at start.
        #[arg(long)]
        probe: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// The exact IPVS configuration kube-proxy's IPVS mode would program (-o table, json,
    /// ipvsadm), and kube-proxy's configuration for IPVS mode (-o kube-proxy-config, from
    /// --kube-proxy-config). With --namespace: the hybrid state that moves only those
    /// namespaces while kube-proxy stays in iptables mode — virtual servers, addresses, the
    /// agent's ipsets (-o ipset) and admission rules (-o iptables), sysctls, and what stays on
    /// iptables. --verify traces packets through kube-proxy's rules and through the plan shown
    /// and compares endpoints, affinity, masquerade and verdicts (exit 1 on a mismatch;
    /// docs/verify.md); it needs --iptables-save / --ip6tables-save files.
    Plan {
        #[command(flatten)]
        inputs: Inputs,
        /// Plan the hybrid state for these namespaces (repeatable or comma-separated).
        #[arg(long = "namespace", value_delimiter = ',', value_name = "NS")]
        namespaces: Vec<String>,
        /// Keep this service on iptables (NS/SVC; repeatable).
        #[arg(long = "exclude", value_name = "NS/SVC")]
        exclude: Vec<String>,
        /// Family of -o iptables / -o ipset output.
        #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
        family: FamilyArg,
        /// Check the plan against the rules by tracing packets through both (-o table or
        /// json; needs --iptables-save; exit 1 on a mismatch).
        #[arg(long)]
        verify: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = PlanFormat::Table)]
        output: PlanFormat,
    },
    /// Move namespaces to IPVS on this node while kube-proxy stays in iptables mode: programs
    /// the hybrid plan's virtual servers, kube-ipvs0 addresses, ipsets, admission rules and
    /// sysctls; admits the agent's own probes first, checks every virtual server through IPVS,
    /// then admits all traffic. Only objects recorded in the journal (--state-dir) are ever
    /// changed. The preflight checks gate it first: a blocker (missing IPVS modules, say)
    /// refuses it. Handed to the `serve` daemon when one runs (watched); without one it needs
    /// --no-watch. Exit 0 applied (dry run: would apply), 1 a preflight blocker, a conflict or a
    /// failed probe (nothing admitted), 2 usage (no daemon and no --no-watch), 3 a kernel
    /// operation failed (the journal says what is applied) or the daemon does not answer, 69 a
    /// tool missing (ipset / iptables).
    Apply {
        #[command(flatten)]
        inputs: Inputs,
        /// Namespaces (repeatable or comma-separated).
        #[arg(
            long = "namespace",
            value_delimiter = ',',
            required = true,
            value_name = "NS"
        )]
        namespaces: Vec<String>,
        /// Keep a service on iptables (NS/SVC; repeatable).
        #[arg(long, value_name = "NS/SVC")]
        exclude: Vec<String>,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply without a daemon (when `serve` runs, apply is handed to it and watched; without
        /// one, this flag is required): admission entries get no timeout
        /// (no dead man's switch) and nothing follows kube-proxy afterwards — real servers stay
        /// as they were at apply time (re-run apply after endpoint changes), services created
        /// or deleted later are not followed (a deleted service's ClusterIP stays captured until
        /// the next apply or rollback), and nothing rolls back by itself.
        #[arg(long)]
        no_watch: bool,
    },
    /// Staged cutover, run by the `serve` daemon (exit 69 when none runs): per wave, the
    /// preflight gate (a blocker stops it unless `--allow`ed, which the journal records), prepare
    /// (kube-ipvs0; on Calico nodes wait for calico-node to restart), apply with admission for
    /// the agent's probes only, verification of every VIP through IPVS, admission of all
    /// traffic, soak while watched; the next wave after the soak. Any rollback trigger (the
    /// built-in evaluator, Alertmanager, a failed probe) takes the wave back by itself. Returns
    /// when the first wave soaks (or stopped); `status` follows it.
    Cutover {
        /// Namespaces (repeatable or comma-separated).
        #[arg(long = "namespace", value_delimiter = ',', value_name = "NS")]
        namespaces: Vec<String>,
        /// Waves file (YAML: `waves: [{namespaces: [a, b]}, {namespaces: [c]}]`), instead of
        /// --namespace.
        #[arg(long, value_name = "FILE", conflicts_with = "namespaces")]
        waves: Option<PathBuf>,
        /// Soak time per wave (e.g. 10m; default: the daemon's `soak`).
        #[arg(long, value_name = "DUR")]
        soak: Option<String>,
        /// Proceed despite a blocker finding (recorded in the journal).
        #[arg(long = "allow", value_name = "CHECK_ID")]
        allow: Vec<String>,
        /// Show what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Return namespaces to kube-proxy's iptables path: admission off first (new connections
    /// take kube-proxy's rules at once), a bounded drain, then the virtual servers, UDP conntrack
    /// entries, addresses; with nothing left migrated, the agent's rules, sets, kube-ipvs0 (if
    /// it created it) and the sysctls' prior values.
    Rollback {
        #[command(flatten)]
        inputs: Inputs,
        /// Namespaces (repeatable or comma-separated).
        #[arg(
            long = "namespace",
            value_delimiter = ',',
            value_name = "NS",
            conflicts_with = "all"
        )]
        namespaces: Vec<String>,
        /// Every migrated namespace.
        #[arg(long)]
        all: bool,
        /// How long established IPVS connections may drain (e.g. 5m).
        #[arg(long, value_name = "DUR")]
        drain: Option<String>,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What is migrated on this node, from the journal (no lock taken): namespaces, admission,
    /// owned objects, watched or not, the last failure.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Hand this node to kube-proxy in IPVS mode (docs/finalize.md). Writes the per-node switch
    /// as manifests (a second kube-proxy ConfigMap and DaemonSet selected by a node label, a
    /// patch keeping the original DaemonSet off labelled nodes, the `kubectl label node`
    /// command). Then, only if kube-proxy's /proxyMode says `ipvs` and the node's IPVS holds the
    /// full IPVS-mode plan of the same INPUTS: removes ipvs-migrate's rules and sets, hands its
    /// virtual servers, addresses, kube-ipvs0 and sysctls over to kube-proxy (not deleted), and
    /// removes kube-proxy's iptables-mode leftovers (not what IPVS mode uses). Run by the `serve`
    /// daemon when it runs (it holds the journal's lock); `--dry-run` runs here. Exit 0
    /// finalized, 1 refused (nothing changed), 3 a step failed (the journal says what was done).
    Finalize {
        #[command(flatten)]
        inputs: Inputs,
        /// Check and show what would be removed and handed over, and print the manifests;
        /// change nothing (exit 1 if finalize would refuse).
        #[arg(long)]
        dry_run: bool,
        /// kube-proxy's metrics endpoint on loopback (plain HTTP; `http://HOST:PORT` or
        /// `HOST:PORT`, as serve.yaml writes it); its /proxyMode tells the mode it runs in.
        #[arg(long, value_name = "URL", default_value = crate::finalize::proxy_mode::DEFAULT_URL)]
        kube_proxy_metrics: String,
        /// Write the switch's manifests into this directory.
        #[arg(long, value_name = "DIR")]
        manifests: Option<PathBuf>,
        /// This node's Kubernetes name (default: $NODE_NAME, else the host name).
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
        /// The kube-proxy image for the second DaemonSet (the one your kube-proxy DaemonSet
        /// runs; default registry.k8s.io/kube-proxy:v<--kubernetes-version> when that has a
        /// patch number).
        #[arg(long, value_name = "IMAGE")]
        kube_proxy_image: Option<String>,
        /// Apply the switch through the Kubernetes API (needs --kubeconfig or --kube-api, run
        /// with an operator's rights: deploy/rbac.yaml ipvs-migrate-finalize): the two manifests
        /// by server-side apply, the original DaemonSet's patch, then this node's label. With
        /// --dry-run: print the requests instead.
        #[arg(long)]
        apply_switch: bool,
        /// Output format (table or json).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Run the node agent (docs/serve.md): the reconcile loop that owns the node's migration
    /// (follows kube-proxy's endpoints and services, refreshes the dead man's switch, re-asserts
    /// the admission hooks, probes the migrated VIPs and rolls a namespace back on a rejection
    /// alert), the local socket `apply`/`rollback`/`cutover`/`finalize` hand requests to, and HTTP: health
    /// and readiness (of the agent, never the node's verdict), Prometheus metrics, the status
    /// as JSON, the readiness report (`/` as HTML, `/api/v1/report` as JSON; docs/report.md), and
    /// the Alertmanager webhook (bearer token). With `kubernetes.enabled` it reports its phase on
    /// the Node and in Events; with `rollout.enabled` it follows IPVSMigration objects
    /// (docs/kubernetes.md, docs/rollout.md).
    Serve {
        /// Listen address (overrides the config's `listen`; default 127.0.0.1:9964).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// YAML config file (docs/serve.md); without it, defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Cluster-wide view through the Kubernetes API (docs/kubernetes.md).
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

/// `fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every node's phase (its ipvs-migrate.io/phase label and status annotation), its
    /// kube-proxy pods (a node running two is flagged), and the IPVSMigration objects. Exit 0,
    /// or 1 when a node is flagged.
    Status {
        /// Output format (table or json).
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        api: ApiArgs,
    },
}
