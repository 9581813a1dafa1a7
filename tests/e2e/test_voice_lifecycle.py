"""The whole path of a tenant voice: `kubectl apply` -> the operator trains it on Ray -> the gate -> serving.

Real parts only: the test control plane, the operator as its own process, the session's Ray (its
job API runs the training, Serve runs a Chorus application reading the operator's records from
Kubernetes), a real training run of a generated voice, and HTTP calls with the tenant's key.

The platform's gate here asks for 10% of the similarity gap instead of the default 70%: a run of
60 steps (what a test can afford) closed 25% of it when tried by hand, far from 70%. The gate
refusing a version, and the version before it serving on, is covered against a real registry in
tests/unit/test_operator_voices.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time

import httpx
import pytest

from chorus.operator.process import OperatorProcess
from chorus.operator.testing import apply, get_json, install_crds, tenant_manifest, wait_ready, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

STEPS = 60
GATE = {"min_gap_closed": 0.1}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Generated recordings: `good` (~60 s, a brighter voice, with transcripts) and `tiny` (~6 s)."""
    from chorus.adapters.targets import HELDOUT_SENTENCES, TRAIN_SENTENCES, WorldTarget, render_target, write_clips

    root = tmp_path_factory.mktemp("samples")
    target = WorldTarget(name="bright", f0_factor=1.3, formant_factor=1.08, tempo=0.95)
    texts = TRAIN_SENTENCES + HELDOUT_SENTENCES[:3]
    good = write_clips(root / "good", texts, lambda s: render_target(s, target), "clip")
    tiny = write_clips(root / "tiny", TRAIN_SENTENCES[:2], lambda s: render_target(s, target), "clip")
    return good, tiny


def _speech(url: str, key: str, voice: str, text: str = "The voice came out of the registry.") -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": "chorus", "input": text, "voice": voice, "response_format": "wav"})


