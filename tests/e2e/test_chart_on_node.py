"""The Helm chart on a real node, with the real helm CLI: pods that actually run from the local images.

In order, each step failing fast with `kubectl describe`, logs and the node's log tails:

1. the images (`chorus.images.build.ensure_image`: serve, operator, train) loaded into the node's
   containerd; a moto S3 server on the node's own address (the veth end pods route to, see
   chorus.controlplane.node), its bucket and the credentials Secret; `helm install` (deployment
   mode, the kubernetes training backend, s3:// storage, pullPolicy Never) -> every pod Running and
   Ready from those images;
2. `helm test` (the chart's pod synthesises a sentence through the Service);
3. NOTES.txt's example tenant, applied with a samples voice whose recordings are in the bucket ->
   a training Job runs in `tenant-acme` (operator/training.py's KubernetesJobBackend, for real) ->
   the voice serves -> REST synthesis in it through the Service with the tenant's key;
4. `helm upgrade` (HPA bounds, hence serving replicas; an operator setting; a serving setting, so
   the serving pods roll; a new CRD field) and `helm rollback`, each under a bounded request loop
   through the Service: no failed request; key, voice and adapters survive both; `helm uninstall`
   keeps the CRDs, the tenant, its key and the bucket's objects;
5. `helm install` again serves the kept tenant (same key, same voice version, nothing retrained);
   then charts/chorus/README.md's purge (tenants, the release, the CRDs) leaves nothing behind.

Timings of every step are printed at the end (charts/chorus/README.md, "Tests", records them).

Traffic goes only to loopback, to the node's own address and to this cluster's pods and Services.
The node has two shared cores, so everything is sized down: serving requests 200m CPU with one
ONNX thread, training 1500m.

The quality gate is relaxed (GATE below) because this test proves the chart's machinery (a Job in
the tenant's namespace, S3 storage, publish, serve), not voice quality: 40 training steps are what a
two-core node affords within the time box, and such a short run closes only a small part of the
similarity gap (tests/e2e/test_voice_lifecycle.py measured 25% after 60 steps) and may miss the f0
and WER checks by a little. The gate's verdicts themselves are covered in tests/unit.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chorus.controlplane.node import NODE_IP, Node, NodeError

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chorus"
NAMESPACE = "chorus-system"
RELEASE = "chorus"  # fullname is "chorus": chorus-operator, chorus-serving
TENANT = "acme"  # NOTES.txt's example
TENANT_NS = f"tenant-{TENANT}"
VOICE = "narrator"
BUCKET = "voices"
STEPS = 40
GATE = {"min_gap_closed": 0.0, "max_wer_increase": 0.25, "f0_tolerance": None}
ACCESS_KEY, SECRET_KEY = "chorus-e2e", "chorus-e2e-secret"
SERVING_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=serving"
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
LOOP_MAX_REQUESTS, LOOP_MAX_SECONDS = 400, 600

TIMINGS: dict[str, float] = {}
DONE: set[str] = set()  # steps that passed; a later step needs its predecessors


def _say(msg: str) -> None:
    print(f"[chart-on-node] {msg}", flush=True)


class Timed:
    """`with Timed("helm test"):` records the step's wall time in TIMINGS and prints it."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> Timed:
        self.t = time.monotonic()
        _say(f"{self.name} ...")
        return self

    def __exit__(self, exc_type, *_):
        TIMINGS[self.name] = time.monotonic() - self.t
        _say(f"{self.name}: {TIMINGS[self.name]:.1f} s{' (failed)' if exc_type else ''}")


def need(*steps: str) -> None:
    missing = [s for s in steps if s not in DONE]
    if missing:
        pytest.fail(f"an earlier step did not pass: {', '.join(missing)}", pytrace=False)


# ---- fixtures ------------------------------------------------------------------------------------

