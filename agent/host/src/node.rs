//! Reads the node facts preflight needs, every path relative to a host root (`/` on the node,
//! the mounted host filesystem in the DaemonSet, a fixture directory in tests). Reads only.
//! A missing file is a fact (absent), an unreadable one is recorded in `unreadable`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ipvsmig_engine::preflight::{CniConf, ModuleFacts, NodeFacts, OsRelease, SysctlSetting};

/// The sysctls the checks read (dotted names; read from /proc/sys).
pub const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv4.vs.conntrack",
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.expire_quiescent_template",
    "net.ipv4.vs.conn_reuse_mode",
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
];

/// A host filesystem to read facts from: a directory (the node, a fixture) or files held in
/// memory (the demo snapshot bundled in the binary). Paths are absolute within the host.
pub trait HostFs {
    /// File contents.
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;
    /// Directory entries (names), sorted.
    fn list(&self, path: &str) -> std::io::Result<Vec<String>>;
    /// True if `path` is a directory.
    fn is_dir(&self, path: &str) -> bool;
    /// True if `path` exists.
    fn exists(&self, path: &str) -> bool;
    /// How to name the root in reports.
    fn describe(&self) -> String;
}

/// A directory holding the host's filesystem (`/` on the node).
pub struct DirFs(pub PathBuf);

impl DirFs {
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel.trim_start_matches('/'))
    }
}

impl HostFs for DirFs {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(path))
    }
    fn list(&self, path: &str) -> std::io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    }
    fn is_dir(&self, path: &str) -> bool {
        self.path(path).is_dir()
    }
    fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// Files in memory: `(absolute path, contents)`; directories are implied by the paths.
pub struct MemFs {
    /// Name used in reports.
    pub name: String,
    /// Files.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl HostFs for MemFs {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn list(&self, path: &str) -> std::io::Result<Vec<String>> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut v: Vec<String> = self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_owned)
            .collect();
        v.dedup();
        if v.is_empty() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        Ok(v)
    }
    fn is_dir(&self, path: &str) -> bool {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.files.keys().any(|k| k.starts_with(&prefix))
    }
    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.is_dir(path)
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

struct Reader<'f> {
    fs: &'f dyn HostFs,
    unreadable: Vec<String>,
}

impl Reader<'_> {
    /// Contents, `None` if absent; unreadable files are recorded.
    fn read(&mut self, rel: &str) -> Option<String> {
        self.read_bytes(rel)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn read_bytes(&mut self, rel: &str) -> Option<Vec<u8>> {
        match self.fs.read(rel) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.unreadable.push(format!("{rel}: {e}"));
                None
            }
        }
    }

    fn list(&mut self, rel: &str) -> Option<Vec<String>> {
        match self.fs.list(rel) {
            Ok(v) => Some(v),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.unreadable.push(format!("{rel}: {e}"));
                None
            }
        }
    }
}

fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = base.split(".ko").next()?;
    if !base.contains(".ko") {
        return None;
    }
    Some(stem.replace('-', "_"))
}

fn walk_modules(fs: &dyn HostFs, dir: &str, out: &mut Vec<String>, depth: u32) {
    if depth > 12 {
        return;
    }
    let Ok(entries) = fs.list(dir) else {
        return;
    };
    for name in entries {
        let p = format!("{dir}/{name}");
        if fs.is_dir(&p) {
            walk_modules(fs, &p, out, depth + 1);
        } else if let Some(n) = module_name(&name) {
            out.push(n);
        }
    }
}

fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                m.insert(k.to_owned(), v.to_owned());
            }
        } else if let Some(rest) = line
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            m.insert(rest.to_owned(), "n".to_owned());
        }
    }
    m
}

/// Parses sysctl.d(5) text.
pub fn parse_sysctl_file(file: &str, text: &str) -> Vec<SysctlSetting> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix('-').unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        out.push(SysctlSetting {
            file: file.to_owned(),
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            key: k.trim().replace('/', "."),
            value: v.trim().to_owned(),
        });
    }
    out
}

