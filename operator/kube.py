"""A small asyncio client for the few Kubernetes calls the operator makes (server-side apply, get, create, delete).

kopf brings aiohttp; using it directly keeps the operator on one event loop without a thread per
call and without the kubernetes package's large generated client in memory. Error messages carry
the API server's Status message and never an object's body (a body may be a Secret).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import kopf
import yaml

log = logging.getLogger(__name__)
# kind -> (API prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "LimitRange": ("/api/v1", "limitranges", True),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Event": ("/api/v1", "events", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "VoiceTenant": ("/apis/chorus.dev/v1alpha1", "voicetenants", False),
    "ClusterKopfPeering": ("/apis/kopf.dev/v1", "clusterkopfpeerings", False),
}
IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_SERVER = "https://kubernetes.default.svc"


def in_cluster_server() -> str:
    """The API server as a pod sees it: the kubelet's KUBERNETES_SERVICE_HOST/PORT (as client-go reads them).

    Those need no cluster DNS, which not every cluster runs; kubernetes.default.svc is the fallback.
    """
    import os

    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return IN_CLUSTER_SERVER


class ApiError(RuntimeError):
    """The API server answered with an error status; `status` is the HTTP code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Connection:
    """Where the API server is and how to authenticate: what both kopf and KubeClient need."""

    server: str
    ca_data: str | None = None  # PEM text
    ca_path: str | None = None
    cert_data: str | None = None  # PEM text of the client certificate
    cert_path: str | None = None
    key_data: str | None = None  # PEM text of the client key (never logged)
    key_path: str | None = None
    token: str | None = None
    token_path: str | None = None
    insecure: bool = False
    _token_read_at: float = field(default=0.0, repr=False)

    def __repr__(self) -> str:
        return f"Connection(server={self.server!r})"  # never show keys or tokens

    def bearer(self) -> str | None:
        """The bearer token, re-read from token_path each minute (projected tokens rotate)."""
        if self.token_path and time.monotonic() - self._token_read_at > 60:
            self.token = Path(self.token_path).read_text().strip()
            self._token_read_at = time.monotonic()
        return self.token

    def connection_info(self) -> kopf.ConnectionInfo:
        """kopf's view of this connection."""
        token = self.bearer()
        return kopf.ConnectionInfo(
            server=self.server, ca_path=self.ca_path, ca_data=self.ca_data, insecure=self.insecure or None,
            certificate_path=self.cert_path, certificate_data=self.cert_data,
            private_key_path=self.key_path, private_key_data=self.key_data,
            scheme="Bearer" if token else None, token=token, default_namespace="default",
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The SSL context, built as kopf builds its own: inline key data touches disk only in a
        temp file that exists while the context is made."""
        return self.connection_info().as_ssl_context()


def load_connection(kubeconfig: Path | None) -> Connection:
    """Read a kubeconfig's current context (client certificates or token), or the in-cluster account if None."""
    if kubeconfig is None:
        if not (IN_CLUSTER_DIR / "token").exists():
            raise FileNotFoundError(
                "no kubeconfig given (CHORUS_OPERATOR_KUBECONFIG) and not running in a pod "
                f"({IN_CLUSTER_DIR}/token is absent)")
        return Connection(server=in_cluster_server(), ca_path=str(IN_CLUSTER_DIR / "ca.crt"),
                          token_path=str(IN_CLUSTER_DIR / "token"))
    config = yaml.safe_load(Path(kubeconfig).read_text())
    base = Path(kubeconfig).resolve().parent
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    current = config.get("current-context") or next(iter(contexts), None)
    if current not in contexts:
        raise ValueError(f"kubeconfig {kubeconfig}: current context {current!r} not among {sorted(contexts)}")
    ctx = contexts[current]
    cluster = {c["name"]: c["cluster"] for c in config.get("clusters", [])}[ctx["cluster"]]
    user = {u["name"]: u.get("user") or {} for u in config.get("users", [])}.get(ctx.get("user"), {})

    def pem(entry: dict, key: str) -> str | None:
        return base64.b64decode(entry[f"{key}-data"]).decode() if entry.get(f"{key}-data") else None

    def path(entry: dict, key: str) -> str | None:
        return str(base / entry[key]) if entry.get(key) else None

    return Connection(
        server=cluster["server"].rstrip("/"), insecure=bool(cluster.get("insecure-skip-tls-verify")),
        ca_data=pem(cluster, "certificate-authority"), ca_path=path(cluster, "certificate-authority"),
        cert_data=pem(user, "client-certificate"), cert_path=path(user, "client-certificate"),
        key_data=pem(user, "client-key"), key_path=path(user, "client-key"),
        token=user.get("token"), token_path=user.get("tokenFile"),
    )


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    """The REST path of an object (or of its collection when name is None)."""
    if kind not in RESOURCES:
        raise KeyError(f"unknown kind {kind!r}; known: {', '.join(sorted(RESOURCES))}")
    prefix, plural, namespaced = RESOURCES[kind]
    if namespaced and not namespace:
        raise ValueError(f"{kind} {name!r} needs a namespace")
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """Async calls to one API server, with a connection pool shared by all handlers."""

    def __init__(self, connection: Connection, field_manager: str, max_connections: int = 32) -> None:
        self.connection = connection
        self.field_manager = field_manager
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session (for streaming calls such as watches)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ssl=self.connection.ssl_context())
            self._session = aiohttp.ClientSession(
                base_url=None, connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.field_manager}
        token = self.connection.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def watch(self, path: str, params: dict) -> AsyncIterator[dict]:
        """Stream a watch of a collection: yields its events ({type, object}) until the server ends it."""
        session = await self.session()
        # No total timeout; the server ends the watch after timeoutSeconds (bookmarks keep it talking).
        timeout = aiohttp.ClientTimeout(total=None, sock_read=int(params.get("timeoutSeconds", 300)) + 60)
        async with session.get(self.connection.server + path, params={**params, "watch": "true"},
                               headers=self._headers(), timeout=timeout) as resp:
            if resp.status >= 400:
                text = await resp.text()
                raise ApiError(resp.status, resp.reason or "", text[:200])
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)

    async def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                      content_type: str = "application/json") -> dict | None:
        """One API call; returns the decoded body, None on 404, raises ApiError otherwise."""
        session = await self.session()
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        for attempt in range(4):
            try:
                started = time.monotonic()
                async with session.request(method, self.connection.server + path, data=data,
                                           params=params, headers=headers) as resp:
                    text = await resp.text()
                    log.debug("%s %s -> %d in %.0f ms", method, path, resp.status, 1000 * (time.monotonic() - started))
                    if resp.status == 404 and method in ("GET", "DELETE"):
                        return None
                    if (resp.status == 429 or resp.status >= 500) and attempt < 3:
                        await asyncio.sleep(0.2 * 2 ** attempt)
                        continue
                    if resp.status >= 400:
                        try:
                            status = json.loads(text)
                            raise ApiError(resp.status, status.get("reason", ""), status.get("message", ""))
                        except (ValueError, AttributeError):
                            raise ApiError(resp.status, resp.reason or "", text[:200]) from None
                    return json.loads(text) if text else {}
            except aiohttp.ClientConnectionError:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
        raise ApiError(503, "Unavailable", f"{method} {path} kept failing")

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None if it does not exist."""
        return await self.request("GET", object_path(kind, name, namespace))

    async def apply(self, obj: dict) -> dict:
        """Server-side apply with force: the fields in obj become the operator's and take these values."""
        meta = obj["metadata"]
        path = object_path(obj["kind"], meta["name"], meta.get("namespace"))
        params = {"fieldManager": self.field_manager, "force": "true"}
        result = await self.request("PATCH", path, obj, params, "application/apply-patch+yaml")
        return result or {}

    async def create(self, obj: dict) -> dict | None:
        """Create obj; None if an object of that name already exists."""
        meta = obj["metadata"]
        try:
            return await self.request("POST", object_path(obj["kind"], None, meta.get("namespace")), obj,
                                      {"fieldManager": self.field_manager})
        except ApiError as exc:
            if exc.status == 409 and exc.reason == "AlreadyExists":
                return None
            raise

    async def delete(self, kind: str, name: str, namespace: str | None = None,
                     uid: str | None = None) -> bool:
        """Delete in the background (dependents by GC); if uid is given, only that incarnation. False if absent."""
        body: dict = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            return await self.request("DELETE", object_path(kind, name, namespace), body) is not None
        except ApiError as exc:
            if exc.status == 409:  # the uid precondition failed: a newer object of that name
                return False
            raise

    async def patch_status(self, kind: str, name: str, status: dict, namespace: str | None = None) -> None:
        """Merge-patch the status subresource."""
        await self.request("PATCH", object_path(kind, name, namespace) + "/status", {"status": status},
                           content_type="application/merge-patch+json")


def secret_value(secret: dict, key: str) -> str | None:
    """Decode one value of a Secret's data; None if absent or undecodable."""
    raw = (secret.get("data") or {}).get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, UnicodeDecodeError):
        return None
