"""Operator benchmark: apply -> Ready for 1 tenant, then p50/p99 over 200 applied at once, and the operator's memory.

Starts a real control plane (chorus.controlplane) and the operator as a subprocess, creates
VoiceTenants through the API (the moment each create returns counts as "applied", as with
`kubectl apply`) and watches them until their Ready condition is True. Prints JSON lines and
writes bench/results/operator.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import emit, machine_info, write_results
from chorus.controlplane.cluster import ControlPlane, ControlPlaneConfig
from chorus.operator.kube import KubeClient, load_connection, object_path
from chorus.operator.process import OperatorProcess
from chorus.operator.testing import get_json, install_crds, tenant_manifest, wait_until

TARGETS = {"p50_s": 2.0, "p99_s": 10.0, "rss_mb": 250.0}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def cpu_seconds(operator_pid: int) -> dict[str, float]:
    """CPU time (user + system) so far of the operator, this benchmark and each control-plane server we started."""
    procs = {"operator": psutil.Process(operator_pid), "bench": psutil.Process()}
    for child in psutil.Process().children(recursive=True):
        name = child.name()
        if name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            procs[name] = child
    return {name: sum(proc.cpu_times()[:2]) for name, proc in procs.items()}


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")


def request_counts(cp: ControlPlane, verbs: tuple[str, ...] | None = WRITE_VERBS) -> dict[str, int]:
    """Requests the API server has served so far (only `verbs`; None: all), as 'VERB resource[/sub] code' -> count."""
    status, body = cp.get("/metrics", timeout=30)
    counts: dict[str, int] = {}
    for line in body.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
        labels = {k: v.strip('"') for k, v in labels.items()}
        if verbs is None or labels.get("verb") in verbs:
            resource = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
            key = f"{labels['verb']} {resource} {labels.get('code', '')}"
            counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def count_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before, only the keys that changed."""
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v != before.get(k, 0)}


def quiet_writes(cp: ControlPlane, timeout: float = 60.0) -> None:
    """Wait until no client writes anything but leases and peering heartbeats for 3 s."""
    def counts() -> dict[str, int]:
        return {k: v for k, v in request_counts(cp).items() if "leases" not in k and "clusterkopfpeerings" not in k}
    deadline, last = time.monotonic() + timeout, counts()
    while time.monotonic() < deadline:
        time.sleep(3)
        now = counts()
        if now == last:
            return
        last = now


def restart_writes(cp: ControlPlane, operator: OperatorProcess, log_path: Path, settings: dict,
                   settle_s: float) -> tuple[dict[str, int], float]:
    """Restart the operator over the existing tenants; the writes it caused (other than its peering heartbeat)."""
    operator.stop()
    quiet_writes(cp)  # the controller manager may still be filling new namespaces (ServiceAccounts)
    before = request_counts(cp)
    with OperatorProcess(cp.kubeconfig, log_path, settings) as second:
        time.sleep(settle_s)  # resume handlers run for every tenant; a level-based operator writes nothing
        after = request_counts(cp)
        rss = second.rss_bytes()
    diff = count_diff(before, after)
    return {k: v for k, v in diff.items() if "clusterkopfpeerings" not in k and "leases" not in k}, rss


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""


def audit_breakdown(log_path: Path, names: list[str]) -> dict[str, float]:
    """Requests per tenant, from the API server's audit log: 'client VERB resource[/sub] code' -> mean count.

    A request belongs to tenant N if it names N, its namespace tenant-N, its record tenant-N, or
    is an Event about it (generateName N.); requests that name no tenant (leases, lists, watches)
    are left out. The client is the first word of the User-Agent.
    """
    wanted = set(names)
    counts: dict[str, int] = {}
    with open(log_path) as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            name, ns = ref.get("name", ""), ref.get("namespace", "")
            candidates = {name, name.split(".", 1)[0], ns.removeprefix("tenant-"), name.removeprefix("tenant-")}
            if not candidates & wanted:
                continue
            resource = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
            agent = (event.get("userAgent") or "?").split("/", 1)[0].split(" ", 1)[0]
            code = (event.get("responseStatus") or {}).get("code", "")
            key = f"{agent} {event['verb']} {resource} {code}"
            counts[key] = counts.get(key, 0) + 1
    return {k: round(v / len(names), 2) for k, v in sorted(counts.items())}