def _newest_archive(role: str) -> tuple[Path, str] | None:
    from chorus.images.build import images_dir

    archives = sorted(images_dir().glob(f"{role}-*.oci.tar"), key=lambda a: a.stat().st_mtime)
    if not archives:
        return None
    digest = archives[-1].name.removeprefix(f"{role}-").removesuffix(".oci.tar")
    return archives[-1], f"localhost/chorus-{role}:{digest}"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """(archive, ref) of each role, built only when an input changed.

    With CHORUS_E2E_REUSE_IMAGES=1 the newest archive already built is used even if sources changed
    since (for iterating on the chart while others commit; never in CI).
    """
    from chorus.images.build import ensure_image

    reuse = os.environ.get("CHORUS_E2E_REUSE_IMAGES") == "1"
    found = {}
    for role in ("serve", "operator", "train"):
        with Timed(f"image {role} (build or cache)"):
            found[role] = (reuse and _newest_archive(role)) or ensure_image(role)
        _say(f"{role}: {found[role][1]} ({found[role][0].stat().st_size / 1e6:.0f} MB)")
    return found


@pytest.fixture(scope="module")
def s3(real_node: Node) -> Iterator[dict[str, Any]]:
    """A moto S3 server on the node's address (pods route there through cni0), with the bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=NODE_IP, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    try:
        yield {"endpoint": endpoint, "client": client}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """~60 s of a generated voice (brighter than the base) with transcripts, as test_voice_lifecycle makes."""
    from chorus.adapters.targets import HELDOUT_SENTENCES, TRAIN_SENTENCES, WorldTarget, render_target, write_clips

    target = WorldTarget(name="bright", f0_factor=1.3, formant_factor=1.08, tempo=0.95)
    return write_clips(tmp_path_factory.mktemp("samples") / "narrator", TRAIN_SENTENCES + HELDOUT_SENTENCES[:3],
                       lambda s: render_target(s, target), "clip")


class Platform:
    """The release under test: helm, kubectl, S3 and what the steps learned (key, Service URL)."""

    def __init__(self, node: Node, helm_bin: Path, s3: dict, images: dict, workdir: Path):
        self.node, self.helm_bin, self.s3, self.images, self.workdir = node, helm_bin, s3, images, workdir
        self.key = ""
        self.notes = ""
        self.adapter_uri = ""

    # ---- commands ----
    def kubectl(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.node.kubectl(*args, **kwargs)

    def helm(self, *args: str, timeout: float = 600, check: bool = True,
             diagnose_ns: str | None = NAMESPACE) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.helm_bin), *args, "--namespace", NAMESPACE], capture_output=True,
                                text=True, timeout=timeout, env=self.node.cp.env())
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-3000:]}\n{self.diagnose(diagnose_ns)}", pytrace=False)
        return result

    def get(self, *args: str) -> dict | None:
        r = self.kubectl("get", *args, "-o", "json", "--ignore-not-found", timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None

    def logs(self, namespace: str, selector: str, tail: int = 60) -> str:
        """Log tails of the selected pods' containers, and of the previous run of those that restarted."""
        parts = []
        for pod in self.node._pods(namespace, selector)[:4]:
            name = pod["metadata"]["name"]
            for status in pod.get("status", {}).get("containerStatuses", []):
                runs = ["--previous"] if status.get("restartCount") else []
                for previous in [*runs, ""]:
                    r = self.kubectl("logs", "-n", namespace, name, "-c", status["name"], *filter(None, [previous]),
                                     f"--tail={tail}", timeout=30)
                    parts.append(f"----- kubectl logs -n {namespace} {name} -c {status['name']} {previous}\n"
                                 f"{r.stdout}{r.stderr}")
        return "\n".join(parts) or f"----- no pods -n {namespace} -l {selector}"

    def diagnose(self, namespace: str | None = NAMESPACE, extra: str = "") -> str:
        parts = [self.node.diagnose(namespace)]
        parts.append(self.logs(NAMESPACE, OPERATOR_SELECTOR))
        parts.append(self.logs(NAMESPACE, SERVING_SELECTOR, tail=30))
        if extra:
            parts.append(extra)
        return "\n".join(parts)

    def fail(self, message: str, namespace: str | None = NAMESPACE, extra: str = "") -> None:
        pytest.fail(f"{message}\n{self.diagnose(namespace, extra)}", pytrace=False)

    def wait(self, check: Callable[[], Any], timeout: float, what: str, namespace: str | None = NAMESPACE,
             interval: float = 1.0, extra: Callable[[], str] = lambda: "") -> Any:
        """check() until truthy; a str starting 'FATAL:' fails at once; at the timeout fail with diagnostics."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if isinstance(value, str) and value.startswith("FATAL:"):
                self.fail(f"{what}: {value[6:]}", namespace, extra())
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"{what}: not after {timeout:.0f} s", namespace, extra())
            time.sleep(interval)

    def wait_pods(self, selector: str, count: int = 1, timeout: float = 300, namespace: str = NAMESPACE) -> list[dict]:
        try:
            return self.node.wait_pods_ready(namespace, selector, timeout=timeout, count=count)
        except NodeError as exc:
            pytest.fail(f"{exc}\n{self.logs(namespace, selector)}\n{self.logs(NAMESPACE, OPERATOR_SELECTOR)}",
                        pytrace=False)

    # ---- the speech API ----
    @property
    def url(self) -> str:
        svc = self.get("service", "-n", NAMESPACE, f"{RELEASE}-serving")
        assert svc, "the serving Service is missing"
        return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"

    def speak(self, voice: str, text: str = "The chart came up on a real node.", timeout: float = 60) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/audio/speech", headers={"Authorization": f"Bearer {self.key}"},
                          json={"model": "chorus", "input": text, "voice": voice, "response_format": "wav"},
                          timeout=timeout)

    # ---- state checks ----
    def voice_status(self) -> dict:
        tenant = self.get("voicetenant", TENANT) or {}
        return {v["name"]: v for v in (tenant.get("status") or {}).get("voices") or []}.get(VOICE, {})

    def registry_objects(self) -> list[str]:
        bucket, _, prefix = self.adapter_uri.removeprefix("s3://").partition("/")
        listed = self.s3["client"].list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def assert_tenant_survived(self, when: str) -> None:
        status = self.voice_status()
        assert status.get("state") == "Ready" and status.get("servingVersion") == 1, f"{when}: voice {status}"
        secret = self.get("secret", "-n", TENANT_NS, "chorus-api-key")
        assert secret and base64.b64decode(secret["data"]["apiKey"]).decode() == self.key, f"{when}: key changed"
        objects = self.registry_objects()
        assert any(o.endswith("chorus_manifest.json") for o in objects), f"{when}: adapter gone: {objects}"


@pytest.fixture(scope="module")
def platform(real_node: Node, helm, s3, images, tmp_path_factory, request) -> Iterator[Platform]:
    p = Platform(real_node, helm, s3, images, tmp_path_factory.mktemp("chart"))
    try:
        yield p
    finally:
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        lines = ["timings of tests/e2e/test_chart_on_node.py:"] + [f"  {k:<42} {v:7.1f} s" for k, v in TIMINGS.items()]
        lines += [f"  {k:<42} {v:7.1f} s" for k, v in real_node.timings.items() if k.startswith("import")]
        for line in lines:
            (reporter.write_line if reporter else print)(line)
        # Leave the shared control plane usable for later tests: no release, no tenants held by finalizers.
        p.helm("uninstall", RELEASE, "--wait", "--timeout", "120s", check=False)
        for name in (TENANT, f"{RELEASE}-helm-test"):
            p.kubectl("patch", "voicetenant", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
            p.kubectl("delete", "voicetenant", name, "--ignore-not-found", "--wait=false")


# ---- values ----------------------------------------------------------------------------------------

def _ref(images: dict, role: str) -> tuple[str, str]:
    repository, _, tag = images[role][1].rpartition(":")
    return repository, tag


def install_values(p: Platform) -> dict:
    serve, operator, train = (_ref(p.images, r) for r in ("serve", "operator", "train"))
    return {
        "image": {"serve": {"repository": serve[0], "tag": serve[1], "pullPolicy": "Never"},
                  "train": {"repository": train[0], "tag": train[1], "pullPolicy": "Never"}},
        "operator": {
            "image": {"repository": operator[0], "tag": operator[1], "pullPolicy": "Never"},
            "resyncIntervalSeconds": 300,
            "extraEnv": [
                {"name": "CHORUS_OPERATOR_GATE", "value": json.dumps(GATE)},
                {"name": "CHORUS_OPERATOR_VOICE_POLL_INTERVAL_S", "value": "3"},
            ],
        },
        "serving": {
            "mode": "deployment",
            "app": {"threads": 1, "synthesisReplicas": 1, "voiceCacheMb": 256},
            "resources": {"requests": {"cpu": "200m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2},
        },
        "training": {"backend": "kubernetes", "resources": {"cpu": "1500m", "memory": "4Gi"}, "threads": 2,
                     "jobOverheadMinutes": 15},
        "storage": {"uri": f"s3://{BUCKET}/chorus",
                    "s3": {"endpoint": p.s3["endpoint"], "region": "us-east-1", "credentialsSecret": "chorus-s3"}},
        "tests": {"timeoutSeconds": 240},
    }


def write_values(p: Platform, name: str, values: dict) -> Path:
    path = p.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def crd_has_accent(p: Platform) -> bool:
    crd = p.get("crd", "voicetenants.chorus.dev")
    return "accent" in crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def accent_accepted(p: Platform) -> bool:
    """Whether the API server keeps spec.accent on the tenant (a server-side dry run: the running operator,
    which does not know the field yet, never sees it; an unknown field would be pruned)."""
    r = p.kubectl("patch", "voicetenant", TENANT, "--type=merge", "-p", '{"spec":{"accent":"scottish"}}',
                  "--dry-run=server", "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["spec"].get("accent") == "scottish"


# ---- the request loop ----------------------------------------------------------------------------

class RequestLoop(threading.Thread):
    """Sequential speech requests through the Service, bounded in count and time; records every outcome."""

    def __init__(self, p: Platform, voice: str = VOICE):
        super().__init__(daemon=True)
        self.url, self.key, self.voice = p.url, p.key, voice
        self.stop_event = threading.Event()
        self.results: list[tuple[float, int | str, float]] = []  # (start offset, status or error, seconds)

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=60) as client:
            while (not self.stop_event.is_set() and len(self.results) < LOOP_MAX_REQUESTS
                   and time.monotonic() - started < LOOP_MAX_SECONDS):
                t = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/audio/speech", headers={"Authorization": f"Bearer {self.key}"},
                                    json={"model": "chorus", "input": "Still speaking.", "voice": self.voice,
                                          "response_format": "wav"})
                    outcome: int | str = r.status_code if r.content[:4] == b"RIFF" or r.status_code != 200 else "no wav"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.results.append((t - started, outcome, time.monotonic() - t))
                self.stop_event.wait(0.25)

    def finish(self) -> tuple[int, list]:
        self.stop_event.set()
        self.join(timeout=90)
        failed = [r for r in self.results if r[1] != 200]
        return len(self.results), failed


# ---- the steps -------------------------------------------------------------------------------------

def test_1_install_every_pod_ready_from_the_local_images(platform: Platform, s3, adopt_chart_crds):
    p = platform
    with Timed("load images into containerd"):
        for role in ("serve", "operator", "train"):
            p.node.load_image(p.images[role][0])
    p.kubectl("create", "namespace", NAMESPACE)
    p.kubectl("-n", NAMESPACE, "create", "secret", "generic", "chorus-s3", f"--from-literal=AWS_ACCESS_KEY_ID={ACCESS_KEY}",
              f"--from-literal=AWS_SECRET_ACCESS_KEY={SECRET_KEY}", check=True)
    adopt_chart_crds(p.kubectl, RELEASE, NAMESPACE)
    values = write_values(p, "install", install_values(p))
    with Timed("helm install -> every pod Ready"):
        installed = p.helm("install", RELEASE, str(CHART), "-f", str(values), timeout=120)
        p.notes = installed.stdout
        operator = p.wait_pods(OPERATOR_SELECTOR, timeout=180)
        serving = p.wait_pods(SERVING_SELECTOR, timeout=420)
    expected = {"operator": _ref(p.images, "operator"), "serving": _ref(p.images, "serve")}
    for pods, (repository, tag) in ((operator, expected["operator"]), (serving, expected["serving"])):
        for pod in pods:
            assert pod["status"]["phase"] == "Running"
            [container] = pod["spec"]["containers"]
            assert container["image"] == f"{repository}:{tag}" and container["imagePullPolicy"] == "Never"
            [status] = pod["status"]["containerStatuses"]
            assert status["ready"] and status["restartCount"] == 0, status
    assert "helm test" in p.notes
    r = httpx.get(f"{p.url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    DONE.add("install")


def test_2_helm_test_synthesises_through_the_service(platform: Platform):
    need("install")
    p = platform
    with Timed("helm test"):
        result = p.helm("test", RELEASE, "--logs", "--timeout", "6m", timeout=420)
    assert "Phase:          Succeeded" in result.stdout or "Succeeded" in result.stdout, result.stdout
    assert "[helm-test]" in result.stdout, result.stdout
    DONE.add("helm test")


def _notes_tenant(notes: str) -> dict:
    """The VoiceTenant that NOTES.txt tells the admin to apply (the heredoc after `kubectl apply -f -`)."""
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if "kubectl apply -f - <<'YAML'" in line) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "YAML")
    return yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))


def test_3_tenant_trains_on_a_kubernetes_job_and_speaks(platform: Platform, samples: Path):
    need("install")
    p = platform
    client = p.s3["client"]
    prefix = f"samples/{TENANT}/{VOICE}"
    for f in sorted(samples.iterdir()):
        client.upload_file(str(f), BUCKET, f"{prefix}/{f.name}")
    tenant = _notes_tenant(p.notes)
    assert tenant["kind"] == "VoiceTenant" and tenant["metadata"]["name"] == TENANT, tenant
    tenant["spec"]["voices"] = [{"name": VOICE, "samples": {"uri": f"s3://{BUCKET}/{prefix}",
                                                             "training": {"steps": STEPS, "maxMinutes": 10}}}]
    seen: list[tuple[str, Any]] = []

    def voice_state():
        v = p.voice_status()
        step = (v.get("progress") or {}).get("step")
        if v and (not seen or seen[-1] != (v.get("state"), step)):
            seen.append((v.get("state"), step))
            _say(f"voice {VOICE}: {v.get('state')} {v.get('reason') or ''} {step or ''}")
        if v.get("state") == "Failed":
            return f"FATAL:voice failed: {v.get('reason')}: {v.get('message')} {v.get('lastFailureInfo') or ''}"
        return v

    def job_logs() -> str:
        return p.logs(TENANT_NS, f"chorus.dev/voice={VOICE}", tail=80)

    with Timed("kubectl apply tenant -> training Job created"):
        applied = p.kubectl("apply", "-f", "-", input=yaml.safe_dump(tenant))
        assert applied.returncode == 0, applied.stderr
        job = p.wait(lambda: voice_state() and ((p.get("jobs", "-n", TENANT_NS, "-l", f"chorus.dev/voice={VOICE}")
                                                  or {}).get("items") or [None])[0],
                     timeout=120, what="the training Job in the tenant namespace", namespace=TENANT_NS)
    name = job["metadata"]["name"]
    assert name.startswith(f"train-{VOICE}-")
    spec = job["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "chorus-trainer" and spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["image"] == p.images["train"][1]
    with Timed("training Job pod Running"):
        p.wait(lambda: voice_state() and any(
            pod["status"].get("phase") in ("Running", "Succeeded") for pod in
            (p.get("pods", "-n", TENANT_NS, "-l", f"batch.kubernetes.io/job-name={name}") or {}).get("items", [])),
            timeout=120, what="the training pod running", namespace=TENANT_NS, extra=job_logs)
    def job_done():
        state = voice_state()  # the voice's status is sampled while the Job runs: Preparing, Training, ...
        if isinstance(state, str):
            return state
        job_status = (p.get("job", name, "-n", TENANT_NS) or {}).get("status") or {}
        conditions = {c["type"]: c["status"] for c in job_status.get("conditions") or []}
        if conditions.get("Failed") == "True":
            return f"FATAL:the training Job failed: {job_status}"
        return conditions.get("Complete") == "True"

    with Timed("training Job run -> Complete"):
        p.wait(job_done, timeout=15 * 60, what="the training Job complete", namespace=TENANT_NS,
               extra=lambda: f"{job_logs()}\n{p.logs(NAMESPACE, OPERATOR_SELECTOR)}")
    with Timed("Job complete -> voice Ready"):
        status = p.wait(lambda: (v := voice_state()).get("state") == "Ready" and v.get("servingVersion") and v,
                        timeout=120, what="the voice Ready", namespace=TENANT_NS, extra=job_logs)
    assert status["servingVersion"] == 1 and status["gate"]["passed"] is True, status
    assert "Training" in [s for s, _ in seen], seen
    p.adapter_uri = status["adapterUri"]
    assert p.adapter_uri == f"s3://{BUCKET}/chorus/{TENANT}/{VOICE}/1", status
    assert any(o.endswith("chorus_manifest.json") for o in p.registry_objects())

    secret = p.get("secret", "-n", TENANT_NS, "chorus-api-key")
    p.key = base64.b64decode(secret["data"]["apiKey"]).decode()
    with Timed("voice Ready -> served through the Service"):
        def listed():
            r = httpx.get(f"{p.url}/v1/voices", headers={"Authorization": f"Bearer {p.key}"}, timeout=10)
            return r.status_code == 200 and any(v["id"] == VOICE and v.get("state") == "Ready"
                                                for v in r.json()["data"]) and r.json()
        p.wait(listed, timeout=60, what=f"serving lists {VOICE}")
        adapted = p.speak(VOICE)
    base = p.speak("default")
    assert adapted.status_code == 200, adapted.text
    assert base.status_code == 200, base.text
    assert adapted.content[:4] == b"RIFF" and adapted.content != base.content
    assert p.speak(VOICE).status_code == 200
    DONE.add("tenant")


def test_4_upgrade_and_rollback_under_load_lose_nothing_and_uninstall_keeps_tenants(platform: Platform,
                                                                                      next_chart: Path):
    need("install", "tenant")
    p = platform
    changed = install_values(p)
    changed["serving"]["autoscaling"].update(minReplicas=2, maxReplicas=3)  # HPA bounds: 2 serving pods
    changed["serving"]["app"]["voiceCacheMb"] = 128  # in the pod template: the serving pods roll
    changed["operator"]["logLevel"] = "DEBUG"
    upgrade_values = write_values(p, "upgrade", changed)
    serving_before = {pod["metadata"]["name"] for pod in p.node._pods(NAMESPACE, SERVING_SELECTOR)}
    assert not accent_accepted(p), "the CRD knows `accent` before the upgrade"

    loop = RequestLoop(p)
    loop.start()
    try:
        with Timed("helm upgrade (under load) -> 2 serving pods Ready"):
            p.helm("upgrade", RELEASE, str(next_chart), "-f", str(upgrade_values), "--wait", "--timeout", "9m",
                   timeout=600)
            hpa = p.get("hpa", "-n", NAMESPACE, f"{RELEASE}-serving")
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
            pods = p.wait_pods(SERVING_SELECTOR, count=2, timeout=420)
            pods = p.wait(lambda: (now := p.node._pods(NAMESPACE, SERVING_SELECTOR)) and len(now) == 2 and now,
                          timeout=120, what="the old serving pods gone")
    finally:
        sent, failed = loop.finish()
    _say(f"upgrade: {sent} requests, {len(failed)} failed")
    assert sent >= 5, "the request loop hardly ran"
    assert not failed, f"requests failed during the upgrade: {failed[:10]}"
    assert not serving_before & {pod["metadata"]["name"] for pod in pods}, "the serving pods did not roll"
    assert crd_has_accent(p), "helm upgrade did not upgrade the CRD"
    op = p.get("deployment", "-n", NAMESPACE, f"{RELEASE}-operator")
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CHORUS_OPERATOR_LOG_LEVEL"] == "DEBUG"
    p.wait_pods(OPERATOR_SELECTOR, timeout=180)
    assert accent_accepted(p), "the API server prunes the new CRD field after the upgrade"
    p.assert_tenant_survived("after the upgrade")
    assert p.speak(VOICE).status_code == 200

    loop = RequestLoop(p)
    loop.start()
    try:
        with Timed("helm rollback (under load) -> serving Ready"):
            p.helm("rollback", RELEASE, "1", "--wait", "--timeout", "9m", timeout=600)
            hpa = p.get("hpa", "-n", NAMESPACE, f"{RELEASE}-serving")
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
            p.wait_pods(SERVING_SELECTOR, count=1, timeout=420)
    finally:
        sent, failed = loop.finish()
    _say(f"rollback: {sent} requests, {len(failed)} failed")
    assert not failed, f"requests failed during the rollback: {failed[:10]}"
    assert not crd_has_accent(p), "helm rollback did not restore the CRD"
    assert not accent_accepted(p)
    history = json.loads(p.helm("history", RELEASE, "-o", "json").stdout)
    assert [r["revision"] for r in history] == [1, 2, 3]
    p.wait_pods(OPERATOR_SELECTOR, timeout=180)
    p.assert_tenant_survived("after the rollback")
    assert p.speak(VOICE).status_code == 200

    with Timed("helm uninstall"):
        p.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240)
    for crd in ("voicetenants.chorus.dev", "clusterkopfpeerings.kopf.dev"):
        assert p.kubectl("get", "crd", crd).returncode == 0, f"uninstall deleted {crd}"
    assert p.get("voicetenant", TENANT), "uninstall lost the tenant"
    assert p.get("deployment", "-n", NAMESPACE, f"{RELEASE}-operator") is None
    secret = p.get("secret", "-n", TENANT_NS, "chorus-api-key")
    assert secret and base64.b64decode(secret["data"]["apiKey"]).decode() == p.key, "uninstall lost the key"
    assert any(o.endswith("chorus_manifest.json") for o in p.registry_objects()), "uninstall lost the adapter"
    DONE.add("upgrade")


def test_5_reinstall_adopts_the_tenant_then_the_documented_purge_removes_everything(platform: Platform,
                                                                                   adopt_chart_crds):
    """`helm install` again serves the kept tenant with its key and voice, training nothing; then the
    purge that charts/chorus/README.md documents (tenants, then the release, then the CRDs) leaves
    nothing: no tenant namespace, no adapter in the bucket, no CRD."""
    need("upgrade")
    p = platform
    adopt_chart_crds(p.kubectl, RELEASE, NAMESPACE)
    values = write_values(p, "reinstall", install_values(p))
    with Timed("helm install again -> the kept tenant served"):
        p.helm("install", RELEASE, str(CHART), "-f", str(values), timeout=120)
        p.wait_pods(OPERATOR_SELECTOR, timeout=180)
        p.wait_pods(SERVING_SELECTOR, timeout=420)
        spoken = p.wait(lambda: (r := p.speak(VOICE)).status_code == 200 and r, timeout=120,
                        what=f"{VOICE} served again with the kept key")
    assert spoken.content[:4] == b"RIFF"
    p.assert_tenant_survived("after the reinstall")
    time.sleep(15)  # an operator that wanted to retrain would have submitted a Job by now (it polls every 10 s)
    listed = p.s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=f"chorus/{TENANT}/{VOICE}/")
    versions = sorted({o["Key"].split("/")[3] for o in listed.get("Contents", []) if o["Key"].count("/") >= 4})
    assert versions == ["1"] and p.voice_status().get("version") == 1, f"retrained after reinstall: {versions}"
    jobs = (p.get("jobs", "-n", TENANT_NS, "-l", f"chorus.dev/voice={VOICE}") or {}).get("items", [])
    assert len(jobs) <= 1, f"a second training Job: {[j['metadata']['name'] for j in jobs]}"

    with Timed("the documented purge"):
        purge = p.kubectl("delete", "voicetenants", "--all", "--wait", "--timeout=180s", timeout=200)
        assert purge.returncode == 0, purge.stderr
        p.wait(lambda: p.get("namespace", TENANT_NS) is None, timeout=180, what="the tenant namespace deleted",
               namespace=TENANT_NS)
        p.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240)
        for crd in ("voicetenants.chorus.dev", "clusterkopfpeerings.kopf.dev"):
            assert p.kubectl("delete", "crd", crd, "--wait", timeout=120).returncode == 0
    left = [o for prefix in (f"chorus/{TENANT}/", f"chorus/_jobs/{TENANT}/")
            for o in p.s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    assert left == [], f"the purge left the tenant's adapters in the bucket: {[o['Key'] for o in left]}"
    records = p.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=tenant-record", "-o",
                        "name").stdout.split()
    assert records == [], f"the purge left tenant records: {records}"
    assert p.kubectl("get", "crd", "voicetenants.chorus.dev").returncode != 0
