"""Per-voice status (the shape of KServe's modelStatus) and the driver that makes each voice real.

`VoiceDriver.observe` turns a voice's spec and its previous status into its current status, and
starts what the voice needs on the way: for a samples voice, a training run (prepare -> train ->
evaluate -> gate -> publish, `chorus.adapters.voicejob`) on the configured backend; for a prebuilt
adapter, fetch -> verify -> publish into the registry. It is level-based like the rest of the
operator: everything is derived again from the spec, the registry and the backend on each call.

Identity. A run's identity is the hash of (tenant, voice, the samples' content hash, the training
settings, the base-model fingerprint). The registry records it in each version's manifest, the
backend names the run after it, and storage keeps the run's result under it. So an unchanged spec
never trains twice (not after a restart or a resync either), a restarted operator finds its running
job, and changed samples or settings, or a new base model, make a new version.

What serves. `servingVersion` is the voice's version that passed its gate on this base model: the
version of the current identity once it passes, or the one that served before until then; a
version that fails its gate never goes live. `version: N` in the spec pins N (and so rolls back to
it): a pinned voice serves N and trains nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import fsspec

from chorus.adapters.voicejob import JobStore, VoiceJob
from chorus.operator.builders import TenantRef
from chorus.operator.settings import Settings
from chorus.operator.spec import Voice
from chorus.operator.training import BackendError, TrainingBackend

log = logging.getLogger(__name__)

PENDING, PREPARING, TRAINING, EVALUATING, READY, FAILED = (
    "Pending", "Preparing", "Training", "Evaluating", "Ready", "Failed")
STATES = (PENDING, PREPARING, TRAINING, EVALUATING, READY, FAILED)
ACTIVE = (PENDING, PREPARING, TRAINING, EVALUATING)  # states the operator polls

# Reasons (CamelCase, one line each), beside the job's own (voicejob.TOO_LITTLE_SPEECH, ...).
JOB_SUBMITTED = "JobSubmitted"  # a training run was started on the backend
JOB_PENDING = "JobPending"  # the run waits for resources
VERSION_READY = "VersionReady"  # the spec's version passed its gate and serves
PINNED = "Pinned"  # the pinned version serves
GATE_FAILED = "GateFailed"  # the new version failed the quality gate; it does not serve
SAMPLES_NOT_FOUND = "SamplesNotFound"  # nothing at the samples URI
STORAGE_UNREACHABLE = "StorageUnreachable"  # samples, adapter or registry storage did not answer
BACKEND_UNAVAILABLE = "BackendUnavailable"  # the training backend could not be reached
TRAINING_JOB_FAILED = "TrainingJobFailed"  # the run ended without a result (killed, deadline, crash)
ADAPTER_NOT_FOUND = "AdapterNotFound"  # nothing at the adapter URI
ADAPTER_INVALID = "AdapterInvalid"  # the artifact failed verification (checksum, files, manifest)
BASE_MODEL_MISMATCH = "BaseModelMismatch"  # a prebuilt adapter made for another base model
BASE_MODEL_CHANGED = "BaseModelChanged"  # the platform's base changed and the setting says not to retrain
PIN_UNAVAILABLE = "PinnedVersionUnavailable"  # the pinned version is not servable
CHECK_FAILED = "CheckFailed"  # an unexpected error while checking the voice; retried

RETRY_HINT = "change the samples or training settings (or fix the storage) and re-apply to train again"


class VoiceDriver(Protocol):
    """Turns a voice's spec (and its previous status) into its current status dict."""

    async def observe(self, tenant: TenantRef, voice: Voice, previous: dict | None) -> dict:
        """Return the voice's status (state, reason, message, versions, progress, quality, failure)."""
        ...

    async def forget(self, tenant: TenantRef) -> None:
        """The tenant is being deleted: stop its runs and apply the retention setting to its adapters."""
        ...