class ReadyWatch:
    """Watches VoiceTenants and records when each first reports Ready=True (monotonic clock)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.ready_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Begin watching from the current resource version."""
        listing = await self.kube.request("GET", object_path("VoiceTenant"))
        self._task = asyncio.create_task(self._run(listing["metadata"]["resourceVersion"]))

    async def _run(self, version: str) -> None:
        while True:
            params = {"resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
            async for event in self.kube.watch(object_path("VoiceTenant"), params):
                obj = event["object"]
                version = obj["metadata"].get("resourceVersion", version)
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._see(obj)

    def _see(self, obj: dict) -> None:
        name = obj["metadata"]["name"]
        conds = (obj.get("status") or {}).get("conditions") or []
        if name not in self.ready_at and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
            self.ready_at[name] = time.monotonic()
            waiter = self.waiters.get(name)
            if waiter and not waiter.done():
                waiter.set_result(None)

    async def wait(self, names: list[str], timeout: float) -> None:
        """Wait until every name is Ready, or the timeout passes."""
        loop = asyncio.get_running_loop()
        pending = []
        for name in names:
            if name not in self.ready_at:
                self.waiters[name] = loop.create_future()
                pending.append(self.waiters[name])
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def stop(self) -> None:
        """Stop watching."""
        if self._task:
            self._task.cancel()


async def create_all(kube: KubeClient, manifests: list[dict], concurrency: int) -> dict[str, float]:
    """Create the tenants, at most `concurrency` requests in flight; name -> when its create returned."""
    created: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(manifest: dict) -> None:
        async with gate:
            await kube.create(manifest)
            created[manifest["metadata"]["name"]] = time.monotonic()

    await asyncio.gather(*(one(m) for m in manifests))
    return created


async def measure(cp: ControlPlane, operator: OperatorProcess, tenants: int, concurrency: int,
                  timeout: float) -> dict:
    """The benchmark proper, against a running control plane and operator."""
    kube = KubeClient(load_connection(cp.kubeconfig), "chorus-bench", max_connections=concurrency + 4)
    watch = ReadyWatch(kube)
    await watch.start()
    rss_peak = 0
    loads: list[float] = []

    async def sample_rss() -> None:
        nonlocal rss_peak
        ticks = 0
        while True:
            rss_peak = max(rss_peak, operator.rss_bytes())
            if ticks % 4 == 0:
                loads.append(psutil.getloadavg()[0])
            ticks += 1
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_rss())
    voices = [{"name": "narrator", "samples": {"uri": "s3://bench/clips/"}},
              {"name": "promo", "adapter": {"uri": "s3://bench/adapters/promo"}}]
    try:
        # A first tenant, not measured: the operator's watches may still be starting.
        await create_all(kube, [tenant_manifest("bench-warmup", voices=voices)], 1)
        await watch.wait(["bench-warmup"], timeout)
        single = tenant_manifest("bench-single", voices=voices)
        created = await create_all(kube, [single], 1)
        await watch.wait(["bench-single"], timeout)
        single_s = watch.ready_at["bench-single"] - created["bench-single"]
        emit({"metric": "single_apply_to_ready_s", "value": round(single_s, 3)})
        rss_one = operator.rss_bytes()

        names = [f"bench-{i:03d}" for i in range(tenants)]
        cpu_before = cpu_seconds(operator.pid)
        load_before = round(psutil.getloadavg()[0], 2)
        requests_before = request_counts(cp, None)
        loads.clear()
        started = time.monotonic()
        created = await create_all(kube, [tenant_manifest(n, voices=voices) for n in names], concurrency)
        applied_s = time.monotonic() - started
        await watch.wait(names, timeout)
        done_s = time.monotonic() - started
        latencies = [watch.ready_at[n] - created[n] for n in names if n in watch.ready_at]
        missing = [n for n in names if n not in watch.ready_at]
        cpu_after = cpu_seconds(operator.pid)
        batch_loads = list(loads)
        requests = count_diff(requests_before, request_counts(cp, None))
        await asyncio.sleep(2)  # settle, then read the memory the operator keeps for all tenants
        rss_all = operator.rss_bytes()
    finally:
        sampler.cancel()
        await watch.stop()
        await kube.close()
    result = {
        "tenants": tenants,
        "create_concurrency": concurrency,
        "single_apply_to_ready_s": round(single_s, 3),
        "batch_apply_s": round(applied_s, 3),
        "batch_all_ready_s": round(done_s, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "not_ready": len(missing),
        "rss_mb_one_tenant": round(rss_one / 2**20, 1),
        "rss_mb_all_tenants": round(rss_all / 2**20, 1),
        "rss_mb_peak": round(rss_peak / 2**20, 1),
        # Where the work went while the batch ran, and how busy the machine was besides.
        "batch_cpu_s": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
        # Operator and control plane only (not this benchmark's own creates and watch).
        "batch_cpu_ms_per_tenant": round(1000 * sum(cpu_after[k] - cpu_before.get(k, 0.0)
                                                    for k in cpu_after if k != "bench") / tenants, 1),
        # Cores the operator and control plane got on average while the batch ran (2 = the whole machine).
        "batch_cores_used": round(sum(cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after if k != "bench")
                                  / done_s, 2),
        "load_avg_1m_before_batch": load_before,
        "load_avg_1m_during_batch": {"min": round(min(batch_loads), 2), "max": round(max(batch_loads), 2),
                                     "samples_1s": [round(x, 2) for x in batch_loads]} if batch_loads else None,
        # API requests while the batch ran (every client, the 200 creates included), per tenant.
        "batch_writes_per_tenant": round(sum(v for k, v in requests.items()
                                             if k.split()[0] in WRITE_VERBS) / tenants, 2),
        "batch_reads_per_tenant": round(sum(v for k, v in requests.items()
                                            if k.split()[0] not in WRITE_VERBS) / tenants, 2),
        "batch_requests_per_tenant": {k: round(v / tenants, 2) for k, v in requests.items()},
    }
    result["targets"] = TARGETS
    result["pass"] = bool(latencies) and not missing and result["p50_s"] <= TARGETS["p50_s"] and \
        result["p99_s"] <= TARGETS["p99_s"] and result["rss_mb_peak"] <= TARGETS["rss_mb"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 0 whether or not targets are met (the JSON says)."""
    parser = argparse.ArgumentParser(prog="python -m bench.operator", description=__doc__)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight at once")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Ready")
    parser.add_argument("--log-level", default="WARNING", help="operator log level")
    parser.add_argument("--max-concurrent", type=int, default=8, help="operator's max_concurrent_reconciles")
    parser.add_argument("--crd-settle", type=float, default=35.0,
                        help="seconds between installing the CRDs and the first tenant")
    parser.add_argument("--audit", action="store_true",
                        help="turn on the API server's audit log (costs it CPU) and break requests down per tenant "
                             "by client, verb and resource")
    parser.add_argument("--restart-settle", type=float, default=30.0,
                        help="seconds to let a restarted operator resume every tenant before counting its writes")
    args = parser.parse_args(argv)

    boot = time.monotonic()
    tmp_dir = tempfile.TemporaryDirectory(prefix="chorus-bench-")
    tmp = tmp_dir.name
    config = ControlPlaneConfig()
    if args.audit:
        (Path(tmp) / "audit-policy.yaml").write_text(AUDIT_POLICY)
        config = ControlPlaneConfig(extra_apiserver_args=(
            f"--audit-policy-file={tmp}/audit-policy.yaml", f"--audit-log-path={tmp}/audit.log",
            "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxsize=0"))
    with tmp_dir, ControlPlane(config) as cp:
        emit({"metric": "control_plane_start_s", "value": round(time.monotonic() - boot, 2),
              "kubernetes": cp.version().get("gitVersion")})
        install_crds(cp.kubectl)
        # In a real cluster the CRD exists long before tenants do. Right after installing it, the
        # controller manager's garbage collector does not yet know VoiceTenants (it re-reads API
        # discovery every 30 s) and verifies the owner of every new child with extra API calls.
        time.sleep(args.crd_settle)
        settings = {"log_level": args.log_level, "peering_name": "bench",
                    "max_concurrent_reconciles": args.max_concurrent}
        with OperatorProcess(cp.kubeconfig, Path(tmp) / "operator.log", settings) as operator:
            # The operator logs at WARNING here, so wait for its heartbeat in the peering object instead.
            wait_until(lambda: (get_json(cp.kubectl, "clusterkopfpeering", "bench") or {}).get("status"),
                       timeout=120, what="operator heartbeat in ClusterKopfPeering bench")
            try:
                result = asyncio.run(measure(cp, operator, args.tenants, args.concurrency, args.timeout))
            except BaseException:
                print(operator.log_text()[-4000:], file=sys.stderr)
                raise
            if args.audit:
                result["audit_requests_per_tenant"] = audit_breakdown(
                    Path(tmp) / "audit.log", [f"bench-{i:03d}" for i in range(args.tenants)])
            errors = [line for line in operator.log_text().splitlines() if " ERROR " in line or "Traceback" in line]
            result["operator_error_lines"] = len(errors)
            writes, rss = restart_writes(cp, operator, Path(tmp) / "restarted.log", settings, args.restart_settle)
            result["restart_writes"] = writes  # expected {}: resuming 200 tenants changes nothing
            result["restart_rss_mb"] = round(rss / 2**20, 1)
            emit({"metric": "restart_writes", "value": writes})
    result["audit_log"] = args.audit
    result["operator_settings"] = {"max_concurrent_reconciles": args.max_concurrent, "log_level": args.log_level,
                                   "kopf_batch_window_s": 0.05, "kopf_posting_level": "WARNING"}
    result["machine"] = machine_info()
    emit({"metric": "operator", **result})
    write_results("operator", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
