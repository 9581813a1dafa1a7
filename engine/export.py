"""Export Chorus's PyTorch VITS to ONNX as two graphs, with the flow and decoder Conv weights overridable per run.

The network is split where the alignment happens: the *text* graph maps phoneme ids to the per-phoneme
prior and whole-frame durations; the host repeats each phoneme's prior for its duration; the *audio*
graph samples the prior, runs the reverse flow and the HiFi-GAN decoder. Noise enters as inputs
(drawn by the caller from a seeded torch generator in the same order as `VitsModel.infer`), so the
ONNX runtime gives the torch engine's output for the same seed, and the graphs carry no random ops
and none of the data-dependent alignment ops (CumSum/NonZero/ScatterND) of Piper's single graph.
Every Conv weight of the audio graph is also a graph input named by its state-dict key, so an ONNX
Runtime adapter can replace any of them per run (a tenant voice's merged LoRA weights).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from chorus.files import atomic_write
from chorus.settings import get_settings

from .ort_adapters import AdapterError, conv_weight_keys, expose_weights
from .vits import VitsModel
from .vits.layers import sequence_mask

log = logging.getLogger(__name__)

# Bump when the graphs' contract or structure changes: cached exports carry it in their file name.
EXPORTER_VERSION = "v1"
OPSET = 17

TEXT_INPUTS = ("input", "input_lengths", "scales", "dp_noise")
TEXT_OUTPUTS = ("m_p", "logs_p", "durations")
AUDIO_INPUTS = ("m_p", "logs_p", "noise", "y_lengths", "scales")
AUDIO_OUTPUTS = ("audio",)


class OnnxExport(NamedTuple):
    """The two exported graphs of one base model."""

    text: Path  # phoneme ids -> prior per phoneme + durations
    audio: Path  # expanded prior + noise -> waveform; flow/decoder Conv weights overridable


class StreamExport(NamedTuple):
    """The audio graph cut in two for streaming: the flow over a whole sentence, the decoder over windows."""

    latent: Path  # expanded prior + noise -> latents z; flow Conv weights overridable
    decoder: Path  # latents z -> waveform; decoder Conv weights overridable


class _TextStage(nn.Module):
    """ids, lengths, scales (noise, length, noise_w), dp noise [B, 2, T] -> m_p, logs_p, durations."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.enc_p = model.enc_p
        self.dp = model.dp

    def forward(self, ids, lengths, scales, dp_noise):
        enc = self.enc_p(ids, lengths)
        dp, x_mask = self.dp, enc.x_mask
        # The duration predictor's reverse pass with the noise given instead of drawn
        # (StochasticDurationPredictor.forward draws it from a generator).
        h = dp.proj(dp.convs(dp.pre(enc.x), x_mask)) * x_mask
        z = dp_noise * scales[2]
        for flow in reversed(dp.flows):
            if type(flow).__name__ == "UnusedFlow":
                continue
            z = flow(z, x_mask, g=h, reverse=True)
        w = torch.exp(z[:, :1]) * x_mask * scales[1]
        return enc.m_p, enc.logs_p, torch.ceil(w).squeeze(1).long()


class _AudioStage(nn.Module):
    """Expanded prior m_p, logs_p [B, C, F], noise [B, C, F], frame lengths [B], scales -> audio [B, F * hop]."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.flow = model.flow
        self.dec = model.dec
        self.hop = model.hop_length

    def forward(self, m_p, logs_p, noise, y_lengths, scales):
        y_mask = sequence_mask(y_lengths, m_p.shape[2]).unsqueeze(1).to(m_p.dtype)
        z_p = m_p + noise * torch.exp(logs_p) * scales[0]
        z = self.flow(z_p, y_mask, reverse=True)
        audio = self.dec(z * y_mask).squeeze(1)
        # Zero past each item's end, as VitsModel.decode does; expressed as an outer product
        # so it exports without repeat_interleave.
        sample_mask = (y_mask.transpose(1, 2) * torch.ones(1, 1, self.hop, dtype=m_p.dtype)).flatten(1)
        return audio * sample_mask


class _LatentStage(nn.Module):
    """The audio stage's first half: expanded prior + noise -> decoder latents z [B, C, F] (zero past each end)."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.flow = model.flow

    def forward(self, m_p, logs_p, noise, y_lengths, scales):
        y_mask = sequence_mask(y_lengths, m_p.shape[2]).unsqueeze(1).to(m_p.dtype)
        z_p = m_p + noise * torch.exp(logs_p) * scales[0]
        return self.flow(z_p, y_mask, reverse=True) * y_mask


