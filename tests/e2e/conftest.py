"""Fixtures shared by the end-to-end tests that run the chart's serving tier on the session's real
node without the Chorus operator (test_hpa, test_rayservice): the serve image imported into the
node's containerd, a namespace of their own, and a tenant record written by hand."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from chorus.operator.builders import COMPONENT_LABEL, record_name


@pytest.fixture(scope="session")
def serve_archive() -> tuple:
    """The serve image (chorus.images): (archive, ref), built before the node is taken (minutes if stale)."""
    from chorus.images.build import ensure_image

    return ensure_image("serve")


@pytest.fixture(scope="session")
def serve_image(serve_archive, real_node) -> str:
    """The serve image imported into the node's containerd; its reference."""
    archive, ref = serve_archive
    real_node.load_image(archive)
    return ref


@pytest.fixture
def namespace(real_node, unique_name):
    """A namespace of the test's own on the node's cluster, deleted afterwards."""
    real_node.kubectl("create", "namespace", unique_name, check=True)
    yield unique_name
    real_node.kubectl("delete", "namespace", unique_name, "--wait=false")


@pytest.fixture(scope="session")
def tenant_record() -> Callable[..., dict]:
    """tenant_record(namespace, tenant, key, rpm=, max_concurrent=): a tenant-record ConfigMap as the
    operator writes it (chorus.operator.builders.build_tenant_record) with the key's sha256 and the
    base voice only."""

    def make(namespace: str, tenant: str, key: str, *, rpm: int, max_concurrent: int) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": record_name(tenant), "namespace": namespace,
                             "labels": {COMPONENT_LABEL: "tenant-record"}},
                "data": {"tenant": tenant, "namespace": f"tenant-{tenant}",
                         "apiKeySha256": hashlib.sha256(key.encode()).hexdigest(),
                         "requestsPerMinute": str(rpm), "maxConcurrent": str(max_concurrent),
                         "maxCharsPerRequest": "5000", "voices.json": "[]"}}

    return make
