"""A real, throwaway Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml
from pydantic import BaseModel, ConfigDict, Field

from chorus.controlplane.binaries import K8S_VERSION, default_bin_dir, kubectl_path, require_binaries
from chorus.controlplane.certs import FRONT_PROXY_CLIENT_NAME, Pki, generate_pki

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"  # the serving cert names 10.96.0.1, its first address
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOG_TAIL_LINES = 40
PR_SET_PDEATHSIG = 1


class ControlPlaneConfig(BaseModel):
    """How to start a control plane; defaults suit tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bin_dir: Path | None = Field(None, description="Binaries from build.sh; None: the default cache dir.")
    parent_dir: Path | None = Field(None, description="Where to make the temp dir; None: the system's.")
    keep_workdir: bool = Field(False, description="Leave certs, etcd data and logs behind after stop().")
    startup_timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for readiness.")
    stop_timeout_s: float = Field(10.0, gt=0, description="Seconds between SIGTERM and SIGKILL.")
    wait_for_controllers: bool = Field(
        True, description="Also wait until the controller manager has published kube-root-ca.crt."
    )
    die_with_parent: bool = Field(
        True, description="Kill the servers if the starting thread dies (Linux PR_SET_PDEATHSIG)."
    )
    verbosity: int = Field(0, ge=0, le=10, description="klog -v level of the Kubernetes servers.")
    extra_apiserver_args: tuple[str, ...] = Field((), description="Appended to kube-apiserver's flags.")
    extra_controller_manager_args: tuple[str, ...] = Field(
        (), description="Appended to kube-controller-manager's flags."
    )


class ControlPlaneError(RuntimeError):
    """The control plane failed to start; the message carries the failing component's log tail."""


