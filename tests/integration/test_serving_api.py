"""The serving tier over HTTP on a real local Ray Serve: voices, streaming, keys, limits, hot swaps and faults.

Every request goes through Serve's HTTP proxy on loopback to the ingress, the limiter and the synthesis
replica that holds the base model once; the adapters are real engine LoRAs in a file:// registry.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import shutil
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from chorus.adapters.pitch import median_f0

pytestmark = pytest.mark.integration

TEXT = "The quick brown fox jumps over the lazy dog. Then it rests in the warm sun."


def speak(env, tenant: str, voice: str, text: str = TEXT, **extra) -> httpx.Response:
    body = {"model": "chorus", "input": text, "voice": voice, "response_format": "wav", "seed": 7} | extra
    return httpx.post(f"{env.url}/v1/audio/speech", headers=env.headers(tenant), json=body, timeout=120)


def wav(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 22050
    return audio


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body["message"]


def test_two_tenants_under_concurrent_load_match_each_voice_alone(serving):
    alone = {(t, v): wav(speak(serving, t, v)) for t, v in
             (("acme", "default"), ("acme", "bright"), ("globex", "deep"))}
    # the voices really differ: a tenant's adapter and profile change the audio
    raised = median_f0([alone["acme", "bright"]], 22050) / median_f0([alone["acme", "default"]], 22050)
    assert raised == pytest.approx(1.15, rel=0.05)  # bright: the resample path x1.15
    n = min(len(a) for a in alone.values())
    assert np.abs(alone["globex", "deep"][:n] - alone["acme", "default"][:n]).max() > 0.05
    jobs = [("acme", "bright"), ("globex", "deep"), ("acme", "default")] * 3
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda tv: (tv, wav(speak(serving, *tv))), jobs))
    for (tenant, voice), audio in results:
        ref = alone[tenant, voice]
        assert audio.shape == ref.shape, (tenant, voice)
        assert np.abs(audio - ref).max() <= 2 / 32768, (tenant, voice)  # 16-bit WAV: one step of rounding


def test_openai_client_creates_and_streams_speech(serving):
    from openai import OpenAI

    client = OpenAI(api_key=serving.keys["acme"], base_url=f"{serving.url}/v1", max_retries=0)
    speech = client.audio.speech.create(model="tts-1", voice="bright", input="Hello from the OpenAI client.",
                                        response_format="wav")
    audio, rate = sf.read(io.BytesIO(speech.content), dtype="float32")
    assert rate == 22050 and len(audio) > 0.8 * rate
    received = []
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="default",
                                                            input="Streaming through the official client.",
                                                            response_format="pcm") as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        for part in response.iter_bytes():
            received.append(part)
    pcm = np.frombuffer(b"".join(received), dtype="<i2")
    assert len(pcm) > 1.5 * 24000 and np.abs(pcm).max() > 1000  # 24 kHz s16le, as OpenAI's pcm


def test_auth_failures(serving):
    url = f"{serving.url}/v1/audio/speech"
    body = {"model": "chorus", "input": "hi", "voice": "default"}
    assert error(httpx.post(url, json=body), 401, "missing_api_key")
    assert error(httpx.post(url, json=body, headers={"Authorization": "Basic abc"}), 401, "invalid_api_key")
    wrong = "chorus_" + "x" * 43
    message = error(httpx.post(url, json=body, headers={"Authorization": f"Bearer {wrong}"}), 401, "invalid_api_key")
    assert wrong not in message
    assert error(httpx.get(f"{serving.url}/v1/voices", headers={"Authorization": "Bearer nope"}), 401,
                 "invalid_api_key")


def test_another_tenants_voice_is_indistinguishable_from_a_missing_one(serving):
    theirs = speak(serving, "acme", "deep")
    missing = speak(serving, "acme", "no-such-voice")
    assert error(theirs, 404, "voice_not_found")
    assert error(missing, 404, "voice_not_found")
    assert theirs.json()["error"]["message"].replace("deep", "X") == \
        missing.json()["error"]["message"].replace("no-such-voice", "X")
    names = [v["name"] for v in httpx.get(f"{serving.url}/v1/voices", headers=serving.headers("acme")).json()["data"]]
    assert names == ["default", "bright"]


@pytest.mark.parametrize("body, status, code, words", [
    ({"model": "whisper-1"}, 400, "model_not_found", "chorus"),
    ({"voice": "pending"}, 409, "voice_not_ready", "Training"),
    ({"speed": 5}, 400, "invalid_value", "speed"),
    ({"response_format": "aac"}, 400, "invalid_value", "response_format"),
    ({"stream_format": "chunks"}, 400, "invalid_value", "stream_format"),
    ({"input": ""}, 400, "invalid_value", "input"),
    ({"input": "x" * 401}, 413, "input_too_long", "400 characters"),
    ({"input": "...  !!"}, 400, "invalid_input", "nothing speakable"),
    ({"temperature": 1}, 400, "invalid_value", "temperature"),
])
def test_client_errors_say_what_is_wrong(serving, body, status, code, words):
    full = {"model": "chorus", "input": "Hello.", "voice": "deep"} | body
    response = httpx.post(f"{serving.url}/v1/audio/speech", headers=serving.headers("globex"), json=full, timeout=60)
    assert words in error(response, status, code)


def test_bodies_that_cannot_be_parsed_or_are_too_large(serving):
    url = f"{serving.url}/v1/audio/speech"
    headers = serving.headers("acme") | {"Content-Type": "application/json"}
    assert "not valid JSON" in error(httpx.post(url, headers=headers, content=b"{bad"), 400, "invalid_request")
    big = json.dumps({"model": "chorus", "voice": "default", "input": "a " * 600_000}).encode()
    assert "1048576 bytes" in error(httpx.post(url, headers=headers, content=big), 413, "request_too_large")

    def chunked():  # no Content-Length: refused while it streams in, before parsing
        for _ in range(40):
            yield b"x" * 65536

    assert error(httpx.post(url, headers=headers, content=chunked()), 413, "request_too_large")


def test_requests_per_minute_answer_429_with_retry_after(serving):
    codes = [speak(serving, "slow", "default", text="Hi.") for _ in range(5)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    refused = codes[3]
    assert "3 requests per minute" in error(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_first_bytes_arrive_long_before_the_text_is_done(serving):
    text = " ".join(f"Sentence number {i} is here to make this request long enough to matter." for i in range(8))
    started = time.perf_counter()
    first_at, total = None, 0
    body = {"model": "chorus", "input": text, "voice": "default", "response_format": "pcm"}
    with httpx.stream("POST", f"{serving.url}/v1/audio/speech", headers=serving.headers("acme"), json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        for part in response.iter_bytes():
            if first_at is None and part:
                first_at = time.perf_counter() - started
            total += len(part)
    done_at = time.perf_counter() - started
    audio_s = total / 2 / 24000
    assert audio_s > 25
    assert first_at < done_at / 5, (first_at, done_at)


def test_sse_stream_carries_words_and_audio(serving):
    body = {"model": "chorus", "input": "Hello there. Good morning, friend.", "voice": "bright",
            "stream_format": "sse", "response_format": "pcm"}
    events = []
    with httpx.stream("POST", f"{serving.url}/v1/audio/speech", headers=serving.headers("acme"), json=body,
                      timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "speech.audio.done"
    words = [e for e in events if e["type"] == "speech.word"]
    assert [w["word"] for w in words] == ["Hello", "there", "Good", "morning", "friend"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    duration = len(pcm) / 2 / 24000
    assert all(a["start"] < a["end"] <= b["start"] for a, b in zip(words, words[1:]))
    assert words[-1]["end"] <= duration + 0.01


def _tenants_with(serving, voice_update: dict) -> list[dict]:
    tenants = json.loads(json.dumps(serving.default_tenants))
    tenants[0]["voices"][0].update(voice_update)
    return tenants


def test_new_voice_version_hot_swaps_during_traffic_without_a_failed_request(serving, model, base_fp):
    from chorus.adapters.testartifacts import make_engine_artifact

    v2 = serving.registry / "acme" / "bright" / "2"
    make_engine_artifact(v2, model, tenant="acme", voice="bright", base_fingerprint=base_fp, seed=21,
                         profile={"pitch_factor": 1.15, "pitch_method": "resample", "length_scale": 1.15})
    before = wav(speak(serving, "acme", "bright", text="Swap test."))
    stop = time.monotonic() + 12
    statuses: list[int] = []

    def traffic():
        while time.monotonic() < stop:
            statuses.append(speak(serving, "acme", "bright", text="Swap test.").status_code)

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(traffic) for _ in range(2)]
            time.sleep(3)
            serving.write_tenants(_tenants_with(serving, {"version": 2, "adapterUri": v2.as_uri()}))
            for run in runs:
                run.result()
        after = wav(speak(serving, "acme", "bright", text="Swap test."))
        assert statuses and set(statuses) == {200}, statuses
        assert after.shape == before.shape and np.abs(after - before).max() > 0.01  # the new version serves
        versions = httpx.get(f"{serving.url}/v1/voices", headers=serving.headers("acme")).json()["data"]
        assert versions[1]["version"] == 2
    finally:
        serving.restore()


def test_corrupt_adapter_is_refused_and_other_voices_keep_serving(serving):
    bad = serving.registry / "acme" / "bright" / "9"
    shutil.copytree(serving.registry / "acme" / "bright" / "1", bad)
    weights = bad / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    try:
        serving.write_tenants(_tenants_with(serving, {"version": 9, "adapterUri": bad.as_uri()}))
        deadline = time.monotonic() + 10
        while True:
            response = speak(serving, "acme", "bright", text="Corrupt.")
            if response.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        message = error(response, 503, "voice_unavailable")
        assert "sha256" in message or "Corrupt" in message, message
        assert speak(serving, "acme", "default", text="Still here.").status_code == 200
        assert speak(serving, "globex", "deep", text="Still here.").status_code == 200
        listed = httpx.get(f"{serving.url}/v1/voices", headers=serving.headers("acme")).json()["data"]
        assert listed[1]["state"] == "Unavailable" and "reason" in listed[1]
    finally:
        serving.restore()


def test_revoked_key_answers_401_within_seconds(serving):
    assert speak(serving, "globex", "default", text="Hi.").status_code == 200
    try:
        serving.write_tenants([t for t in serving.default_tenants if t["name"] != "globex"])
        revoked_at = time.monotonic()
        while speak(serving, "globex", "default", text="Hi.").status_code != 401:
            assert time.monotonic() - revoked_at < 5, "revoked key still accepted after 5 s"
            time.sleep(0.2)
        assert speak(serving, "acme", "default", text="Hi.").status_code == 200
    finally:
        serving.restore()


def test_timestamps_json_matches_the_audio(serving):
    body = {"model": "chorus", "input": "Good morning. The meeting starts at nine.", "voice": "bright",
            "response_format": "wav", "seed": 3}
    response = httpx.post(f"{serving.url}/v1/audio/speech/timestamps", headers=serving.headers("acme"), json=body,
                          timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    audio, rate = sf.read(io.BytesIO(base64.b64decode(out["audio"])), dtype="float32")
    assert abs(len(audio) / rate - out["duration"]) < 0.01
    words = out["words"]
    assert [w["word"] for w in words] == ["Good", "morning", "The", "meeting", "starts", "at", "nine"]
    # the sentence break: between "morning" and "The" the audio is (nearly) silent, inside words it is not
    gap = audio[int(words[1]["end"] * rate) + 200:int(words[2]["start"] * rate) - 200]
    assert len(gap) > 0.15 * rate and np.sqrt(np.mean(gap**2)) < 0.01
    for w in words:
        inside = audio[int(w["start"] * rate):int(w["end"] * rate)]
        assert np.sqrt(np.mean(inside**2)) > 0.02, w


def test_health_readiness_metrics_and_docs(serving):
    assert httpx.get(f"{serving.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{serving.url}/readyz").status_code == 200
    speak(serving, "acme", "bright", text="Metrics.")
    metrics = httpx.get(f"{serving.url}/metrics").text
    for name in ("chorus_requests_total", "chorus_request_seconds", "chorus_time_to_first_byte_seconds",
                 "chorus_audio_seconds_total", "chorus_rtf", "chorus_requests_in_flight", "chorus_voice_cache"):
        assert name in metrics
    assert 'tenant="acme"' in metrics and 'field="loads"' in metrics
    assert serving.keys["acme"] not in metrics and "Metrics." not in metrics
    schema = httpx.get(f"{serving.url}/openapi.json").json()
    assert "/v1/audio/speech" in schema["paths"] and "/v1/voices" in schema["paths"]
    assert httpx.get(f"{serving.url}/docs").status_code == 200


def test_each_voice_is_routed_to_the_replica_where_it_is_hot(serving, model, base_fp, tmp_path):
    """Two synthesis replicas, two voices: each voice is loaded on one replica only and its requests go there."""
    import re

    from ray import serve

    from chorus.serving.app import ServingArgs, build_app

    args = ServingArgs(tenants_file=serving.tenants_file, synthesis_replicas=2, synthesis_cpus=0.5,
                       max_ongoing_requests=4)
    serve.run(build_app(args), name="two", route_prefix="/two")
    url = f"{serving.url}/two"
    try:
        for _ in range(4):
            for tenant, voice in (("acme", "bright"), ("globex", "deep")):
                body = {"model": "chorus", "input": "Routing.", "voice": voice, "response_format": "wav"}
                response = httpx.post(f"{url}/v1/audio/speech", headers=serving.headers(tenant), json=body,
                                      timeout=60)
                assert response.status_code == 200, response.text
        metrics = httpx.get(f"{url}/metrics").text
        loads = {m[0]: float(m[1]) for m in re.findall(r'chorus_voice_cache\{field="loads",replica="([^"]+)"\} (\S+)',
                                                        metrics)}
        hits = {m[0]: float(m[1]) for m in re.findall(r'chorus_voice_cache\{field="hits",replica="([^"]+)"\} (\S+)',
                                                       metrics)}
        # 8 requests over 2 voices: each voice was loaded once in all (not once per replica it visited),
        # and every later request of a voice found it already loaded
        assert sum(loads.values()) == 2, (loads, hits)
    finally:
        serve.delete("two")


def test_overload_is_refused_fast_with_503_and_the_rest_get_audio(serving):
    """A replica that takes 1 request plus 1 queued: a burst of 8 gets audio or a quick 503, nothing else."""
    from ray import serve

    from chorus.serving.app import ServingArgs, build_app

    args = ServingArgs(tenants_file=serving.tenants_file, synthesis_cpus=0.5, max_ongoing_requests=1,
                       max_queued_requests=1)
    serve.run(build_app(args), name="tight", route_prefix="/tight")
    text = "This request is long enough to keep the only synthesis slot busy for a while, on purpose."

    def one(_):
        started = time.perf_counter()
        body = {"model": "chorus", "input": text, "voice": "default", "response_format": "wav"}
        response = httpx.post(f"{serving.url}/tight/v1/audio/speech", headers=serving.headers("acme"), json=body,
                              timeout=120)
        return response, time.perf_counter() - started

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(8)))
        codes = sorted(r.status_code for r, _ in results)
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        for response, seconds in results:
            if response.status_code == 503:
                assert error(response, 503, "overloaded") and response.headers["Retry-After"] == "1"
                assert seconds < 2.0, seconds  # refused at once, not after waiting its turn
            else:
                assert len(wav(response)) > 22050
    finally:
        serve.delete("tight")
