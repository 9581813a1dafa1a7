"""Serving benchmark: Chorus over HTTP (Ray Serve on loopback) against Piper in process, idle and under load.

`python -m bench.serve` (or `make bench-serve`) prints JSON lines and writes bench/results/serve.{json,md,png}
(`--quick`: serve-quick.*). One run starts the Chorus app in this process (chorus.serving.local) with a
file:// registry of real engine LoRAs, then, per condition (the machine idle; then with busy-loop processes
competing for the cores), measures:
- throughput (audio seconds per wall second) of Piper in process, sequential (the anchor), and of Chorus over
  HTTP for the base voice (1 and 2 clients), a resample-path and a PSOLA-path tenant voice and a round robin
  over 50 tenant voices (2 clients each), in interleaved rounds over the same sentences, so drift on the
  machine affects all alike; with each scenario's p50/p99 latency and time to first byte (streamed pcm);
- a 2x overload: twice the server's capacity in concurrent clients, counting status codes;
- time to first byte of a 200-character request on an otherwise idle server;
- the cold attach of a voice (fetch, verify, merge) with chorus.serving.voices.VoiceCache;
and once, the synthesis replica's RSS idle and per cached voice. Diagnostics: the server's Speaker run in this
process (no HTTP, no Ray) in the same rounds, CPU seconds per audio second of the server's processes and of
this one, and the cores other processes on the (shared) machine used meanwhile. Every loop is bounded in count
and time; targets are reported as met or not, never asserted.
piper-tts (GPL-3.0) is imported here only, as the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

# Idle OpenMP threads sleep instead of spinning (as bench.engine); Ray's workers inherit the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import RESULTS_DIR, emit, machine_info, markdown_table, write_results  # noqa: E402

# One sentence each (no sentence split, so no inserted silence), 100-200 characters of ordinary text.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog, then naps beside the old stone wall until the farmer comes "
    "home for supper.",
    "Chorus serves many voices from one shared model, and each tenant brings only a small adapter that changes "
    "how the model speaks.",
    "On Tuesday morning, forty two engineers met in a small office in Lisbon to plan the next release and argue "
    "about the coffee.",
    "Please remember to water the plants and feed the cat while I am away next week, and lock the back door "
    "every night.",
    "The weather service expects heavy rain tonight along the coast, with clearer skies and a gentle breeze by "
    "Saturday afternoon.",
    "Why would anyone keep three hundred umbrellas in a tiny apartment near the sea, when it hardly ever rains "
    "there in summer?",
]
TTFB_TEXT = ("Thank you for calling the city library. Our opening hours this week are nine in the morning until "
             "six in the evening, and the reading room upstairs stays open until nine on Thursday and Friday nights.")
WARM_TEXT = "Hello there."
SEED = 1234
THREADS = 2  # Piper's intra-op threads, as bench.engine (the server uses ServingArgs.threads, also 2)
PROFILES = {
    "resample": {"pitch_method": "resample", "pitch_factor": 1.2, "length_scale": 1.2},
    "psola": {"pitch_method": "psola", "pitch_factor": 1.4, "length_scale": 1.0},
}
"""Both tenant voices speak at the base voice's tempo (a resample profile's length scale makes up for its
resampling), so a tenant's ratio to the base voice measures its pitch path, not a tempo: a voice that speaks
faster gives fewer audio seconds for the same text and per-request work (until 2026-12-02 the resample
tenant had length_scale 1.1, 8% faster than the base voice: 0.92-0.94 of its throughput)."""
MIX_TENANTS, MIX_PER_TENANT = 10, 5  # the 50 mixed voices: 10 tenants x 5 voices, all on the resample path
REQUEST_TIMEOUT_S = 120.0
BATCH_DEADLINE_S = 240.0  # a batch of clients starts no new request after this
TARGETS = {
    "tenant_vs_base_min": 0.95,  # each pitch path's tenant voice throughput / base voice's
    "mix50_vs_single_min": 0.95,  # 50-voice round robin / the single tenant voice on the same path
    "chorus_vs_piper_min": 1.0,  # Chorus over HTTP (2 clients) / Piper in process, sequential
    "ttfb_ms_max": 300.0,  # median time to first byte, 200 characters, idle server, streamed pcm
    "cold_attach_ms_max": 50.0,  # median cold attach (fetch, verify, merge), file:// registry
    "overload_p99_vs_idle_max": 3.0,  # accepted requests' p99 under 2x overload / base voice p99 at 1 client
}
SATURATION_GAIN = 1.10  # 2 clients must add >= 10% throughput over 1 for the capacity to count as 2
PCM_BYTES_PER_S = 2 * 24_000  # OpenAI pcm: 24 kHz s16le mono


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000 * value


def _f(value: float | None, digits: int = 0) -> str:
    """A number for prose: `digits` decimals, '?' for a missing one."""
    return "?" if value is None else f"{value:.{digits}f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------
# Setup: artifacts, tenants file, the in-process Piper, the server
# ---------------------------------------------------------------------------------------------------------


class Voice(NamedTuple):
    """A voice the clients ask for: its tenant, the tenant's API key and the voice's name ('default': the base)."""

    tenant: str
    key: str
    voice: str


def make_registry(root: Path) -> tuple[Path, dict[str, Voice], list[Voice], list[dict]]:
    """Artifacts (real engine LoRAs) and a tenants file: acme (base voice, `bright` resample, `deep` PSOLA)
    and 10 tenants with 5 voices each (the 50-voice mix). Returns (tenants file, named voices, mix, tenants)."""
    import torch
    import yaml

    from chorus.adapters.testartifacts import make_engine_artifact
    from chorus.engine.voice import load_base_voice
    from chorus.engine.weights import load_vits_model

    torch.set_num_threads(THREADS)
    base = load_base_voice()
    model = load_vits_model(base)
    registry = root / "registry"
    keys: dict[str, str] = {}

    def key_of(tenant: str) -> str:
        return keys.setdefault(tenant, f"chorus_bench_{tenant}_{hashlib.sha256(tenant.encode()).hexdigest()[:24]}")

    def artifact(tenant: str, voice: str, seed: int, profile: dict) -> dict:
        folder = registry / tenant / voice / "1"
        make_engine_artifact(folder, model, tenant=tenant, voice=voice, base_fingerprint=base.fingerprint,
                             seed=seed, profile=profile)
        return {"name": voice, "version": 1, "adapterUri": folder.as_uri()}

    limits = {"requestsPerMinute": 100_000, "maxConcurrent": 64}  # the server's queue sheds load, not the limiter
    tenants = [{"name": "acme", "apiKeySha256": "", "limits": limits,
                "voices": [artifact("acme", "bright", 11, PROFILES["resample"]),
                           artifact("acme", "deep", 12, PROFILES["psola"])]}]
    mix = []
    for t in range(MIX_TENANTS):
        name = f"mix{t:02d}"
        entries = [artifact(name, f"v{v}", 100 + MIX_PER_TENANT * t + v, PROFILES["resample"])
                   for v in range(MIX_PER_TENANT)]
        tenants.append({"name": name, "apiKeySha256": "", "limits": limits, "voices": entries})
        mix += [Voice(name, key_of(name), e["name"]) for e in entries]
    for tenant in tenants:
        tenant["apiKeySha256"] = hashlib.sha256(key_of(tenant["name"]).encode()).hexdigest()
    tenants_file = root / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": tenants}), encoding="utf-8")
    named = {"base": Voice("acme", key_of("acme"), "default"), "resample": Voice("acme", key_of("acme"), "bright"),
             "psola": Voice("acme", key_of("acme"), "deep")}
    return tenants_file, named, mix, tenants


def build_piper():
    """Piper (PyPI piper-tts) on the bundled voice, as bench.engine builds it: 2 intra-op threads, its own
    session defaults (threads spin when idle). Returns synth(text) -> seconds of audio."""
    import json

    import numpy as np
    import onnxruntime as ort
    from piper import PiperVoice  # GPL reference, bench only
    from piper.config import PiperConfig, SynthesisConfig

    from chorus.engine.voice import load_base_voice

    voice = load_base_voice()
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    piper = PiperVoice(session=ort.InferenceSession(str(voice.onnx_path), options, providers=["CPUExecutionProvider"]),
                       config=PiperConfig.from_dict(json.loads(voice.config_path.read_text(encoding="utf-8"))))
    config = SynthesisConfig(noise_scale=voice.noise_scale, length_scale=voice.length_scale,
                             noise_w_scale=voice.noise_w)
    rate = piper.config.sample_rate

    def synth(text: str) -> float:
        return sum(np.asarray(chunk.audio_float_array).size for chunk in piper.synthesize(text, config)) / rate

    return synth


def replica_process(name: str = "ServeReplica:chorus:Synthesis"):
    """The synthesis replica's process (psutil), found by the title Ray gives it; None if not found."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(name in part for part in (proc.info["cmdline"] or ())):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _nice(proc) -> int | None:
    try:
        return proc.nice()
    except Exception:
        return None


