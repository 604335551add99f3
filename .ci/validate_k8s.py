#!/usr/bin/env python3
"""Offline checks of k8s/: every manifest validates against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors); the custom resources
(ServiceMonitor, PrometheusRule) parse and carry the fields they need; the kustomization
lists every manifest and generator file; the StatefulSet keeps the promises DEPLOY.md
makes (probes, grace period, security context, one volume per pod)."""

import json
import pathlib
import sys
import tomllib

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
VERSION = "1.30.0"
failures = []


def fail(message):
    failures.append(message)


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def require(doc, path, where):
    value = doc
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        else:
            fail(f"{where}: missing {path}")
            return None
    return value


kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
listed = set(kustomization.get("resources", []))
manifests = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Templates (*.example.yaml) are validated but never deployed.
for name in manifests:
    if name.endswith(".example.yaml"):
        if name in listed:
            fail(f"kustomization.yaml deploys the template {name}")
    elif name not in listed:
        fail(f"kustomization.yaml does not list {name}")
for name in listed:
    if not (K8S / name).is_file():
        fail(f"kustomization.yaml lists {name}, which does not exist")
for generator in kustomization.get("configMapGenerator", []):
    for file in generator.get("files", []):
        if not (K8S / file).is_file():
            fail(f"configMapGenerator {generator['name']}: no file {file}")

resources = {}
for name in manifests:
    for doc in documents(K8S / name):
        kind = doc.get("kind")
        resources[kind] = doc
        where = f"{name} ({kind})"
        if kind in ("ServiceMonitor", "PrometheusRule"):
            if doc.get("apiVersion") != "monitoring.coreos.com/v1":
                fail(f"{where}: apiVersion must be monitoring.coreos.com/v1")
            continue
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            fail(f"{where}: {error.message} at {list(error.path)}")
        except Exception as error:  # a schema the package lacks, say
            fail(f"{where}: {error}")

monitor = resources.get("ServiceMonitor")
if monitor:
    endpoints = require(monitor, "spec.endpoints", "ServiceMonitor") or []
    for endpoint in endpoints:
        if endpoint.get("port") != "admin" or endpoint.get("path") != "/metrics":
            fail("ServiceMonitor: each endpoint scrapes port admin, path /metrics")
    labels = require(monitor, "spec.selector.matchLabels", "ServiceMonitor") or {}
    services = [d for d in (documents(K8S / n) for n in manifests) for d in d if d.get("kind") == "Service"]
    matched = [s for s in services if labels.items() <= (s["metadata"].get("labels") or {}).items()]
    if len(matched) != 1:
        fail(f"ServiceMonitor: selects {len(matched)} Services; one, or pods are scraped twice")
else:
    fail("no ServiceMonitor")

rule = resources.get("PrometheusRule")
if rule:
    for group in require(rule, "spec.groups", "PrometheusRule") or []:
        for item in group.get("rules", []):
            where = f"PrometheusRule alert {item.get('alert')}"
            for field in ("alert", "expr", "labels.severity", "annotations.summary", "annotations.description"):
                require(item, field, where)
else:
    fail("no PrometheusRule")

dashboard = json.loads((K8S / "playtree-dashboard.json").read_text())
for panel in dashboard.get("panels", []):
    if not panel.get("targets") or not all(t.get("expr") for t in panel["targets"]):
        fail(f"dashboard panel {panel.get('title')}: no query")

config = tomllib.loads((ROOT / "config" / "playtree.toml").read_text())
sts = resources.get("StatefulSet")
if sts:
    spec = sts["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    grace_ms = config["server"]["shutdown_grace_ms"] + int(
        env.get("PLAYTREE_SERVER__UNREADY_DELAY_MS") or config["server"]["unready_delay_ms"]
    )
    if spec.get("terminationGracePeriodSeconds", 30) * 1000 <= grace_ms:
        fail(f"terminationGracePeriodSeconds must exceed the server's {grace_ms} ms of shutdown")
    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in probes.items():
        got = container.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "admin":
            fail(f"{probe} must GET {path} on port admin")
    security = container.get("securityContext", {})
    if security.get("readOnlyRootFilesystem") is not True:
        fail("the container's root filesystem must be read-only")
    if security.get("allowPrivilegeEscalation") is not False:
        fail("privilege escalation must be off")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        fail("every capability must be dropped")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail("the pod must run as non-root")
    if not sts["spec"].get("volumeClaimTemplates"):
        fail("the StatefulSet needs volumeClaimTemplates: one volume per pod for sled")
    for resource in ("requests", "limits"):
        if not container.get("resources", {}).get(resource):
            fail(f"the container needs resource {resource}")
    if env.get("PLAYTREE_SERVER__DATA_DIR") != "/data":
        fail("the data dir must be the /data volume")
else:
    fail("no StatefulSet")

for kind in ("Service", "ConfigMap", "Secret", "PodDisruptionBudget", "NetworkPolicy"):
    if kind == "ConfigMap":
        continue  # generated by kustomize from playtree.toml and the dashboard
    if kind not in resources:
        fail(f"no {kind}")

if failures:
    print("k8s/ checks failed:")
    for line in failures:
        print(f"  {line}")
    sys.exit(1)
print(f"k8s/: {len(manifests)} manifests valid against Kubernetes {VERSION}; custom resources, kustomization and StatefulSet checked")
