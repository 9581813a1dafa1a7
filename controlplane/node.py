"""A real single-node Kubernetes for tests: containerd + kubelet + kube-scheduler + kube-proxy.

`Node(control_plane)` joins a running `chorus.controlplane.cluster.ControlPlane`: pods scheduled
there really run (runc containers from locally built images, no registry), on a bridge CNI network
(`cni0`, 10.244.0.0/24), with ClusterIP Services reachable from the host through kube-proxy.

Everything it writes lives under one work directory, except what the components hard-code
(/var/lib/kubelet/{pki,device-plugins}, /var/log/{containers,pods}, /run/containerd, /run/netns,
/var/lib/cni, the /kubepods and /k8s.io cgroups, KUBE-*/CNI-* iptables chains, the cni0 bridge and
the node's veth). `stop()` removes all of it, even after a failed start, and `start()` first
removes what a crashed earlier run left. Those names are fixed, so one node per machine: a lock
file serialises nodes across processes (a second one waits for the first, up to lock_timeout_s).

Pods must use images loaded with `load_image()` and `imagePullPolicy: Never`. In-cluster API
access works as usual (service-account token, `kubernetes` Service at 10.96.0.1:443) although the
API server listens on 127.0.0.1 only: the node DNATs that address from the pod bridge to loopback.
hostNetwork pods use `Node.api_env()` (KUBERNETES_SERVICE_HOST=127.0.0.1 and the port) instead.

Requires root, the Debian packages containerd, runc, containernetworking-plugins (tools/bootstrap.sh)
and kubelet/kube-scheduler/kube-proxy from controlplane/build.sh.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from chorus.controlplane.binaries import require_binaries
from chorus.controlplane.cluster import SERVICE_CLUSTER_IP_RANGE, ControlPlane, _Component
from chorus.controlplane.localimages import pause_archive
from chorus.controlplane.oci import import_image

NODE_NAME = "chorus-node"
NODE_IP = "10.250.0.1"  # on a veth end of our own: the kubelet refuses a loopback node IP
VETH, VETH_PEER = "chorus-node0", "chorus-node1"
API_SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: first address of the service range
API_CHAIN = "CHORUS-NODE-API"
CHAIN_PREFIXES = ("KUBE-", "CNI-", "CHORUS-NODE-")
BRIDGE = "cni0"
POD_CIDR = "10.244.0.0/24"
WORKDIR_PREFIX = "chorus-node-"
LOCK_FILE = Path("/run/chorus-node.lock")
STATE_FILE = Path("/run/chorus-node.state.json")
NODE_BINARIES = ("kubelet", "kube-scheduler", "kube-proxy")
HOST_TOOLS = {"containerd": "containerd", "ctr": "containerd", "runc": "runc", "iptables": "iptables",
              "ip": "iproute2"}
CNI_BIN_DIR = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "k8s.io")
# Hard-coded paths outside the work dir, removed at teardown.
OUTSIDE_DIRS = (Path("/var/lib/kubelet/pki"), Path("/var/lib/kubelet/device-plugins"),
                Path("/var/lib/kubelet/plugins_registry"), Path("/var/lib/kubelet/plugins"),
                Path("/var/lib/kubelet/pod-resources"), Path("/var/log/containers"), Path("/var/log/pods"),
                Path("/var/lib/cni"))
OUTSIDE_MOUNT_ROOTS = ("/run/containerd", "/var/run/containerd", "/run/netns/cni-", "/var/run/netns/cni-",
                       "/var/lib/kubelet")
OWN_PROCESS_NAMES = {"containerd", "containerd-shim", "containerd-shim-runc-v2", "kubelet", "kube-proxy",
                     "kube-scheduler"}
# Host sysctls the pod network needs; the old values are restored at teardown.
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
# Waiting reasons a container does not recover from by waiting: fail fast on them.
FATAL_WAITING = {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
                 "CrashLoopBackOff", "RunContainerError", "ErrImagePull", "ImagePullBackOff"}
FATAL_EVENTS = {"FailedCreatePodSandBox"}
MNT_DETACH = 2
LOG_TAIL_LINES = 40


class NodeConfig(BaseModel):
    """How to start a node; defaults suit tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parent_dir: Path | None = Field(None, description="Where to make the work dir; None: the system's temp dir.")
    keep_workdir: bool = Field(False, description="Leave configs and logs behind after stop().")
    ready_timeout_s: float = Field(90.0, gt=0, description="Seconds to wait for the Node to be Ready.")
    lock_timeout_s: float = Field(1800.0, ge=0, description="Seconds to wait for another process's node.")
    stop_timeout_s: float = Field(5.0, gt=0, description="Seconds between SIGTERM and SIGKILL.")
    verbosity: int = Field(0, ge=0, le=10, description="klog -v level of kubelet, scheduler and proxy.")
    max_pods: int = Field(30, gt=0, description="The kubelet's maxPods.")


