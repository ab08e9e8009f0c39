"""Checks of deploy/ that need the IPVSMigration CRD's schema, promtool or the kustomization
(tests/deploy/validate.sh runs it in its venv; kubernetes-validate covers the built-in kinds).

- the example IPVSMigration validates against the CRD's openAPIV3Schema, converted to a JSON
  Schema; broken copies of it (wrong types, values out of range, unknown fields) must not;
- the schema is structural as the API server requires (Kubernetes docs, "Specifying a
  structural schema"): every node has a type, and every default validates against its node;
- deploy/prometheusrule.yaml's groups are rules/ipvs-migrate.rules.yml's, and promtool accepts
  them;
- kustomization.yaml lists every manifest in deploy/ (the example and the serve example aside);
- the manifests refer to each other correctly (what no schema sees): the DaemonSet's paths
  are where serve.yaml says its files are, the Service selects the DaemonSet's pods, the
  ServiceMonitor the Service's port, the bindings the ServiceAccount;
- every PromQL expression of dashboards/ parses (promtool check rules on them as recording
  rules, Grafana's variables replaced by values). Which metrics they read:
  tests/tests/observability_names.rs.

Exit 0 when all hold, 1 with one line per failure otherwise. Never changes deploy/.
"""

import copy
import json
import pathlib
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def to_json_schema(s):
    """OpenAPI v3.0 (Kubernetes structural schema) -> JSON Schema (draft 2020-12).

    Differences handled: `nullable`; boolean `exclusiveMinimum`/`exclusiveMaximum` (numbers
    in JSON Schema); `x-kubernetes-*` extensions dropped. An object with `properties` and no
    `additionalProperties` rejects unknown fields, as the API server does with strict field
    validation (`kubectl apply --validate=strict`, the default since 1.27) rather than pruning.
    """
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k.startswith("x-kubernetes-") or k in ("nullable", "exclusiveMinimum", "exclusiveMaximum"):
            continue
        if k == "properties":
            out[k] = {name: to_json_schema(p) for name, p in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = to_json_schema(v) if isinstance(v, dict) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(x) for x in v]
        else:
            out[k] = v
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if s.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_validator():
    crd = yaml.safe_load((DEPLOY / "crd.yaml").read_text())
    versions = crd["spec"]["versions"]
    storage = [v for v in versions if v.get("storage")]
    if len(storage) != 1:
        fail(f"crd.yaml: {len(storage)} storage versions, want 1")
    v = storage[0]
    schema = to_json_schema(v["schema"]["openAPIV3Schema"])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    want_api = f"{crd['spec']['group']}/{v['name']}"
    return want_api, crd["spec"]["names"]["kind"], jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.FormatChecker()
    )