def rss_mb(proc) -> float | None:
    """Resident set size in MiB, or None if the process is gone."""
    try:
        return proc.memory_info().rss / 2**20
    except Exception:
        return None


def cpu_snapshot() -> dict[str, Any]:
    """Machine-wide busy CPU seconds (all cores) and the CPU seconds of this process and each it started."""
    import psutil

    t = psutil.cpu_times()
    own = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        own[proc.pid] = times.user + times.system
    return {"wall": time.perf_counter(), "busy": t.user + t.nice + t.system + getattr(t, "irq", 0.0)
            + getattr(t, "softirq", 0.0), "own": own}


def cpu_shares(before: dict[str, Any], busy_pids: set[int]) -> dict[str, float]:
    """Average cores used since `before`: by the whole machine, by this benchmark (server, clients, Piper), by
    its busy loops, and by everything else on the machine (other users' work: what 'idle' cannot control)."""
    after = cpu_snapshot()
    wall = after["wall"] - before["wall"]
    deltas = {pid: cpu - before["own"].get(pid, 0.0) for pid, cpu in after["own"].items()}
    loops = sum(v for pid, v in deltas.items() if pid in busy_pids)
    ours = sum(v for pid, v in deltas.items() if pid not in busy_pids)
    busy = after["busy"] - before["busy"]
    return {"machine_cores": busy / wall, "bench_cores": ours / wall, "busy_loop_cores": loops / wall,
            "other_cores": max(0.0, busy - ours - loops) / wall}


def cache_metrics(url: str) -> dict[str, float]:
    """The synthesis replicas' voice cache gauges from /metrics (field -> value, summed over replicas)."""
    import httpx

    out: dict[str, float] = {}
    body = httpx.get(f"{url}/metrics", timeout=30).text
    for match in re.finditer(r'^chorus_voice_cache\{[^}]*field="(\w+)"[^}]*\} (\S+)$', body, re.M):
        out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(2))
    return out


# ---------------------------------------------------------------------------------------------------------
# HTTP clients
# ---------------------------------------------------------------------------------------------------------


class Job(NamedTuple):
    """One request: which voice, what text, which seed."""

    voice: Voice
    text: str
    seed: int


def one_request(client, url: str, job: Job) -> dict[str, Any]:
    """POST one streamed pcm request; status, audio seconds, latency and time to first byte (first chunk)."""
    body = {"model": "chorus", "input": job.text, "voice": job.voice.voice, "response_format": "pcm",
            "seed": job.seed}
    headers = {"Authorization": f"Bearer {job.voice.key}"}
    started = time.perf_counter()
    result: dict[str, Any] = {"voice": f"{job.voice.tenant}/{job.voice.voice}", "start": started, "ttfb_s": None}
    try:
        with client.stream("POST", f"{url}/v1/audio/speech", json=body, headers=headers) as response:
            size = 0
            for part in response.iter_raw():
                if part and result["ttfb_s"] is None:
                    result["ttfb_s"] = time.perf_counter() - started
                size += len(part)
            result["status"] = response.status_code
            if response.status_code == 200:
                result["audio_s"] = size / PCM_BYTES_PER_S
    except Exception as exc:  # counted as an error: connection refused, timeout, a broken stream
        result["status"] = None
        result["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    result["end"] = time.perf_counter()
    result["latency_s"] = result["end"] - started
    if result.get("status") == 200 and not result.get("audio_s"):
        result["error"] = "200 without audio"
    return result


def run_clients(url: str, per_client: list[list[Job]], deadline_s: float = BATCH_DEADLINE_S) -> list[dict]:
    """Each client (a thread with its own keep-alive connection) sends its jobs one after another; all start
    together. A client starts no new request after `deadline_s`."""
    import httpx

    results: list[dict] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(per_client))

    def client(jobs: list[Job]) -> None:
        with httpx.Client(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=10)) as http:
            barrier.wait(timeout=60)
            stop_at = time.perf_counter() + deadline_s
            for job in jobs:
                if time.perf_counter() > stop_at:
                    with lock:
                        results.append({"status": "skipped", "voice": job.voice.voice})
                    continue
                outcome = one_request(http, url, job)
                with lock:
                    results.append(outcome)

    threads = [threading.Thread(target=client, args=(jobs,), daemon=True) for jobs in per_client]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=deadline_s + 2 * REQUEST_TIMEOUT_S)
    return results


