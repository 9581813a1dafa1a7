"""Shared fixtures. One section per concern; each section's fixtures are documented where defined."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chorus.controlplane.binaries import BinariesNotFound
from chorus.controlplane.cluster import ControlPlane

# ---------------------------------------------------------------------------------------------
# Kubernetes control plane (chorus.controlplane): one real etcd + kube-apiserver +
# kube-controller-manager per test session, started on first use. Tests isolate themselves by
# unique names (`unique_name`), never by a fresh cluster. Missing binaries fail the test with
# the command that builds them; nothing is skipped.
# ---------------------------------------------------------------------------------------------

Kubectl = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's running control plane (chorus.controlplane.cluster.ControlPlane)."""
    try:
        cp = ControlPlane()
    except BinariesNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    with cp:
        yield cp


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """Path of the admin kubeconfig (O=system:masters) of the session's control plane."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl(*args, input=None, check=False, timeout=60) as the admin; returns CompletedProcess."""
    return control_plane.kubectl


@pytest.fixture
def unique_name(request) -> str:
    """A DNS-label name unique to this test run: '<test name>-<6 hex>', at most 40 characters."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())
    stem = "-".join(part for part in stem.split("-") if part)[:33].strip("-") or "t"
    return f"{stem}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------------------------
# The base voice and engine (chorus.engine): loaded once per session. `model` is shared, so tests
# must not change it in place (deepcopy first); modules that train override it with their own.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def voice():
    """The bundled base voice (chorus.engine.voice.BaseVoice)."""
    from chorus.engine.voice import load_base_voice

    return load_base_voice()


@pytest.fixture(scope="session")
def base_fp(voice) -> str:
    """The base model's fingerprint, as adapter artifacts record it."""
    return voice.fingerprint


@pytest.fixture(scope="session")
def model():
    """The PyTorch VITS engine with the base weights, on 2 threads (read-only: deepcopy to change)."""
    import torch

    from chorus.engine.weights import load_vits_model

    torch.set_num_threads(2)
    return load_vits_model()


# ---------------------------------------------------------------------------------------------
# Object storage: one moto S3 server on a free loopback port per session, with dummy credentials
# in the environment. Tests isolate themselves by fresh bucket names.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (a real S3 API for s3fs/boto3)."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


# ---------------------------------------------------------------------------------------------
# Ray and the serving tier (chorus.serving): one local Ray (2 CPUs) and one Serve HTTP proxy on a
# free loopback port per session; the Chorus application is deployed once, over a tenants file the
# tests may rewrite (ServingEnv.write_tenants) and must restore (ServingEnv.restore).
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RAY: dict[str, str] = {}  # what the ray_serve fixture started: {"dashboard": URL}


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[str]:
    """A local Ray with Serve's HTTP proxy on 127.0.0.1 and its job API; yields the proxy's base URL."""
    import os

    import ray
    from ray import serve

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_TMPDIR", f"/tmp/chorus-ray-{os.getpid()}")
        port = _free_port()
        dashboard = _free_port()
        ray.init(num_cpus=2, object_store_memory=100 * 2**20, log_to_driver=False, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=dashboard)
        _RAY["dashboard"] = f"http://127.0.0.1:{dashboard}"
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()
            ray.shutdown()
            import shutil

            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def ray_jobs(ray_serve) -> str:
    """The address of the session Ray's job submission API (its dashboard)."""
    return _RAY["dashboard"]


class ServingEnv:
    """The deployed Chorus app: its URL, tenants' keys, registry folder and a writable tenants file."""

    def __init__(self, url: str, tenants_file: Path, registry: Path, keys: dict[str, str], tenants: list[dict]):
        self.url, self.tenants_file, self.registry, self.keys = url, tenants_file, registry, keys
        self.default_tenants = tenants

    def headers(self, tenant: str) -> dict[str, str]:
        """Authorization header for a tenant."""
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def write_tenants(self, tenants: list[dict]) -> None:
        """Replace the tenants file (the app picks it up within ~1 s)."""
        import yaml

        tmp = self.tenants_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"tenants": tenants}))
        tmp.replace(self.tenants_file)

    def restore(self) -> None:
        """Put the default tenants back and wait until they serve."""
        import time

        self.write_tenants(self.default_tenants)
        time.sleep(2.5)