/// Plugin types in a CNI config (`type`, or `plugins[].type` in a conflist).
pub fn cni_types(json: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut types = Vec::new();
    if let Some(t) = v.get("type").and_then(|t| t.as_str()) {
        types.push(t.to_owned());
    }
    if let Some(ps) = v.get("plugins").and_then(|p| p.as_array()) {
        types.extend(
            ps.iter()
                .filter_map(|p| p.get("type").and_then(|t| t.as_str()).map(str::to_owned)),
        );
    }
    Some(types)
}

/// The Kubernetes version in a kube-proxy manifest's image tag: `…/kube-proxy:v1.29.3` or
/// RKE2's `…/hardened-kubernetes:v1.28.8-rke2r1-build…` → `v1.29.3` / `v1.28.8`.
pub fn image_version(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|l| {
        let image = l.trim().strip_prefix("image:")?.trim().trim_matches('"');
        let tag = image.rsplit_once(':')?.1;
        let v = tag.strip_prefix('v')?;
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        let core = &v[..end];
        (core.split('.').count() >= 2).then(|| format!("v{core}"))
    })
}

/// Facts only the live node has: tool versions (from PATH) and kube-proxy's /healthz.
pub fn live_facts() -> ipvsmig_engine::preflight::LiveFacts {
    let version = |tool: &str| -> Result<String, String> {
        match std::process::Command::new(tool).arg("--version").output() {
            Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
            Ok(o) => Err(format!(
                "{tool} --version: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("{tool}: {e}")),
        }
    };
    ipvsmig_engine::preflight::LiveFacts {
        ipset_version: version("ipset"),
        iptables_version: version("iptables"),
        kube_proxy_healthz: healthz("127.0.0.1:10256"),
    }
}

/// GET /healthz from kube-proxy (plain HTTP on loopback), bounded by a 2 s timeout.
fn healthz(addr: &str) -> Result<String, String> {
    use std::io::Write;
    use std::time::Duration;
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok(format!("{status} {body}"))
}

/// The iptables version in the running kube-proxy's own filesystem: find its process in /proc
/// (the host's PID namespace must be visible) and read the dpkg status of the iptables package
/// below /proc/<pid>/root (kube-proxy's images are Debian-based: distroless keeps one status
/// file per package in /var/lib/dpkg/status.d).
fn kube_proxy_iptables(fs: &dyn HostFs) -> Option<String> {
    let pids = fs.list("/proc").ok()?;
    for pid in pids
        .iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let Ok(comm) = fs.read(&format!("/proc/{pid}/comm")) else {
            continue;
        };
        if String::from_utf8_lossy(&comm).trim() != "kube-proxy" {
            continue;
        }
        let root = format!("/proc/{pid}/root/var/lib/dpkg");
        let mut texts: Vec<Vec<u8>> = Vec::new();
        if let Ok(t) = fs.read(&format!("{root}/status")) {
            texts.push(t);
        }
        for name in fs.list(&format!("{root}/status.d")).unwrap_or_default() {
            if let Ok(t) = fs.read(&format!("{root}/status.d/{name}")) {
                texts.push(t);
            }
        }
        for t in texts {
            let text = String::from_utf8_lossy(&t);
            for stanza in text.split("\n\n") {
                if stanza.lines().any(|l| l.trim() == "Package: iptables")
                    && let Some(v) = stanza.lines().find_map(|l| l.strip_prefix("Version:"))
                {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

/// Reads every fact below a directory.
pub fn read_node_facts(root: &Path) -> NodeFacts {
    read_facts(&DirFs(root.to_owned()))
}

/// Reads every fact from a host filesystem.
pub fn read_facts(fs: &dyn HostFs) -> NodeFacts {
    let mut r = Reader {
        fs,
        unreadable: Vec::new(),
    };
    let kernel_release = r
        .read("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let os = r
        .read("/etc/os-release")
        .or_else(|| r.read("/usr/lib/os-release"))
        .map(|t| OsRelease::parse(&t));
    let loaded = r.read("/proc/modules").map(|t| {
        t.lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    });
    let sys_module = r.list("/sys/module").unwrap_or_default();
    let (builtin, loadable) = match &kernel_release {
        Some(rel) => {
            let builtin = r
                .read(&format!("/lib/modules/{rel}/modules.builtin"))
                .map(|t| t.lines().filter_map(module_name).collect());
            let dir = format!("/lib/modules/{rel}/kernel");
            let loadable = fs.is_dir(&dir).then(|| {
                let mut v = Vec::new();
                walk_modules(fs, &dir, &mut v, 0);
                v.sort();
                v.dedup();
                v
            });
            (builtin, loadable)
        }
        None => (None, None),
    };
    let config = match fs.read("/proc/config.gz") {
        Ok(gz) => {
            let mut s = String::new();
            match flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut s) {
                Ok(_) => Some(parse_config(&s)),
                Err(e) => {
                    r.unreadable.push(format!("/proc/config.gz: {e}"));
                    None
                }
            }
        }
        Err(_) => kernel_release
            .clone()
            .and_then(|rel| r.read(&format!("/boot/config-{rel}")))
            .map(|t| parse_config(&t)),
    };
    let mut sysctls = BTreeMap::new();
    for key in SYSCTLS {
        if let Some(v) = r.read(&format!("/proc/sys/{}", key.replace('.', "/"))) {
            sysctls.insert((*key).to_owned(), v.trim().to_owned());
        }
    }
    let mut sysctl_files = Vec::new();
    if let Some(t) = r.read("/etc/sysctl.conf") {
        sysctl_files.extend(parse_sysctl_file("/etc/sysctl.conf", &t));
    }
    for dir in ["/etc/sysctl.d", "/run/sysctl.d", "/usr/lib/sysctl.d"] {
        for name in r.list(dir).unwrap_or_default() {
            if !name.ends_with(".conf") {
                continue;
            }
            let rel = format!("{dir}/{name}");
            if let Some(t) = r.read(&rel) {
                sysctl_files.extend(parse_sysctl_file(&rel, &t));
            }
        }
    }
    let mut cni = Vec::new();
    // k3s keeps its CNI configuration in its own directory.
    let cni_dirs = ["/etc/cni/net.d", "/var/lib/rancher/k3s/agent/etc/cni/net.d"];
    for (dir, name) in cni_dirs
        .iter()
        .flat_map(|d| {
            r.list(d)
                .unwrap_or_default()
                .into_iter()
                .map(move |n| (*d, n))
        })
        .collect::<Vec<_>>()
    {
        if !(name.ends_with(".conf") || name.ends_with(".conflist") || name.ends_with(".json")) {
            continue;
        }
        let rel = format!("{dir}/{name}");
        if let Some(t) = r.read(&rel) {
            match cni_types(&t) {
                Some(mut types) => {
                    // kube-router's CNI config is a plain `bridge` (kube-bridge) conflist, named
                    // 10-kuberouter.conflist by its installer: recognise it by that.
                    if name.contains("kuberouter") || t.contains("\"kube-bridge\"") {
                        types.push("kube-router".to_owned());
                    }
                    cni.push(CniConf {
                        file: rel.clone(),
                        types,
                    })
                }
                None => r.unreadable.push(format!("{rel}: not valid JSON")),
            }
        }
    }
    let kube_ipvs0 = fs.exists("/sys/class/net/kube-ipvs0");
    let kube_proxy_manifests: Vec<String> = [
        "/etc/kubernetes/manifests/kube-proxy.yaml",
        "/etc/kubernetes/manifests/kube-proxy.yml",
        "/var/lib/rancher/rke2/agent/pod-manifests/kube-proxy.yaml",
    ]
    .iter()
    .filter(|p| fs.exists(p))
    .map(|p| (*p).to_owned())
    .collect();
    let k3s = fs.is_dir("/var/lib/rancher/k3s") || fs.is_dir("/etc/rancher/k3s");
    let ipvs_services = r
        .read("/proc/net/ip_vs")
        .map(|t| ipvsmig_engine::preflight::parse_proc_ip_vs(&t));
    let kube_proxy_image_version = kube_proxy_manifests
        .clone()
        .iter()
        .find_map(|m| r.read(m).and_then(|t| image_version(&t)));
    NodeFacts {
        host_root: fs.describe(),
        kernel_release,
        os,
        modules: ModuleFacts {
            loaded,
            sys_module,
            builtin,
            loadable,
            config,
        },
        sysctls,
        sysctl_files,
        cni,
        kube_ipvs0,
        kube_proxy_manifests,
        k3s,
        ipvs_services,
        kube_proxy_image_version,
        live: None,
        kube_proxy_iptables: kube_proxy_iptables(fs),
        ipvs_probe: None,
        unreadable: r.unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_files_are_parsed_with_line_numbers() {
        let s = parse_sysctl_file(
            "/etc/sysctl.d/k8s.conf",
            "# c\nnet.ipv4.ip_forward = 1\n\nnet/ipv4/vs/conn_tab_size=1048576\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].line, s[1].key.as_str(), s[1].value.as_str()),
            (4, "net.ipv4.vs.conn_tab_size", "1048576")
        );
    }

    #[test]
    fn kube_proxys_iptables_version_is_read_from_its_image() {
        let fs = MemFs {
            name: "t".into(),
            files: [
                ("/proc/1/comm".to_owned(), b"systemd\n".to_vec()),
                ("/proc/4242/comm".to_owned(), b"kube-proxy\n".to_vec()),
                (
                    "/proc/4242/root/var/lib/dpkg/status.d/iptables".to_owned(),
                    b"Package: iptables\nVersion: 1.8.9-2\nArchitecture: amd64\n".to_vec(),
                ),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(kube_proxy_iptables(&fs).as_deref(), Some("1.8.9-2"));
    }

    #[test]
    fn kube_routers_bridge_config_is_recognised() {
        let dir = std::env::temp_dir().join(format!("ipvsmig-kr-{}", std::process::id()));
        let cni = dir.join("etc/cni/net.d");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::write(
            cni.join("10-kuberouter.conflist"),
            r#"{"cniVersion":"0.3.0","name":"mynet","plugins":[{"bridge":"kube-bridge","ipam":{"type":"host-local"},"isDefaultGateway":true,"name":"kubernetes","type":"bridge"},{"type":"portmap","capabilities":{"snat":true,"portMappings":true}}]}"#,
        )
        .unwrap();
        let facts = read_node_facts(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            facts.cni[0].types.iter().any(|t| t == "kube-router"),
            "{:?}",
            facts.cni
        );
    }

    #[test]
    fn conflist_plugin_types_are_read() {
        let t = cni_types(
            r#"{"name":"k8s-pod-network","plugins":[{"type":"calico"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        assert_eq!(t, ["calico", "portmap"]);
    }

    #[test]
    fn the_kubernetes_version_comes_from_the_image_tag() {
        assert_eq!(
            image_version("    image: registry.k8s.io/kube-proxy:v1.29.3\n").as_deref(),
            Some("v1.29.3")
        );
        assert_eq!(
            image_version(
                "image: index.docker.io/rancher/hardened-kubernetes:v1.28.8-rke2r1-build20240315"
            )
            .as_deref(),
            Some("v1.28.8")
        );
        assert_eq!(image_version("image: kube-proxy:latest"), None);
    }

    #[test]
    fn module_names_come_from_ko_paths() {
        assert_eq!(
            module_name("kernel/net/netfilter/ipvs/ip_vs_rr.ko.xz").as_deref(),
            Some("ip_vs_rr")
        );
        assert_eq!(
            module_name("kernel/drivers/net/dummy.ko").as_deref(),
            Some("dummy")
        );
        assert_eq!(module_name("modules.order"), None);
    }
}
