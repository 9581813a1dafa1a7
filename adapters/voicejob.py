"""One voice's training job, whatever runs it: prepare -> train -> evaluate -> gate -> publish.

The operator hands a `VoiceJob` (JSON) to a backend (a Ray job or a Kubernetes Job); the job runs
`chorus adapter job` with it. Everything the operator needs back goes through storage, never logs:
the job writes `progress.json` (stage, step/total, loss, ETA) at most every few seconds and, at the
end, `result.json` (the published version and its gate verdict, or the failure's reason) under
`<registry>/_jobs/<tenant>/<voice>/<identity>/` (the registry lists only DNS-label names, so `_jobs`
is never mistaken for a tenant). The published artifact records the job's identity in its manifest
(`training.identity`), so a run that was cut off after publishing is recognised, not repeated.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import posixpath
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from chorus.adapters.gate import GateThresholds

log = logging.getLogger(__name__)
JOBS_DIR = "_jobs"
PROGRESS_FILE, RESULT_FILE = "progress.json", "result.json"
PROGRESS_EVERY_S = 5.0
STAGES = ("Preparing", "Training", "Evaluating", "Publishing")
# Failure reasons a job reports (CamelCase, shown in the voice's status and Events).
TOO_LITTLE_SPEECH = "TooLittleSpeech"  # the samples hold less usable speech than training needs
BAD_SAMPLES = "BadSamples"  # the samples could not be read as audio + transcripts
SAMPLES_NOT_FOUND = "SamplesNotFound"  # nothing at the samples URI
STORAGE_UNREACHABLE = "StorageUnreachable"  # the samples or the registry could not be reached
TRAINING_ERROR = "TrainingError"  # anything else went wrong inside the job


class VoiceJob(BaseModel):
    """What one training run needs: who, from what, with which settings, and where results go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(description="tenant name")
    voice: str = Field(description="voice name within the tenant")
    identity: str = Field(pattern=r"^[0-9a-f]{16,64}$", description="hash of everything that shapes the result")
    samples_uri: str = Field(description="folder of the tenant's recordings (fsspec URI)")
    transcripts_uri: str | None = Field(None, description="optional transcript list")
    samples_hash: str = Field(description="content hash of the samples the identity was computed from")
    steps: int = Field(ge=1, description="optimizer steps")
    max_minutes: float = Field(gt=0, description="cap on the training loop's wall time")
    rank: int = Field(ge=1, le=64, description="LoRA rank")
    registry_uri: str = Field(description="registry root (fsspec URI); job records go under its _jobs/")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for s3:// URIs")
    base_fingerprint: str = Field(description="the platform's base model; the job refuses to train on another")
    thresholds: GateThresholds = Field(default_factory=GateThresholds, description="the quality gate")
    threads: int = Field(2, ge=1, le=64, description="torch threads")

    @property
    def name(self) -> str:
        """A stable name for the run: backends use it as the Ray submission id or the Job's name."""
        return f"chorus-{self.tenant}-{self.voice}-{self.identity[:10]}"

    def storage_options(self, uri: str) -> dict:
        """fsspec options for a URI of this job."""
        if uri.startswith("s3://") and self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}


class Progress(BaseModel):
    """progress.json: where a running job is."""

    stage: Literal[STAGES]  # type: ignore[valid-type]
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    updated: datetime


class Result(BaseModel):
    """result.json: how a job ended."""

    outcome: Literal["published", "failed"]
    version: int | None = None
    gate_passed: bool | None = None
    reason: str | None = None
    message: str | None = None
    seconds: float | None = None
    finished: datetime


def job_dir(registry_uri: str, tenant: str, voice: str, identity: str) -> str:
    """The folder of one job's records under the registry."""
    return posixpath.join(registry_uri.rstrip("/"), JOBS_DIR, tenant, voice, identity)


class JobStore:
    """Reads and writes a job's progress.json and result.json in storage."""

    def __init__(self, job: VoiceJob) -> None:
        self.job = job
        self.dir = job_dir(job.registry_uri, job.tenant, job.voice, job.identity)
        self.fs, self.path = fsspec.core.url_to_fs(self.dir, **job.storage_options(self.dir))

    def _write(self, name: str, model: BaseModel) -> None:
        self.fs.makedirs(self.path, exist_ok=True)
        self.fs.pipe_file(posixpath.join(self.path, name), model.model_dump_json().encode())

    def _read(self, name: str, kind: type[BaseModel]):
        try:
            return kind.model_validate_json(self.fs.cat_file(posixpath.join(self.path, name)))
        except FileNotFoundError:
            return None

    def progress(self) -> Progress | None:
        """The last progress written, or None."""
        return self._read(PROGRESS_FILE, Progress)

    def result(self) -> Result | None:
        """The job's result, or None while it has none."""
        return self._read(RESULT_FILE, Result)

    def write_progress(self, progress: Progress) -> None:
        """Record progress."""
        self._write(PROGRESS_FILE, progress)

    def write_result(self, result: Result) -> None:
        """Record the outcome."""
        self._write(RESULT_FILE, result)

    def clear(self) -> None:
        """Forget this job's records (a retry starts from nothing)."""
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


