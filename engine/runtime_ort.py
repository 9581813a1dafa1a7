"""Run Chorus's exported VITS graphs with ONNX Runtime, optionally with a tenant's weights swapped in per run."""

from __future__ import annotations

import collections
import threading
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort
import torch
from pydantic import BaseModel, ConfigDict, Field

from .export import OnnxExport
from .ort_adapters import AdapterError, check_weights, overridable_weights

HOP_LENGTH = 256
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OrtSettings(BaseModel):
    """ONNX Runtime session settings for the CPU provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(2, ge=1, le=256, description="intra-op threads per session")
    spinning: bool = Field(False, description="let idle worker threads spin; off yields the CPU to other processes")
    optimization: Literal["disable", "basic", "extended", "all"] = Field("all", description="graph optimisation level")
    adapter_cache_size: int = Field(16, ge=1, description="loaded adapters kept (LRU); each is memory-mapped")


class OrtResult(NamedTuple):
    """Audio for a batch, as numpy arrays (same fields as the torch engine's InferResult)."""

    audio: np.ndarray  # [B, S] float32, zero past audio_lengths
    audio_lengths: np.ndarray  # [B] int64 samples per item
    durations: np.ndarray  # [B, T] int64 frames per phoneme


def make_session(path: Path | str, settings: OrtSettings) -> ort.InferenceSession:
    """A CPU InferenceSession with these settings (quiet about overridable initializers)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPT_LEVELS[settings.optimization]
    options.log_severity_level = 3  # overridable initializers warn once per weight otherwise
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def expand_prior(m_p: np.ndarray, logs_p: np.ndarray, durations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repeat each phoneme's prior [B, C, T] for its duration -> [B, C, F] (zero past each end) and frame counts."""
    frames = np.maximum(durations.sum(axis=1), 1)
    batch, channels, _ = m_p.shape
    total = int(frames.max())
    m = np.zeros((batch, channels, total), np.float32)
    logs = np.zeros((batch, channels, total), np.float32)
    for b in range(batch):
        index = np.repeat(np.arange(durations.shape[1]), durations[b])
        m[b, :, : index.size] = m_p[b][:, index]
        logs[b, :, : index.size] = logs_p[b][:, index]
    return m, logs, frames.astype(np.int64)


class OnnxRuntime:
    """Chorus's ONNX export under onnxruntime: text graph, host-side alignment, audio graph (+ adapter)."""

    def __init__(self, export: OnnxExport, settings: OrtSettings | None = None) -> None:
        self.settings = settings or OrtSettings()
        self.text = make_session(export.text, self.settings)
        self.audio = make_session(export.audio, self.settings)
        self.overridable = overridable_weights(self.audio)
        self._adapters: collections.OrderedDict[tuple[str, int], ort.LoraAdapter] = collections.OrderedDict()
        self._lock = threading.Lock()

    def load_adapter(self, path: Path | str) -> ort.LoraAdapter:
        """A loaded `.onnx_adapter` (checked against the graph's weights), cached LRU by path and mtime."""
        path = Path(path).resolve()
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise AdapterError(f"adapter file not found: {path}") from None
        with self._lock:
            if key in self._adapters:
                self._adapters.move_to_end(key)
                return self._adapters[key]
        params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
        for name, value in params.items():
            if value.data_type() != "tensor(float)":
                raise AdapterError(f"adapter weight {name} in {path.name} is {value.data_type()}, expected tensor(float)")
        check_weights({k: np.empty(v.shape(), np.float32) for k, v in params.items()}, self.overridable)
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        with self._lock:
            self._adapters[key] = adapter
            while len(self._adapters) > self.settings.adapter_cache_size:
                self._adapters.popitem(last=False)
        return adapter

    def run(self, ids: np.ndarray, lengths: np.ndarray, scales: Sequence[float] = (0.667, 1.0, 0.8),
            generator: torch.Generator | None = None,
            adapter: ort.LoraAdapter | Path | str | None = None) -> OrtResult:
        """Synthesise padded phoneme ids [B, T]; scales = (noise_scale, length_scale, noise_w).

        Noise is drawn from `generator` in the order the torch engine draws it, so the same seed gives
        the same audio as `VitsModel.infer`. `adapter` (a loaded LoraAdapter or an `.onnx_adapter`
        path) replaces the base flow/decoder weights for this run only.
        """
        options = None
        if adapter is not None:
            if not isinstance(adapter, ort.LoraAdapter):
                adapter = self.load_adapter(adapter)
            options = ort.RunOptions()
            options.add_active_adapter(adapter)
        return self._run(ids, lengths, scales, generator, options, {})

    def run_with_weights(self, ids: np.ndarray, lengths: np.ndarray, weights: dict[str, np.ndarray],
                         scales: Sequence[float] = (0.667, 1.0, 0.8),
                         generator: torch.Generator | None = None) -> OrtResult:
        """Like run(), with weights fed directly instead of through an adapter file (for checks and tests)."""
        check_weights(weights, self.overridable)
        return self._run(ids, lengths, scales, generator, None, dict(weights))

    def _run(self, ids, lengths, scales, generator, options, extra_feeds) -> OrtResult:
        ids = np.asarray(ids, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
            raise ValueError(f"ids must be [B, T] and lengths [B]; got {ids.shape} and {lengths.shape}")
        scale_arr = np.asarray(scales, dtype=np.float32)
        if scale_arr.shape != (3,):
            raise ValueError(f"scales must be (noise_scale, length_scale, noise_w); got {scales!r}")
        batch, length = ids.shape
        dp_noise = torch.randn(batch, 2, length, generator=generator).numpy()
        m_p, logs_p, durations = self.text.run(
            None, {"input": ids, "input_lengths": lengths, "scales": scale_arr, "dp_noise": dp_noise})
        m, logs, frames = expand_prior(m_p, logs_p, durations)
        noise = torch.randn(m.shape, generator=generator).numpy()
        feeds = {"m_p": m, "logs_p": logs, "noise": noise, "y_lengths": frames, "scales": scale_arr, **extra_feeds}
        (audio,) = self.audio.run(None, feeds, options)
        return OrtResult(audio, frames * HOP_LENGTH, durations)