@dataclass
class _Component:
    name: str
    process: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]

    @classmethod
    def spawn(cls, name: str, argv: list[str], log_path: Path, cwd: Path, *, die_with_parent: bool = True,
              env: dict[str, str] | None = None) -> _Component:
        """Start `argv` in its own session, output appended to `log_path`, killed with this process if asked."""
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True, preexec_fn=_die_with_parent if die_with_parent else None, env=env,
        )
        return cls(name, process, log_path, log_file)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of this component's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGKILL when the thread that started us goes away.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, as a context manager."""

    def __init__(self, config: ControlPlaneConfig | None = None) -> None:
        self.config = config or ControlPlaneConfig()
        self.bin_dir = self.config.bin_dir or default_bin_dir()
        self.binaries = require_binaries(self.bin_dir)
        self.kubectl_bin = kubectl_path()
        self.workdir: Path | None = None
        self.server = ""
        self.kubeconfig = Path()
        self.startup_s = 0.0
        self._pki: Pki | None = None
        self._components: list[_Component] = []
        self._ssl: ssl.SSLContext | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Generate certs, start the three servers, wait until ready and write the kubeconfig."""
        if self._components:
            raise ControlPlaneError("this ControlPlane is already running; stop() it first")
        started = time.monotonic()
        parent = self.config.parent_dir
        if parent:
            parent.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="chorus-cp-", dir=parent))
        try:
            self._pki = generate_pki(self.workdir / "pki")
            self._ssl = ssl.create_default_context(cafile=str(self._pki.ca_cert))
            self._ssl.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
            for attempt in range(3):
                try:
                    self._start_servers(started)
                    break
                except ControlPlaneError as exc:
                    self._terminate_all()
                    # Another process may have taken a port we picked: pick again.
                    if "address already in use" not in str(exc) or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Terminate every server (SIGTERM, then SIGKILL) and remove the temp dir unless kept."""
        self._terminate_all()
        if self.workdir and not self.config.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while every server process is alive."""
        return bool(self._components) and all(c.process.poll() is None for c in self._components)

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each started server, by component name."""
        return {c.name: c.process.pid for c in self._components}

    def exited(self) -> str:
        """Exit codes and log tails of server processes that have died ('' when none has)."""
        return "\n".join(
            f"{c.name} exited with code {c.process.returncode}; log {c.log_path}, last lines:\n"
            f"{c.tail()}"
            for c in self._components if c.process.poll() is not None
        )

    # ---- what callers use ------------------------------------------------------------------
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A copy of base (default os.environ) with KUBECONFIG set and helm/kubectl on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join(
            [str(self.bin_dir), str(self.kubectl_bin.parent), env.get("PATH", "")]
        )
        return env

    @property
    def pki(self) -> Pki:
        """The certificates and keys of the running control plane (CA, admin client, SA keys)."""
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started: no PKI yet")
        return self._pki

    @property
    def secure_port(self) -> int:
        """The API server's port on 127.0.0.1."""
        return int(self.server.rsplit(":", 1)[1])

    @property
    def helm(self) -> Path:
        """The helm v3 CLI built beside the servers (env() also puts it on PATH)."""
        return require_binaries(self.bin_dir, ("helm",))["helm"]

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60.0,
                check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as the admin; text output captured."""
        return subprocess.run(
            [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=check,
            env=self.env(),
        )

    def log_path(self, component: str) -> Path:
        """The log file of 'etcd', 'kube-apiserver' or 'kube-controller-manager'."""
        for c in self._components:
            if c.name == component:
                return c.log_path
        names = [c.name for c in self._components]
        raise KeyError(f"no component {component!r}; running: {names}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET an API path as the admin (or a plain http:// URL); returns (HTTP status, body)."""
        url = path if path.startswith("http://") else self.server + path
        context = None if url.startswith("http://") else self._ssl
        try:
            with urllib.request.urlopen(url, context=context, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def version(self) -> dict:
        """The API server's /version document."""
        status, body = self.get("/version")
        if status != 200:
            raise ControlPlaneError(f"/version answered HTTP {status}: {body[:200]}")
        return json.loads(body)

    # ---- internals -------------------------------------------------------------------------
    def _start_servers(self, started: float) -> None:
        assert self.workdir and self._pki
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)  # left by a failed attempt
        etcd_client, etcd_peer, secure_port = _free_port(), _free_port(), _free_port()
        self.server = f"https://127.0.0.1:{secure_port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(self._kubeconfig_yaml())
        self.kubeconfig.chmod(0o600)
        deadline = started + self.config.startup_timeout_s
        self._spawn("etcd", self._etcd_args(etcd_client, etcd_peer))
        # The API server's etcd client backs off for a second or more when etcd is not up yet.
        self._wait("etcd", f"http://127.0.0.1:{etcd_client}/health", deadline)
        self._spawn("kube-apiserver", self._apiserver_args(etcd_client, secure_port))
        self._wait("kube-apiserver", "/readyz", deadline, verbose_path="/readyz?verbose")
        # After the API server is ready: the controller manager gives up when /healthz still fails
        # after 10 s, which a loaded machine's RBAC bootstrap can take.
        self._spawn("kube-controller-manager", self._controller_manager_args())
        if self.config.wait_for_controllers:
            self._wait(
                "kube-controller-manager",
                "/api/v1/namespaces/default/configmaps/kube-root-ca.crt",
                deadline,
            )

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir
        self._components.append(_Component.spawn(name, [str(self.binaries[name]), *args],
                                                 self.workdir / f"{name}.log", self.workdir,
                                                 die_with_parent=self.config.die_with_parent))

    def _wait(self, name: str, path: str, deadline: float, verbose_path: str | None = None) -> None:
        last = "(no answer yet)"
        while time.monotonic() < deadline:
            if died := self.exited():
                raise ControlPlaneError(f"control plane failed during startup: {died}")
            try:
                status, body = self.get(path, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:500]}"
            except (OSError, ssl.SSLError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        if verbose_path:
            try:
                last = self.get(verbose_path, timeout=2.0)[1][-2000:]
            except OSError:
                pass
        component = next(c for c in self._components if c.name == name)
        raise ControlPlaneError(
            f"{name} not ready after {self.config.startup_timeout_s:.0f}s waiting on {path}: {last}\n"
            f"log {component.log_path}, last lines:\n{component.tail()}"
        )

    def _terminate_all(self) -> None:
        # One at a time, clients first: an API server whose etcd is already gone stalls its
        # graceful shutdown on storage calls.
        for c in reversed(self._components):
            if c.process.poll() is None:
                os.killpg(c.process.pid, signal.SIGTERM)
                try:
                    c.process.wait(timeout=self.config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(c.process.pid, signal.SIGKILL)
                    c.process.wait()
            c.log_file.close()
        self._components.clear()

    def _etcd_args(self, client_port: int, peer_port: int) -> list[str]:
        assert self.workdir
        client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        return [
            "--name=chorus",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=chorus={peer}",
            "--unsafe-no-fsync",  # throwaway data: durability only costs time
            "--log-level=warn",
        ]

    def _apiserver_args(self, etcd_port: int, secure_port: int) -> list[str]:
        assert self.workdir and self._pki
        pki = self._pki
        return [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",  # no default route here: it must be explicit
            f"--secure-port={secure_port}",
            f"--cert-dir={self.workdir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            # Endpoints may not hold a loopback address: don't publish one for `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            # For a real node (chorus.controlplane.node): logs/exec reach the kubelet at its
            # InternalIP, authenticating with the admin client cert the kubelet's CA trusts.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
            # The aggregation layer, for extension API servers such as metrics-server
            # (chorus.controlplane.addons): the API server proxies to them as front-proxy-client
            # and they trust the X-Remote-* headers of that name. Aggregator routing sends those
            # calls to the APIService's endpoint address, not its ClusterIP (no kube-proxy needed).
            f"--requestheader-client-ca-file={pki.ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_cert}",
            f"--proxy-client-key-file={pki.front_proxy_key}",
            "--enable-aggregator-routing=true",
            "--profiling=false",
            f"--v={self.config.verbosity}",
            *self.config.extra_apiserver_args,
        ]

    def _controller_manager_args(self) -> list[str]:
        assert self._pki
        pki = self._pki
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--controllers=*",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--secure-port=0",  # nothing scrapes it; one port fewer to collide on
            "--profiling=false",
            f"--v={self.config.verbosity}",
            *self.config.extra_controller_manager_args,
        ]

    def _kubeconfig_yaml(self) -> str:
        assert self._pki
        pki = self._pki

        def b64(path: Path) -> str:
            return b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "chorus-test", "cluster": {
                "server": self.server, "certificate-authority-data": b64(pki.ca_cert),
            }}],
            "users": [{"name": "chorus-admin", "user": {
                "client-certificate-data": b64(pki.admin_cert),
                "client-key-data": b64(pki.admin_key),
            }}],
            "contexts": [{"name": "chorus-test", "context": {
                "cluster": "chorus-test", "user": "chorus-admin", "namespace": "default",
            }}],
            "current-context": "chorus-test",
        }
        return yaml.safe_dump(config, sort_keys=False)


def wait_crds_established(kubectl, names: list[str], timeout: float = 60.0) -> None:
    """Poll until every named CRD has condition Established=True; ControlPlaneError naming the rest at `timeout`.

    `kubectl` is ControlPlane.kubectl or the like (args -> CompletedProcess). Polled, because `kubectl
    wait --for=condition=Established` errors out instead of waiting while a new CRD has no
    status.conditions yet.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        r = kubectl("get", "crd", *pending, "-o", "json", timeout=30)
        doc = json.loads(r.stdout) if r.returncode == 0 else {}
        items = doc.get("items", [doc] if doc.get("kind") == "CustomResourceDefinition" else [])
        done = {i["metadata"]["name"] for i in items
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in (i.get("status") or {}).get("conditions") or [])}
        pending = [n for n in pending if n not in done]
        if pending and time.monotonic() > deadline:
            raise ControlPlaneError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)} "
                                    f"{r.stderr.strip()}")
        if pending:
            time.sleep(0.5)


__all__ = ["K8S_VERSION", "ControlPlane", "ControlPlaneConfig", "ControlPlaneError", "wait_crds_established"]
