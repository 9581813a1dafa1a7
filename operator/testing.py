"""Helpers for tests and benchmarks that drive a real API server with kubectl (like kopf.testing)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from chorus.operator.process import crd_paths

T = TypeVar("T")
Kubectl = Callable[..., subprocess.CompletedProcess]


def tenant_manifest(name: str, owners: list[dict] | None = None, **spec: Any) -> dict:
    """A VoiceTenant manifest; spec fields given as keyword arguments."""
    return {"apiVersion": "chorus.dev/v1alpha1", "kind": "VoiceTenant", "metadata": {"name": name},
            "spec": {"owners": owners or [{"kind": "User", "name": f"{name}-owner"}], **spec}}


def apply(kubectl: Kubectl, *manifests: dict, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`kubectl apply --validate=strict` the manifests (unknown fields are errors); raises on failure."""
    text = yaml.safe_dump_all(manifests)
    result = kubectl("apply", "--validate=strict", *extra, "-f", "-", input=text)
    if result.returncode != 0:
        raise AssertionError(f"kubectl apply failed: {result.stderr.strip()}")
    return result


def get_json(kubectl: Kubectl, *args: str) -> dict | None:
    """`kubectl get ... -o json` as a dict, or None if not found."""
    result = kubectl("get", *args, "-o", "json", "--ignore-not-found")
    if result.returncode != 0:
        raise AssertionError(f"kubectl get {' '.join(args)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout) if result.stdout.strip() else None


def wait_until(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "condition") -> T:
    """Call check until it returns something truthy; return that, or raise TimeoutError saying what."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:  # a transient kubectl failure counts as "not yet"
            last = exc
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached in {timeout}s (last: {last!r})")


def condition_status(tenant: dict | None, type_: str = "Ready") -> str | None:
    """The status ('True', 'False', 'Unknown') of one condition of a VoiceTenant, or None."""
    for cond in ((tenant or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status")
    return None


def wait_ready(kubectl: Kubectl, name: str, generation: int | None = None, timeout: float = 60.0) -> dict:
    """Wait until the tenant is Ready (for at least the given generation); return it."""
    def ready():
        tenant = get_json(kubectl, "voicetenant", name)
        status = (tenant or {}).get("status") or {}
        if condition_status(tenant) == "True" and (generation is None or status.get("observedGeneration", 0) >= generation):
            return tenant
        return None
    return wait_until(ready, timeout, what=f"VoiceTenant {name} Ready")


def install_crds(kubectl: Kubectl) -> None:
    """Install (or update) the operator's CRDs and wait until the API server serves them."""
    for path in crd_paths():
        result = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        if result.returncode != 0:
            raise AssertionError(f"installing {path.name} failed: {result.stderr.strip()}")
    from chorus.controlplane.cluster import wait_crds_established

    wait_crds_established(kubectl, ["voicetenants.chorus.dev", "clusterkopfpeerings.kopf.dev"])