def spread(jobs: list[Job], clients: int) -> list[list[Job]]:
    """Deal jobs to clients like cards (client k gets jobs k, k+clients, ...)."""
    return [jobs[k::clients] for k in range(clients)]


def batch_stats(results: list[dict]) -> dict[str, Any]:
    """Throughput (audio seconds of 200s over the batch's wall time), latency and TTFB of the 200s, codes."""
    done = [r for r in results if "start" in r]
    ok = [r for r in done if r.get("status") == 200 and r.get("audio_s")]
    codes: dict[str, int] = {}
    for r in results:
        code = str(r.get("status"))
        codes[code] = codes.get(code, 0) + 1
    wall = (max(r["end"] for r in done) - min(r["start"] for r in done)) if done else 0.0
    audio = sum(r["audio_s"] for r in ok)
    return {"requests": len(results), "ok": len(ok), "codes": codes, "wall_s": wall, "audio_s": audio,
            "throughput": audio / wall if wall else 0.0,
            "latencies": [r["latency_s"] for r in ok], "ttfbs": [r["ttfb_s"] for r in ok if r["ttfb_s"] is not None],
            "errors": [r.get("error") or f"status {r.get('status')}" for r in results
                       if not (r.get("status") == 200 and r.get("audio_s"))]}


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------


