"""The HTTP API: OpenAI-compatible speech, word timestamps, voices, health, metrics and the playground.

`build_api(backend)` returns the FastAPI app; the backend (chorus.serving.app's ingress deployment, or
anything with the same methods) authenticates, admits, synthesises and reports readiness. Errors use
OpenAI's shape, {"error": {"message", "type", "param", "code"}}, and never contain a key or the input.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Literal, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chorus.serving.limits import Decision
from chorus.serving.metrics import Metrics
from chorus.serving.tenants import DEFAULT_VOICE, Tenant, TenantDirectory
from chorus.serving.timestamps import WordTime

log = logging.getLogger(__name__)

MODEL = "chorus"
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""OpenAI's speech model names, accepted so OpenAI client libraries work unchanged; all mean `chorus`."""
FORMATS = ("mp3", "opus", "flac", "wav", "pcm")
PCM_RATE = 24_000
"""OpenAI's `pcm` is 24 kHz signed 16-bit little-endian mono; Chorus resamples to it."""


class ApiError(Exception):
    """An error answered in OpenAI's JSON shape."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = status, message, code, param, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON error response."""
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class SpeechRequest(BaseModel):
    """POST /v1/audio/speech, as OpenAI defines it (plus `seed`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description=f"'{MODEL}' (OpenAI's {', '.join(MODEL_ALIASES)} are accepted as aliases)")
    input: str = Field(min_length=1, max_length=100_000, description="the text to speak")
    voice: str = Field(min_length=1, max_length=64, description="one of your voices (GET /v1/voices); "
                                                                 f"'{DEFAULT_VOICE}' is the base voice")
    response_format: Literal["mp3", "opus", "flac", "wav", "pcm"] = Field(
        "mp3", description="audio format; pcm is 24 kHz 16-bit little-endian mono, as OpenAI's")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate, 0.25 to 4.0")
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="'audio': the audio bytes, streamed; 'sse': server-sent events with base64 "
                             "audio deltas and word timestamps")
    instructions: str | None = Field(None, max_length=4096,
                                     description="accepted for compatibility; Chorus voices have no style prompt")
    seed: int | None = Field(None, ge=0, lt=2**63, description="Chorus: fixes the voice's random variation")


class TimestampedSpeech(BaseModel):
    """POST /v1/audio/speech/timestamps: the audio (base64) and each word's span in it."""

    audio: str = Field(description="base64 of the encoded audio")
    format: str
    sample_rate: int
    duration: float
    words: list[WordTime]


class Backend(Protocol):
    """What the API needs from the serving tier."""

    directory: TenantDirectory
    metrics: Metrics

    async def admit(self, tenant: Tenant) -> Decision:
        """Check the tenant's limits for one more request."""
        ...

    async def release(self, decision: Decision) -> None:
        """End an admitted request."""
        ...

    def speak(self, tenant: Tenant, voice: str, request: SpeechRequest) -> AsyncIterator[dict]:
        """Items {"audio": float32 ndarray, "words": [...]}, or one {"error": {...}}, then {"done": {...}}."""
        ...

    async def ready(self) -> bool:
        """The base model is loaded and can synthesise."""
        ...

    async def voices(self, tenant: Tenant) -> list[dict]:
        """The tenant's voices with name, version, state (and why a voice is unavailable)."""
        ...


def _key(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "Missing API key: send the header 'Authorization: Bearer <your key>'.", "missing_api_key")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Malformed Authorization header: expected 'Bearer <your key>'.", "invalid_api_key")
    return key.strip()


def _encoder(fmt: str, sample_rate: int):
    from chorus.engine.audio_stream import StreamEncoder

    if fmt == "pcm":
        return _PcmEncoder(sample_rate)
    if fmt == "flac":
        return _WholeEncoder(fmt, sample_rate)
    return StreamEncoder(fmt, sample_rate)


