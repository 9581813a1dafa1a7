"""The Ray Serve application: an ingress (FastAPI), the synthesis deployment and the tenants' limiter.

`build_app(ServingArgs)` is a typed application builder, usable as
`serve run chorus.serving.app:build_app tenants_file=tenants.yaml`, from a Serve config file
(`import_path: chorus.serving.app:build_app` with `args:`) and from KubeRay's `serveConfigV2`.
- `Synthesis` holds the base model once per replica and serves every voice (chorus.serving.speaker);
  requests name their voice by a multiplexed model id (tenant/voice@version), so Ray routes a voice to
  a replica where it is already loaded. Its queue is bounded: past it, callers get 503 at once.
- `Limits` (one replica) counts every tenant's requests per minute and requests in flight for all
  ingress replicas together.
- `Ingress` authenticates (tenants from a file or from Kubernetes), applies the limits and streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from chorus.serving.limits import Decision, TenantLimiter
from chorus.serving.tenants import DEFAULT_VOICE, Tenant, TenantDirectory
from chorus.serving.voices import VoiceKey, VoiceUnavailable

log = logging.getLogger(__name__)

BASE_SAMPLE_RATE = 22_050
"""The base voice's rate (checked against the loaded voice by the synthesis replicas)."""


class ServingArgs(BaseModel):
    """Arguments of the Chorus serving application (one source of tenants: a file or Kubernetes)."""

    model_config = ConfigDict(extra="forbid")

    tenants_file: Path | None = Field(None, description="YAML file of tenants, key hashes and voices (watched)")
    kubernetes_namespace: str | None = Field(
        None, description="read tenants from the operator's tenant-record ConfigMaps in this namespace")
    kubeconfig: Path | None = Field(None, description="kubeconfig for the Kubernetes source; unset: KUBECONFIG, "
                                                      "then in-cluster")
    synthesis_replicas: int = Field(1, ge=1, le=64, description="synthesis replicas (each holds the base model once)")
    synthesis_cpus: float = Field(1.0, ge=0, le=64, description="CPUs Ray reserves per synthesis replica")
    threads: int = Field(2, ge=1, le=64, description="ONNX Runtime intra-op threads per synthesis")
    workers: int = Field(1, ge=1, le=16, description="syntheses running at once per replica (threads each)")
    max_ongoing_requests: int = Field(4, ge=1, le=256, description="requests a synthesis replica accepts at once")
    max_queued_requests: int = Field(8, ge=0, le=10_000, description="requests waiting per deployment; past it: 503")
    voice_cache_mb: float = Field(256.0, gt=0, description="merged voices kept per replica, in MB (LRU)")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 26, description="largest request body accepted")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// adapters")
    ingress_replicas: int = Field(1, ge=1, le=64, description="ingress replicas")

    @model_validator(mode="after")
    def _one_source(self) -> "ServingArgs":
        if (self.tenants_file is None) == (self.kubernetes_namespace is None):
            raise ValueError("give exactly one tenant source: tenants_file or kubernetes_namespace")
        return self

    def storage_options(self, uri: str) -> dict:
        """fsspec options for an adapter URI."""
        if uri.startswith("s3://") and self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Synthesis:
    """The base model once, every voice: streams chunks of audio for one request at a time per worker."""

    def __init__(self, args: ServingArgs):
        from chorus.serving.speaker import Speaker

        self.args = args
        self.speaker = Speaker(threads=args.threads, voice_cache_mb=args.voice_cache_mb,
                               storage_options=args.storage_options)
        if self.speaker.sample_rate != BASE_SAMPLE_RATE:
            raise RuntimeError(f"base voice rate {self.speaker.sample_rate} != {BASE_SAMPLE_RATE}")
        self.pool = ThreadPoolExecutor(args.workers, thread_name_prefix="chorus-synth")
        self.slots = asyncio.Semaphore(args.workers)
        self.waiting = 0
        self.keys: dict[str, VoiceKey] = {}
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (tests of the class itself)
            self.replica = f"pid-{os.getpid()}"

    def ready(self) -> bool:
        """The base model is loaded (the constructor finished)."""
        return True

    @serve.multiplexed(max_num_models_per_replica=256)
    async def _attach(self, model_id: str) -> VoiceKey:
        """Load a voice into this replica's cache; Ray then routes this voice's requests here."""
        key = self.keys[model_id]
        await asyncio.get_running_loop().run_in_executor(self.pool, self.speaker.cache.get, key)
        return key

    async def _run(self, fn, *args):
        """Run blocking work on a worker thread once a slot is free (`waiting` counts those queued)."""
        self.waiting += 1
        async with self.slots:
            self.waiting -= 1
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def speak(self, request: dict):
        """Items: {"audio", "words"} per chunk, then {"done": stats}; or one {"error"} before any audio."""
        started = time.perf_counter()
        compute = 0.0
        try:
            voice = None
            if request.get("key"):
                key = VoiceKey(*request["key"])
                self.keys[key.model_id] = key
                await self._attach(key.model_id)
                voice, _ = await self._run(self.speaker.cache.get, key)
            chunks = self.speaker.stream(request["text"], voice, request["speed"], request.get("seed"))

            def timed_next():  # compute time only: the wait for a slot is not synthesis
                t0 = time.perf_counter()
                return next(chunks, None), time.perf_counter() - t0

            while True:
                chunk, spent = await self._run(timed_next)
                compute += spent
                if chunk is None:
                    break
                yield {"audio": chunk.audio, "words": [w.model_dump() for w in chunk.words]}
        except VoiceUnavailable as exc:
            yield {"error": {"status": 503, "message": str(exc), "code": "voice_unavailable", "param": "voice",
                             "type": "server_error", "headers": {"Retry-After": "30"}}}
            return
        except ValueError as exc:
            yield {"error": {"status": 400, "message": str(exc), "code": "invalid_input", "param": "input",
                             "type": "invalid_request_error"}}
            return
        stats = self.speaker.cache.stats.model_dump() | {"waiting": self.waiting}
        yield {"done": {"replica": self.replica, "cache": stats, "compute_s": compute,
                        "wall_s": time.perf_counter() - started}}


