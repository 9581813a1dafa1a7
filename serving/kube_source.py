"""Tenants from the operator's tenant-record ConfigMaps: listed, then watched in a daemon thread.

The operator writes one ConfigMap per tenant in the platform namespace, labelled
app.kubernetes.io/component=tenant-record (chorus.operator.builders.build_tenant_record). This source
turns each into a `Tenant` and delivers a fresh `Tenants` snapshot whenever one is added, changed or
deleted. A malformed record is logged and skipped; the others keep serving. While the API server is
unreachable the last snapshot stays in force and the watch reconnects with backoff; an expired watch
(410 Gone) is answered with a fresh list. Key hashes are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from chorus.operator.builders import COMPONENT_LABEL, record_name
from chorus.serving.tenants import Tenant, Tenants, TenantSourceError

log = logging.getLogger(__name__)

PLATFORM_NAMESPACE = "chorus-system"
RECORD_SELECTOR = f"{COMPONENT_LABEL}=tenant-record"
LIMIT_KEYS = ("requestsPerMinute", "maxConcurrent", "maxCharsPerRequest")  # data keys = ApiLimits aliases
REQUIRED_KEYS = ("tenant", "apiKeySha256", *LIMIT_KEYS, "voices.json")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
CONNECT_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HTTP_RETRIES = 1  # urllib3's own quick retry (a stale pooled connection); outages are this module's backoff


class TenantSourceUnavailable(TenantSourceError):
    """The API server could not be reached, or refused to list the tenant records, in time."""


class _Expired(Exception):
    """The watch's resource version is too old (410 Gone): list again."""