class Bench:
    """The server's URL, the voices, the in-process Piper and Speaker, and the settings of this run."""

    def __init__(self, url: str, named: dict[str, Voice], mix: list[Voice], piper, speaker, args):
        self.url, self.named, self.mix, self.piper, self.speaker, self.args = url, named, mix, piper, speaker, args
        self.sentences = SENTENCES
        self.mix_next = 0
        self.replica = None  # the synthesis replica's process, once found
        self.exclude: set[int] = set()  # busy loops: not the server's CPU

    def cpu_now(self) -> dict[str, Any]:
        """CPU seconds (user + system) so far: this process (clients, Piper, the in-process Speaker), and each
        process it started (Ray: GCS, raylet, proxy, ingress, limiter, synthesis replica, espeak-ng)."""
        import psutil

        procs = {}
        for proc in psutil.Process().children(recursive=True):
            if proc.pid in self.exclude:
                continue
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            procs[proc.pid] = times.user + times.system
        return {"bench": time.process_time(), "procs": procs}

    def cpu_delta(self, before: dict[str, Any]) -> dict[str, float]:
        """CPU seconds since `before`: this process, the server side (all its child processes), the replica."""
        after = self.cpu_now()
        deltas = {pid: cpu - before["procs"].get(pid, 0.0) for pid, cpu in after["procs"].items()}
        replica = self.replica.pid if self.replica else None
        return {"cpu_bench_s": after["bench"] - before["bench"], "cpu_server_s": sum(deltas.values()),
                "cpu_replica_s": deltas.get(replica, 0.0)}

    def round_sentences(self, round_no: int) -> list[tuple[int, str]]:
        """The (index, sentence) pairs of a round: `per_round` of them, continuing through the list each round."""
        n = len(self.sentences)
        return [((round_no * self.args.per_round + i) % n, self.sentences[(round_no * self.args.per_round + i) % n])
                for i in range(self.args.per_round)]

    def jobs(self, voice_of, items: list[tuple[int, str]]) -> list[Job]:
        """One job per sentence, voice chosen per job (`voice_of()`), seeded per sentence."""
        return [Job(voice_of(), text, SEED + n) for n, text in items]

    def _next_mix(self) -> Voice:
        voice = self.mix[self.mix_next % len(self.mix)]
        self.mix_next += 1
        return voice

    def scenarios(self) -> dict[str, tuple[int, Any]]:
        """Name -> (concurrent clients, voice chooser)."""
        c = self.args.clients
        return {
            "base@1": (1, lambda: self.named["base"]),
            f"base@{c}": (c, lambda: self.named["base"]),
            f"resample@{c}": (c, lambda: self.named["resample"]),
            f"psola@{c}": (c, lambda: self.named["psola"]),
            f"mix50@{c}": (c, self._next_mix),
        }

    def speaker_round(self, items: list[tuple[int, str]]) -> dict[str, Any]:
        """Diagnostic: Chorus in process (chorus.serving.speaker.Speaker with the server's thread settings, no
        HTTP, no Ray), base voice, the bench sentences one after another."""
        latencies, ttfbs, audio = [], [], 0.0
        rate = self.speaker.sample_rate
        started = time.perf_counter()
        for n, text in items:
            t0 = time.perf_counter()
            first = None
            for chunk in self.speaker.stream(text, None, 1.0, SEED + n):
                if first is None:
                    first = time.perf_counter() - t0
                audio += len(chunk.audio) / rate
            latencies.append(time.perf_counter() - t0)
            ttfbs.append(first)
        wall = time.perf_counter() - started
        return {"requests": len(items), "ok": len(items), "codes": {"in-process": len(items)},
                "wall_s": wall, "audio_s": audio, "throughput": audio / wall, "latencies": latencies,
                "ttfbs": [t for t in ttfbs if t is not None], "errors": []}

    def piper_round(self, items: list[tuple[int, str]]) -> dict[str, Any]:
        """Piper in process: the sentences one after another."""
        latencies, audio = [], 0.0
        started = time.perf_counter()
        for _, text in items:
            t0 = time.perf_counter()
            audio += self.piper(text)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
        return {"requests": len(items), "ok": len(items), "codes": {"in-process": len(items)},
                "wall_s": wall, "audio_s": audio, "throughput": audio / wall, "latencies": latencies, "ttfbs": [],
                "errors": []}

    def warm(self) -> float | None:
        """First requests: the base voice (then the replica's RSS is read: idle), both tenant voices, Piper and
        the in-process Speaker once. Returns the idle RSS (MiB)."""
        rss_idle = None
        for name in ("base", "resample", "psola"):
            for n, text in enumerate(self.sentences[:2]):
                run_clients(self.url, [[Job(self.named[name], text, SEED + n)]])
            if name == "base":
                self.replica = replica_process()
                time.sleep(0.5)
                rss_idle = rss_mb(self.replica) if self.replica else None
        self.piper(self.sentences[0])
        if self.args.in_process:
            for _ in self.speaker.stream(self.sentences[0], None, 1.0, SEED):
                pass
        return rss_idle

    def load_mix(self) -> dict[str, Any]:
        """Attach all 50 mixed voices (one short request each), with the replica's RSS before and after."""
        proc = self.replica
        before = rss_mb(proc) if proc else None
        cache_before = cache_metrics(self.url)
        results = run_clients(self.url, [[Job(v, WARM_TEXT, SEED) for v in self.mix]])
        time.sleep(0.5)
        after = rss_mb(proc) if proc else None
        cache_after = cache_metrics(self.url)
        stats = batch_stats(results)
        per_voice = (after - before) / len(self.mix) if before is not None and after is not None else None
        cached = cache_after.get("voices", 0) - cache_before.get("voices", 0)
        merged = (cache_after.get("bytes", 0) - cache_before.get("bytes", 0)) / 2**20
        return {"bench": "serve", "kind": "memory", "replica_pid": proc.pid if proc else None,
                "rss_mb_before_mix": before, "rss_mb_after_mix": after, "voices_loaded": len(self.mix),
                "rss_mb_per_voice": per_voice, "cache_voices_added": cached,
                "cache_merged_mb_per_voice": merged / cached if cached else None,
                "cache_evictions": cache_after.get("evictions"), "cache_capacity_mb":
                    (cache_after.get("capacity_bytes") or 0) / 2**20 or None,
                "first_request_new_voice_p50_ms": _ms(percentile(stats["latencies"], 50)),
                "first_request_new_voice_max_ms": _ms(max(stats["latencies"], default=None)),
                "errors": len(stats["errors"])}

    def cold_attach(self) -> dict[str, Any]:
        """Cold attach (fetch, verify, merge) of fresh voices with a new VoiceCache built as Speaker builds it."""
        from chorus.serving.voices import VoiceCache, VoiceKey

        speaker = self.speaker
        cache = VoiceCache(speaker.voice.fingerprint, speaker.cache.base_weights, speaker.runtime.check,
                           capacity_mb=1024)
        keys = [VoiceKey(v.tenant, v.voice, 1, self._uri(v)) for v in self.mix[:self.args.attach_voices]]
        cache.get(VoiceKey("acme", "bright", 1, self._uri(self.named["resample"])))  # imports, first-touch costs
        times, loads = [], []
        for key in keys:
            started = time.perf_counter()
            voice, hit = cache.get(key)
            times.append(1000 * (time.perf_counter() - started))
            loads.append(voice.load_ms)
            assert not hit
        return {"bench": "serve", "kind": "cold_attach", "voices": len(keys), "median_ms": statistics.median(times),
                "max_ms": max(times), "min_ms": min(times), "load_ms_median": statistics.median(loads),
                "merged_mb_per_voice": voice.nbytes / 2**20}

    def _uri(self, voice: Voice) -> str:
        return (self.args.workdir / "registry" / voice.tenant / voice.voice / "1").as_uri()

    def ttfb(self) -> dict[str, Any]:
        """Time to first byte of a 200-character request, one at a time (streamed pcm, base voice)."""
        jobs = [Job(self.named["base"], TTFB_TEXT, SEED + n) for n in range(self.args.ttfb_requests)]
        stats = batch_stats(run_clients(self.url, [jobs]))
        return {"bench": "serve", "kind": "ttfb", "chars": len(TTFB_TEXT), "requests": stats["requests"],
                "errors": len(stats["errors"]), "ttfb_p50_ms": _ms(percentile(stats["ttfbs"], 50)),
                "ttfb_p99_ms": _ms(percentile(stats["ttfbs"], 99)),
                "ttfb_min_ms": _ms(min(stats["ttfbs"], default=None)),
                "latency_p50_ms": _ms(percentile(stats["latencies"], 50))}

    def rounds(self) -> dict[str, list[dict]]:
        """Every scenario and Piper once per round, the start rotated each round; per-round batch stats."""
        scenarios = self.scenarios()
        names = ["piper", *(["chorus-in-process"] if self.args.in_process else []), *scenarios]
        out: dict[str, list[dict]] = {name: [] for name in names}
        for round_no in range(self.args.rounds):
            shift = round_no % len(names)
            items = self.round_sentences(round_no)
            for name in names[shift:] + names[:shift]:
                cpu = self.cpu_now()
                if name == "piper":
                    stats = self.piper_round(items)
                elif name == "chorus-in-process":
                    stats = self.speaker_round(items)
                else:
                    clients, voice_of = scenarios[name]
                    stats = batch_stats(run_clients(self.url, spread(self.jobs(voice_of, items), clients)))
                out[name].append(stats | self.cpu_delta(cpu))
        return out

    def overload(self, clients: int) -> dict[str, Any]:
        """`clients` concurrent clients on the base voice, each sending `overload_requests` requests."""
        n = len(self.sentences)
        per_client = [[Job(self.named["base"], self.sentences[(k + j) % n], SEED + (k + j) % n)
                       for j in range(self.args.overload_requests)] for k in range(clients)]
        return batch_stats(run_clients(self.url, per_client))