class _PcmEncoder:
    """OpenAI's pcm: resampled to 24 kHz with a streaming resampler (no seams), s16le."""

    def __init__(self, sample_rate: int):
        import soxr

        self._rs = soxr.ResampleStream(sample_rate, PCM_RATE, 1, dtype="float32", quality="HQ")

    def encode(self, chunk: np.ndarray) -> bytes:
        from chorus.engine.audio import to_pcm16

        return to_pcm16(self._rs.resample_chunk(chunk, last=False)).tobytes()

    def finish(self) -> bytes:
        from chorus.engine.audio import to_pcm16

        return to_pcm16(self._rs.resample_chunk(np.zeros(0, np.float32), last=True)).tobytes()


class _WholeEncoder:
    """Formats whose header depends on the whole signal (FLAC): encoded once, at the end."""

    def __init__(self, fmt: str, sample_rate: int):
        self.fmt, self.sample_rate, self._parts = fmt, sample_rate, []

    def encode(self, chunk: np.ndarray) -> bytes:
        self._parts.append(chunk)
        return b""

    def finish(self) -> bytes:
        from chorus.engine.audio import encode

        audio = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
        return encode(audio, self.sample_rate, self.fmt)


MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "flac": "audio/flac", "wav": "audio/wav",
               "pcm": f"audio/pcm; rate={PCM_RATE}; channels=1"}


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is answered 413 before anything parses it (bodies are buffered)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        too_large = length is not None and (not length.isdigit() or int(length) > self.max_bytes)
        messages, received = [], 0
        while not too_large and scope["method"] in ("POST", "PUT", "PATCH"):
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            too_large = received > self.max_bytes
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        if too_large:
            response = ApiError(413, f"Request body too large: the limit is {self.max_bytes} bytes.",
                                "request_too_large").response()
            return await response(scope, receive, send)

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


DRAIN_FILE_ENV = "CHORUS_DRAIN_FILE"  # set by `chorus serve`: the file whose existence means "drain"
UNCOUNTED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes are not traffic


class DrainState:
    """Requests in flight, and whether the process is stopping (the drain file exists)."""

    def __init__(self, path: str | None):
        self.path = path
        self.in_flight = 0
        self.last_done = time.monotonic()

    @property
    def draining(self) -> bool:
        return bool(self.path) and os.path.exists(self.path)

    def report(self) -> dict:
        return {"status": "draining", "inFlight": self.in_flight,
                "idleSeconds": 0.0 if self.in_flight else round(time.monotonic() - self.last_done, 2)}