class _DecoderStage(nn.Module):
    """The audio stage's second half: latents z [B, C, F] -> audio [B, F * hop] (run on windows when streaming)."""

    def __init__(self, model: VitsModel) -> None:
        super().__init__()
        self.dec = model.dec

    def forward(self, z):
        return self.dec(z).squeeze(1)


def _distinct_copy(model: VitsModel) -> VitsModel:
    """A copy whose every parameter holds distinct random values.

    The TorchScript exporter merges initializers with identical contents into one, which would tie
    two overridable weights together (e.g. zero-initialised layers); exporting random values and
    writing the real ones back by name afterwards avoids that.
    """
    twin = copy.deepcopy(model).eval()
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for param in twin.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.01 + 1e-3)
    return twin


def _restore_weights(proto: onnx.ModelProto, model: VitsModel) -> None:
    """Write the real parameter values into initializers named by state-dict key; fail if any is missing."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    for init in proto.graph.initializer:
        if init.name in state:
            init.CopyFrom(numpy_helper.from_array(state[init.name], init.name))
        elif np.prod(init.dims) > 64:
            # A large tensor under another name was folded from the twin's random weights.
            raise AdapterError(f"exported graph holds a weight-sized constant {init.name!r} not named by the state dict")


def _export_stage(stage: nn.Module, args: tuple, path: Path, inputs: tuple, outputs: tuple,
                  dynamic_axes: dict) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(stage, args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)
    return onnx.load(str(path))


def _example_inputs(model: VitsModel) -> tuple[tuple, tuple]:
    ids = torch.randint(3, 150, (2, 23))
    lengths = torch.tensor([23, 17])
    scales = torch.tensor([0.667, 1.0, 0.8])
    frames, channels = 41, model.hp.inter_channels
    text = (ids, lengths, scales, torch.randn(2, 2, 23))
    audio = (torch.randn(2, channels, frames), torch.randn(2, channels, frames) * 0.1,
             torch.randn(2, channels, frames), torch.tensor([41, 30]), scales)
    return text, audio


def export_onnx(model: VitsModel, directory: Path | str, stem: str = "chorus") -> OnnxExport:
    """Export `model` as `<stem>-text.onnx` and `<stem>-audio.onnx` in `directory` (flow/dec Conv weights overridable)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    try:
        return _export(model.eval(), directory, stem)
    finally:
        model.train(was_training)


def _export(model: VitsModel, directory: Path, stem: str) -> OnnxExport:
    twin = _distinct_copy(model)
    text_args, audio_args = _example_inputs(model)
    paths = OnnxExport(directory / f"{stem}-text.onnx", directory / f"{stem}-audio.onnx")
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=directory) as tmp:
        # Only the audio graph needs the distinct-values twin: the text graph has nothing overridable.
        text = _export_stage(_TextStage(model), text_args, Path(tmp) / "text.onnx", TEXT_INPUTS,
                             TEXT_OUTPUTS, {"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"},
                                            "dp_noise": {0: "batch", 2: "phonemes"},
                                            "m_p": {0: "batch", 2: "phonemes"}, "logs_p": {0: "batch", 2: "phonemes"},
                                            "durations": {0: "batch", 1: "phonemes"}})
        frames = {0: "batch", 2: "frames"}
        audio = _export_stage(_AudioStage(twin), audio_args, Path(tmp) / "audio.onnx", AUDIO_INPUTS,
                              AUDIO_OUTPUTS, {"m_p": frames, "logs_p": frames, "noise": frames,
                                              "y_lengths": {0: "batch"}, "audio": {0: "batch", 1: "samples"}})
        _restore_weights(audio, model)
        keys = conv_weight_keys(audio, prefixes=("/flow/", "/dec/"))
        _check_overridable(keys, model)
        expose_weights(audio, keys)
        for proto, path in ((text, paths.text), (audio, paths.audio)):
            proto.producer_name, proto.producer_version = "chorus", EXPORTER_VERSION
            onnx.checker.check_model(proto)
            atomic_write(path, lambda tmp, proto=proto: onnx.save(proto, tmp))
    return paths