def test_apply_train_gate_serve_restart_delete(control_plane, kubectl, ray_serve, ray_jobs, samples,
                                               tmp_path, unique_name):
    from ray import serve
    from ray.job_submission import JobSubmissionClient

    from chorus.serving.app import ServingArgs, build_app

    good, tiny = samples
    platform = f"e2e-{unique_name[-6:]}"
    registry = tmp_path / "registry"
    install_crds(kubectl)
    settings = {"standalone": "true", "platform_namespace": platform, "registry_uri": registry.as_uri(),
                "training_backend": "ray", "ray_address": ray_jobs, "ray_python": sys.executable,
                "training_cpus": "0", "gate": json.dumps(GATE), "voice_poll_interval_s": "5"}
    name = unique_name
    voices = [{"name": "narrator", "samples": {"uri": good.as_uri(), "training": {"steps": STEPS, "maxMinutes": 5}}},
              {"name": "tiny", "samples": {"uri": tiny.as_uri()}}]
    seen: list[tuple[str, str, str | None]] = []

    def narrator_done():
        tenant = get_json(kubectl, "voicetenant", name)
        for v in ((tenant or {}).get("status") or {}).get("voices") or []:
            step = (v.get("progress") or {}).get("step")
            if not seen or seen[-1][:2] != (v["name"], v["state"]) or (step and seen[-1][2] != step):
                seen.append((v["name"], v["state"], step))
        states = {v["name"]: v for v in ((tenant or {}).get("status") or {}).get("voices") or []}
        return tenant if states.get("narrator", {}).get("state") in ("Ready", "Failed") else None

    with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log", settings) as op:
        op.wait_for_log("watching VoiceTenants", timeout=120)
        serve.run(build_app(ServingArgs(kubernetes_namespace=platform, kubeconfig=control_plane.kubeconfig,
                                        synthesis_cpus=0.25)), name="e2e", route_prefix="/e2e")
        url = f"{ray_serve}/e2e"
        try:
            apply(kubectl, tenant_manifest(name, voices=voices))
            wait_ready(kubectl, name, timeout=60)
            printed = wait_until(lambda: "narrator" in (out := kubectl("get", "vt", name).stdout) and
                                 ("Training" in out or "/" + str(STEPS) in out) and out, timeout=300,
                                 interval=1, what="kubectl get vt showing the training voice")
            assert "narrator" in printed
            tenant = wait_until(narrator_done, timeout=900, interval=1, what="narrator trained and gated")
            status = {v["name"]: v for v in tenant["status"]["voices"]}
            narrator, small = status["narrator"], status["tiny"]
            states = [s for n, s, _ in seen if n == "narrator"]
            assert "Training" in states and states.index("Training") < len(states) - 1, seen
            steps = [step for n, s, step in seen if n == "narrator" and s == "Training" and step]
            assert steps and all(0 < s <= STEPS for s in steps), seen
            assert narrator["state"] == "Ready", (narrator, op.log_text()[-3000:])
            assert narrator["servingVersion"] == 1 and narrator["gate"]["passed"] is True
            assert narrator["adapterUri"] == f"{registry.as_uri()}/{name}/narrator/1"
            assert narrator["quality"]["similarityGapClosed"] >= GATE["min_gap_closed"]
            assert (small["state"], small["reason"]) == ("Failed", "TooLittleSpeech"), small
            assert "usable" in small["message"] and "re-apply" in small["message"]
            assert tenant["status"]["voiceSummary"] == "1/2"
            described = kubectl("describe", "vt", name).stdout
            assert "TooLittleSpeech" in described and "VoiceReady" in described

            secret = get_json(kubectl, "secret", "chorus-api-key", "-n", f"tenant-{name}")
            key = base64.b64decode(secret["data"]["apiKey"]).decode()
            listed = wait_until(lambda: (r := httpx.get(f"{url}/v1/voices", timeout=10,
                                                        headers={"Authorization": f"Bearer {key}"})).status_code == 200
                                and any(v["id"] == "narrator" and v.get("version") == 1 for v in r.json()["data"])
                                and r.json(), timeout=30, what="serving lists narrator version 1")
            assert {v["id"] for v in listed["data"]} >= {"default", "narrator"}
            adapted, base = _speech(url, key, "narrator"), _speech(url, key, "default")
            assert adapted.status_code == 200 and base.status_code == 200, adapted.text
            assert adapted.content[:4] == b"RIFF" and adapted.content != base.content
            refused = _speech(url, key, "tiny")
            assert refused.status_code == 409 and "not ready (state: Failed)" in refused.text, refused.text

            # A restarted operator finds the version by its identity: no second run, nothing rewritten.
            jobs = [j for j in JobSubmissionClient(ray_jobs).list_jobs() if (j.metadata or {}).get("tenant") == name]
            assert sorted(j.metadata["voice"] for j in jobs) == ["narrator", "tiny"], jobs  # one run per voice
            before = get_json(kubectl, "voicetenant", name)
        except BaseException:
            serve.delete("e2e")
            raise
    try:
        with OperatorProcess(control_plane.kubeconfig, tmp_path / "operator2.log", settings) as op2:
            op2.wait_for_log("watching VoiceTenants", timeout=120)
            time.sleep(8)
            after = get_json(kubectl, "voicetenant", name)
            assert after["status"]["voices"] == before["status"]["voices"]
            jobs = [j for j in JobSubmissionClient(ray_jobs).list_jobs() if (j.metadata or {}).get("tenant") == name]
            assert len(jobs) == 2

            # Deleting the tenant: its key stops working within seconds and its adapters leave the registry.
            kubectl("delete", "vt", name, "--wait=false", check=True)
            wait_until(lambda: _speech(url, key, "narrator").status_code == 401, timeout=30, what="key revoked")
            wait_until(lambda: not (registry / name).exists(), timeout=60, what="adapters deleted with the tenant")
    finally:
        serve.delete("e2e")