class Drain:
    """ASGI middleware for a stop that breaks no request.

    It counts the requests in flight. Once the drain file exists (`chorus serve` creates it on
    SIGTERM), every response carries `Connection: close`, so a client's kept-alive connection (which
    a Service's NAT would keep pinned to this pod) is closed after its answer and the next request
    connects afresh to a pod that stays; `/readyz` answers 503 with the count, which `chorus serve`
    waits on before it stops Ray.
    """

    def __init__(self, app, state: DrainState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNCOUNTED_PATHS:
            return await self.app(scope, receive, send)
        state = self.state

        async def send_closing(message):
            if message["type"] == "http.response.start" and state.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        state.in_flight += 1
        try:
            await self.app(scope, receive, send_closing)
        finally:
            state.in_flight -= 1
            state.last_done = time.monotonic()


def build_api(backend: Backend, sample_rate: int, max_body_bytes: int = 1 << 20) -> FastAPI:
    """The FastAPI app over `backend`; bodies over `max_body_bytes` are refused before they are parsed."""
    app = FastAPI(title="Chorus", version="0.1.0",
                  description="Multi-tenant text to speech: one base voice, a LoRA adapter per tenant voice. "
                              "OpenAI-compatible speech endpoint.")
    metrics = backend.metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message, param = "The request body is not valid JSON.", None
        elif not param:
            message = "The request body must be a JSON object (send Content-Type: application/json)."
        elif first.get("type") == "missing":
            message = f"Missing required parameter: '{param}'."
        elif first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: '{param}'."
        else:
            message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
        return ApiError(400, message, "invalid_value" if param else "invalid_request", param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, str(exc.detail), code).response()

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    drain = DrainState(os.environ.get(DRAIN_FILE_ENV))
    app.add_middleware(Drain, state=drain)  # added last, so outermost: it sees every answer, 413s included

    async def tenant_of(request: Request) -> Tenant:
        tenant = backend.directory.authenticate(_key(request))
        if tenant is None:
            metrics.requests.labels("", request.url.path, "401").inc()
            raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")
        return tenant

    def check(tenant: Tenant, body: SpeechRequest) -> str:
        if body.model != MODEL and body.model not in MODEL_ALIASES:
            raise ApiError(400, f"Unknown model '{body.model[:64]}': use '{MODEL}' (or "
                                f"{', '.join(repr(a) for a in MODEL_ALIASES)}).", "model_not_found", "model")
        if body.voice != DEFAULT_VOICE:
            entry = tenant.voice(body.voice)
            if entry is None:  # another tenant's voice looks exactly like a missing one
                raise ApiError(404, f"Voice '{body.voice[:64]}' not found: GET /v1/voices lists your voices.",
                               "voice_not_found", "voice")
            if not entry.servable:
                raise ApiError(409, f"Voice '{body.voice}' is not ready (state: {entry.state}); it serves once "
                                    "it is Ready.", "voice_not_ready", "voice")
        limit = tenant.limits.max_chars_per_request
        if len(body.input) > limit:
            raise ApiError(413, f"Input is {len(body.input)} characters; your limit is {limit} characters per "
                                "request (spec.api.maxCharsPerRequest).", "input_too_long", "input")
        return body.voice

    async def admitted(tenant: Tenant, endpoint: str) -> Decision:
        decision = await backend.admit(tenant)
        if not decision.admitted:
            metrics.rejected.labels(tenant.name, decision.reason or "").inc()
            metrics.requests.labels(tenant.name, endpoint, "429").inc()
            what = ("requests per minute" if decision.reason == "rate" else "requests in flight")
            raise ApiError(429, f"Rate limit reached: {decision.limit} {what} for your tenant. Retry after "
                                f"{decision.retry_after_s} s.", "rate_limit_exceeded", kind="rate_limit_error",
                           headers={"Retry-After": str(decision.retry_after_s)})
        return decision

    async def first_item(tenant: Tenant, voice: str, body: SpeechRequest, endpoint: str, decision: Decision):
        items = backend.speak(tenant, voice, body).__aiter__()
        try:
            first = await items.__anext__()
        except BaseException:
            await backend.release(decision)
            raise
        if "error" in first:
            await backend.release(decision)
            err = first["error"]
            metrics.requests.labels(tenant.name, endpoint, str(err["status"])).inc()
            raise ApiError(err["status"], err["message"], err["code"], err.get("param"),
                           kind=err.get("type", "server_error"), headers=err.get("headers"))
        return first, items

    async def chunks(tenant: Tenant, first: dict, items, decision: Decision, endpoint: str,
                     started: float) -> AsyncIterator[dict]:
        """The synthesis items, with metrics and the lease released at the end (or on disconnect)."""
        status = "200"
        audio_s = 0.0
        try:
            async for item in _chain(first, items):
                if "done" in item:
                    done = item["done"]
                    metrics.observe_cache(done.get("replica", ""), done.get("cache", {}))
                    if audio_s > 0:
                        metrics.rtf.observe(done.get("compute_s", 0.0) / audio_s)
                    break
                if "error" in item:  # failed mid-stream: the response has started, so it ends here
                    status = str(item["error"]["status"])
                    log.warning("synthesis for tenant %s failed mid-stream: %s", tenant.name, item["error"]["code"])
                    break
                audio_s += len(item["audio"]) / sample_rate
                yield item
        except asyncio.CancelledError:  # the client went away
            status = "499"
            raise
        finally:
            await backend.release(decision)
            metrics.requests.labels(tenant.name, endpoint, status).inc()
            metrics.latency.labels(tenant.name).observe(time.perf_counter() - started)
            metrics.audio_seconds.labels(tenant.name).inc(audio_s)

    @app.post("/v1/audio/speech", response_class=Response, tags=["speech"],
              responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()} | {"text/event-stream": {}},
                               "description": "the audio, streamed as it is made"}})
    async def speech(body: SpeechRequest, tenant: Tenant = Depends(tenant_of)):
        """Speak `input` in `voice`: audio bytes, or server-sent events with stream_format='sse'."""
        started = time.perf_counter()
        endpoint = "/v1/audio/speech"
        voice = check(tenant, body)
        decision = await admitted(tenant, endpoint)
        metrics.in_flight.inc()
        try:
            first, items = await first_item(tenant, voice, body, endpoint, decision)
        except BaseException:
            metrics.in_flight.dec()
            raise
        encoder = _encoder(body.response_format, sample_rate)
        ttfb_seen = False

        def ttfb():
            nonlocal ttfb_seen
            if not ttfb_seen:
                ttfb_seen = True
                metrics.ttfb.labels(tenant.name).observe(time.perf_counter() - started)

        async def audio_bytes():
            try:
                async for item in chunks(tenant, first, items, decision, endpoint, started):
                    data = encoder.encode(item["audio"])
                    if data:
                        ttfb()
                        yield data
                tail = encoder.finish()
                if tail:
                    ttfb()
                    yield tail
            finally:
                metrics.in_flight.dec()

        async def events():
            try:
                async for item in chunks(tenant, first, items, decision, endpoint, started):
                    for word in item.get("words", ()):
                        yield _sse({"type": "speech.word", **word})
                    data = encoder.encode(item["audio"])
                    if data:
                        ttfb()
                        yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                tail = encoder.finish()
                if tail:
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
                yield _sse({"type": "speech.audio.done",
                            "usage": {"input_tokens": len(body.input), "output_tokens": 0,
                                      "total_tokens": len(body.input)}})
            finally:
                metrics.in_flight.dec()

        headers = {"X-Chorus-Voice": voice, "Cache-Control": "no-store"}
        if body.stream_format == "sse":
            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        return StreamingResponse(audio_bytes(), media_type=MEDIA_TYPES[body.response_format], headers=headers)

    @app.post("/v1/audio/speech/timestamps", response_model=TimestampedSpeech, tags=["speech"])
    async def speech_timestamps(body: SpeechRequest, tenant: Tenant = Depends(tenant_of)):
        """Speak `input` and return the audio (base64) with each word's start and end in seconds."""
        started = time.perf_counter()
        endpoint = "/v1/audio/speech/timestamps"
        voice = check(tenant, body)
        decision = await admitted(tenant, endpoint)
        first, items = await first_item(tenant, voice, body, endpoint, decision)
        encoder = _encoder(body.response_format, sample_rate)
        parts, words, samples = [], [], 0
        async for item in chunks(tenant, first, items, decision, endpoint, started):
            parts.append(encoder.encode(item["audio"]))
            samples += len(item["audio"])
            words.extend(item.get("words", ()))
        parts.append(encoder.finish())
        rate = PCM_RATE if body.response_format == "pcm" else getattr(encoder, "output_rate", sample_rate)
        return TimestampedSpeech(audio=base64.b64encode(b"".join(parts)).decode(), format=body.response_format,
                                 sample_rate=rate, duration=round(samples / sample_rate, 4),
                                 words=[WordTime(**w) for w in words])

    @app.get("/v1/voices", tags=["voices"])
    async def voices(tenant: Tenant = Depends(tenant_of)):
        """Your voices: name, version and state ('default' is the base voice)."""
        return {"object": "list", "data": await backend.voices(tenant)}

    @app.get("/v1/models", tags=["voices"])
    async def models():
        """The speech model and its OpenAI aliases."""
        return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "chorus"}
                                           for m in (MODEL, *MODEL_ALIASES)]}

    @app.get("/healthz", tags=["health"])
    async def healthz():
        """The ingress is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """The base model is loaded and can synthesise (503 until then, and while the process drains to stop)."""
        if drain.draining:
            return JSONResponse(drain.report(), status_code=503)
        if await backend.ready():
            return {"status": "ready"}
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", tags=["health"])
    async def prometheus():
        """Prometheus metrics."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        """The playground page: paste a key, pick a voice, hear it stream with words highlighted."""
        return HTMLResponse(resources.files("chorus.serving").joinpath("playground.html").read_text("utf-8"))

    return app


async def _chain(first: dict, rest) -> AsyncIterator[dict]:
    yield first
    async for item in rest:
        yield item


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
