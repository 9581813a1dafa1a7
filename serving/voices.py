"""Tenant voices ready to run: fetched from storage, verified, merged once, kept in a memory-bounded LRU.

A voice is the base graph plus its merged Conv weights (chorus.adapters.merge) plus its profile (the
pitch path). Loading one (a "cold attach") reads the artifact through fsspec, re-hashes every file
against its manifest, checks the base-model fingerprint, and merges the LoRA: a few milliseconds for a
file:// registry. A voice that fails is remembered for `retry_s`, so a corrupt artifact costs one
verification, not one per request, and says why it is unavailable.
"""

from __future__ import annotations

import collections
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import fsspec
import numpy as np
from pydantic import BaseModel, ConfigDict

from chorus.adapters.artifact import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterArtifactError, verify_artifact
from chorus.adapters.merge import merge_lora
from chorus.adapters.train import VoiceProfile


class VoiceUnavailable(RuntimeError):
    """A voice that cannot be served now; the message says why (without secrets)."""


class VoiceKey(NamedTuple):
    """What identifies a loaded voice: tenant, voice, version and where its artifact is."""

    tenant: str
    voice: str
    version: int | None
    uri: str

    @property
    def model_id(self) -> str:
        """A stable id for routing (Ray Serve multiplexing): tenant/voice@version."""
        return f"{self.tenant}/{self.voice}@{self.version or 0}"


class LoadedVoice(BaseModel):
    """A verified, merged voice: what synthesis runs with."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    key: VoiceKey
    weights: dict[str, np.ndarray]
    profile: VoiceProfile
    nbytes: int
    load_ms: float


class CacheStats(BaseModel):
    """Counters and sizes of one replica's voice cache."""

    hits: int = 0
    misses: int = 0
    loads: int = 0
    failures: int = 0
    evictions: int = 0
    bytes: int = 0
    voices: int = 0
    capacity_bytes: int = 0


def _profile(raw: Mapping) -> VoiceProfile:
    fields = set(VoiceProfile.model_fields)
    return VoiceProfile(**{k: v for k, v in raw.items() if k in fields})


class VoiceCache:
    """LRU of LoadedVoice by VoiceKey, bounded by the bytes of merged weights it holds."""

    def __init__(self, base_fingerprint: str, base_weights: Mapping[str, np.ndarray],
                 check: Callable[[Mapping[str, np.ndarray]], None], capacity_mb: float = 256.0,
                 storage_options: Callable[[str], dict] | None = None, retry_s: float = 30.0):
        self.base_fingerprint = base_fingerprint
        self.base_weights = base_weights
        self._check = check  # the runtime's check that the merged weights fit its graphs
        self.capacity_bytes = int(capacity_mb * 1024 * 1024)
        self._storage_options = storage_options or (lambda uri: {})
        self.retry_s = retry_s
        self._voices: collections.OrderedDict[VoiceKey, LoadedVoice] = collections.OrderedDict()
        self._failed: dict[VoiceKey, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._loading: dict[VoiceKey, threading.Lock] = {}
        self.stats = CacheStats(capacity_bytes=self.capacity_bytes)

    def get(self, key: VoiceKey) -> tuple[LoadedVoice, bool]:
        """The voice and whether it was already loaded; VoiceUnavailable if it cannot be loaded."""
        with self._lock:
            voice = self._voices.get(key)
            if voice is not None:
                self._voices.move_to_end(key)
                self.stats.hits += 1
                return voice, True
            self.stats.misses += 1
            failed = self._failed.get(key)
            if failed and time.monotonic() - failed[0] < self.retry_s:
                raise VoiceUnavailable(failed[1])
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per voice at a time; the others wait for it
            with self._lock:
                voice = self._voices.get(key)
            if voice is not None:
                return voice, True
            try:
                voice = self._load(key)
            except VoiceUnavailable as exc:
                with self._lock:
                    self._failed[key] = (time.monotonic(), str(exc))
                    self.stats.failures += 1
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._failed.pop(key, None)
                self._voices[key] = voice
                self.stats.loads += 1
                self._evict()
                self._loading.pop(key, None)
            return voice, False

    def _evict(self) -> None:
        while self._voices and sum(v.nbytes for v in self._voices.values()) > self.capacity_bytes:
            self._voices.popitem(last=False)
            self.stats.evictions += 1
        self.stats.bytes = sum(v.nbytes for v in self._voices.values())
        self.stats.voices = len(self._voices)

    def _load(self, key: VoiceKey) -> LoadedVoice:
        start = time.perf_counter()
        where = f"voice {key.voice!r} version {key.version}"
        try:
            fs, root = fsspec.core.url_to_fs(key.uri, **self._storage_options(key.uri))
            with tempfile.TemporaryDirectory(prefix="chorus-voice-") as tmp:
                if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
                    # one download: verification re-hashes and the merge reads the same local copy
                    for path in fs.ls(root, detail=False):
                        fs.get_file(path, posixpath.join(tmp, posixpath.basename(path.rstrip("/"))))
                    fs, root = fsspec.filesystem("file"), tmp
                weights, manifest = self._verified_merge(key, fs, root, where)
        except VoiceUnavailable:
            raise
        except AdapterArtifactError as exc:
            raise VoiceUnavailable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from None
        except (OSError, ValueError) as exc:  # unreachable storage, a broken file
            raise VoiceUnavailable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from None
        nbytes = sum(w.nbytes for w in weights.values())
        return LoadedVoice(key=key, weights=weights, profile=_profile(manifest.profile.model_dump()), nbytes=nbytes,
                           load_ms=(time.perf_counter() - start) * 1000)

    def _verified_merge(self, key: VoiceKey, fs, root: str, where: str):
        """Verify the artifact at `root` on `fs` against its manifest and the base, then merge its LoRA."""
        manifest = verify_artifact(root, self.base_fingerprint, fs=fs)
        if (manifest.tenant, manifest.voice) != (key.tenant, key.voice):
            raise VoiceUnavailable(f"{where}: the artifact belongs to {manifest.tenant}/{manifest.voice}")
        if key.version is not None and manifest.version not in (None, key.version):
            raise VoiceUnavailable(f"{where}: the artifact is version {manifest.version}")
        config = fs.cat_file(posixpath.join(root, ADAPTER_CONFIG_FILE))
        tensors = _read_safetensors(fs.cat_file(posixpath.join(root, ADAPTER_WEIGHTS_FILE)))
        weights = merge_lora(config, tensors, self.base_weights)
        self._check(weights)
        return weights, manifest


def _read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ValueError(f"{ADAPTER_WEIGHTS_FILE} is not a safetensors file: {exc}") from None
