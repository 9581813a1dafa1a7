"""The local platform, as `make run` shows it: a demo tenant with the base voice and a trained voice, served.

The demo voice is trained once from generated speech (the base voice re-voiced with WORLD: higher,
brighter, a little slower; ~60 s of clips) with few steps, published to a file:// registry in the cache
and found there on later runs. Then Chorus starts on Ray Serve with a tenants file holding the demo
tenant's key hash, a sentence is synthesised in each voice through the HTTP API into out/, scored with
the quality harness, and the server keeps running for curl, OpenAI clients and the playground.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from chorus.adapters.targets import WorldTarget
from chorus.settings import get_settings

TENANT = "demo"
VOICE = "bright"
TARGET = WorldTarget(name=VOICE, f0_factor=1.3, formant_factor=1.08, tempo=0.95)
STEPS = 80
"""Training steps for the demo voice: about a minute here. The adapters bench trains 600."""
TEXT = "Hello from Chorus. Every tenant voice is a small adapter on one shared model."


def _log(message: str) -> None:
    print(f"[demo +{time.perf_counter() - _T0:5.1f}s] {message}", flush=True)


_T0 = time.perf_counter()


def demo_key(root: Path) -> str:
    """The demo tenant's API key, made once and kept (mode 0600) in the cache."""
    from chorus.operator.apikey import generate_api_key

    path = root / "api-key"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_api_key())
    return path.read_text().strip()


def ensure_demo_voice(root: Path) -> str:
    """The artifact URI of the demo voice, training and publishing it first if the registry lacks it."""
    from chorus.adapters.registry import Registry

    registry = Registry((root / "registry").as_uri())
    if TENANT in registry.tenants() and VOICE in registry.voices(TENANT) and registry.versions(TENANT, VOICE):
        version = registry.latest(TENANT, VOICE)
        _log(f"demo voice {TENANT}/{VOICE} version {version} found in {registry.root_uri}")
        return (root / "registry" / TENANT / VOICE / str(version)).as_uri()
    from chorus.adapters.artifact import build_manifest, save_peft_adapter
    from chorus.adapters.dataset import prepare_dataset
    from chorus.adapters.targets import TRAIN_SENTENCES, render_target, write_clips
    from chorus.adapters.train import TrainConfig, train_adapter
    from chorus.engine.voice import load_base_voice

    work = root / "work"
    _log(f"making ~60 s of speech in the demo voice ({TARGET.model_dump()})")
    clips = write_clips(work / "clips", TRAIN_SENTENCES, lambda s: render_target(s, TARGET), "train")
    _log("preparing the training set")
    dataset = prepare_dataset(clips.as_uri(), work / "dataset", overwrite=True)
    _log(f"training {STEPS} steps (the progress bar shows loss and ETA)")
    result = train_adapter(work / "dataset", TrainConfig(steps=STEPS, max_minutes=3),
                           checkpoint_dir=work / "checkpoints")
    artifact = work / "artifact"
    save_peft_adapter(result.peft_model, artifact)
    build_manifest(artifact, tenant=TENANT, voice=VOICE, base_fingerprint=load_base_voice().fingerprint,
                   dataset_hash=dataset.dataset_hash, training=TrainConfig(steps=STEPS).model_dump(),
                   profile=result.profile.model_dump())
    published = registry.publish(artifact)
    _log(f"published {TENANT}/{VOICE} version {published.version} (profile {result.profile.model_dump()})")
    return (root / "registry" / TENANT / VOICE / str(published.version)).as_uri()


def write_tenants(path: Path, key: str, voice_uri: str) -> Path:
    """The tenants file of the local source: the demo tenant, its key's sha256 and its voice."""
    import yaml

    from chorus.serving.tenants import hash_key

    tenants = {"tenants": [{"name": TENANT, "apiKeySha256": hash_key(key),
                            "limits": {"requestsPerMinute": 600, "maxConcurrent": 4, "maxCharsPerRequest": 5000},
                            "voices": [{"name": VOICE, "version": int(voice_uri.rstrip("/").rsplit("/", 1)[1]),
                                        "adapterUri": voice_uri}]}]}
    path.write_text(yaml.safe_dump(tenants, sort_keys=False))
    return path


def run_demo(out: Path, port: int = 8000, text: str | None = None, wait: bool = True) -> int:
    """Train (once), serve, synthesise and score each demo voice, print how to call it; serve until Ctrl-C."""
    import httpx
    import numpy as np

    from chorus.engine.audio import load_audio
    from chorus.quality import evaluate, render_table
    from chorus.serving.app import ServingArgs
    from chorus.serving.cli import wait_for_interrupt
    from chorus.serving.local import start_local, stop_local

    text = text or TEXT
    root = get_settings().cache_dir("demo")
    key = demo_key(root)
    voice_uri = ensure_demo_voice(root)
    tenants = write_tenants(root / "tenants.yaml", key, voice_uri)
    _log("starting Ray Serve and the Chorus application")
    url = start_local(ServingArgs(tenants_file=tenants), port=port)
    try:
        _log(f"serving at {url}")
        out.mkdir(parents=True, exist_ok=True)
        reports = []
        for voice in ("default", VOICE):
            started = time.perf_counter()
            response = httpx.post(f"{url}/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "chorus", "input": text, "voice": voice, "response_format": "wav",
                                        "seed": 0},  # the same take each run, so the scores compare
                                  timeout=120)
            if response.status_code != 200:
                print(f"demo: {voice}: HTTP {response.status_code}: {response.text}")
                return 1
            path = out / f"demo-{voice}.wav"
            path.write_bytes(response.content)
            audio, rate = load_audio(path)
            _log(f"{voice}: {len(audio) / rate:.1f} s of audio in {time.perf_counter() - started:.2f} s -> {path}")
            reports.append(evaluate(np.asarray(audio), rate, text, name=f"{voice} ({path.name})",
                                    metrics=("wer", "dnsmos", "f0")))
        print(render_table(reports))
        print(f"\nThe demo tenant's key is in {root / 'api-key'}. Try it:\n")
        print(f"  curl -sS {url}/v1/audio/speech -H \"Authorization: Bearer $(cat {root / 'api-key'})\" "
              f"-H 'Content-Type: application/json' -d '{{\"model\": \"chorus\", \"voice\": \"{VOICE}\", "
              f"\"input\": \"Hello there.\", \"response_format\": \"wav\"}}' -o hello.wav\n")
        print("python - <<'EOF'\nfrom openai import OpenAI\n"
              f"client = OpenAI(base_url=\"{url}/v1\", api_key=open(\"{root / 'api-key'}\").read().strip())\n"
              f"client.audio.speech.create(model=\"tts-1\", voice=\"{VOICE}\", input=\"Hello there.\")"
              ".write_to_file(\"hello.mp3\")\nEOF\n")
        print(f"  Playground: {url}/   API docs: {url}/docs   Metrics: {url}/metrics")
        if wait:
            print("\nServing until Ctrl-C.", flush=True)
            wait_for_interrupt()
        return 0
    finally:
        stop_local()