@pytest.fixture(scope="session")
def serving(ray_serve, tmp_path_factory, model, base_fp) -> Iterator[ServingEnv]:
    """Chorus on Ray Serve with tenants `acme` (voice `bright`: resample profile x1.15) and `globex` (voice
    `deep`: PSOLA profile x0.85, and `pending`, not Ready), each with real engine adapters in a file:// registry;
    `slow` has a limit of 3 requests per minute."""
    import hashlib

    from ray import serve

    from chorus.adapters.testartifacts import make_engine_artifact
    from chorus.serving.app import ServingArgs, build_app

    root = tmp_path_factory.mktemp("serving")
    registry = root / "registry"
    voices = {("acme", "bright", 1): (11, {"pitch_factor": 1.15, "pitch_method": "resample", "length_scale": 1.15}),
              ("globex", "deep", 1): (12, {"pitch_factor": 0.85, "pitch_method": "psola", "length_scale": 1.0})}
    for (tenant, voice, version), (seed, profile) in voices.items():
        make_engine_artifact(registry / tenant / voice / str(version), model, tenant=tenant, voice=voice,
                             base_fingerprint=base_fp, seed=seed, profile=profile)
    keys = {name: f"chorus_{name}{'k' * (43 - len(name))}" for name in ("acme", "globex", "slow")}
    sha = {name: hashlib.sha256(key.encode()).hexdigest() for name, key in keys.items()}

    def uri(tenant: str, voice: str, version: int) -> str:
        return (registry / tenant / voice / str(version)).as_uri()

    tenants = [
        {"name": "acme", "apiKeySha256": sha["acme"], "limits": {"requestsPerMinute": 10_000, "maxConcurrent": 16},
         "voices": [{"name": "bright", "version": 1, "adapterUri": uri("acme", "bright", 1)}]},
        {"name": "globex", "apiKeySha256": sha["globex"], "limits": {"requestsPerMinute": 10_000, "maxConcurrent": 16,
                                                                     "maxCharsPerRequest": 400},
         "voices": [{"name": "deep", "version": 1, "adapterUri": uri("globex", "deep", 1)},
                    {"name": "pending", "state": "Training"}]},
        {"name": "slow", "apiKeySha256": sha["slow"], "limits": {"requestsPerMinute": 3}},
    ]
    env = ServingEnv(ray_serve, root / "tenants.yaml", registry, keys, tenants)
    env.write_tenants(tenants)
    serve.run(build_app(ServingArgs(tenants_file=env.tenants_file, max_queued_requests=16, max_ongoing_requests=4,
                                    synthesis_cpus=0.5)), name="chorus", route_prefix="/")
    try:
        yield env
    finally:
        serve.delete("chorus")


# ---------------------------------------------------------------------------------------------
# A real node (chorus.controlplane.node): containerd + kubelet + kube-scheduler + kube-proxy
# joined to the session's control plane, so pods really run (images loaded with
# real_node.load_image, imagePullPolicy: Never). Started only by tests that ask for it; one per
# machine (a lock file makes a second session wait). Teardown removes everything it left.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_node(control_plane: ControlPlane):
    """The session's real node (chorus.controlplane.node.Node), Ready; its helpers fail fast with diagnostics."""
    from chorus.controlplane.node import Node, NodeError

    try:
        node = Node(control_plane)
    except (BinariesNotFound, NodeError) as exc:
        pytest.fail(str(exc), pytrace=False)
    with node:
        yield node


# ---------------------------------------------------------------------------------------------
# The Helm chart (charts/chorus) across releases, for tests/integration/test_chart.py on the
# control plane and tests/e2e/test_chart_on_node.py on the real node.
# ---------------------------------------------------------------------------------------------

CHART = Path(__file__).resolve().parents[1] / "charts" / "chorus"
CHART_CRDS = ("voicetenants.chorus.dev", "clusterkopfpeerings.kopf.dev")
NEW_CRD_FIELD = "accent"  # what next_chart adds to VoiceTenant's spec


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm CLI that controlplane/build.sh builds."""
    from chorus.controlplane.binaries import default_bin_dir, require_binaries

    try:
        return require_binaries(default_bin_dir(), ("helm",))["helm"]
    except BinariesNotFound as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def next_chart(tmp_path_factory) -> Path:
    """A copy of charts/chorus as its next version: the VoiceTenant CRD gains a string field
    spec.`NEW_CRD_FIELD`, which `helm upgrade` must deliver to an existing install (crds/ never would)."""
    import shutil

    import yaml

    chart = tmp_path_factory.mktemp("next-chart") / "chorus"
    shutil.copytree(CHART, chart, symlinks=False)
    source = chart / "files" / "crds" / "voicetenants.chorus.dev.yaml"
    doc = yaml.safe_load(source.read_text())
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spec[NEW_CRD_FIELD] = {"type": "string", "description": "A field added by the next chart version."}
    source.write_text(yaml.safe_dump(doc, sort_keys=False))
    return chart


def adopt_crds(kubectl: Kubectl, release: str, namespace: str) -> None:
    """Mark the chart's CRDs, where they exist (made by another test or release), as `release`'s, so that
    `helm install` takes them over (charts/chorus/README.md, "Upgrades")."""
    for crd in CHART_CRDS:
        if kubectl("get", "crd", crd).returncode == 0:
            kubectl("annotate", "--overwrite", "crd", crd, f"meta.helm.sh/release-name={release}",
                    f"meta.helm.sh/release-namespace={namespace}", check=True)
            kubectl("label", "--overwrite", "crd", crd, "app.kubernetes.io/managed-by=Helm", check=True)


@pytest.fixture(scope="session")
def adopt_chart_crds() -> Callable[[Kubectl, str, str], None]:
    """adopt_chart_crds(kubectl, release, namespace): see adopt_crds."""
    return adopt_crds