def check_structural():
    crd = yaml.safe_load((DEPLOY / "crd.yaml").read_text())
    errors = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if "type" not in node and not node.get("x-kubernetes-int-or-string") \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(f"{path}: no type")
        if "default" in node:
            for e in jsonschema.Draft202012Validator(to_json_schema(node)).iter_errors(node["default"]):
                errors.append(f"{path}: default {node['default']!r}: {e.message}")
        for name, p in node.get("properties", {}).items():
            walk(p, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[{key}]")
        if node.get("x-kubernetes-list-type") == "map":
            required = node.get("items", {}).get("required", [])
            for k in node.get("x-kubernetes-list-map-keys", []):
                if k not in required:
                    errors.append(f"{path}: list-map key {k} is not required")
        if node.get("x-kubernetes-list-type") == "set" and node.get("items", {}).get("type") in ("object", "array"):
            errors.append(f"{path}: a set of non-scalars")

    for v in crd["spec"]["versions"]:
        walk(v["schema"]["openAPIV3Schema"], v["name"])
    for e in errors:
        fail(f"crd.yaml: {e}")
    if not errors:
        print("ok   crd.yaml's schema is structural: every node typed, every default valid")


def check_example():
    api, kind, validator = crd_validator()
    path = DEPLOY / "examples" / "ipvsmigration.yaml"
    example = yaml.safe_load(path.read_text())
    if example.get("apiVersion") != api or example.get("kind") != kind:
        fail(f"{path}: apiVersion/kind {example.get('apiVersion')}/{example.get('kind')}, want {api}/{kind}")
    errors = sorted(validator.iter_errors(example), key=str)
    for e in errors:
        fail(f"{path}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
    if not errors:
        print(f"ok   {path.relative_to(ROOT)} validates against the CRD's schema ({api})")

    # Broken copies: each must be refused, at the path named.
    def broken(label, where, edit):
        doc = copy.deepcopy(example)
        edit(doc)
        errs = list(validator.iter_errors(doc))
        paths = [".".join(map(str, e.absolute_path)) for e in errs]
        if not errs:
            fail(f"broken example ({label}) was accepted")
        elif where not in paths:
            fail(f"broken example ({label}) refused at {paths}, not at {where}")
        else:
            print(f"ok   broken example refused: {label} ({where})")

    broken("soak is a number", "spec.soak", lambda d: d["spec"].__setitem__("soak", 30))
    broken("soak without a unit", "spec.soak", lambda d: d["spec"].__setitem__("soak", "30"))
    broken("maxNodesInParallel is a string", "spec.maxNodesInParallel",
           lambda d: d["spec"].__setitem__("maxNodesInParallel", "2"))
    broken("maxNodesInParallel 0", "spec.maxNodesInParallel",
           lambda d: d["spec"].__setitem__("maxNodesInParallel", 0))
    broken("ratio above 1", "spec.thresholds.ratio",
           lambda d: d["spec"]["thresholds"].__setitem__("ratio", 1.5))
    broken("rate 0 (exclusive minimum)", "spec.thresholds.rate",
           lambda d: d["spec"]["thresholds"].__setitem__("rate", 0))
    broken("no waves", "spec.waves", lambda d: d["spec"].__setitem__("waves", []))
    broken("namespace not a DNS label", "spec.waves.0.namespaces.0",
           lambda d: d["spec"]["waves"][0].__setitem__("namespaces", ["Shop_1"]))
    broken("state not in the enum", "spec.state", lambda d: d["spec"].__setitem__("state", "Stopped"))
    broken("unknown field", "spec", lambda d: d["spec"].__setitem__("maxNodes", 2))
    broken("no spec", "", lambda d: d.pop("spec"))
    broken("haltAfterRollbacks 0", "spec.haltAfterRollbacks",
           lambda d: d["spec"].__setitem__("haltAfterRollbacks", 0))
    broken("slotTimeout without a unit", "spec.slotTimeout",
           lambda d: d["spec"].__setitem__("slotTimeout", "10"))

    # The status the agents write (tests/deploy/status.yaml, read by the engine's tests too).
    spath = ROOT / "tests" / "deploy" / "status.yaml"
    with_status = copy.deepcopy(example)
    with_status["status"] = yaml.safe_load(spath.read_text())
    errors = sorted(validator.iter_errors(with_status), key=str)
    for e in errors:
        fail(f"{spath}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
    if not errors:
        print(f"ok   {spath.relative_to(ROOT)} validates against the CRD's status schema")
    example = with_status
    broken("node phase not in the enum", "status.nodes.node-2.phase",
           lambda d: d["status"]["nodes"]["node-2"].__setitem__("phase", "Running"))
    broken("node entry without a heartbeat", "status.nodes.node-2",
           lambda d: d["status"]["nodes"]["node-2"].pop("heartbeat"))
    broken("wave 0", "status.nodes.node-1.wave",
           lambda d: d["status"]["nodes"]["node-1"].__setitem__("wave", 0))


def check_prometheus_rule():
    rule = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())
    file = yaml.safe_load((ROOT / "rules" / "ipvs-migrate.rules.yml").read_text())
    if rule.get("kind") != "PrometheusRule" or rule.get("apiVersion") != "monitoring.coreos.com/v1":
        fail("prometheusrule.yaml: not a monitoring.coreos.com/v1 PrometheusRule")
    if rule.get("spec") != file:
        fail("prometheusrule.yaml: spec differs from rules/ipvs-migrate.rules.yml "
             "(IPVSMIG_UPDATE_RULES=1 cargo test -p ipvsmig-engine rules)")
    else:
        print("ok   prometheusrule.yaml carries rules/ipvs-migrate.rules.yml")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rule.get("spec"), f)
        f.flush()
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool check rules on prometheusrule.yaml's spec: {r.stdout}{r.stderr}")
        else:
            print("ok   promtool check rules: prometheusrule.yaml's spec")


def check_kustomization():
    k = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(k.get("resources", []))
    present = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", "serve-config.yaml"}
    for name in sorted(present - listed):
        fail(f"kustomization.yaml does not list {name}")
    for name in sorted(listed - present):
        fail(f"kustomization.yaml lists {name}, which is not in deploy/")
    if listed == present:
        print(f"ok   kustomization.yaml lists the {len(present)} manifests")


def load_all(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def check_wiring():
    ds = load_all("daemonset.yaml")[0]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cm = load_all("configmap.yaml")[0]
    serve = yaml.safe_load(cm["data"]["serve.yaml"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    errors = []

    def file_in_volume(path, kind, name_key, name, key):
        # `path` must be a file the volume `kind` (configMap/secret) named `name` puts there.
        for mpath, m in mounts.items():
            v = volumes.get(m["name"], {})
            if kind not in v or v[kind].get(name_key) != name:
                continue
            if m.get("subPath"):
                if mpath == path and m["subPath"] == key:
                    return
            elif path == f"{mpath}/{key}":
                items = v[kind].get("items")
                if items is None or any(i["key"] == key or i["path"] == key for i in items):
                    return
        errors.append(f"{path}: no mount of {kind} {name} key {key} there")

    args = c["args"]
    config = args[args.index("--config") + 1]
    file_in_volume(config, "configMap", "name", cm["metadata"]["name"], "serve.yaml")
    file_in_volume(serve["tokenFile"], "secret", "secretName", "ipvs-migrate-webhook-token", "token")
    # kube-proxy's configuration comes through the API (kubernetes.kubeProxyConfigMap), never a
    # required volume: a distribution naming its ConfigMap otherwise would leave the pod waiting.
    if "kubeProxyConfig" in serve:
        file_in_volume(serve["kubeProxyConfig"], "configMap", "name", "kube-proxy", "config.conf")
    elif not (serve.get("kubernetes") or {}).get("enabled"):
        errors.append("serve.yaml has neither kubeProxyConfig nor kubernetes.enabled: no kube-proxy configuration")
    if "listen" in serve:
        errors.append("serve.yaml sets listen: the DaemonSet's --listen overrides it (daemonset.yaml)")
    listen = args[args.index("--listen") + 1]
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    if listen != f"$(POD_IP):{port}":
        errors.append(f"--listen {listen} is not $(POD_IP):{port}")
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
    if env.get("NODE_NAME") != "spec.nodeName" or env.get("POD_IP") != "status.podIP":
        errors.append(f"env: NODE_NAME and POD_IP must come from the downward API, got {env}")
    for probe in ("livenessProbe", "readinessProbe"):
        if c[probe]["httpGet"]["port"] != "http":
            errors.append(f"{probe} not on the http port")
    hostpaths = {v["hostPath"]["path"]: v for v in volumes.values() if "hostPath" in v}
    for path in ("/run/xtables.lock", "/var/lib/ipvs-migrate"):
        if path not in hostpaths or path not in mounts:
            errors.append(f"{path}: not the host's (hostPath mounted at the same path)")
    for path, m in mounts.items():
        v = volumes[m["name"]]
        if "hostPath" in v and path not in ("/run/xtables.lock", "/var/lib/ipvs-migrate") and not m.get("readOnly"):
            errors.append(f"{path}: a host path other than the lock and the state dir is writable")
    if not (pod.get("hostNetwork") and c["securityContext"].get("privileged")):
        errors.append("the agent must be privileged on the host network (deploy/README.md)")

    labels = ds["spec"]["template"]["metadata"]["labels"]
    svc = load_all("service-metrics.yaml")[0]
    if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        errors.append("service-metrics.yaml does not select the DaemonSet's pods")
    if svc["spec"].get("clusterIP") != "None" or svc["spec"]["ports"][0]["port"] != port:
        errors.append(f"service-metrics.yaml: not headless on port {port}")
    sm = load_all("servicemonitor.yaml")[0]
    if any(svc["metadata"]["labels"].get(k) != v for k, v in sm["spec"]["selector"]["matchLabels"].items()):
        errors.append("servicemonitor.yaml does not select the metrics Service")
    if {e["port"] for e in sm["spec"]["endpoints"]} != {p["name"] for p in svc["spec"]["ports"]}:
        errors.append("servicemonitor.yaml: endpoint port names are not the Service's")
    sa = load_all("serviceaccount.yaml")[0]["metadata"]
    if pod["serviceAccountName"] != sa["name"] or ds["metadata"]["namespace"] != sa["namespace"]:
        errors.append("the DaemonSet does not run as the ServiceAccount")
    for b in load_all("rbac.yaml"):
        if b["kind"].endswith("Binding"):
            if b["subjects"] != [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]:
                errors.append(f"{b['kind']} {b['metadata']['name']}: subject is not the agent's ServiceAccount")
            roles = [r for r in load_all("rbac.yaml") if r["kind"] == b["roleRef"]["kind"]
                     and r["metadata"]["name"] == b["roleRef"]["name"]
                     and r["metadata"].get("namespace") == b["metadata"].get("namespace")]
            if len(roles) != 1:
                errors.append(f"{b['kind']} {b['metadata']['name']}: refers to no role in rbac.yaml")
    for e in errors:
        fail(f"wiring: {e}")
    if not errors:
        print("ok   the manifests refer to each other: mounts, ports, selectors, service account")


def grafana_exprs(panels):
    for p in panels:
        for t in p.get("targets", []):
            if "expr" in t:
                yield p.get("title", "?"), t["expr"]
        yield from grafana_exprs(p.get("panels", []))


def check_dashboards():
    # Grafana's built-in and the dashboards' own variables, as Grafana substitutes them.
    values = {"__rate_interval": "1m", "__range": "1h", "__interval": "30s"}
    rules = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for title, expr in grafana_exprs(board.get("panels", [])):
            text = re.sub(r"\$\{?(\w+)(:\w+)?\}?", lambda m: values.get(m.group(1), "x"), expr)
            rules.append({"record": f"dashboard:check:{len(rules)}", "expr": text,
                          "labels": {"panel": f"{path.name}: {title}"}})
    if not rules:
        fail("dashboards/: no expressions")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)
        f.flush()
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"dashboards/: promtool does not parse every expression: {r.stdout}{r.stderr}")
        else:
            print(f"ok   promtool parses the {len(rules)} expressions of dashboards/")


check_structural()
check_example()
check_prometheus_rule()
check_kustomization()
check_wiring()
check_dashboards()
if failures:
    print(f"validate.py: {len(failures)} failure(s)")
    sys.exit(1)
