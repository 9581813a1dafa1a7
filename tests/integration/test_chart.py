"""The Helm chart (charts/chorus) with the real helm CLI: lint, every toggle on and off, the schema,
the operator's RBAC against operator/README.md, hardened pods, the serving arguments against the code,
and an install/upgrade/rollback/uninstall on the test control plane (CRDs upgraded, tenants kept).

The install on a real node (pods Running from the local images, `helm test`, a tenant's training
Job, upgrades under load, the HPA acting, rayservice on KubeRay) belongs in
tests/e2e/test_chart_on_node.py, with the `real_node` fixture: see charts/chorus/README.md, "Tests".
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from chorus.controlplane.cluster import wait_crds_established

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chorus"
OPERATOR_README = ROOT / "operator" / "README.md"
OPERATOR_CRDS = ROOT / "operator" / "crds"
NAMESPACE = "chorus-system"
RELEASE = "rel"


def _run(helm: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _set_args(values: dict[str, object]) -> list[str]:
    """`--set-json key=value` per dotted key (JSON keeps types: "2" stays a string, 2 a number)."""
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def render(helm: Path, values: dict[str, object] | None = None, chart: Path = CHART,
           show_only: str | None = None) -> list[dict]:
    """`helm template` of the chart with these values; the objects, tests hooks included."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, *_set_args(values or {})]
    if show_only:
        args += ["--show-only", show_only]
    result = _run(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(helm: Path, values: dict[str, object]) -> str:
    """helm template's error for values it must refuse."""
    result = _run(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *_set_args(values))
    assert result.returncode != 0, f"helm accepted {values}"
    return result.stderr


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [d for d in objects(docs, kind)
             if component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} ({component}), found {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


# ---- lint, labels, values documentation, schema ------------------------------------------------

S3 = {"storage.uri": "s3://voices/chorus", "storage.s3.endpoint": "http://minio.storage:9000",
      "storage.s3.credentialsSecret": "chorus-s3"}
PVC = {"storage.uri": "file:///var/lib/chorus", "storage.pvc.enabled": True}
RAYSERVICE = {"serving.mode": "rayservice"}


@pytest.mark.parametrize("values", [{}, S3, PVC, RAYSERVICE, {**RAYSERVICE, "training.backend": "ray", **S3}],
                         ids=["defaults", "s3", "pvc", "rayservice", "ray-training"])
def test_helm_lint_passes(helm, values):
    result = _run(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *_set_args(values))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_object_carries_the_recommended_labels(helm):
    docs = render(helm, {**S3, "serviceMonitor.enabled": True, "grafanaDashboard.enabled": True})
    docs += render(helm, RAYSERVICE)
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{doc['kind']} {doc['metadata']['name']} lacks {key}"


def test_templates_are_named_component_kind():
    names = [p.name for p in (CHART / "templates").rglob("*.yaml")]
    assert names
    for name in names:
        component, _, kind = name.removesuffix(".yaml").partition("-")
        assert component and kind, f"{name} is not <component>-<kind>.yaml"


FREE_FORM = {"requests", "limits", "labels", "annotations", "podAnnotations", "nodeSelector"}


def _values_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict) and value and key not in FREE_FORM:
            keys += _values_keys(value, f"{path}.")
    return keys


def test_every_values_key_is_documented_and_in_the_schema():
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the keys enclosing this line
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][\w./-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        parents = [(n, k) for n, k in parents if n < indent]
        # Entries of free-form maps (resource quantities, labels) are documented by their map's comment.
        if not (parents and parents[-1][1] in FREE_FORM):
            assert lines[i - 1].strip().startswith("#"), f"values.yaml line {i + 1} ({key}) has no comment above it"
        parents.append((indent, key))
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in _values_keys(values):
        node = schema
        for part in key.split("."):
            assert part in node.get("properties", {}), f"values.yaml key {key} is not in values.schema.json"
            node = node["properties"][part]
    _assert_closed(schema, "")


def _assert_closed(node: dict, where: str) -> None:
    """Every object in the schema refuses unknown keys, or types them (free-form maps)."""
    if node.get("type") == "object":
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, f"schema object {where or '/'} lacks additionalProperties: false"
        else:
            assert isinstance(extra, dict) or where.endswith(("Selector", "ipBlock", "Ref")), \
                f"schema object {where} is free-form without typed additionalProperties"
    for key, child in node.get("properties", {}).items():
        _assert_closed(child, f"{where}/{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _assert_closed(node[key], f"{where}/{key}")


@pytest.mark.parametrize("values, fragment", [
    ({"serving.replicaz": 2}, "at '/serving': additional properties 'replicaz' not allowed"),
    ({"operatr": {"enabled": True}}, "additional properties 'operatr' not allowed"),
    ({"serving.autoscaling.maxReplicas": 0}, "at '/serving/autoscaling/maxReplicas'"),
    ({"serving.autoscaling.targetCPUUtilizationPercentage": 150}, "at '/serving/autoscaling/targetCPUUtilizationPercentage'"),
    ({"serving.mode": "statefulset"}, "at '/serving/mode'"),
    ({"training.backend": "slurm"}, "at '/training/backend'"),
    ({"image.serve.pullPolicy": "Sometimes"}, "at '/image/serve/pullPolicy'"),
    ({"operator.replicas": 0}, "at '/operator/replicas'"),
    ({"operator.logLevel": "LOUD"}, "at '/operator/logLevel'"),
    ({"operator.resources.limits.cpu": "lots"}, "at '/operator/resources/limits/cpu'"),
    ({"serving.app.threads": 0}, "at '/serving/app/threads'"),
    ({"storage.uri": "ftp://host/x"}, "at '/storage/uri'"),
    ({"tests.timeoutSeconds": 1}, "at '/tests/timeoutSeconds'"),
    ({"operator.extraEnv": [{"value": "x"}]}, "at '/operator/extraEnv/0'"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_the_schema_rejects_typos_and_out_of_range_values(helm, values, fragment):
    assert fragment in render_error(helm, values)


@pytest.mark.parametrize("values, fragment", [
    ({"storage.uri": "file:///data"}, "storage.pvc.enabled is false"),
    ({"storage.pvc.enabled": True}, "is not a file:// URI"),
    ({"storage.s3.endpoint": "http://minio:9000"}, "is not an s3:// URI"),
    ({"serving.autoscaling.minReplicas": 5}, "serving.autoscaling.minReplicas (5) must not exceed"),
    ({"serving.rayService.workers.minReplicas": 3}, "serving.rayService.workers: need minReplicas"),
    ({"training.backend": "ray"}, "serving.mode is not rayservice"),
])
def test_combinations_the_schema_cannot_express_fail_with_the_keys_named(helm, values, fragment):
    assert fragment in render_error(helm, values)


# ---- toggles on and off --------------------------------------------------------------------------

def test_defaults_render_the_operator_serving_tier_and_policies(helm):
    docs = render(helm)
    assert kinds(docs) == {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                           "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Role",
                           "RoleBinding", "NetworkPolicy", "ConfigMap", "Pod", "VoiceTenant"}
    assert {d["metadata"]["name"] for d in objects(docs, "Deployment")} == {"rel-chorus-operator", "rel-chorus-serving"}
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs if d["kind"] not in
               {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "VoiceTenant"})


@pytest.mark.parametrize("key, on, off", [
    ("crds.enabled", {"CustomResourceDefinition"}, set()),
    ("operator.enabled", {"Deployment/operator", "ClusterRole/operator", "ClusterRoleBinding/operator",
                          "ServiceAccount/operator"}, set()),
    ("serving.enabled", {"Deployment/serving", "Service/serving", "Role/serving", "RoleBinding/serving",
                         "HorizontalPodAutoscaler/serving", "PodDisruptionBudget/serving",
                         "ServiceAccount/serving", "NetworkPolicy/serving", "Pod/helm-test", "ServiceAccount/helm-test",
                         "ConfigMap/helm-test", "VoiceTenant/helm-test"}, set()),
    ("serving.autoscaling.enabled", {"HorizontalPodAutoscaler/serving"}, set()),
    ("serving.podDisruptionBudget.enabled", {"PodDisruptionBudget/serving"}, set()),
    ("networkPolicy.enabled", {"NetworkPolicy/platform", "NetworkPolicy/serving"}, set()),
    ("serviceMonitor.enabled", set(), {"ServiceMonitor/serving"}),
    ("grafanaDashboard.enabled", set(), {"ConfigMap/serving"}),
    ("tests.enabled", {"Pod/helm-test", "ServiceAccount/helm-test", "ConfigMap/helm-test", "VoiceTenant/helm-test"},
     set()),
])
def test_each_toggle_adds_exactly_its_objects(helm, key, on, off):
    """on: objects present only when the default-true toggle is on; off: only when a default-false one is on."""
    def present(value):
        return {f"{d['kind']}/{d['metadata']['labels']['app.kubernetes.io/component']}" if d["kind"] != "CustomResourceDefinition"
                else d["kind"] for d in render(helm, {key: value})}
    enabled, disabled = present(True), present(False)
    assert enabled - disabled == (on or off), f"{key}: on adds {enabled - disabled}"
    assert not disabled - enabled, f"{key}: off adds {disabled - enabled}"


def test_hpa_replicas_and_the_custom_metric(helm):
    hpa = one(render(helm), "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rel-chorus-serving"
    assert "replicas" not in one(render(helm), "Deployment", "serving")["spec"]  # the HPA owns the count

    docs = render(helm, {"serving.autoscaling.customMetric.enabled": True, "serving.autoscaling.minReplicas": 2,
                         "serving.autoscaling.maxReplicas": 6})
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][1] == {"type": "Pods", "pods": {
        "metric": {"name": "chorus_requests_in_flight"}, "target": {"type": "AverageValue", "averageValue": "4"}}}

    docs = render(helm, {"serving.autoscaling.enabled": False, "serving.replicas": 3})
    assert one(docs, "Deployment", "serving")["spec"]["replicas"] == 3


def test_rayservice_mode_replaces_the_deployment_with_a_rayservice(helm):
    docs = render(helm, {**RAYSERVICE, **S3})
    assert not [d for d in objects(docs, "Deployment") if "serving" in d["metadata"]["name"]]
    assert not objects(docs, "HorizontalPodAutoscaler") and not objects(docs, "PodDisruptionBudget")
    assert not objects(docs, "Service")  # KubeRay makes <name>-serve-svc
    ray = one(docs, "RayService")
    assert ray["apiVersion"] == "ray.io/v1"
    assert ray["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "rel-chorus-serving"
    test_pod = one(docs, "Pod", "helm-test")
    env = {e["name"]: e.get("value") for e in test_pod["spec"]["containers"][0]["env"]}
    assert env["SERVING_SERVICE"] == "rel-chorus-serving-serve-svc"


def test_storage_pvc_is_mounted_and_s3_credentials_reach_the_pods(helm):
    docs = render(helm, PVC)
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for name in ("operator", "serving"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "storage")
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert any(m["mountPath"] == "/var/lib/chorus" for m in pod["containers"][0]["volumeMounts"])
    docs = render(helm, {**PVC, "storage.pvc.existingClaim": "voices"})
    assert not objects(docs, "PersistentVolumeClaim")
    assert "voices" in json.dumps(one(docs, "Deployment", "serving")["spec"]["template"]["spec"]["volumes"])

    docs = render(helm, S3)
    assert not objects(docs, "PersistentVolumeClaim")
    for name in ("operator", "serving"):
        env = {e["name"]: e for e in one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage:9000"
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "chorus-s3", "key": "AWS_ACCESS_KEY_ID"}


def test_network_policies_deny_by_default_and_open_only_the_api(helm):
    docs = render(helm)
    deny = next(d for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("default-deny"))
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    api = next(d for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-api"))
    assert api["spec"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]

    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    docs = render(helm, {"networkPolicy.servingFrom": [peer]})
    api = next(d for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-api"))
    sources = api["spec"]["ingress"][0]["from"]
    assert peer in sources and {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "helm-test"
               for p in sources)

    docs = render(helm, {**RAYSERVICE, "training.backend": "ray"})
    api = next(d for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-api"))
    rules = api["spec"]["ingress"]
    dashboard = [r for r in rules if {"port": 8265, "protocol": "TCP"} in r.get("ports", [])]
    assert len(dashboard) == 2  # the operator (Ray training jobs) and the KubeRay operator's namespace
    assert all(r.get("from") for r in dashboard), "the Ray dashboard must never be open to everyone"


# ---- the CRDs: one source, upgraded by helm, kept on uninstall --------------------------------

def test_the_chart_renders_exactly_operator_crds(helm):
    rendered = {d["metadata"]["name"]: d for d in objects(render(helm), "CustomResourceDefinition")}
    sources = [yaml.safe_load(p.read_text()) for p in sorted(OPERATOR_CRDS.glob("*.yaml"))]
    assert set(rendered) == {s["metadata"]["name"] for s in sources}
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert crd["spec"] == source["spec"]
        assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    crd = objects(render(helm, {"crds.keep": False}), "CustomResourceDefinition")[0]
    assert "annotations" not in crd["metadata"]


# ---- RBAC: exactly operator/README.md's table ------------------------------------------------

def readme_permissions(backend: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) from the table under "Permissions the operator needs"."""
    section = OPERATOR_README.read_text().split("## Permissions the operator needs", 1)[1].split("\n## ", 1)[0]
    triples = set()
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| When")
            and not line.startswith("| ---")]
    assert rows, "no permission table in operator/README.md"
    for row in rows:
        when, group, resources, verbs, _why = [cell.strip() for cell in row.strip("|").split("|")]
        assert when in ("always", "training.backend=kubernetes", "training.backend=ray"), row
        if when != "always" and when != f"training.backend={backend}":
            continue
        group = "" if group == "core" else group
        for resource in resources.split(","):
            for verb in verbs.split(","):
                triples.add((group, resource.strip(), verb.strip()))
    return triples


def rule_triples(rules: list[dict]) -> set[tuple[str, str, str]]:
    triples = set()
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    triples.add((group, resource, verb))
    return triples


@pytest.mark.parametrize("backend", ["kubernetes", "ray"])
def test_operator_rbac_is_exactly_the_readme_table(helm, backend):
    values = {"training.backend": backend, **(RAYSERVICE if backend == "ray" else {})}
    docs = render(helm, values)
    role = one(docs, "ClusterRole", "operator")
    assert rule_triples(role["rules"]) == readme_permissions(backend)
    binding = one(docs, "ClusterRoleBinding", "operator")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-chorus-operator", "namespace": NAMESPACE}]
    assert {o["kind"] for o in docs if o["kind"] in ("Role", "ClusterRole") and o is not role} == {"Role"}


def test_serving_may_only_read_configmaps_in_the_platform_namespace(helm):
    docs = render(helm)
    role = one(docs, "Role", "serving")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rule_triples(role["rules"]) == {("", "configmaps", v) for v in ("get", "list", "watch")}
    binding = one(docs, "RoleBinding", "serving")
    assert binding["subjects"][0]["name"] == one(docs, "Deployment", "serving")["spec"]["template"]["spec"]["serviceAccountName"]


# ---- hardened pods ---------------------------------------------------------------------------

def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod spec) of every workload rendered: Deployments, the RayService's groups, test pods."""
    found = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            found.append((name, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Pod":
            found.append((name, doc["spec"]))
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            found.append((f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]))
            found += [(f"{name}/{g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
    return found


@pytest.mark.parametrize("values", [{**S3, "storage.s3.region": "eu-west-1"}, PVC, {**RAYSERVICE, **S3}],
                         ids=["deployment-s3", "deployment-pvc", "rayservice"])
def test_every_pod_is_hardened(helm, values):
    docs = render(helm, values)
    specs = pod_specs(docs)
    assert len(specs) >= 3
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], f"{where}: no emptyDir for /tmp"
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 10001, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}/{c['name']}: {kind}"
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{where}: /tmp not writable"
    auto = next(d for d in docs if d["kind"] == "RayService")["spec"]["rayClusterConfig"] if "serving.mode" in values else None
    if auto:  # KubeRay injects the autoscaler sidecar: the chart hardens it too
        assert auto["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_probes_use_healthz_and_readyz(helm):
    docs = render(helm)
    serving = one(docs, "Deployment", "serving")["spec"]["template"]["spec"]["containers"][0]
    assert serving["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert serving["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert serving["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serving["startupProbe"]["periodSeconds"] * serving["startupProbe"]["failureThreshold"] == 300
    operator = one(docs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["CHORUS_OPERATOR_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {"name": "liveness", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]


# ---- what the pods are told matches what the code reads ---------------------------------------

def test_serving_pods_run_chorus_serve_with_arguments_it_accepts(helm):
    from chorus.serving import cli

    docs = render(helm, {"serving.app.threads": 3, "serving.app.voiceCacheMb": 512, "serving.app.synthesisReplicas": 2})
    container = one(docs, "Deployment", "serving")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["chorus", "serve"]
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["serve", *container["args"]])
    assert (args.kubernetes_namespace, args.host, args.port) == (NAMESPACE, "0.0.0.0", 8000)
    assert (args.threads, args.voice_cache_mb, args.replicas) == (3, 512, 2)
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_rayservice_carries_typed_serving_args(helm):
    from chorus.serving.app import ServingArgs, build_app

    docs = render(helm, {**RAYSERVICE, **S3, "serving.app.workers": 2, "serving.app.maxQueuedRequests": 20})
    config = yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    [app] = config["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert (module, attr) == ("chorus.serving.app", "build_app") and build_app.__module__ == module
    args = ServingArgs.model_validate(app["args"])
    assert args.kubernetes_namespace == NAMESPACE and args.tenants_file is None
    assert (args.workers, args.max_queued_requests, args.s3_endpoint_url) == (2, 20, "http://minio.storage:9000")
    values = yaml.safe_load((CHART / "values.yaml").read_text())["serving"]["app"]
    camel = {re.sub(r"_(\w)", lambda m: m.group(1).upper(), f) for f in app["args"]}
    assert set(values) <= camel, f"serving.app keys missing from serveConfigV2: {set(values) - camel}"


def test_operator_environment_names_settings_fields_with_valid_values(helm, monkeypatch):
    from chorus.operator.settings import Settings

    docs = render(helm, {**S3, "operator.logLevel": "DEBUG", "training.backend": "kubernetes",
                         "image.train.repository": "localhost/chorus-train", "image.train.tag": "0123456789ab",
                         "image.train.pullPolicy": "Never"})
    env = {e["name"]: e.get("value") for e in one(docs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]["env"]}
    ours = {k: v for k, v in env.items() if k.startswith("CHORUS_OPERATOR_")}
    fields = {f"CHORUS_OPERATOR_{name.upper()}" for name in Settings.model_fields}
    assert set(ours) <= fields, f"the chart sets operator variables Settings does not read: {set(ours) - fields}"
    for key, value in ours.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.platform_namespace == NAMESPACE and settings.standalone is False
    assert settings.log_level == "DEBUG" and settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert (settings.training_backend, settings.training_image, settings.training_image_pull_policy) == (
        "kubernetes", "localhost/chorus-train:0123456789ab", "Never")
    assert (settings.registry_uri, settings.storage_secret, settings.s3_endpoint_url) == (
        "s3://voices/chorus", "chorus-s3", "http://minio.storage:9000")


def test_images_per_role_and_the_operator_override(helm):
    docs = render(helm, {"image.serve.repository": "localhost/chorus-serve", "image.serve.tag": "abcdefabcdef",
                         "image.serve.pullPolicy": "Never", "operator.image.tag": "111111111111"})
    serving = one(docs, "Deployment", "serving")["spec"]["template"]["spec"]["containers"][0]
    operator = one(docs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
    assert (serving["image"], serving["imagePullPolicy"]) == ("localhost/chorus-serve:abcdefabcdef", "Never")
    assert (operator["image"], operator["imagePullPolicy"]) == ("localhost/chorus-operator:111111111111", "Never")
    default = one(render(helm), "Deployment", "serving")["spec"]["template"]["spec"]["containers"][0]["image"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert default == f"localhost/chorus-serve:{chart['appVersion']}"


def test_the_dashboard_shows_every_serving_metric(helm):
    from chorus.serving.metrics import Metrics

    docs = render(helm, {"grafanaDashboard.enabled": True, "grafanaDashboard.namespace": "monitoring"})
    config = one(docs, "ConfigMap", "serving")
    assert config["metadata"]["namespace"] == "monitoring" and config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["chorus-serving.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    names = {m.name for m in Metrics().registry.collect()}
    assert names and all(name in exprs for name in names), f"not on the dashboard: {[n for n in names if n not in exprs]}"

    monitor = one(render(helm, {"serviceMonitor.enabled": True, "serviceMonitor.labels": {"release": "prom"}}),
                  "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert not objects(render(helm, {"serviceMonitor.enabled": True, **RAYSERVICE}), "ServiceMonitor")


def test_helm_test_uses_a_throwaway_tenant_or_a_given_secret(helm):
    docs = render(helm)
    tenant = one(docs, "VoiceTenant")
    assert tenant["metadata"]["name"] == "rel-chorus-helm-test"
    assert tenant["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in tenant["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert tenant["spec"]["owners"] == [{"kind": "ServiceAccount", "name": "rel-chorus-helm-test", "namespace": NAMESPACE}]
    pod = one(docs, "Pod")
    assert pod["spec"]["serviceAccountName"] == "rel-chorus-helm-test"
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["TENANT_NAMESPACE"]["value"] == "tenant-rel-chorus-helm-test"
    assert env["SERVING_SERVICE"]["value"] == "rel-chorus-serving"
    script = one(docs, "ConfigMap", "helm-test")["data"]["speak.py"]
    compile(script, "speak.py", "exec")

    docs = render(helm, {"tests.apiKeySecret.name": "ci-key"})
    assert not objects(docs, "VoiceTenant")
    pod = one(docs, "Pod")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ci-key", "key": "apiKey"}
    assert pod["spec"]["automountServiceAccountToken"] is False


# ---- on the test control plane: install, upgrade (a new CRD field), rollback, uninstall ---------

def test_install_upgrade_rollback_uninstall_on_the_control_plane(control_plane, kubectl, helm, next_chart,
                                                               adopt_chart_crds):
    env = control_plane.env()

    def run(*args):
        result = _run(helm, *args, "--namespace", NAMESPACE, env=env, timeout=180)
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
        return result.stdout

    def crd_fields():
        crd = json.loads(kubectl("get", "crd", "voicetenants.chorus.dev", "-o", "json", check=True).stdout)
        return crd, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]

    adopt_chart_crds(kubectl, RELEASE, NAMESPACE)
    kubectl("create", "namespace", NAMESPACE)
    dry = _run(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=server", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "helm test rel -n chorus-system --logs" in dry.stdout and "kubectl apply -f -" in dry.stdout
    assert dry.stdout.rstrip().endswith("base64 -d"), "NOTES.txt must end with the next command"
    try:
        run("install", RELEASE, str(CHART))
        wait_crds_established(kubectl, ["voicetenants.chorus.dev"])
        crd, fields = crd_fields()
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert "accent" not in fields
        tenant = {"apiVersion": "chorus.dev/v1alpha1", "kind": "VoiceTenant", "metadata": {"name": "chart-survivor"},
                  "spec": {"owners": [{"kind": "User", "name": "alice"}]}}
        kubectl("apply", "-f", "-", input=json.dumps(tenant), check=True)

        # The next release of the chart adds a CRD field: `helm upgrade` must apply it (crds/ never would).
        run("upgrade", RELEASE, str(next_chart), "--set", "operator.logLevel=DEBUG", "--set", "serving.autoscaling.maxReplicas=6")
        assert "accent" in crd_fields()[1], "helm upgrade did not upgrade the CRD"
        hpa = json.loads(kubectl("-n", NAMESPACE, "get", "hpa", "rel-chorus-serving", "-o", "json", check=True).stdout)
        assert hpa["spec"]["maxReplicas"] == 6
        patched = {**tenant, "spec": {**tenant["spec"], "accent": "scottish"}}
        kubectl("apply", "-f", "-", input=json.dumps(patched), check=True)

        run("rollback", RELEASE, "1")
        assert "accent" not in crd_fields()[1]
        history = run("history", RELEASE, "-o", "json")
        assert [r["revision"] for r in json.loads(history)] == [1, 2, 3]

        run("uninstall", RELEASE)
        assert kubectl("get", "crd", "voicetenants.chorus.dev").returncode == 0, "uninstall deleted the CRD"
        assert kubectl("get", "crd", "clusterkopfpeerings.kopf.dev").returncode == 0
        assert kubectl("get", "voicetenant", "chart-survivor").returncode == 0, "uninstall lost a tenant"
        assert kubectl("-n", NAMESPACE, "get", "deployment", "rel-chorus-operator").returncode != 0

        run("install", RELEASE, str(CHART))  # a reinstall adopts the kept CRDs
        run("uninstall", RELEASE)
    finally:
        _run(helm, "uninstall", RELEASE, "--namespace", NAMESPACE, env=env)
        kubectl("delete", "voicetenant", "chart-survivor", "--ignore-not-found", "--wait=false")