def parse_record(name: str, data: dict[str, str] | None, namespace: str | None = None) -> Tenant:
    """The Tenant of one record ConfigMap's data; TenantSourceError names the ConfigMap and what is wrong."""
    where = f"tenant record ConfigMap {namespace}/{name}" if namespace else f"tenant record ConfigMap {name}"
    data = data or {}
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise TenantSourceError(f"{where}: missing data keys {', '.join(missing)} (has: {', '.join(sorted(data))})")
    try:
        voices = json.loads(data["voices.json"])
    except ValueError as exc:
        raise TenantSourceError(f"{where}: voices.json is not JSON ({exc})") from None
    if not isinstance(voices, list):
        raise TenantSourceError(f"{where}: voices.json must be a JSON list of voices, not {type(voices).__name__}")
    raw = {"name": data["tenant"], "apiKeySha256": data["apiKeySha256"],
           "limits": {k: data[k] for k in LIMIT_KEYS}, "voices": voices}
    try:
        return Tenant.model_validate(raw)
    except ValidationError as exc:
        # Only locations and messages: str(exc) would repeat the input values, key hash included.
        problems = "; ".join(f"{_data_key(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise TenantSourceError(f"{where}: {problems}") from None


def _data_key(loc: tuple) -> str:
    """Where a Tenant validation error sits, named by the record's data key (e.g. voices.json[0].adapterUri)."""
    head, rest = (loc[0], loc[1:]) if loc else ("record", ())
    if head == "name":
        return "tenant"
    if head == "limits" and rest:
        return str(rest[0])
    if head == "voices":
        return "voices.json" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
    return ".".join(str(p) for p in loc)


def snapshot(records: dict[str, Tenant]) -> tuple[Tenants, list[str]]:
    """The snapshot of the valid records (by ConfigMap name), and a warning for each record a duplicate hides.

    Two records naming one tenant: the one named tenant-<name> (the operator's) wins, else the first by name.
    """
    by_tenant: dict[str, list[str]] = {}
    for cm in sorted(records):
        by_tenant.setdefault(records[cm].name, []).append(cm)
    chosen, warnings = [], []
    for tenant, cms in sorted(by_tenant.items()):
        keep = record_name(tenant) if record_name(tenant) in cms else cms[0]
        chosen.append(records[keep])
        for other in cms:
            if other != keep:
                warnings.append(f"tenant record ConfigMap {other} names tenant {tenant!r}, already served from "
                                f"ConfigMap {keep}; skipped")
    return Tenants(tenants=tuple(chosen)), warnings


def _describe(exc: BaseException) -> str:
    """A short, safe description of an API error (the Status message, never a request or response body)."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return f"HTTP {exc.status} {exc.reason or ''}".strip() + (f": {message}" if message else "")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # the cause, without the request URL
    return f"{type(exc).__name__}: {exc}"


class KubeTenantSource:
    """Tenants from the tenant-record ConfigMaps in one namespace, listed then watched (a TenantSource)."""

    def __init__(self, namespace: str = PLATFORM_NAMESPACE, kubeconfig: Path | str | None = None,
                 context: str | None = None, start_timeout_s: float = 10.0, watch_timeout_s: int = 5):
        self.namespace = namespace
        self.kubeconfig = Path(kubeconfig) if kubeconfig is not None else None
        self.context = context
        self.start_timeout_s = start_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._api_client: client.ApiClient | None = None
        self._api: client.CoreV1Api | None = None
        self._response: urllib3.BaseHTTPResponse | None = None
        self._records: dict[str, Tenant] = {}
        self._rv: str | None = None
        self._last: Tenants | None = None
        self._warned: set[str] = set()
        self._on_change: Callable[[Tenants], None] = lambda tenants: None

    # -- connection --------------------------------------------------------------------------------

    def _connect(self) -> None:
        """A new ApiClient: the explicit kubeconfig, else $KUBECONFIG, else ~/.kube/config, else in-cluster."""
        if self._api_client is not None:
            self._api_client.close()
        # Read KUBECONFIG now: the kubernetes package reads it once, at import.
        path = str(self.kubeconfig) if self.kubeconfig else os.environ.get("KUBECONFIG") or None
        if path is None and DEFAULT_KUBECONFIG.expanduser().exists():
            path = str(DEFAULT_KUBECONFIG.expanduser())
        cfg = client.Configuration()
        cfg.retries = HTTP_RETRIES
        try:
            if path is not None:
                api_client = config.new_client_from_config(config_file=path, context=self.context,
                                                           persist_config=False, client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
                api_client = client.ApiClient(cfg)
        except (ConfigException, OSError) as exc:
            where = f"kubeconfig {path}" if path else "the in-cluster service account (no kubeconfig found)"
            raise TenantSourceUnavailable(f"cannot load Kubernetes credentials from {where}: {exc}") from None
        self._api_client = api_client
        self._api = client.CoreV1Api(api_client)

    # -- list and watch ----------------------------------------------------------------------------

    def _list(self, read_timeout_s: float) -> None:
        """List every record now and replace what is known (used at start and after a 410)."""
        assert self._api is not None
        listed = self._api.list_namespaced_config_map(
            self.namespace, label_selector=RECORD_SELECTOR,
            _request_timeout=(min(CONNECT_TIMEOUT_S, read_timeout_s), read_timeout_s))
        records = {}
        for cm in listed.items:
            tenant = self._parse(cm.metadata.name, cm.data)
            if tenant is not None:
                records[cm.metadata.name] = tenant
        self._records = records
        self._rv = listed.metadata.resource_version

    def _parse(self, name: str, data: dict[str, str] | None) -> Tenant | None:
        try:
            return parse_record(name, data, self.namespace)
        except TenantSourceError as exc:
            log.warning("%s; this tenant is not served until its record is fixed", exc)
            return None

    def _watch_once(self) -> None:
        """One watch from the known resource version until the server ends it, delivering each change."""
        assert self._api is not None
        try:
            response = self._api.list_namespaced_config_map(
                self.namespace, label_selector=RECORD_SELECTOR, watch=True, resource_version=self._rv,
                allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout_s, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_S, self.watch_timeout_s + 10))
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired(_describe(exc)) from None
            raise
        with self._lock:
            self._response = response
        ended = False
        try:
            if self._stop.is_set():  # stop() ran before the response was registered
                return
            for line in response:
                if self._stop.is_set():
                    return
                if line.strip():
                    self._apply(json.loads(line))
            ended = True
        finally:
            with self._lock:
                self._response = None
            if not ended:
                response.close()  # a cut or half-read stream: never hand its connection back for reuse
            response.release_conn()

    def _apply(self, event: dict) -> None:
        """Apply one watch event to the known records; deliver the snapshot if it changed."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired(obj.get("message", "resource version too old"))
            raise ApiException(status=obj.get("code", 0), reason=f"{obj.get('reason')}: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        self._rv = meta.get("resourceVersion") or self._rv
        name = meta.get("name")
        if not name or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK: only the resource version moves
        tenant = None if kind == "DELETED" else self._parse(name, obj.get("data"))
        if kind == "DELETED":
            log.info("tenant record ConfigMap %s/%s deleted", self.namespace, name)
        if tenant is None:
            self._records.pop(name, None)
        else:
            self._records[name] = tenant
        self._deliver()

    # -- delivery ----------------------------------------------------------------------------------

    def _current(self) -> Tenants:
        tenants, warnings = snapshot(self._records)
        for warning in set(warnings) - self._warned:
            log.warning("%s", warning)
        self._warned = set(warnings)
        return tenants

    def _deliver(self) -> None:
        """Call on_change with the current snapshot if it differs from the last one delivered."""
        tenants = self._current()
        if tenants == self._last:
            return
        try:
            self._on_change(tenants)
        except Exception:  # the consumer's bug must not end the watch
            log.exception("the tenant change callback failed; the next change delivers a snapshot again")
            return
        self._last = tenants
        log.info("tenants now: %s", ", ".join(t.name for t in tenants.tenants) or "none")

    # -- TenantSource ------------------------------------------------------------------------------

    def start(self, on_change: Callable[[Tenants], None]) -> None:
        """Deliver the records' first snapshot (TenantSourceUnavailable after start_timeout_s), then watch."""
        if self._thread is not None:
            raise RuntimeError("KubeTenantSource.start called twice")
        self._on_change = on_change
        self._connect()
        deadline = time.monotonic() + self.start_timeout_s
        backoff, last = BACKOFF_FIRST_S, "no attempt finished"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._close()
                raise TenantSourceUnavailable(
                    f"cannot list ConfigMaps labelled {RECORD_SELECTOR} in namespace {self.namespace} "
                    f"at {self._host()} within {self.start_timeout_s:g}s: {last}")
            try:
                self._list(read_timeout_s=max(remaining, 0.5))
                break
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                last = _describe(exc)
                if isinstance(exc, ApiException) and exc.status == 401:
                    self._connect()
                time.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
                backoff = min(2 * backoff, BACKOFF_MAX_S)
        tenants = self._current()
        try:
            on_change(tenants)
        except BaseException:
            self._close()
            raise
        self._last = tenants
        log.info("watching %d tenant record(s) in namespace %s: %s", len(tenants.tenants), self.namespace,
                 ", ".join(t.name for t in tenants.tenants) or "none")
        self._thread = threading.Thread(target=self._run, name="chorus-tenant-kube", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self._list(read_timeout_s=30.0)
                    self._deliver()
                began = time.monotonic()
                self._watch_once()
                backoff = BACKOFF_FIRST_S
                if time.monotonic() - began < BACKOFF_FIRST_S:  # a watch that ends at once must not spin
                    self._stop.wait(BACKOFF_FIRST_S)
                continue
            except _Expired as exc:
                log.info("the tenant record watch expired (%s); listing again", exc)
                self._rv = None
                continue
            except Exception as exc:
                if self._stop.is_set():
                    break
                expected = isinstance(exc, (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError))
                log.warning("watching tenant records in namespace %s at %s failed (%s); retrying in %.1fs, serving "
                            "the last tenants meanwhile", self.namespace, self._host(), _describe(exc), backoff,
                            exc_info=not expected)
                if isinstance(exc, ApiException) and exc.status == 401:
                    try:
                        self._connect()  # credentials may have rotated
                    except TenantSourceUnavailable as again:
                        log.warning("%s", again)
            if self._stop.wait(backoff):
                break
            backoff = min(2 * backoff, BACKOFF_MAX_S)
        self._close()

    def stop(self) -> None:
        """Stop watching: the open watch is cut at once and the thread ends."""
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()  # wakes the thread blocked reading the watch
            except Exception:  # already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout=self.watch_timeout_s + 5)
            if self._thread.is_alive():
                log.warning("the tenant record watch thread did not stop in time")

    def _host(self) -> str:
        return self._api_client.configuration.host if self._api_client else "?"

    def _close(self) -> None:
        if self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:
                pass