@dataclass(frozen=True)
class VersionRecord:
    """A published version as the operator needs it (read from its immutable manifest)."""

    version: int
    identity: str | None
    base_fingerprint: str
    gate_passed: bool | None
    reasons: tuple[str, ...]
    quality: dict | None
    uri: str


def identity_of(tenant: str, voice: str, source: dict, base_fingerprint: str) -> str:
    """The hash that names a voice's run and version: tenant, voice, source content and settings, base."""
    payload = json.dumps({"tenant": tenant, "voice": voice, "source": source, "base": base_fingerprint},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def quality_of(manifest) -> dict | None:
    """The figures a person wants in status: gap closed, WER against the base voice, DNSMOS, pitch."""
    if manifest.quality is None:
        return None
    m = manifest.quality.metrics
    figures = {"similarityGapClosed": m.gap_closed(), "similarity": m.similarity_adapted, "wer": m.wer_adapted,
               "werBase": m.wer_base, "dnsmos": m.dnsmos_adapted, "dnsmosTarget": m.dnsmos_target,
               "f0Hz": m.f0_adapted, "f0TargetHz": m.f0_target,
               "werWords": m.wer_words, "werTarget": m.wer_heldout_target,
               "heldoutClips": (m.model_extra or {}).get("heldout_clips")}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if v is not None}


class RegistryIndex:
    """The operator's view of the registry: versions per voice (manifests cached: they never change)."""

    def __init__(self, registry_uri: str, storage_options: dict | None = None) -> None:
        from chorus.adapters.registry import Registry

        self.registry = Registry(registry_uri, storage_options)
        self.root_uri = registry_uri.rstrip("/")
        self._cache: dict[tuple[str, str, int], VersionRecord | None] = {}

    def uri(self, tenant: str, voice: str, version: int) -> str:
        """The fsspec URI of a version's folder."""
        return posixpath.join(self.root_uri, tenant, voice, str(version))

    def versions(self, tenant: str, voice: str) -> list[VersionRecord]:
        """Every readable published version of a voice, ascending."""
        from chorus.adapters.artifact import AdapterArtifactError

        out = []
        for v in self.registry.versions(tenant, voice):
            key = (tenant, voice, v)
            if key not in self._cache:
                try:
                    m = self.registry.manifest(tenant, voice, v)
                    self._cache[key] = VersionRecord(
                        v, m.training.get("identity"), m.base_model.fingerprint, m.gate_passed,
                        tuple(m.quality.gate.reasons) if m.quality else (), quality_of(m), self.uri(tenant, voice, v))
                except AdapterArtifactError as exc:
                    log.warning("registry %s/%s version %d is unreadable: %s", tenant, voice, v, exc)
                    self._cache[key] = None
            if self._cache[key] is not None:
                out.append(self._cache[key])
        return out

    def prune(self, tenant: str, voice: str, keep: int, protect: set[int]) -> list[int]:
        """Delete all but the newest `keep` versions (never those in `protect`); returns the deleted."""
        versions = self.registry.versions(tenant, voice)
        doomed = [v for v in versions[:-keep] if v not in protect] if len(versions) > keep else []
        for v in doomed:
            self.registry.delete(tenant, voice, v)
            self._cache.pop((tenant, voice, v), None)
        return doomed

    def delete_tenant(self, tenant: str) -> None:
        """Remove a tenant's adapters and job records."""
        from chorus.adapters.voicejob import JOBS_DIR

        fs = self.registry.fs
        for path in (posixpath.join(self.registry.root, tenant), posixpath.join(self.registry.root, JOBS_DIR, tenant)):
            if fs.exists(path):
                fs.rm(path, recursive=True)
        self._cache = {k: v for k, v in self._cache.items() if k[0] != tenant}

    def import_adapter(self, tenant: str, voice: str, uri: str, manifest_sha256: str | None, base_fingerprint: str,
                       identity: str, storage_options: dict) -> VersionRecord:
        """Fetch a prebuilt artifact, verify it (files, manifest checksum, base model) and publish it as this voice."""
        from chorus.adapters.artifact import MANIFEST_FILE, verify_artifact, write_manifest

        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        root = root.rstrip("/")
        if not fs.exists(posixpath.join(root, MANIFEST_FILE)):
            raise FileNotFoundError(f"no adapter artifact at {uri} ({MANIFEST_FILE} is missing)")
        tmp = Path(tempfile.mkdtemp(prefix="chorus-attach-"))
        try:
            for path in fs.ls(root, detail=False):
                (tmp / posixpath.basename(path.rstrip("/"))).write_bytes(fs.cat_file(path))
            manifest = verify_artifact(tmp, base_fingerprint, expected_manifest_sha256=manifest_sha256)
            training = {**manifest.training, "identity": identity, "source_uri": uri,
                        "source_tenant": manifest.tenant, "source_voice": manifest.voice}
            write_manifest(tmp, manifest.model_copy(update={"tenant": tenant, "voice": voice, "version": None,
                                                             "training": training}))
            published = self.registry.publish(tmp, expected_base_fingerprint=base_fingerprint)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return next(r for r in self.versions(tenant, voice) if r.version == published.version)


