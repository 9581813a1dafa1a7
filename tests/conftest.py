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