class NodeError(RuntimeError):
    """The node failed to start or a wait failed; the message carries diagnostics (describe, log tails)."""


def _log(msg: str) -> None:
    print(f"[chorus.controlplane.node] {msg}", flush=True)


def _run(*args: str, check: bool = False, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# ---- host state: processes, cgroups, mounts, links, iptables -------------------------------------
def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def node_processes() -> dict[int, str]:
    """Processes of a node on this machine (any run): containerd/kubelet/... whose argv names a node work dir."""
    found, mine = {}, _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        name = os.path.basename(argv[0].decode(errors="replace"))
        if name in OWN_PROCESS_NAMES and any(f"/{WORKDIR_PREFIX}".encode() in a for a in argv):
            found[int(entry.name)] = " ".join(a.decode(errors="replace") for a in argv)[:200]
    return found


def _kill_and_wait(pids: list[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL pids and wait until they are gone; returns those still alive."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _cgroup_dirs() -> list[Path]:
    """Our cgroups (/kubepods, /k8s.io) in every v1 hierarchy and the v2 tree, deepest first."""
    roots: list[Path] = []
    seen: set[str] = set()
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        hierarchies = [CGROUP_ROOT]
    else:
        hierarchies = [p for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.exists() else []
    for h in hierarchies:
        real = os.path.realpath(h)
        if real in seen:
            continue
        seen.add(real)
        for name in CGROUP_NAMES:
            top = Path(real) / name
            if top.is_dir():
                roots.append(top)
    dirs: list[Path] = []
    for top in roots:
        for dirpath, _, _ in os.walk(top):
            dirs.append(Path(dirpath))
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids() -> list[int]:
    """Processes in the node's cgroups (containers and pause processes)."""
    pids: set[int] = set()
    for d in _cgroup_dirs():
        try:
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            pass
    return sorted(pids)


def _remove_cgroups() -> list[str]:
    problems = []
    for _ in range(3):
        alive = _kill_and_wait(cgroup_pids())
        if not alive:
            break
    for d in _cgroup_dirs():
        for attempt in range(20):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 19:
                    problems.append(f"cgroup {d}: {exc}")
                else:
                    _kill_and_wait(cgroup_pids(), timeout=0.5)
                    time.sleep(0.05)
    return problems


def _mount_points() -> list[str]:
    points = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            points.append(point)
    except OSError:
        pass
    return points


def _unmount_under(prefixes: list[str]) -> list[str]:
    """Lazily unmount every mount point starting with one of prefixes, deepest first."""
    libc = ctypes.CDLL(None, use_errno=True)
    problems = []
    for _ in range(3):
        targets = sorted({p for p in _mount_points() if any(p.startswith(x) for x in prefixes)},
                         key=lambda p: p.count("/"), reverse=True)
        if not targets:
            return []
        for target in targets:
            if libc.umount2(target.encode(), MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (22, 2):  # EINVAL: not a mount point (any more); ENOENT
                    problems.append(f"umount {target}: {os.strerror(err)}")
    return problems


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _delete_links() -> list[str]:
    problems = []
    for name in (BRIDGE, VETH):
        if _link_exists(name):
            result = _run("ip", "link", "delete", name)
            if result.returncode != 0 and _link_exists(name):
                problems.append(f"ip link delete {name}: {result.stderr.strip()}")
    # Pod veths whose netns is gone vanish by themselves; ones still attached to nothing do not.
    for link in Path("/sys/class/net").iterdir() if Path("/sys/class/net").exists() else []:
        if link.name.startswith("veth") and (link / "master").exists() is False and \
                (link / "brport").exists() is False and _veth_of_cni(link.name):
            _run("ip", "link", "delete", link.name)
    return problems


def _veth_of_cni(name: str) -> bool:
    # The bridge plugin names host ends veth<8 hex>; only those, and only once cni0 is gone.
    return len(name) == 12 and all(c in "0123456789abcdef" for c in name[4:])


def node_iptables_chains() -> dict[str, list[str]]:
    """KUBE-*, CNI-* and CHORUS-NODE-* chains present, by '<iptables|ip6tables>/<table>'."""
    found: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("nat", "filter", "mangle", "raw"):
            result = _run(tool, "-w", "-t", table, "-S")
            chains = [line.split()[1] for line in result.stdout.splitlines()
                      if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES)]
            if chains:
                found[f"{tool}/{table}"] = chains
    return found


def _clean_iptables() -> list[str]:
    problems = []
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        for table in ("nat", "filter", "mangle", "raw"):
            rules = _run(tool, "-w", "-t", table, "-S").stdout.splitlines()
            ours = [line.split()[1] for line in rules
                    if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES)]
            if not ours:
                continue
            # Rules in other chains that jump to ours, then our chains (flush all, then delete).
            for line in rules:
                parts = shlex.split(line)
                if parts[:1] == ["-A"] and parts[1] not in ours and any(
                        p in ours for p in parts[2:]):
                    _run(tool, "-w", "-t", table, "-D", *parts[1:])
            for chain in ours:
                _run(tool, "-w", "-t", table, "-F", chain)
            for chain in ours:
                result = _run(tool, "-w", "-t", table, "-X", chain)
                if result.returncode != 0:
                    problems.append(f"{tool} -t {table} -X {chain}: {result.stderr.strip()}")
    return problems


def _other_containerd_running() -> bool:
    mine = set(node_processes())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in mine:
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except (OSError, IndexError):
                continue
            if os.path.basename(argv0) == b"containerd":
                return True
    return False


def cleanup_host(workdirs: Sequence[Path] = (), restore_sysctls: dict[str, str] | None = None) -> list[str]:
    """Remove everything a node leaves on the host (any run's, crashed or not); returns problems left."""
    problems: list[str] = []
    # Processes first (kubelet would restart containers; shims hold mounts), then containers.
    procs = node_processes()
    ordered = sorted(procs, key=lambda p: "containerd-shim" in procs[p])
    if alive := _kill_and_wait(ordered):
        problems.append(f"processes survived SIGKILL: {alive}")
    problems += _remove_cgroups()
    prefixes = [str(w) + "/" for w in workdirs] + list(OUTSIDE_MOUNT_ROOTS)
    problems += _unmount_under(prefixes)
    for netns_dir in (Path("/run/netns"), Path("/var/run/netns")):
        if netns_dir.is_dir():
            for f in netns_dir.glob("cni-*"):
                f.unlink(missing_ok=True)
    problems += _delete_links()
    problems += _clean_iptables()
    for d in OUTSIDE_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    for d in ("/var/lib/kubelet", "/run/netns"):  # created for us; removed only when empty
        try:
            os.rmdir(d)
        except OSError:
            pass
    if not _other_containerd_running():
        shutil.rmtree("/run/containerd", ignore_errors=True)
    for w in workdirs:
        shutil.rmtree(w, ignore_errors=True)
        if w.exists():
            problems.append(f"work dir {w} could not be removed")
    for key, value in (restore_sysctls or {}).items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError:
            pass
    return problems


def leftovers() -> list[str]:
    """What a node left on this host, one line each ('' list when clean): for tests of teardown."""
    found = [f"process {pid}: {cmd}" for pid, cmd in node_processes().items()]
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    found += [f"link {name}" for name in (BRIDGE, VETH) if _link_exists(name)]
    found += [f"iptables {table}: {', '.join(chains)}" for table, chains in node_iptables_chains().items()]
    found += [f"mount {p}" for p in _mount_points()
              if p.startswith(OUTSIDE_MOUNT_ROOTS) or f"/{WORKDIR_PREFIX}" in p]
    found += [f"path {d}" for d in OUTSIDE_DIRS if d.exists()]
    found += [f"netns {f}" for f in Path("/run/netns").glob("cni-*")] if Path("/run/netns").is_dir() else []
    return found


# ---- the node ------------------------------------------------------------------------------------
class Node:
    """containerd + kubelet + kube-scheduler + kube-proxy joined to a running ControlPlane, as a context manager."""

    def __init__(self, control_plane: ControlPlane, config: NodeConfig | None = None) -> None:
        self.cp = control_plane
        self.config = config or NodeConfig()
        self.binaries = require_binaries(control_plane.bin_dir, NODE_BINARIES)
        missing = [f"{tool} (Debian package {pkg})" for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)]
        if not (CNI_BIN_DIR / "bridge").exists():
            missing.append(f"{CNI_BIN_DIR}/bridge (Debian package containernetworking-plugins)")
        if missing:
            raise NodeError(f"a real node needs {', '.join(missing)}: run tools/bootstrap.sh")
        if os.geteuid() != 0:
            raise NodeError("a real node needs root (containers, cgroups, iptables, mounts)")
        self.name = NODE_NAME
        self.ip = NODE_IP
        self.workdir: Path | None = None
        self.startup_s = 0.0
        self.teardown_s = 0.0
        self.timings: dict[str, float] = {}
        self.pause_image = ""
        self._components: list[_Component] = []
        self._lock_fd: int | None = None
        self._sysctls: dict[str, str] = {}
        self._archives: list[Path] = []  # loaded images, loaded again by a restart

    # ---- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> Node:
        """Take the machine's node lock, clean leftovers, start the components and wait for Ready."""
        if self._components:
            raise NodeError("this Node is already running; stop() it first")
        if not self.cp.running:
            raise NodeError("the control plane this node should join is not running")
        started = time.monotonic()
        self._lock()
        try:
            self._step("cleanup of an earlier run", self._clean_previous)
            parent = self.config.parent_dir
            if parent:
                parent.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
            STATE_FILE.write_text(json.dumps({"workdir": str(self.workdir), "pid": os.getpid()}))
            self._step("host network", self._setup_host)
            archive, self.pause_image = self._step("pause image", pause_archive)
            self._write_configs()
            self._step("containerd", self._start_containerd)
            self._step("pause image import", lambda: import_image(archive, address=self.containerd_address))
            for image in list(self._archives):  # what a stop() discarded with containerd's store
                self.load_image(image)
            self._spawn("kubelet", self._kubelet_args())
            self._spawn("kube-proxy", self._proxy_args())
            self._spawn("kube-scheduler", self._scheduler_args())
            self._step("node Ready", self._wait_ready)
        except BaseException:
            try:
                if self.workdir and self._components:
                    _log(f"start failed; diagnostics:\n{self.diagnose()}")
            finally:
                self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every component and remove all the node left on the host; raises NodeError if some remains."""
        started = time.monotonic()
        problems: list[str] = []
        try:
            if self._components and self.cp.running:
                # Forget the node and its pods, so a later node starts from a clean slate.
                self.cp.kubectl("delete", "pods", "--all-namespaces", "--force", "--grace-period=0",
                                f"--field-selector=spec.nodeName={self.name}", "--wait=false", timeout=20)
                self.cp.kubectl("delete", "node", self.name, "--wait=false", timeout=20)
            self._terminate_components()
            if self._lock_fd is not None:
                problems = cleanup_host([self.workdir] if self.workdir and not self.config.keep_workdir else [],
                                        self._sysctls)
                if self.config.keep_workdir and self.workdir:
                    _unmount_under([str(self.workdir) + "/"])
                STATE_FILE.unlink(missing_ok=True)
        finally:
            self._sysctls = {}
            self._unlock()
            self.teardown_s = time.monotonic() - started
        if problems:
            raise NodeError("node teardown left things behind:\n" + "\n".join(problems))

    @property
    def running(self) -> bool:
        """True while every component process is alive."""
        return bool(self._components) and all(c.process.poll() is None for c in self._components)

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each started component, by name."""
        return {c.name: c.process.pid for c in self._components}

    @property
    def containerd_address(self) -> Path:
        """containerd's socket (for `ctr --address` / crictl)."""
        assert self.workdir, "node not started"
        return self.workdir / "containerd" / "containerd.sock"

    def log_path(self, component: str) -> Path:
        """The log file of 'containerd', 'kubelet', 'kube-proxy' or 'kube-scheduler'."""
        for c in self._components:
            if c.name == component:
                return c.log_path
        raise KeyError(f"no component {component!r}; running: {[c.name for c in self._components]}")

    # ---- what tests use ------------------------------------------------------------------------
    def load_image(self, archive: Path) -> str:
        """Import an OCI archive (chorus.controlplane.oci) into the node's containerd; returns its name.

        The node remembers the archive and imports it again if it is stopped and started.
        """
        started = time.monotonic()
        name = import_image(archive, address=self.containerd_address)
        if Path(archive) not in self._archives:
            self._archives.append(Path(archive))
        self.timings[f"import {name}"] = time.monotonic() - started
        return name

    def api_env(self) -> dict[str, str]:
        """Env for a hostNetwork pod to reach the API server (it listens on 127.0.0.1 only)."""
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.cp.secure_port)}

    def kubectl(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        """kubectl against the control plane, as ControlPlane.kubectl."""
        return self.cp.kubectl(*args, **kwargs)

    def diagnose(self, namespace: str | None = None, selector: str | None = None) -> str:
        """Text for a failure: pods/nodes, `kubectl describe` of pods not Ready, events, component log tails."""
        ns = ["-n", namespace] if namespace else ["--all-namespaces"]
        sel = ["-l", selector] if selector else []
        parts = []

        def section(title: str, text: str) -> None:
            parts.append(f"----- {title}\n{text.strip()}")

        def kc(*args: str) -> str:
            try:
                r = self.cp.kubectl(*args, timeout=20)
                return r.stdout + r.stderr
            except (subprocess.TimeoutExpired, OSError) as exc:
                return f"(kubectl {' '.join(args)} failed: {exc})"

        section("kubectl get nodes", kc("get", "nodes", "-o", "wide"))
        section("kubectl get pods", kc("get", "pods", *ns, *sel, "-o", "wide"))
        stuck = self._not_ready_pods(namespace, selector)
        for pod_ns, pod in stuck[:5]:
            section(f"kubectl describe pod -n {pod_ns} {pod}", kc("describe", "pod", "-n", pod_ns, pod))
        if not stuck:
            section("kubectl describe node", kc("describe", "node", self.name)[-3000:])
        events = kc("get", "events", *ns, "--sort-by=.lastTimestamp")
        section("events (last 30)", "\n".join(events.splitlines()[-30:]))
        for c in self._components:
            state = "running" if c.process.poll() is None else f"exited with code {c.process.returncode}"
            section(f"{c.name} ({state}), last lines of {c.log_path}", c.tail())
        return "\n".join(parts)

    def wait_pods_ready(self, namespace: str, selector: str, timeout: float = 60.0, count: int = 1) -> list[dict]:
        """Wait until at least count pods match and all are Ready; raise NodeError with diagnose() otherwise.

        Fails at once (not at the timeout) on a container state that waiting does not cure
        (ErrImageNeverPull, CrashLoopBackOff, ...), a pod sandbox that could not be created, or a
        component that died.
        """
        deadline = time.monotonic() + timeout
        last = "no pods yet"
        while True:
            pods = self._pods(namespace, selector)
            ready = [p for p in pods if pod_ready(p)]
            if len(pods) >= count and len(ready) == len(pods):
                return pods
            last = f"{len(ready)}/{len(pods)} pods Ready (want >= {count})"
            if fatal := self._fatal(namespace, pods):
                raise NodeError(f"pods {selector!r} in {namespace} will not become Ready: {fatal}\n"
                                f"{self.diagnose(namespace, selector)}")
            if time.monotonic() > deadline:
                raise NodeError(f"pods {selector!r} in {namespace} not Ready after {timeout:.0f}s ({last})\n"
                                f"{self.diagnose(namespace, selector)}")
            time.sleep(0.5)

    def wait_job_complete(self, namespace: str, name: str, timeout: float = 60.0) -> dict:
        """Wait until Job name has succeeded; raise NodeError with diagnose() when it fails or times out."""
        deadline = time.monotonic() + timeout
        selector = f"batch.kubernetes.io/job-name={name}"
        while True:
            r = self.cp.kubectl("get", "job", "-n", namespace, name, "-o", "json", timeout=20)
            job = json.loads(r.stdout) if r.returncode == 0 else {}
            conditions = {c["type"]: c for c in job.get("status", {}).get("conditions", [])
                          if c.get("status") == "True"}
            if "Complete" in conditions:
                return job
            problem = ""
            if "Failed" in conditions:
                problem = f"Job failed: {conditions['Failed'].get('reason')}: {conditions['Failed'].get('message')}"
            elif fatal := self._fatal(namespace, self._pods(namespace, selector)):
                problem = fatal
            elif time.monotonic() > deadline:
                problem = f"not complete after {timeout:.0f}s"
            if problem:
                raise NodeError(f"Job {namespace}/{name}: {problem}\n{self.diagnose(namespace, selector)}")
            time.sleep(0.5)

    # ---- internals -----------------------------------------------------------------------------
    def _step(self, what: str, fn):
        started = time.monotonic()
        result = fn()
        self.timings[what] = time.monotonic() - started
        return result

    def _lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.config.lock_timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise NodeError(f"another test node holds {LOCK_FILE} (pid {holder}) after "
                                    f"{self.config.lock_timeout_s:.0f}s: one node per machine") from None
                if not announced:
                    _log(f"waiting for {LOCK_FILE}: another process runs the machine's test node")
                    announced = True
                time.sleep(1.0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clean_previous(self) -> None:
        workdirs = []
        sysctls = {}
        try:
            state = json.loads(STATE_FILE.read_text())
            workdirs.append(Path(state["workdir"]))
            sysctls = state.get("sysctls", {})
        except (OSError, ValueError, KeyError):
            pass
        if workdirs or (found := leftovers()):
            _log(f"removing what an earlier node left: {workdirs or found}")
            if problems := cleanup_host(workdirs, sysctls):
                raise NodeError("cannot clean up an earlier node's leftovers:\n" + "\n".join(problems))
        STATE_FILE.unlink(missing_ok=True)

    def _setup_host(self) -> None:
        for key, value in SYSCTLS.items():
            path = Path("/proc/sys", key)
            if path.exists():
                old = path.read_text().strip()
                if old != value:
                    self._sysctls[key] = old
                    path.write_text(value)
        STATE_FILE.write_text(json.dumps({"workdir": str(self.workdir), "pid": os.getpid(),
                                          "sysctls": self._sysctls}))
        for cmd in (("ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER),
                    ("ip", "addr", "add", f"{NODE_IP}/32", "dev", VETH),
                    ("ip", "link", "set", VETH, "up"), ("ip", "link", "set", VETH_PEER, "up"),
                    # Service traffic from the host stays off the real interfaces even before
                    # kube-proxy's rules exist (they DNAT it to pods on cni0).
                    ("ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", VETH, "src", NODE_IP),
                    # The bridge exists before the first pod (the bridge plugin adopts it), so that
                    # pods may reach the API server on loopback: `kubernetes` (10.96.0.1:443) is
                    # DNATed to 127.0.0.1:<port>, which the kernel routes only with route_localnet.
                    ("ip", "link", "add", BRIDGE, "type", "bridge"), ("ip", "link", "set", BRIDGE, "up"),
                    ("iptables", "-w", "-t", "nat", "-N", API_CHAIN),
                    ("iptables", "-w", "-t", "nat", "-A", API_CHAIN, "-i", BRIDGE, "-d", f"{API_SERVICE_IP}/32",
                     "-p", "tcp", "--dport", "443", "-j", "DNAT",
                     "--to-destination", f"127.0.0.1:{self.cp.secure_port}"),
                    ("iptables", "-w", "-t", "nat", "-I", "PREROUTING", "1", "-j", API_CHAIN)):
            result = _run(*cmd)
            if result.returncode != 0:
                raise NodeError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
            if cmd[:3] == ("ip", "link", "add") and cmd[3] == BRIDGE:
                Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")

    def _write_configs(self) -> None:
        w = self.workdir
        assert w
        for d in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "kubelet-pki", "runc", "logs"):
            (w / d).mkdir(parents=True, exist_ok=True)
        kubeconfig = w / "kubeconfig"
        shutil.copyfile(self.cp.kubeconfig, kubeconfig)
        kubeconfig.chmod(0o600)
        conflist = {
            "cniVersion": "0.4.0", "name": "chorus",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(w / "cni" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (w / "cni" / "net.d" / "10-chorus.conflist").write_text(json.dumps(conflist, indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (w / "containerd" / "config.toml").write_text(f"""\
version = 2
root = "{w}/containerd/root"
state = "{w}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.containerd_address}"
[ttrpc]
  address = "{self.containerd_address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/containerd/opt"
[{cri}]
  sandbox_image = "{self.pause_image}"
  # containerd gives the pause container oomScoreAdj -998, which this root may not set.
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{w}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{w}/cni/net.d"
""")
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "address": "0.0.0.0", "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.cp.pki.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "maxPods": self.config.max_pods, "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s", "fileCheckFrequency": "20s",
            "registerNode": True, "podCIDR": POD_CIDR, "makeIPTablesUtilChains": True,
            "containerLogMaxSize": "5Mi", "containerLogMaxFiles": 2,
        }
        (w / "kubelet.yaml").write_text(yaml.safe_dump(kubelet, sort_keys=False))

    def _start_containerd(self) -> None:
        w = self.workdir
        assert w
        self._spawn("containerd", ["--config", str(w / "containerd" / "config.toml"), "--log-level", "warn"],
                    binary=shutil.which("containerd"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive("containerd")
            r = _run("ctr", "--address", str(self.containerd_address), "version", timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise NodeError(f"containerd did not answer on {self.containerd_address} within 30s:\n"
                        f"{_tail(w / 'logs' / 'containerd.log')}")

    def _kubelet_args(self) -> list[str]:
        w = self.workdir
        assert w
        return [f"--config={w / 'kubelet.yaml'}", f"--kubeconfig={w / 'kubeconfig'}", f"--root-dir={w / 'kubelet'}",
                f"--cert-dir={w / 'kubelet-pki'}", f"--hostname-override={self.name}", f"--node-ip={NODE_IP}",
                f"--v={self.config.verbosity}"]

    def _proxy_args(self) -> list[str]:
        w = self.workdir
        assert w
        return [f"--kubeconfig={w / 'kubeconfig'}", "--proxy-mode=iptables", "--conntrack-max-per-core=0",
                f"--cluster-cidr={POD_CIDR}", f"--hostname-override={self.name}",
                "--iptables-localhost-nodeports=false",  # would set route_localnet on the host
                "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
                f"--v={self.config.verbosity}"]

    def _scheduler_args(self) -> list[str]:
        w = self.workdir
        assert w
        return [f"--kubeconfig={w / 'kubeconfig'}", f"--authentication-kubeconfig={w / 'kubeconfig'}",
                f"--authorization-kubeconfig={w / 'kubeconfig'}", "--leader-elect=false",
                "--secure-port=0", f"--v={self.config.verbosity}"]

    def _spawn(self, name: str, args: list[str], binary: str | None = None) -> None:
        w = self.workdir
        assert w
        self._components.append(_Component.spawn(name, [binary or str(self.binaries[name]), *args],
                                                 w / "logs" / f"{name}.log", w))

    def _check_alive(self, *names: str) -> None:
        for c in self._components:
            if (not names or c.name in names) and c.process.poll() is not None:
                raise NodeError(f"{c.name} exited with code {c.process.returncode}; log {c.log_path}, "
                                f"last lines:\n{c.tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        last = "not registered yet"
        while time.monotonic() < deadline:
            self._check_alive()
            r = self.cp.kubectl("get", "node", self.name, "-o", "json", timeout=20)
            if r.returncode == 0:
                conditions = {c["type"]: c for c in json.loads(r.stdout).get("status", {}).get("conditions", [])}
                ready = conditions.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = f"Ready={ready.get('status')}: {ready.get('reason')}: {ready.get('message')}"
            time.sleep(0.25)
        raise NodeError(f"node {self.name} not Ready after {self.config.ready_timeout_s:.0f}s ({last})")

    def _terminate_components(self) -> None:
        # kubelet first (it would restart what we stop), containerd last.
        for c in reversed(self._components):
            if c.process.poll() is None:
                try:
                    os.killpg(c.process.pid, signal.SIGTERM)
                    c.process.wait(timeout=self.config.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(c.process.pid, signal.SIGKILL)
                    c.process.wait()
                except ProcessLookupError:
                    c.process.wait()
            c.log_file.close()
        self._components.clear()

    def _pods(self, namespace: str, selector: str) -> list[dict]:
        r = self.cp.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json", timeout=20)
        return json.loads(r.stdout).get("items", []) if r.returncode == 0 else []

    def _not_ready_pods(self, namespace: str | None, selector: str | None) -> list[tuple[str, str]]:
        args = ["get", "pods", "-n", namespace] if namespace else ["get", "pods", "--all-namespaces"]
        if selector:
            args += ["-l", selector]
        r = self.cp.kubectl(*args, "-o", "json", timeout=20)
        items = json.loads(r.stdout).get("items", []) if r.returncode == 0 else []
        return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in items
                if not pod_ready(p) and p.get("status", {}).get("phase") != "Succeeded"]

    def _fatal(self, namespace: str, pods: list[dict]) -> str:
        """A reason waiting longer will not help, or ''."""
        for c in self._components:
            if c.process.poll() is not None:
                return f"{c.name} exited with code {c.process.returncode}"
        for pod in pods:
            statuses = pod.get("status", {}).get("containerStatuses", []) + \
                pod.get("status", {}).get("initContainerStatuses", [])
            for s in statuses:
                waiting = s.get("state", {}).get("waiting") or {}
                if waiting.get("reason") in FATAL_WAITING:
                    return (f"pod {pod['metadata']['name']} container {s['name']}: {waiting['reason']}: "
                            f"{waiting.get('message', '')}")
        if pods:
            r = self.cp.kubectl("get", "events", "-n", namespace, "-o", "json", timeout=20)
            names = {p["metadata"]["name"] for p in pods}
            for event in json.loads(r.stdout).get("items", []) if r.returncode == 0 else []:
                obj = event.get("involvedObject", {})
                if event.get("reason") in FATAL_EVENTS and obj.get("name") in names:
                    return f"pod {obj['name']}: {event['reason']}: {event.get('message', '')}"
        return ""


def pod_ready(pod: dict) -> bool:
    """Whether a pod (as the API returns it) has condition Ready=True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


__all__ = ["NODE_IP", "NODE_NAME", "Node", "NodeConfig", "NodeError", "cleanup_host", "leftovers", "node_processes",
           "pod_ready"]