class SamplesHasher:
    """Content hash of a voice's recordings; files are re-read only when the listing (sizes, dates) changes."""

    def __init__(self) -> None:
        self._cache: dict[tuple, str] = {}

    def fingerprint(self, uri: str, transcripts_uri: str | None, storage_options: dict) -> str:
        """sha256 over every file's relative name and content (and the transcript list's); FileNotFoundError if none."""
        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        root = root.rstrip("/")
        if not fs.exists(root):
            raise FileNotFoundError(f"no samples at {uri}")
        found = fs.find(root, detail=True)
        if not found:
            raise FileNotFoundError(f"the samples folder {uri} is empty")
        files = sorted((posixpath.relpath(p, root), info) for p, info in found.items())
        extra = []
        if transcripts_uri:
            tfs, tpath = fsspec.core.url_to_fs(transcripts_uri, **storage_options)
            extra = [("<transcripts>", tfs.info(tpath), tfs, tpath)]
        listing = tuple((rel, info.get("size"), str(info.get("ETag") or info.get("mtime") or info.get("LastModified")))
                        for rel, info in files) + tuple((r, i.get("size"), str(i.get("mtime"))) for r, i, *_ in extra)
        key = (uri, transcripts_uri, listing)
        if key not in self._cache:
            digest = hashlib.sha256()
            for rel, _ in files:
                digest.update(f"{rel}\0{hashlib.sha256(fs.cat_file(posixpath.join(root, rel))).hexdigest()}\n".encode())
            for rel, _, tfs, tpath in extra:
                digest.update(f"{rel}\0{hashlib.sha256(tfs.cat_file(tpath)).hexdigest()}\n".encode())
            self._cache[key] = digest.hexdigest()
        return self._cache[key]


