"""Checks of deploy/ that need the IPVSMigration CRD's schema, promtool or the kustomization
(tests/deploy/validate.sh runs it in its venv; kubernetes-validate covers the built-in kinds).

- the example IPVSMigration validates against the CRD's openAPIV3Schema, converted to a JSON
  Schema; broken copies of it (wrong types, values out of range, unknown fields) must not;
- deploy/prometheusrule.yaml's groups are rules/ipvs-migrate.rules.yml's, and promtool accepts
  them;
- kustomization.yaml lists every manifest in deploy/ (the example and the serve example aside);
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


check_example()
check_prometheus_rule()
check_kustomization()
check_dashboards()
if failures:
    print(f"validate.py: {len(failures)} failure(s)")
    sys.exit(1)