def model_time_factor(scenario: str) -> float:
    """Model seconds per output second of a scenario's voice (1 / ProfileStream.time_scale): a lowered voice on the
    resample path is lengthened by its resampling; raised voices, the base voice and PSOLA keep the model's timing
    (a raised voice renders at the base voice's length and is WSOLA-stretched before the resampling)."""
    from chorus.adapters.profile import ProfileStream
    from chorus.adapters.train import VoiceProfile

    path = scenario.split("@")[0]
    profile = PROFILES.get("resample" if path == "mix50" else path)
    if profile is None:
        return 1.0
    return 1.0 / ProfileStream(VoiceProfile(**profile), 22_050).time_scale


def summarise_rounds(per_round: dict[str, list[dict]]) -> list[dict]:
    """Per scenario: median throughput over rounds, pooled latency/TTFB percentiles, requests and errors."""
    rows = []
    piper = per_round["piper"]
    for name, rounds in per_round.items():
        latencies = [x for r in rounds for x in r["latencies"]]
        ttfbs = [x for r in rounds for x in r["ttfbs"]]
        codes: dict[str, int] = {}
        for r in rounds:
            for code, n in r["codes"].items():
                codes[code] = codes.get(code, 0) + n
        rows.append({
            "bench": "serve", "kind": "scenario", "scenario": name,
            "clients": int(name.split("@")[1]) if "@" in name else 1,
            "throughput": statistics.median(r["throughput"] for r in rounds),
            # In the model's time (before the profile's resampling): the work done per second.
            "model_throughput": statistics.median(r["throughput"] for r in rounds) * model_time_factor(name),
            "throughput_min": min(r["throughput"] for r in rounds),
            "throughput_max": max(r["throughput"] for r in rounds),
            # Paired: each round's throughput over Piper's in the same round, so slow spells cancel out.
            "paired_vs_piper": statistics.median(r["throughput"] / p["throughput"] for r, p in zip(rounds, piper)),
            "audio_s": sum(r["audio_s"] for r in rounds), "wall_s": sum(r["wall_s"] for r in rounds),
            "requests": sum(r["requests"] for r in rounds), "errors": sum(len(r["errors"]) for r in rounds),
            "codes": codes, "rounds": len(rounds), "round_throughputs": [r["throughput"] for r in rounds],
            # CPU seconds per audio second (all threads): this process (the clients, or Piper / the Speaker in
            # process), and the processes it started (Ray and the server; ~0 for the in-process rows).
            **{f"{key}_per_audio_s": sum(r[f"{key}_s"] for r in rounds) / max(1e-9, sum(r["audio_s"] for r in rounds))
               for key in ("cpu_bench", "cpu_server", "cpu_replica")},
            "latency_p50_ms": _ms(percentile(latencies, 50)), "latency_p99_ms": _ms(percentile(latencies, 99)),
            "ttfb_p50_ms": _ms(percentile(ttfbs, 50)), "ttfb_p99_ms": _ms(percentile(ttfbs, 99)),
            "error_samples": sorted({e for r in rounds for e in r["errors"]})[:3],
        })
    anchor = rows[0]["throughput"]
    for row in rows:
        row["vs_piper"] = row["throughput"] / anchor
    return rows


def run_condition(bench: Bench, condition: str, load_procs: int) -> dict[str, Any]:
    """Everything for one condition: cold attach, TTFB, interleaved rounds, capacity, overload, targets."""
    args = bench.args
    busy: list[subprocess.Popen] = []
    started = time.time()
    try:
        if condition == "loaded":
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load_procs)]
            bench.exclude = {proc.pid for proc in busy}
            time.sleep(2.0)
        load_before = [round(x, 2) for x in os.getloadavg()]
        cpu_before = cpu_snapshot()
        emit({"bench": "serve", "kind": "condition", "condition": condition, "busy_loops": len(busy),
              "load_avg_before": load_before})
        attach = bench.cold_attach() | {"condition": condition}
        emit(attach)
        ttfb = bench.ttfb() | {"condition": condition}
        emit(ttfb)
        rows = summarise_rounds(bench.rounds())
        for row in rows:
            emit(row | {"condition": condition})
        by = {row["scenario"]: row for row in rows}
        c = args.clients
        one = by["base@1"]["throughput"]
        gain = by[f"base@{c}"]["throughput"] / one if one else float("nan")
        capacity = c if gain >= SATURATION_GAIN else 1
        overload_clients = 2 * capacity
        over = bench.overload(overload_clients)
        idle_p99 = by["base@1"]["latency_p99_ms"]
        over_p99 = _ms(percentile(over["latencies"], 99))
        shed = sum(n for code, n in over["codes"].items() if code in ("429", "503"))
        skipped = over["codes"].get("skipped", 0)  # not sent: the batch ran past its deadline
        failed = sum(n for code, n in over["codes"].items() if code not in ("200", "429", "503", "skipped"))
        failed += over["codes"].get("200", 0) - over["ok"]  # a 200 without audio is a failure too
        overload = {"bench": "serve", "kind": "overload", "condition": condition, "capacity": capacity,
                    "throughput_gain_2_vs_1_client": gain, "clients": overload_clients,
                    "requests": over["requests"], "codes": over["codes"], "accepted": over["ok"], "shed_429_503": shed,
                    "failed": failed, "skipped": skipped,
                    "throughput": over["throughput"], "latency_p50_ms": _ms(percentile(over["latencies"], 50)),
                    "latency_p99_ms": over_p99, "ttfb_p50_ms": _ms(percentile(over["ttfbs"], 50)),
                    "ttfb_p99_ms": _ms(percentile(over["ttfbs"], 99)), "idle_p99_ms": idle_p99,
                    "p99_vs_idle": over_p99 / idle_p99 if over_p99 and idle_p99 else None,
                    "error_samples": sorted(set(over["errors"]))[:3]}
        emit(overload)
        load_after = [round(x, 2) for x in os.getloadavg()]
        cpu = {k: round(v, 2) for k, v in cpu_shares(cpu_before, bench.exclude).items()}
    finally:
        for proc in busy:
            proc.kill()
            proc.wait(timeout=10)
        bench.exclude = set()
    targets = evaluate_targets(by, c, ttfb, attach, overload)
    summary = {"bench": "serve", "kind": "summary", "condition": condition, "busy_loops": len(busy),
               "load_avg_before": load_before, "load_avg_after": load_after, "cpu_cores": cpu,
               "seconds": round(time.time() - started, 1), "targets": targets}
    emit(summary)
    return {"condition": condition, "busy_loops": len(busy), "load_avg_before": load_before,
            "load_avg_after": load_after, "cpu_cores": cpu, "scenarios": rows, "ttfb": ttfb, "cold_attach": attach,
            "overload": overload, "targets": targets, "seconds": summary["seconds"]}