def _serving_fields(prev: dict) -> dict:
    """What serves, carried over unchanged from the previous status."""
    return {k: prev[k] for k in ("servingVersion", "adapterUri") if k in prev}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TrainingVoiceDriver:
    """Trains samples voices on a backend, attaches prebuilt adapters, and decides which version serves."""

    def __init__(self, settings: Settings, backend: TrainingBackend, base_fingerprint: str,
                 index: RegistryIndex | None = None, timeout_s: float = 30.0) -> None:
        self.settings, self.backend, self.base = settings, backend, base_fingerprint
        self.index = index or RegistryIndex(settings.registry_uri, self._options(settings.registry_uri))
        self.hasher = SamplesHasher()
        self.timeout_s = timeout_s
        self._progress_at: dict[tuple[str, str], float] = {}
        self._running: dict[tuple[str, str], VoiceJob] = {}

    def _options(self, uri: str) -> dict:
        if uri.startswith("s3://") and self.settings.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.settings.s3_endpoint_url}}
        return {}

    # ---- entry points -----------------------------------------------------------------------------
    async def observe(self, tenant: TenantRef, voice: Voice, previous: dict | None) -> dict:
        """The voice's status now; starts training or attaching when the spec asks for a version that does not exist."""
        prev = previous or {}
        try:
            return await asyncio.wait_for(self._observe(tenant, voice, prev), self.timeout_s)
        except TimeoutError:
            return self._status(voice, prev, FAILED, STORAGE_UNREACHABLE,
                                f"storage or the training backend did not answer within {self.timeout_s:.0f} s; "
                                "retrying", failure=True) | _serving_fields(prev)
        except BackendError as exc:
            return self._status(voice, prev, PENDING, BACKEND_UNAVAILABLE, f"{exc}; retrying") | _serving_fields(prev)
        except Exception as exc:  # one voice's surprise must not stop the tenant's reconcile
            log.exception("tenant %s voice %s: checking the voice failed", tenant.name, voice.name)
            return self._status(voice, prev, prev.get("state", PENDING), CHECK_FAILED,
                                f"checking the voice failed ({type(exc).__name__}: {exc}); retrying",
                                serving=None, failure=True) | _serving_fields(prev)

    async def forget(self, tenant: TenantRef) -> None:
        """Stop the tenant's runs; delete its adapters and job records if the setting says so."""
        for (name, voice), job in list(self._running.items()):
            if name == tenant.name:
                try:
                    await self.backend.delete(tenant, job)
                except Exception as exc:  # the namespace's deletion stops Kubernetes Jobs anyway
                    log.warning("tenant %s: could not stop run %s: %s", tenant.name, job.name, exc)
                self._running.pop((name, voice), None)
        if self.settings.on_tenant_delete == "delete":
            await asyncio.to_thread(self.index.delete_tenant, tenant.name)

    # ---- the decision -----------------------------------------------------------------------------
    async def _observe(self, tenant: TenantRef, voice: Voice, prev: dict) -> dict:
        versions = await asyncio.to_thread(self.index.versions, tenant.name, voice.name)
        if voice.version is not None:
            return self._pinned(voice, prev, versions)
        if voice.adapter is not None:
            return await self._attach(tenant, voice, prev, versions)
        return await self._train(tenant, voice, prev, versions)

    def _servable(self, versions: list[VersionRecord]) -> dict[int, VersionRecord]:
        return {r.version: r for r in versions if r.base_fingerprint == self.base and r.gate_passed is not False}

    def _keep_serving(self, prev: dict, versions: list[VersionRecord]) -> VersionRecord | None:
        """The version that served before, if it still may."""
        return self._servable(versions).get(prev.get("servingVersion"))

    def _pinned(self, voice: Voice, prev: dict, versions: list[VersionRecord]) -> dict:
        record = self._servable(versions).get(voice.version)
        if record is not None:
            return self._status(voice, prev, READY, PINNED, f"version {voice.version} is pinned and serving",
                                serving=record, versions=versions, quality=record)
        have = {r.version: r for r in versions}
        if voice.version not in have:
            why = f"version {voice.version} is not in the registry (published: {sorted(have) or 'none'})"
        elif have[voice.version].base_fingerprint != self.base:
            why = f"version {voice.version} was made for another base model ({have[voice.version].base_fingerprint[:12]})"
        else:
            why = f"version {voice.version} failed its quality gate ({'; '.join(have[voice.version].reasons)})"
        keep = self._keep_serving(prev, versions)
        tail = f"; version {keep.version} keeps serving" if keep else ""
        return self._failed(voice, prev, PIN_UNAVAILABLE, f"{why}: pin another version or remove the pin{tail}",
                            keep, versions)

    def _verdict(self, voice: Voice, prev: dict, mine: VersionRecord, versions: list[VersionRecord],
                 what: str) -> dict:
        """Status once the identity's version exists: it serves if it passed its gate."""
        if mine.gate_passed is not False:
            return self._status(voice, prev, READY, VERSION_READY, f"version {mine.version} ({what}) is serving",
                                serving=mine, versions=versions, quality=mine)
        keep = self._keep_serving(prev, versions)
        tail = f"; version {keep.version} keeps serving" if keep else "; the voice is not served"
        return self._failed(voice, prev, GATE_FAILED,
                            f"version {mine.version} failed the quality gate: {'; '.join(mine.reasons)}{tail}",
                            keep, versions, quality=mine)

    async def _attach(self, tenant: TenantRef, voice: Voice, prev: dict, versions: list[VersionRecord]) -> dict:
        from chorus.adapters.artifact import AdapterArtifactError, BaseModelMismatchError

        source = {"adapter": voice.adapter.uri, "sha256": voice.adapter.sha256}
        identity = identity_of(tenant.name, voice.name, source, self.base)
        mine = next((r for r in versions if r.identity == identity), None)
        if mine is None:
            keep = self._keep_serving(prev, versions)
            try:
                mine = await asyncio.to_thread(
                    self.index.import_adapter, tenant.name, voice.name, voice.adapter.uri, voice.adapter.sha256,
                    self.base, identity, self._options(voice.adapter.uri))
            except FileNotFoundError as exc:
                return self._failed(voice, prev, ADAPTER_NOT_FOUND, f"{exc}; upload the artifact there or "
                                    "fix adapter.uri", keep, versions)
            except BaseModelMismatchError as exc:
                return self._failed(voice, prev, BASE_MODEL_MISMATCH,
                                    f"{exc}; attach an adapter trained on this platform's base model", keep, versions)
            except AdapterArtifactError as exc:
                return self._failed(voice, prev, ADAPTER_INVALID, f"{exc}; the artifact is not served", keep, versions)
            except OSError as exc:
                return self._failed(voice, prev, STORAGE_UNREACHABLE, f"cannot read {voice.adapter.uri}: "
                                    f"{exc}", keep, versions)
            versions = await asyncio.to_thread(self.index.versions, tenant.name, voice.name)
        return self._finish(tenant, voice, prev, mine, versions, f"attached from {voice.adapter.uri}")

    def _finish(self, tenant: TenantRef, voice: Voice, prev: dict, mine: VersionRecord,
                versions: list[VersionRecord], what: str) -> dict:
        status = self._verdict(voice, prev, mine, versions, what)
        if status.get("servingVersion") == mine.version and prev.get("servingVersion") != mine.version:
            protect = {mine.version} | ({prev["servingVersion"]} if prev.get("servingVersion") else set())
            try:
                deleted = self.index.prune(tenant.name, voice.name, self.settings.keep_versions, protect)
                if deleted:
                    log.info("tenant %s voice %s: deleted old versions %s (keep_versions=%d)", tenant.name,
                             voice.name, deleted, self.settings.keep_versions)
            except OSError as exc:
                log.warning("tenant %s voice %s: could not prune old versions: %s", tenant.name, voice.name, exc)
        return status

    async def _train(self, tenant: TenantRef, voice: Voice, prev: dict, versions: list[VersionRecord]) -> dict:
        samples = voice.samples
        keep = self._keep_serving(prev, versions)
        try:
            samples_hash = await asyncio.to_thread(self.hasher.fingerprint, samples.uri, samples.transcripts_uri,
                                                   self._options(samples.uri))
        except FileNotFoundError as exc:
            return self._failed(voice, prev, SAMPLES_NOT_FOUND,
                                f"{exc}: upload recordings there (wav, flac, ogg or mp3; at least 30 s of speech)",
                                keep, versions)
        except OSError as exc:
            return self._failed(voice, prev, STORAGE_UNREACHABLE, f"cannot list {samples.uri}: {exc}", keep, versions)
        settings = samples.training.model_dump(by_alias=True)
        source = {"samples": samples_hash, "training": settings}
        identity = identity_of(tenant.name, voice.name, source, self.base)
        mine = next((r for r in versions if r.identity == identity), None)
        if mine is not None:
            self._running.pop((tenant.name, voice.name), None)
            return self._finish(tenant, voice, prev, mine, versions, f"trained from samples {samples_hash[:8]}")
        if self.settings.on_base_change == "fail" and versions and not any(
                r.base_fingerprint == self.base for r in versions):
            return self._failed(voice, prev, BASE_MODEL_CHANGED,
                                f"every version of this voice was made for another base model "
                                f"({versions[-1].base_fingerprint[:12]}; this platform runs {self.base[:12]}) and "
                                "on_base_change is 'fail': they are not served; set it to 'retrain' to retrain "
                                "from the samples", None, versions)
        job = VoiceJob(tenant=tenant.name, voice=voice.name, identity=identity, samples_uri=samples.uri,
                       transcripts_uri=samples.transcripts_uri, samples_hash=samples_hash,
                       steps=samples.training.steps, max_minutes=samples.training.max_minutes,
                       rank=samples.training.rank, registry_uri=self.settings.registry_uri,
                       s3_endpoint_url=self.settings.s3_endpoint_url, base_fingerprint=self.base,
                       thresholds=self.settings.gate, threads=self.settings.training_threads)
        store = JobStore(job)
        result = await asyncio.to_thread(store.result)
        if result is not None and result.outcome == "failed":
            self._running.pop((tenant.name, voice.name), None)
            return self._failed(voice, prev, result.reason or TRAINING_JOB_FAILED,
                                f"{result.message}; {RETRY_HINT}", keep, versions)
        if result is not None:  # published, but the listing above predates it: the next poll shows it
            return self._status(voice, prev, EVALUATING, "Publishing", f"version {result.version} was published",
                                serving=keep, versions=versions)
        run = await self.backend.status(tenant, job)
        self._running[(tenant.name, voice.name)] = job
        if run.phase == "Missing":
            await self.backend.submit(tenant, job)
            return self._status(voice, prev, PENDING, JOB_SUBMITTED,
                                f"training run {job.name} submitted ({self.backend.name} backend, "
                                f"{job.steps} steps, at most {job.max_minutes:g} min)", serving=keep, versions=versions)
        if run.phase == "Pending":
            return self._status(voice, prev, PENDING, JOB_PENDING,
                                f"training run {job.name} waits to start{': ' + run.message if run.message else ''}",
                                serving=keep, versions=versions)
        if run.phase in ("Failed", "Succeeded"):  # ended without writing its result
            self._running.pop((tenant.name, voice.name), None)
            why = run.message or "it exited without recording a result"
            return self._failed(voice, prev, TRAINING_JOB_FAILED,
                                f"training run {job.name} failed: {why}; {RETRY_HINT}", keep, versions)
        progress = await asyncio.to_thread(store.progress)
        stage = progress.stage if progress else "Preparing"
        state = {"Preparing": PREPARING, "Training": TRAINING}.get(stage, EVALUATING)
        shown = self._throttled_progress(tenant, voice, prev, state, progress)
        message = {PREPARING: "preparing the samples (slicing, labelling, checking)",
                   TRAINING: "training the adapter", EVALUATING: "evaluating on held-out clips and gating"}[state]
        return self._status(voice, prev, state, f"Job{stage}", f"run {job.name}: {message}", serving=keep,
                            versions=versions, progress=shown)

    def _throttled_progress(self, tenant: TenantRef, voice: Voice, prev: dict, state: str, progress) -> dict | None:
        """Progress for status, changed at most every voice_poll_interval_s per voice (state changes show at once)."""
        if progress is None or progress.stage != "Training":
            return None
        key, now = (tenant.name, voice.name), time.monotonic()
        if prev.get("state") == state and prev.get("progress") and \
                now - self._progress_at.get(key, 0.0) < self.settings.voice_poll_interval_s:
            return prev["progress"]
        self._progress_at[key] = now
        shown = {"step": progress.step, "total": progress.total,
                 "percent": int(100 * progress.step / progress.total) if progress.total else 0}
        if progress.loss is not None:
            shown["loss"] = f"{progress.loss:.4f}"
        if progress.eta_s is not None:
            shown["etaSeconds"] = int(progress.eta_s)
        return shown

    # ---- status ------------------------------------------------------------------------------------
    def _failed(self, voice: Voice, prev: dict, reason: str, message: str, keep: VersionRecord | None,
                versions: list[VersionRecord], quality: VersionRecord | None = None) -> dict:
        """Failed for `reason`; `keep` (the version that served before, if it still may) goes on serving."""
        return self._status(voice, prev, FAILED, reason, message, serving=keep, versions=versions, quality=quality,
                            failure=True)

    def _status(self, voice: Voice, prev: dict, state: str, reason: str, message: str, *,
                serving: VersionRecord | None = None, versions: list[VersionRecord] | None = None,
                quality: VersionRecord | None = None, progress: dict | None = None, failure: bool = False) -> dict:
        status: dict[str, Any] = {"name": voice.name, "state": state, "reason": reason, "message": message}
        if versions:
            status["version"] = versions[-1].version
        elif prev.get("version"):
            status["version"] = prev["version"]
        if serving is not None:
            status["servingVersion"] = serving.version
            status["adapterUri"] = serving.uri
        if progress:
            status["progress"] = progress
        if quality is not None and quality.quality:
            status["quality"] = quality.quality
        if quality is not None and quality.gate_passed is not None:
            status["gate"] = {"passed": quality.gate_passed, "version": quality.version,
                              **({"reasons": list(quality.reasons)} if quality.reasons else {})}
        before = prev.get("lastFailureInfo")
        if failure:
            same = before and before.get("reason") == reason and before.get("message") == message
            status["lastFailureInfo"] = before if same else {"reason": reason, "message": message, "time": _now()}
        elif before:
            status["lastFailureInfo"] = before
        return status


