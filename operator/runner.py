"""Run the operator: kopf cluster-wide, logged in with the Settings' kubeconfig, with peering unless standalone."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import kopf

from chorus.operator import handlers
from chorus.operator.builders import MANAGED_BY_SELECTOR
from chorus.operator.childwatch import ChildWatcher, PeeringGate
from chorus.operator.events import EventPoster
from chorus.operator.kopfstate import MemoryState
from chorus.operator.kube import ApiError, Connection, KubeClient, load_connection
from chorus.operator.reconcile import Reconciler
from chorus.operator.settings import Settings
from chorus.operator.training import make_backend
from chorus.operator.voices import TrainingVoiceDriver

log = logging.getLogger(__name__)
FIELD_MANAGER = "chorus-operator"
PROGRESS_PREFIX = "operator.chorus.dev"  # kopf's retry wake-up annotation


def configure(kopf_settings: kopf.OperatorSettings, settings: Settings, state: MemoryState) -> None:
    """Tune kopf: its state in memory, explicit Events only, no worker limit unless set."""
    kopf_settings.persistence.finalizer = "chorus.dev/finalizer"
    kopf_settings.persistence.progress_storage = state.progress
    kopf_settings.persistence.diffbase_storage = state.diffbase
    # kopf would otherwise post an Event for every handler log line; the operator posts its own.
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.batching.batch_window = settings.batch_window_s
    kopf_settings.batching.worker_limit = settings.worker_limit
    kopf_settings.watching.server_timeout = 300
    kopf_settings.networking.connect_timeout = 10


async def _ensure_platform(kube: KubeClient, settings: Settings) -> None:
    """Create the platform namespace and the peering object if missing (a Helm install normally has them)."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": settings.platform_namespace}}
    if await kube.get("Namespace", settings.platform_namespace) is None and await kube.create(ns) is not None:
        log.info("created platform namespace %s", settings.platform_namespace)
    if not settings.standalone:
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                   "metadata": {"name": settings.peering_name}}
        try:
            if await kube.get("ClusterKopfPeering", settings.peering_name) is None:
                await kube.create(peering)
        except ApiError as exc:
            raise RuntimeError(
                f"cannot create ClusterKopfPeering {settings.peering_name!r} ({exc}); install "
                "operator/crds/kopf-peering.yaml, or set CHORUS_OPERATOR_STANDALONE=true") from None


def base_fingerprint(settings: Settings) -> str:
    """The platform's base model: the setting, or the fingerprint of the installed base voice."""
    if settings.base_fingerprint:
        return settings.base_fingerprint
    from chorus.engine.voice import load_base_voice

    return load_base_voice().fingerprint


def build_registry(settings: Settings, conn: Connection, kube: KubeClient, state: MemoryState,
                   watcher: ChildWatcher) -> kopf.OperatorRegistry:
    """A registry with the login, startup and cleanup activities and every handler."""
    registry = kopf.OperatorRegistry()
    chorus_settings = settings  # the startup activity's own `settings` argument is kopf's

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return conn.connection_info()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, chorus_settings, state)
        await _ensure_platform(kube, chorus_settings)
        watcher.start()
        log.info("platform namespace %s ready; watching VoiceTenants", chorus_settings.platform_namespace)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await watcher.stop()
        await kube.close()

    handlers.register(registry, settings.resync_interval_s, settings.voice_poll_interval_s)
    return registry


def run(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    # kopf's formatter prefixes each line with the object it is about: "[tenant-name] ...".
    kopf.configure(debug=settings.log_level == "DEBUG", log_prefix=True)
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    conn = load_connection(settings.kubeconfig)
    kube = KubeClient(conn, FIELD_MANAGER, settings.max_connections)
    state = MemoryState(PROGRESS_PREFIX)
    driver = TrainingVoiceDriver(settings, make_backend(settings, kube), base_fingerprint(settings))
    memo = kopf.Memo(settings=settings, kube=kube, events=EventPoster(kube), kopf_state=state, reconciler=Reconciler(
        kube, settings.platform_namespace, driver, max_concurrent=settings.max_concurrent_reconciles))
    identity = f"chorus-operator@{socket.gethostname()}/{os.getpid()}"  # this replica in the peering object
    gate = PeeringGate(kube, None if settings.standalone else settings.peering_name, identity, settings.priority)
    watcher = ChildWatcher(kube, handlers.CHILD_RESOURCES, MANAGED_BY_SELECTOR,
                           lambda event_type, obj: handlers.repair_child(event_type, obj, memo), gate)
    log.info("chorus operator starting: platform namespace %s, %s", settings.platform_namespace,
             "standalone" if settings.standalone else f"peering {settings.peering_name!r} priority {settings.priority}")
    kopf.run(
        registry=build_registry(settings, conn, kube, state, watcher), memo=memo, identity=identity, clusterwide=True,
        standalone=settings.standalone, priority=settings.priority,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint,
    )
    return 0