def evaluate_targets(by: dict[str, dict], c: int, ttfb: dict, attach: dict, overload: dict) -> list[dict]:
    """Each target: the measured value, the threshold and whether it is met (never asserted)."""
    def thr(name: str) -> float:
        return by[name]["throughput"] or float("nan")  # nothing served: the ratios say nan, the target is not met

    def row(name: str, value: float | None, op: str, limit: float, note: str) -> dict:
        met = value is not None and not math.isnan(value) and (value >= limit if op == ">=" else value <= limit)
        return {"target": name, "value": value, "op": op, "limit": limit, "met": met, "note": note}

    def paired(a: str, b: str) -> float:
        """Median over rounds of a's throughput over b's in the same round (same sentences, moments apart)."""
        ratios = [x / y for x, y in zip(by[a]["round_throughputs"], by[b]["round_throughputs"]) if y]
        return statistics.median(ratios) if ratios else float("nan")

    def both(a: str, b: str) -> str:
        return f"ratio of medians {thr(a) / thr(b):.3f}"

    resample, base = f"resample@{c}", f"base@{c}"
    in_model_time = paired(resample, base) * model_time_factor(resample)
    in_process = (f"; diagnostic, Chorus in process (no HTTP/Ray): {paired('chorus-in-process', 'piper'):.3f}"
                  if "chorus-in-process" in by else "")
    rows = [
        row("resample tenant / base voice", paired(resample, base), ">=", TARGETS["tenant_vs_base_min"],
            f"output audio-s/s, {c} clients (engine at the base length, WSOLA x r, soxr); {both(resample, base)}; "
            f"in model time: {in_model_time:.3f}"),
        row("psola tenant / base voice", paired(f"psola@{c}", base), ">=", TARGETS["tenant_vs_base_min"],
            f"output audio-s/s, {c} clients (PSOLA keeps the timing); {both(f'psola@{c}', base)}"),
        row("50-voice mix / single tenant voice", paired(f"mix50@{c}", resample), ">=",
            TARGETS["mix50_vs_single_min"], f"both on the resample path, same profile; {both(f'mix50@{c}', resample)}"),
        row("Chorus over HTTP / Piper in process", paired(base, "piper"), ">=", TARGETS["chorus_vs_piper_min"],
            f"base voice, {c} clients; {both(base, 'piper')}; 1 client: {paired('base@1', 'piper'):.3f}"
            f"{in_process}"),
        row("TTFB, 200 chars, idle server (p50, ms)", ttfb["ttfb_p50_ms"], "<=", TARGETS["ttfb_ms_max"],
            f"p99 {ttfb['ttfb_p99_ms']:.0f} ms over {ttfb['requests']}" if ttfb["ttfb_p99_ms"] else ""),
        row("cold attach (median, ms)", attach["median_ms"], "<=", TARGETS["cold_attach_ms_max"],
            f"max {attach['max_ms']:.1f} ms over {attach['voices']} voices"),
        row("overload: accepted p99 / idle p99", overload["p99_vs_idle"], "<=", TARGETS["overload_p99_vs_idle_max"],
            f"{overload['clients']} clients (2x capacity {overload['capacity']})"),
        row("overload: requests not 200/429/503", overload["failed"], "<=", 0, f"codes {overload['codes']}"),
    ]
    return rows


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------


