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