class Reporter:
    """Writes progress at most every PROGRESS_EVERY_S seconds (always on a stage change) and logs it."""

    def __init__(self, store: JobStore, every_s: float = PROGRESS_EVERY_S) -> None:
        self.store, self.every_s = store, every_s
        self.stage_name, self.total, self.started, self._last = "Preparing", 0, time.monotonic(), 0.0

    def stage(self, name: str, total: int = 0) -> None:
        """Enter a stage."""
        self.stage_name, self.total, self._stage_start = name, total, time.monotonic()
        log.info("stage %s", name)
        self._write(Progress(stage=name, total=total, updated=datetime.now(UTC)))

    def step(self, step: int, loss: float) -> None:
        """A training step finished (throttled)."""
        now = time.monotonic()
        if now - self._last < self.every_s and step < self.total:
            return
        rate = step / max(now - self._stage_start, 1e-6)
        eta = (self.total - step) / rate if rate > 0 else None
        log.info("step %d/%d loss %.4f eta %.0fs", step, self.total, loss, eta or 0)
        self._write(Progress(stage="Training", step=step, total=self.total, loss=round(float(loss), 5),
                             eta_s=None if eta is None else round(eta, 1), updated=datetime.now(UTC)))

    def _write(self, progress: Progress) -> None:
        self._last = time.monotonic()
        try:
            self.store.write_progress(progress)
        except OSError as exc:  # progress is best-effort; the result is not
            log.warning("could not write progress: %s", exc)


def _published(job: VoiceJob):
    """The registry version this job already published (a re-run after a cut-off), or None."""
    from chorus.adapters.artifact import AdapterArtifactError
    from chorus.adapters.registry import Registry

    registry = Registry(job.registry_uri, job.storage_options(job.registry_uri))
    if job.tenant not in registry.tenants() or job.voice not in registry.voices(job.tenant):
        return None
    for version in reversed(registry.versions(job.tenant, job.voice)):
        try:
            manifest = registry.manifest(job.tenant, job.voice, version)
        except AdapterArtifactError:
            continue
        if manifest.training.get("identity") == job.identity:
            return manifest
    return None