def markdown(payload: dict, rerun: str) -> str:
    """serve.md: setup, one table per condition, targets, memory."""
    cfg = payload["config"]
    lines = [
        "# Serving benchmark\n\n",
        f"Chorus over HTTP (Ray Serve on 127.0.0.1: ingress, limiter, one synthesis replica with "
        f"{cfg['server']['threads']} ONNX Runtime threads, no spinning, {cfg['server']['workers']} synthesis at a "
        f"time) against Piper in process (piper-tts, {THREADS} intra-op threads, ONNX Runtime's default spinning "
        f"threads), in the same run. Ray runs its worker processes (Serve's proxy, the ingress and synthesis "
        f"replicas) at nice {cfg['nice']['replica']}; this process (Piper, the clients, the in-process Speaker) "
        f"runs at nice {cfg['nice']['bench']}"
        + (": under contention the scheduler gives the server the smaller share. "
           if (cfg["nice"]["replica"] or 0) > cfg["nice"]["bench"] else ". ") +
        f"{cfg['rounds']} interleaved rounds (start rotated); in each, every scenario "
        f"and Piper get the same {cfg['per_round']} sentences (of {len(payload['sentences'])}, "
        f"{min(map(len, payload['sentences']))}-{max(map(len, payload['sentences']))} characters, continuing "
        f"through them round to round). Throughput = audio seconds / wall seconds of a round's batch (median over "
        f"rounds; Piper: the sentences one after another); `paired` = median of each round's ratio to Piper's, "
        f"and the targets' ratios are paired the same way (the ratio of medians is in the note). Latency "
        f"and TTFB (first chunk of the streamed 24 kHz pcm response) are percentiles over every request of the "
        f"scenario (nearest rank). Tenant voices: `resample` {PROFILES['resample']}, `psola` {PROFILES['psola']}; "
        f"`mix50`: round robin over 50 tenant voices (10 tenants x 5, resample profile, real engine LoRAs, all "
        f"attached before timing). `model_throughput`: the same in the model's time (the work done per second; "
        f"it differs only for a lowered voice on the resample path, lengthened by its resampling). "
        f"`chorus-in-process`: a diagnostic, "
        f"the server's Speaker run in this process (same thread settings, no HTTP, no Ray), sequential. "
        f"`cpu_server_per_audio_s`: CPU seconds of every process the benchmark started (Ray, the server) per "
        f"audio second; `cpu_bench_per_audio_s`: this process's (the HTTP clients, or Piper / the Speaker in "
        f"process). The machine is shared; the load averages are printed per condition.\n",
    ]
    for cond in payload["conditions"]:
        cpu = cond["cpu_cores"]
        lines.append(f"\n## {cond['condition']}: {cond['busy_loops']} busy-loop process(es)\n\n"
                     f"Load average (1/5/15 min) before {cond['load_avg_before']}, after {cond['load_avg_after']}; "
                     f"{cond['seconds']:.0f} s. Cores in use on average ({os.cpu_count()} in all): "
                     f"{cpu['machine_cores']:.2f}, of which this benchmark {cpu['bench_cores']:.2f}, its busy loops "
                     f"{cpu['busy_loop_cores']:.2f}, other processes on the machine {cpu['other_cores']:.2f}.\n\n")
        rows = [{**r, "codes": " ".join(f"{k}:{v}" for k, v in r["codes"].items())} for r in cond["scenarios"]]
        lines.append(markdown_table(rows, ["scenario", "clients", "throughput", "model_throughput", "vs_piper",
                                           "paired_vs_piper", "cpu_server_per_audio_s", "cpu_bench_per_audio_s",
                                           "latency_p50_ms", "latency_p99_ms", "ttfb_p50_ms", "ttfb_p99_ms",
                                           "requests", "errors"], digits=2))
        o, t, a = cond["overload"], cond["ttfb"], cond["cold_attach"]
        lines.append(
            f"\nOverload: capacity {o['capacity']} (2 clients gave {o['throughput_gain_2_vs_1_client']:.2f}x the "
            f"throughput of 1; capacity is 2 if >= {SATURATION_GAIN}x), {o['clients']} clients x "
            f"{o['requests'] // max(1, o['clients'])} requests, base voice: codes {o['codes']}; accepted p50/p99 "
            f"{_f(o['latency_p50_ms'])}/{_f(o['latency_p99_ms'])} ms vs p99 at 1 client {_f(o['idle_p99_ms'])} ms; "
            f"TTFB p50/p99 {_f(o['ttfb_p50_ms'])}/{_f(o['ttfb_p99_ms'])} ms; throughput {o['throughput']:.2f}.  \n"
            f"TTFB of {t['chars']} characters on an otherwise idle server (one request at a time, base voice, pcm): "
            f"p50 {_f(t['ttfb_p50_ms'])} ms, p99 {_f(t['ttfb_p99_ms'])} ms ({t['requests']} requests, "
            f"{t['errors']} errors).  \n"
            f"Cold attach (VoiceCache: fetch, verify, merge; file:// registry, page cache warm): median "
            f"{a['median_ms']:.1f} ms, max {a['max_ms']:.1f} ms over {a['voices']} voices; "
            f"{a['merged_mb_per_voice']:.2f} MB merged per voice.\n\n")
        lines.append(markdown_table([{**r, "met": "met" if r["met"] else "NOT met"} for r in cond["targets"]],
                                    ["target", "value", "op", "limit", "met", "note"], digits=3))
    mem = payload.get("memory")
    if mem:
        fmt = lambda v, d=1: "?" if v is None else f"{v:.{d}f}"  # noqa: E731
        lines.append(
            f"\n## Memory (synthesis replica, measured once before the conditions)\n\n"
            f"RSS idle (base model loaded, base voice warm): {fmt(payload.get('rss_mb_idle'))} MiB; with the two "
            f"tenant voices: {fmt(mem['rss_mb_before_mix'])} MiB; after attaching {mem['voices_loaded']} more: "
            f"{fmt(mem['rss_mb_after_mix'])} MiB, i.e. {fmt(mem['rss_mb_per_voice'], 2)} MiB RSS per cached voice "
            f"(merged weights per voice per the cache: {fmt(mem['cache_merged_mb_per_voice'], 2)} MB). Voice cache "
            f"{fmt(mem['cache_capacity_mb'], 0)} MB (default 256, raised only if 1.25 x 52 voices would not fit): "
            f"{mem['voices_loaded'] + 2} tenant voices attached, evictions {mem['cache_evictions']:.0f}. "
            f"First request to a voice not yet attached ('{WARM_TEXT}'): p50 "
            f"{fmt(mem['first_request_new_voice_p50_ms'], 0)} ms, max "
            f"{fmt(mem['first_request_new_voice_max_ms'], 0)} ms.\n")
    lines.append(f"\nHow to rerun: `{rerun}` from the repository root (this run, {payload['seconds']:.0f} s in all); "
                 f"the full run is `make bench-serve`, `python -m bench.serve --quick` a short one for development "
                 f"(writes serve-quick.*).\n")
    return "".join(lines)


