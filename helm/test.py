#!/usr/bin/env python3
"""Lints and renders the vigil chart with a real Helm engine for every
documented value combination (helm/vigil/ci/*-values.yaml), and validates
every object it renders offline:

- core kinds against the Kubernetes OpenAPI schemas kubernetes-validate
  ships (strict: an unknown field is an error);
- the ServiceMonitor against the Prometheus Operator CRD's schema, as the
  pydantic models cloudcoil-models-prometheus-operator generates from it,
  plus a check that no field was dropped as unknown;
- the Grafana dashboard (vigil/dashboards/vigil.json): every metric it
  queries is one Vigil exports, as declared in the one metrics module of
  each binary (proxy/src/metrics.rs, controller/src/metrics.rs);
- the proxy config the chart writes with `vigil-proxy check`, when
  VIGIL_PROXY_BIN names a built binary: what the chart renders, the proxy
  runs.

Also: values the schema must refuse are refused. Exits non-zero on any
problem, naming the combination, object and field.

Usage: python3 helm/test.py   (from anywhere; see docs/deployment.md#helm)
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import helm_python as helm
import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE / "vigil"
KUBERNETES = ["1.29.0", "1.33.0"]

# Values the schema must refuse, and why.
REFUSED = {
    "sqlite with three replicas": {"controller": {"store": "sqlite", "replicas": 3}},
    "postgres without its config Secret": {"controller": {"store": "postgres", "replicas": 2}},
    "an unknown key": {"proxy": {"replica": 3}},
    "the chart's own [server] in the proxy config": {
        "proxy": {"config": '[server]\nthreads = 2\n[session]\ncookies = ["s"]\n'}
    },
    "a TLS port without certificates": {"proxy": {"ports": {"http": 8080, "https": 8443, "admin": 9901}}},
    "a rule file not named .toml": {"proxy": {"rules": {"rules": "x"}}},
}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def unknown_fields(given, kept, path=""):
    """Fields of `given` that a model dump (`kept`) lost: unknown to it."""
    lost = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                lost.append(f"{path}.{key}")
            else:
                lost += unknown_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            lost += unknown_fields(g, k, f"{path}[{i}]")
    return lost


def check_service_monitor(where, obj):
    try:
        model = ServiceMonitor.model_validate(obj)
    except Exception as e:  # pydantic's ValidationError names every field
        problem(where, f"ServiceMonitor refused by the CRD schema: {e}")
        return
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    for field in unknown_fields(obj, kept):
        problem(where, f"ServiceMonitor: unknown field {field}")


def check_proxy_config(where, config_map, proxy_bin):
    """`vigil-proxy check` on the rendered config, laid out as mounted at
    /etc/vigil (rules under rules.d/, a throwaway certificate where a
    secret would be)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for key, text in config_map["data"].items():
            if key == "vigil-proxy.toml":
                (root / key).write_text(text)
            elif key.startswith("rules-"):
                (root / "rules.d").mkdir(exist_ok=True)
                (root / "rules.d" / key[len("rules-"):]).write_text(text)
        text = (root / "vigil-proxy.toml").read_text()
        if "secrets/tls/tls.crt" in text:
            (root / "secrets" / "tls").mkdir(parents=True)
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "1", "-subj", "/CN=app.example.com",
                 "-keyout", str(root / "secrets/tls/tls.key"), "-out", str(root / "secrets/tls/tls.crt")],
                check=True, capture_output=True)
        # state_dir is the pod's /var/lib/vigil; check reads nothing there.
        run = subprocess.run([proxy_bin, "check", "--config", str(root / "vigil-proxy.toml")],
                             capture_output=True, text=True)
        if run.returncode != 0:
            problem(where, f"vigil-proxy check refused the rendered config:\n{run.stderr}")


def exported_metrics():
    """Every metric name the proxy and the controller register: STYLE.md
    keeps them in one module per binary."""
    names = set()
    for module in ["proxy/src/metrics.rs", "controller/src/metrics.rs"]:
        names |= set(re.findall(r'"(vigil_[a-z0-9_]+)"', (HERE.parent / module).read_text()))
    return names


def check_dashboard():
    dashboard = json.loads((CHART / "dashboards" / "vigil.json").read_text())
    exported = exported_metrics()
    queried = set()

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                for name in re.findall(r"\b(vigil_[a-z0-9_]+)", target.get("expr", "")):
                    queried.add((panel.get("title"), name))

    walk(dashboard.get("panels", []))
    if not queried:
        problem("dashboard", "queries no Vigil metric")
    for title, name in sorted(queried):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            problem("dashboard", f"panel {title!r} queries {name}, which Vigil does not export")
    return len({n for _, n in queried})


def main():
    started = time.monotonic()
    dashboard_metrics = check_dashboard()
    proxy_bin = os.environ.get("VIGIL_PROXY_BIN")
    combos = sorted((CHART / "ci").glob("*-values.yaml"))
    if not combos:
        problem(str(CHART / "ci"), "no value combinations")
    chart = helm.Chart.load(str(CHART))
    objects = 0
    for combo in combos:
        values = yaml.safe_load(combo.read_text()) or {}
        name = combo.name
        report = helm.lint(str(CHART), values, strict=True)
        for message in report.get("messages", []):
            # Severity 1 is information ("icon is recommended").
            if message.get("severity", 0) >= 2:
                problem(name, f"lint: {message.get('path')}: {message.get('error')}")
        for error in report.get("errors", []) or []:
            problem(name, f"lint: {error}")
        try:
            rendered = chart.render(values, name="vigil", namespace="vigil", is_install=True)
        except helm.HelmError as e:
            problem(name, f"render: {e}")
            continue
        kinds = set()
        for template, text in sorted(rendered.items()):
            for obj in yaml.safe_load_all(text):
                if not obj:
                    continue
                objects += 1
                kind = obj.get("kind")
                kinds.add(kind)
                where = f"{name}: {template}: {kind} {obj.get('metadata', {}).get('name')}"
                if kind == "ServiceMonitor":
                    check_service_monitor(where, obj)
                    continue
                for version in KUBERNETES:
                    try:
                        kubernetes_validate.validate(obj, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        problem(where, f"Kubernetes {version}: {e.message} at {list(e.path)}")
                    except Exception as e:
                        problem(where, f"Kubernetes {version}: {e}")
                if kind == "ConfigMap" and "vigil-proxy.toml" in obj.get("data", {}) and proxy_bin:
                    check_proxy_config(where, obj, proxy_bin)
        print(f"{name}: {', '.join(sorted(kinds))}")
    for why, values in REFUSED.items():
        try:
            chart.validate_schema(chart.merge_values(values))
            problem("values.schema.json", f"accepted {why}")
        except helm.HelmError:
            pass
    took = time.monotonic() - started
    checked = "checked with vigil-proxy" if proxy_bin else "not checked (no VIGIL_PROXY_BIN)"
    print(f"{len(combos)} combinations, {objects} objects, {len(REFUSED)} refusals; "
          f"dashboard: {dashboard_metrics} metrics checked; "
          f"proxy configs {checked}; {took:.1f} s")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