@serve.deployment(num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
class Limits:
    """Every tenant's request counts and leases, shared by all ingress replicas."""

    def __init__(self):
        self.limiter = TenantLimiter()

    def acquire(self, tenant: str, requests_per_minute: int, max_concurrent: int) -> Decision:
        """Admit one request or say why not."""
        return self.limiter.acquire(tenant, requests_per_minute, max_concurrent)

    def release(self, lease: int) -> None:
        """End a request."""
        self.limiter.release(lease)


def _tenant_source(args: ServingArgs):
    if args.tenants_file is not None:
        from chorus.serving.tenants import FileTenantSource

        return FileTenantSource(args.tenants_file)
    from chorus.serving.kube_source import KubeTenantSource

    return KubeTenantSource(args.kubernetes_namespace, kubeconfig=args.kubeconfig)


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Ingress:
    """HTTP: keys, limits, streaming (chorus.serving.api); synthesis happens in `Synthesis`."""

    def __init__(self, synthesis: DeploymentHandle, limits: DeploymentHandle, args: ServingArgs):
        from chorus.serving.metrics import Metrics

        self.args = args
        self.synthesis = synthesis
        self.limits = limits
        self.metrics = Metrics()
        self.directory = TenantDirectory()
        self.unavailable: dict[str, tuple[float, str]] = {}  # model id -> (when, why) from failed loads
        self.source = _tenant_source(args)
        self.source.start(self.directory.update)

    def __serve_build_asgi_app__(self):
        from chorus.serving.api import build_api

        return build_api(self, BASE_SAMPLE_RATE, self.args.max_body_bytes)

    def __del__(self):
        source = getattr(self, "source", None)
        if source is not None:
            source.stop()

    async def admit(self, tenant: Tenant) -> Decision:
        """Ask the shared limiter."""
        limits = tenant.limits
        return await self.limits.acquire.remote(tenant.name, limits.requests_per_minute, limits.max_concurrent)

    async def release(self, decision: Decision) -> None:
        """Give the lease back."""
        if decision.lease is not None:
            await self.limits.release.remote(decision.lease)

    def _key(self, tenant: Tenant, voice: str) -> VoiceKey | None:
        if voice == DEFAULT_VOICE:
            return None
        entry = tenant.voice(voice)
        return VoiceKey(tenant.name, voice, entry.version, entry.adapter_uri)

    async def speak(self, tenant: Tenant, voice: str, request):
        """Stream the synthesis deployment's items for this request (its version fixed now, at the start)."""
        key = self._key(tenant, voice)
        handle = self.synthesis.options(stream=True)
        if key is not None:
            handle = handle.options(multiplexed_model_id=key.model_id)
        payload = {"text": request.input, "speed": request.speed, "seed": request.seed,
                   "key": tuple(key) if key else None}
        try:
            async for item in handle.speak.remote(payload):
                if "error" in item and key is not None and item["error"]["code"] == "voice_unavailable":
                    self.unavailable[key.model_id] = (time.monotonic(), item["error"]["message"])
                elif key is not None and "done" in item:
                    self.unavailable.pop(key.model_id, None)
                yield item
        except BackPressureError:
            yield {"error": {"status": 503, "message": "The server is at capacity; retry shortly.",
                             "code": "overloaded", "type": "server_error", "headers": {"Retry-After": "1"}}}

    async def ready(self) -> bool:
        """The synthesis deployment answers (its replicas have loaded the base model)."""
        try:
            return bool(await asyncio.wait_for(self.synthesis.ready.remote(), timeout=5))
        except Exception:
            return False

    async def voices(self, tenant: Tenant) -> list[dict]:
        """The base voice and the tenant's voices with their states."""
        out = [{"id": DEFAULT_VOICE, "name": DEFAULT_VOICE, "version": None, "state": "Ready", "object": "voice"}]
        for entry in tenant.voices:
            state, reason = entry.state, None
            key = self._key(tenant, entry.name)
            failed = self.unavailable.get(key.model_id)
            if entry.servable and failed and time.monotonic() - failed[0] < 60:
                state, reason = "Unavailable", failed[1]
            item = {"id": entry.name, "name": entry.name, "version": entry.version, "state": state,
                    "object": "voice"}
            if reason:
                item["reason"] = reason
            out.append(item)
        return out


def build_app(args: ServingArgs | dict) -> serve.Application:
    """The Chorus serving application for these arguments (a ServingArgs or the plain dict Serve passes)."""
    # Serve converts a builder's dict to its annotated model only when the annotation is a class,
    # which `from __future__ import annotations` turns into a string: validate here instead.
    args = args if isinstance(args, ServingArgs) else ServingArgs.model_validate(args)
    synthesis = Synthesis.options(
        num_replicas=args.synthesis_replicas, max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        ray_actor_options={"num_cpus": args.synthesis_cpus}).bind(args)
    ingress = Ingress.options(num_replicas=args.ingress_replicas)
    return ingress.bind(synthesis, Limits.bind(), args)