def plot(path: Path, conditions: list[dict]) -> None:
    """Throughput per scenario, one bar per condition side by side, Piper's as each condition's dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"idle": "#4878a8", "loaded": "#d08a3c"}
    names = [r["scenario"] for r in conditions[0]["scenarios"] if "@" in r["scenario"]]
    names += [r["scenario"] for r in conditions[0]["scenarios"] if r["scenario"] == "chorus-in-process"]
    width = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, cond in enumerate(conditions):
        by = {r["scenario"]: r["throughput"] for r in cond["scenarios"]}
        colour = colours.get(cond["condition"], f"C{i}")
        xs = [n + (i - (len(conditions) - 1) / 2) * width for n in range(len(names))]
        bars = ax.bar(xs, [by[n] for n in names], width, color=colour,
                      label=f"Chorus, {cond['condition']} ({cond['busy_loops']} busy-loop processes)")
        for bar, name in zip(bars, names):
            if "@" not in name:  # in process, not over HTTP: a diagnostic
                bar.set_hatch("//")
        ax.axhline(by["piper"], color=colour, linestyle="--", linewidth=1.2,
                   label=f"Piper in process, {cond['condition']}")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("audio seconds per second")
    ax.set_title("Serving throughput: Chorus over HTTP (name@clients) vs Piper in process")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the serving benchmark; JSON lines on stdout, files in bench/results/."""
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for development (writes serve-quick.*)")
    parser.add_argument("--conditions", default="idle,loaded", help="comma-separated: idle, loaded")
    parser.add_argument("--load-procs", type=int, default=1, help="busy-loop processes in the loaded condition")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per condition (default 9; quick 1)")
    parser.add_argument("--per-round", type=int, default=2,
                        help=f"sentences per scenario per round, continuing through the {len(SENTENCES)} bench "
                             "sentences from round to round (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients of the throughput scenarios")
    parser.add_argument("--name", help="result file stem (default serve, quick: serve-quick)")
    parser.add_argument("--server-threads", type=int, help="ServingArgs.threads (default: its default, 2)")
    parser.add_argument("--server-workers", type=int, help="ServingArgs.workers (default: its default, 1)")
    parser.add_argument("--worker-niceness", type=int,
                        help="RAY_worker_niceness: the nice value of Ray's worker processes (the Serve proxy and "
                             "replicas); unset: Ray's default, 15")
    parser.add_argument("--no-in-process", dest="in_process", action="store_false",
                        help="skip the diagnostic row of Chorus in process (Speaker, no HTTP/Ray)")
    args = parser.parse_args(argv)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if not conditions or any(c not in ("idle", "loaded") for c in conditions):
        parser.error("--conditions takes idle and/or loaded")
    if args.clients < 2:
        parser.error("--clients must be at least 2 (1 client is always measured)")
    args.rounds = args.rounds or (1 if args.quick else 9)
    if args.per_round < 1:
        parser.error("--per-round must be at least 1")
    args.ttfb_requests = 3 if args.quick else 10
    args.attach_voices = 5 if args.quick else 10
    args.overload_requests = 1 if args.quick else 4
    name = args.name or ("serve-quick" if args.quick else "serve")

    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    workdir = Path(tempfile.mkdtemp(prefix="chorus-bench-serve-"))
    args.workdir = workdir
    ray_tmp = Path(tempfile.gettempdir()) / f"chorus-ray-bench-{os.getpid()}"
    os.environ.setdefault("RAY_TMPDIR", str(ray_tmp))  # this run's own Ray session files (removed at the end)
    server_up = False
    payload: dict[str, Any] = {}
    try:
        tenants_file, named, mix, _ = make_registry(workdir)
        emit({"bench": "serve", "kind": "setup", "voices": 2 + len(mix), "seconds": round(time.time() - started, 1)})

        from chorus.serving.app import ServingArgs
        from chorus.serving.local import start_local
        from chorus.serving.speaker import Speaker
        from chorus.serving.voices import VoiceKey

        tuning = {k: v for k, v in (("threads", args.server_threads), ("workers", args.server_workers)) if v}
        # In process, with the server's thread settings: the cold attach (its VoiceCache) and a diagnostic row.
        speaker = Speaker(threads=tuning.get("threads", ServingArgs.model_fields["threads"].default))
        probe, _ = speaker.cache.get(VoiceKey("acme", "bright", 1, (workdir / "registry/acme/bright/1").as_uri()))
        # Every voice must fit the cache (25% room) so the mix measures switching, not eviction; the default
        # (256 MB) is kept when it is enough.
        needed_mb = math.ceil(1.25 * (2 + len(mix)) * probe.nbytes / 2**20)
        serving_args = ServingArgs(tenants_file=tenants_file, voice_cache_mb=max(256.0, needed_mb), **tuning)
        piper = build_piper()
        if args.worker_niceness is not None:
            os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
        port = _free_port()
        t0 = time.perf_counter()
        server_up = True
        url = start_local(serving_args, port=port)
        emit({"bench": "serve", "kind": "server", "url": url, "start_s": round(time.perf_counter() - t0, 1),
              "voice_cache_mb": serving_args.voice_cache_mb, "merged_mb_per_voice": probe.nbytes / 2**20})

        bench = Bench(url, named, mix, piper, speaker, args)
        rss_idle = bench.warm()
        nice = {"replica": _nice(bench.replica), "bench": os.nice(0)}
        emit({"bench": "serve", "kind": "niceness", "replica_nice": nice["replica"], "bench_nice": nice["bench"]})
        memory = bench.load_mix()
        emit(memory | {"rss_mb_idle": rss_idle})

        results = [run_condition(bench, condition, args.load_procs) for condition in conditions]

        import onnxruntime
        import ray
        from importlib.metadata import version

        payload = {
            "machine": machine_info() | {"ray": ray.__version__, "onnxruntime": onnxruntime.__version__,
                                         "piper_tts": version("piper-tts"), "load_avg_at_start": load_at_start},
            "config": {"quick": args.quick, "rounds": args.rounds, "per_round": args.per_round, "clients": args.clients,
                       "load_procs": args.load_procs, "ttfb_requests": args.ttfb_requests,
                       "attach_voices": args.attach_voices, "overload_requests_per_client": args.overload_requests,
                       "server": serving_args.model_dump(mode="json", exclude={"tenants_file"}),
                       "server_threads_spin": False, "piper_threads": THREADS, "piper_threads_spin": True,
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "nice": nice,
                       "ray_worker_niceness_env": os.environ.get("RAY_worker_niceness"),
                       "profiles": PROFILES, "mix_voices": len(mix), "seed": SEED},
            "targets": TARGETS, "sentences": bench.sentences, "ttfb_text": TTFB_TEXT,
            "rss_mb_idle": rss_idle, "memory": memory, "conditions": results,
        }
    finally:
        if server_up:
            from chorus.serving.local import stop_local

            try:
                # Ray reports its actors' shutdown on stdout: keep stdout to the JSON lines.
                with contextlib.redirect_stdout(sys.stderr):
                    stop_local()
            except Exception as exc:  # report, keep cleaning up
                print(f"stop_local failed: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    payload["seconds"] = round(time.time() - started, 1)
    rerun = "make bench-serve" + (f" BENCH_ARGS='{' '.join(argv)}'" if argv else "")
    if argv is None and sys.argv[1:]:
        rerun = f"make bench-serve BENCH_ARGS='{' '.join(sys.argv[1:])}'"
    path = write_results(name, payload, markdown(payload, rerun))
    plot(RESULTS_DIR / f"{name}.png", payload["conditions"])
    emit({"bench": "serve", "kind": "files", "json": path, "markdown": RESULTS_DIR / f"{name}.md",
          "png": RESULTS_DIR / f"{name}.png", "seconds": payload["seconds"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