def heldout_count(clips: int) -> int:
    """How many prepared clips are held out for the gate: a fifth, at least 2 and at most 5."""
    return max(2, min(5, clips // 5))


def run_voice_job(job: VoiceJob, work_dir: Path | None = None) -> Result:
    """Run the whole job, writing progress and the result to storage; returns the result."""
    store = JobStore(job)
    started = time.monotonic()
    reporter = Reporter(store)
    tmp = Path(tempfile.mkdtemp(prefix="chorus-job-", dir=work_dir))
    try:
        result = _run(job, reporter, tmp)
    except Exception as exc:  # report every failure through storage; the backend only sees the exit code
        reason, message = _classify(exc)
        message = _keep_report(store, tmp, message)
        log.error("job failed: %s: %s", reason, message)
        result = Result(outcome="failed", reason=reason, message=message, finished=datetime.now(UTC))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = result.model_copy(update={"seconds": round(time.monotonic() - started, 1)})
    store.write_result(result)
    return result


def _keep_report(store: JobStore, tmp: Path, message: str) -> str:
    """Copy the preparation report (which clips were rejected, and why) next to the result; point the message at it."""
    from chorus.adapters.dataset import REPORT_FILE

    local = tmp / "all" / REPORT_FILE
    if not local.is_file():
        return message
    try:
        store.fs.pipe_file(posixpath.join(store.path, REPORT_FILE), local.read_bytes())
    except OSError:
        return message.replace(str(local), "the job's log")
    return message.replace(str(local), posixpath.join(store.dir, REPORT_FILE))


def _classify(exc: Exception) -> tuple[str, str]:
    from chorus.adapters.dataset import DatasetError

    if isinstance(exc, DatasetError):
        text = str(exc)
        if "does not exist" in text:
            return SAMPLES_NOT_FOUND, text
        return (TOO_LITTLE_SPEECH if "too little" in text else BAD_SAMPLES), text
    if isinstance(exc, (FileNotFoundError, PermissionError, ConnectionError, TimeoutError)):
        return STORAGE_UNREACHABLE, f"{type(exc).__name__}: {exc}"
    return TRAINING_ERROR, f"{type(exc).__name__}: {exc}"


def _release_memory() -> None:
    """Collect, then hand glibc's free heap back to the system (freed tensors otherwise stay in the RSS
    that a pod's memory limit counts)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _run(job: VoiceJob, reporter: Reporter, tmp: Path) -> Result:
    from chorus.adapters.adapted import load_adapted_voice
    from chorus.adapters.artifact import ADAPTER_WEIGHTS_FILE, QualityRecord, build_manifest, save_peft_adapter
    from chorus.adapters.dataset import prepare_dataset
    from chorus.adapters.evaluate import evaluate_voice, load_heldout
    from chorus.adapters.prepared import load_prepared, split_prepared
    from chorus.adapters.registry import Registry
    from chorus.adapters.train import TrainConfig, train_adapter
    from chorus.engine.voice import load_base_voice

    fingerprint = load_base_voice().fingerprint
    if fingerprint != job.base_fingerprint:
        raise RuntimeError(f"this image's base model is {fingerprint[:12]}, the platform's is "
                           f"{job.base_fingerprint[:12]}: run the job with the platform's image")
    done = _published(job)
    if done is not None:
        log.info("version %s was already published by this job; not training again", done.version)
        return Result(outcome="published", version=done.version, gate_passed=done.gate_passed,
                      finished=datetime.now(UTC))

    reporter.stage("Preparing")
    prepare_dataset(job.samples_uri, tmp / "all", transcripts_uri=job.transcripts_uri,
                    storage_options=job.storage_options(job.samples_uri))
    clips = len(load_prepared(tmp / "all").clips)
    split_prepared(tmp / "all", tmp / "train", tmp / "heldout", heldout_count(clips))

    cfg = TrainConfig(steps=job.steps, max_minutes=job.max_minutes, rank=job.rank, threads=job.threads)
    reporter.stage("Training", total=cfg.steps)
    trained = train_adapter(tmp / "train", cfg, checkpoint_dir=tmp / "checkpoints", on_step=reporter.step,
                            progress=False)
    artifact = tmp / "artifact"
    save_peft_adapter(trained.peft_model, artifact)
    training = {**cfg.model_dump(), "steps_done": trained.steps, "seconds": round(trained.seconds, 1),
                "identity": job.identity, "samples_hash": job.samples_hash, "samples_uri": job.samples_uri}
    fields = dict(tenant=job.tenant, voice=job.voice, base_fingerprint=fingerprint,
                  dataset_hash=load_prepared(tmp / "train").dataset_hash, training=training,
                  profile=trained.profile.model_dump())
    build_manifest(artifact, **fields)
    # Training's model, optimiser and clips are not needed to evaluate: a Job pod at the default
    # LimitRange's 4 GiB was OOM-killed while evaluating with them still held.
    del trained
    _release_memory()

    reporter.stage("Evaluating")
    voice = load_adapted_voice(artifact, fingerprint)
    size = (artifact / ADAPTER_WEIGHTS_FILE).stat().st_size
    metrics, gate, _ = evaluate_voice(voice, load_heldout(tmp / "heldout"), adapter_bytes=size,
                                      thresholds=job.thresholds)
    build_manifest(artifact, **fields, quality=QualityRecord(metrics=metrics, thresholds=job.thresholds, gate=gate))

    reporter.stage("Publishing")
    registry = Registry(job.registry_uri, job.storage_options(job.registry_uri))
    published = registry.publish(artifact, expected_base_fingerprint=fingerprint)
    log.info("published %s/%s version %d; gate %s %s", job.tenant, job.voice, published.version,
             "passed" if gate.passed else "failed", "; ".join(gate.reasons))
    return Result(outcome="published", version=published.version, gate_passed=gate.passed,
                  finished=datetime.now(UTC))


def main(argv: list[str] | None = None) -> int:
    """`chorus adapter job` / `python -m chorus.adapters.voicejob`: run one job given as JSON."""
    p = argparse.ArgumentParser(prog="chorus adapter job", description=__doc__.splitlines()[0])
    add_args(p)
    return _job(p.parse_args(argv))


def add_args(p: argparse.ArgumentParser) -> None:
    """The job command's arguments."""
    p.add_argument("--spec", help="the VoiceJob as JSON (default: the CHORUS_VOICE_JOB environment variable)")


def _job(args: argparse.Namespace) -> int:
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    text = args.spec or os.environ.get("CHORUS_VOICE_JOB")
    if not text:
        print("chorus adapter job: give the job as --spec JSON or in CHORUS_VOICE_JOB", file=sys.stderr)
        return 2
    job = VoiceJob.model_validate(json.loads(text))
    result = run_voice_job(job)
    print(result.model_dump_json())
    # The outcome, a failure included, is recorded in storage for the operator: exit 0 so that a
    # Kubernetes Job does not retry a run whose samples are the problem. Non-zero means a crash.
    return 0


def add_job(sub) -> None:
    """`chorus adapter job --spec JSON`."""
    p = sub.add_parser("job", help="run one voice's training job (what the operator's backends start)")
    add_args(p)
    p.set_defaults(func=_job)


if __name__ == "__main__":
    sys.exit(main())