def _check_overridable(keys: dict[str, str], model: VitsModel) -> None:
    """Every Conv1d weight of flow and dec must have become an overridable initializer."""
    expected = {f"{name}.weight" for name, mod in model.named_modules()
                if isinstance(mod, nn.Conv1d) and name.startswith(("flow.", "dec."))}
    missing = sorted(expected - set(keys.values()))
    if missing:
        raise AdapterError(f"export lost the overridable weights {missing[:5]} ({len(missing)} of {len(expected)})")


def onnx_cache_dir() -> Path:
    """Where exports are cached: ${CHORUS_CACHE:-~/.cache/chorus}/onnx."""
    return get_settings().cache_dir("onnx")


def _cached(model: VitsModel, fingerprint: str, cache_dir: Path | None, kind, export):
    """Graphs of `kind` (a NamedTuple of paths named by its fields) from the cache, or exported there now."""
    cache_dir = cache_dir or onnx_cache_dir()
    stem = f"{fingerprint[:16]}-{EXPORTER_VERSION}"
    paths = kind(*(cache_dir / f"{stem}-{name}.onnx" for name in kind._fields))
    if all(path.is_file() for path in paths):
        return paths
    log.info("exporting the base model's %s graphs to ONNX in %s", "/".join(kind._fields), cache_dir)
    return export(model, cache_dir, stem)


def cached_export(model: VitsModel, fingerprint: str, cache_dir: Path | None = None) -> OnnxExport:
    """The export of the base model with this fingerprint, from the cache or exported now when missing."""
    return _cached(model, fingerprint, cache_dir, OnnxExport, export_onnx)


def _export_overridable(stage: nn.Module, twin_stage: nn.Module, args: tuple, path: Path, inputs: tuple,
                        outputs: tuple, dynamic_axes: dict, model: VitsModel, prefix: str) -> None:
    """Export a stage from the distinct-values twin, write the real weights back and expose its Conv weights."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        proto = _export_stage(twin_stage, args, Path(tmp) / path.name, inputs, outputs, dynamic_axes)
    _restore_weights(proto, model)
    keys = conv_weight_keys(proto, prefixes=(prefix,))
    expected = {f"{name}.weight" for name, mod in model.named_modules()
                if isinstance(mod, nn.Conv1d) and name.startswith(prefix.strip("/") + ".")}
    if set(keys.values()) != expected:
        raise AdapterError(f"{path.name}: overridable weights differ from the model's {prefix} Conv1d layers")
    expose_weights(proto, keys)
    proto.producer_name, proto.producer_version = "chorus", EXPORTER_VERSION
    onnx.checker.check_model(proto)
    atomic_write(path, lambda tmp, proto=proto: onnx.save(proto, tmp))


def export_stream_graphs(model: VitsModel, directory: Path | str, stem: str = "chorus") -> StreamExport:
    """Export `<stem>-latent.onnx` (flow) and `<stem>-decoder.onnx` (HiFi-GAN), Conv weights overridable."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = StreamExport(directory / f"{stem}-latent.onnx", directory / f"{stem}-decoder.onnx")
    was_training = model.training
    model.eval()
    try:
        twin = _distinct_copy(model)
        _, audio_args = _example_inputs(model)
        frames = {0: "batch", 2: "frames"}
        with torch.no_grad():
            _export_overridable(_LatentStage(model), _LatentStage(twin), audio_args, paths.latent, AUDIO_INPUTS,
                                ("z",), {"m_p": frames, "logs_p": frames, "noise": frames,
                                         "y_lengths": {0: "batch"}, "z": frames}, model, "/flow/")
            _export_overridable(_DecoderStage(model), _DecoderStage(twin), (audio_args[0],), paths.decoder, ("z",),
                                ("audio",), {"z": frames, "audio": {0: "batch", 1: "samples"}}, model, "/dec/")
    finally:
        model.train(was_training)
    return paths


def cached_stream_export(model: VitsModel, fingerprint: str, cache_dir: Path | None = None) -> StreamExport:
    """The streaming graphs of the base model with this fingerprint, from the cache or exported now."""
    return _cached(model, fingerprint, cache_dir, StreamExport, export_stream_graphs)