async def voice_statuses(driver: VoiceDriver, tenant: TenantRef, voices: list[Voice],
                         previous: list[dict] | None) -> list[dict]:
    """The status list for the spec's voices, in spec order; voices no longer in the spec drop out."""
    before = {v.get("name"): v for v in previous or []}
    return list(await asyncio.gather(*(driver.observe(tenant, voice, before.get(voice.name)) for voice in voices)))


def voice_summary(statuses: list[dict]) -> str:
    """'serving/total', e.g. '1/3', for the printer column: voices that have a version serving."""
    return f"{sum(1 for s in statuses if s.get('servingVersion'))}/{len(statuses)}"


def training_summary(statuses: list[dict]) -> str | None:
    """What is in progress, for the printer column: e.g. 'narrator 120/600, promo Preparing'."""
    parts = []
    for s in statuses:
        if s["state"] == TRAINING and s.get("progress"):
            parts.append(f"{s['name']} {s['progress']['step']}/{s['progress']['total']}")
        elif s["state"] in ACTIVE:
            parts.append(f"{s['name']} {s['state']}")
    return ", ".join(parts) or None


def has_active_voices(status: dict | None) -> bool:
    """Whether any voice of a tenant's status is still being worked on (the poll timer's filter)."""
    return any(v.get("state") in ACTIVE for v in (status or {}).get("voices") or [])


def transition_events(old: list[dict] | None, new: list[dict]) -> list[tuple[str, str, str]]:
    """Events for voices whose state or serving version changed: (type, reason, message)."""
    before = {v.get("name"): v for v in old or []}
    events = []
    for v in new:
        was = before.get(v["name"], {})
        if was.get("state") != v["state"]:
            kind = "Warning" if v["state"] == FAILED else "Normal"
            events.append((kind, f"Voice{v['state']}", f"voice {v['name']}: {v.get('message', v['state'])}"))
        if v.get("servingVersion") and was.get("servingVersion") != v.get("servingVersion"):
            since = f" (was version {was['servingVersion']})" if was.get("servingVersion") else ""
            events.append(("Normal", "VoiceServing", f"voice {v['name']} now serves version {v['servingVersion']}{since}"))
    return events
