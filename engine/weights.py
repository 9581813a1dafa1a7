"""Import the VITS weights from a Piper ONNX file (strictly) and cache them as safetensors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

from chorus.files import atomic_write
from chorus.settings import get_settings

from .vits import VitsHParams, VitsModel
from .voice import BaseVoice, file_sha256, load_base_voice

log = logging.getLogger(__name__)

# Piper exports the text embedding under the ONNX input-like name `sid`.
EMBEDDING_NAME = "sid"
# The duration predictor's first flow (elementwise affine) is folded to exp(-logs) in reverse mode.
DP_AFFINE_EXP = "/dp/flows.0/Exp_output_0"
# Initializers named like module parameters, e.g. `dec.ups.0.weight`.
_PARAM_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")
# Graph constants above this many elements are treated as weights that something failed to map.
_MAX_CONSTANT_SIZE = 64


class WeightImportError(ValueError):
    """ONNX weights and the PyTorch model do not match one to one."""


def default_cache_dir() -> Path:
    """Where imported weights are cached: ${CHORUS_CACHE:-~/.cache/chorus}/weights."""
    return get_settings().cache_dir("weights")


def _expected_shapes(hp: VitsHParams) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = VitsModel(hp)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _conv_param_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Parameter names for `onnx::Conv_*` initializers, from the Conv node that consumes them."""
    names: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or not node.name.startswith("/"):
            continue
        module = node.name[1:].rsplit("/", 1)[0].replace("/", ".")  # /flow/flows.6/enc/in_layers.0/Conv
        for slot, suffix in zip(node.input[1:], ("weight", "bias")):
            if slot.startswith("onnx::"):
                names[slot] = f"{module}.{suffix}"
    return names


def map_onnx_initializers(model_proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Name every weight in a Piper ONNX graph as a VitsModel state-dict key; raise on leftovers."""
    graph = model_proto.graph
    conv_names = _conv_param_names(graph)
    consumed = {name for node in graph.node for name in node.input}
    mapped: dict[str, np.ndarray] = {}
    unmapped: list[str] = []
    for init in graph.initializer:
        name = init.name
        if name == EMBEDDING_NAME:
            key, value = "enc_p.emb.weight", numpy_helper.to_array(init)
        elif name == DP_AFFINE_EXP:
            key, value = "dp.flows.0.logs", -np.log(numpy_helper.to_array(init))
        elif name in conv_names:
            key, value = conv_names[name], numpy_helper.to_array(init)
        elif _PARAM_NAME.match(name):
            key, value = name, numpy_helper.to_array(init)
        elif name in consumed and int(np.prod(init.dims)) <= _MAX_CONSTANT_SIZE:
            continue  # a graph constant (shape, axis, folded scalar) of the exported computation
        else:
            unmapped.append(f"{name} {list(init.dims)}")
            continue
        if key in mapped:
            unmapped.append(f"{name} (duplicate of {key})")
            continue
        mapped[key] = value
    if unmapped:
        raise WeightImportError(f"ONNX initializers with no model parameter: {', '.join(unmapped)}")
    return mapped


def import_piper_onnx(path: Path | str, hp: VitsHParams | None = None) -> dict[str, torch.Tensor]:
    """State dict for VitsModel from a Piper ONNX file; strict on names and shapes."""
    mapped = map_onnx_initializers(onnx.load(str(path)))
    expected = _expected_shapes(hp or VitsHParams())
    unknown = sorted(set(mapped) - set(expected))
    missing = sorted(set(expected) - set(mapped))
    misshapen = [
        f"{key} onnx {list(value.shape)} vs model {list(expected[key])}"
        for key, value in mapped.items()
        if key in expected and tuple(value.shape) != expected[key]
    ]
    problems = []
    if unknown:
        problems.append(f"unmapped ONNX weights (no such model parameter): {', '.join(unknown)}")
    if misshapen:
        problems.append(f"misshapen weights: {'; '.join(misshapen)}")
    if missing:
        problems.append(f"model parameters with no ONNX weight: {', '.join(missing)}")
    if problems:
        raise WeightImportError(f"{path}: " + " | ".join(problems))
    return {key: torch.tensor(np.asarray(value, dtype=np.float32)) for key, value in mapped.items()}


def _read_cache(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor] | None:
    try:
        state = load_file(str(path))
    except Exception as exc:  # unreadable or truncated: re-import and overwrite
        log.warning("ignoring unreadable weight cache %s: %s", path, exc)
        return None
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        log.warning("ignoring weight cache %s: keys or shapes differ from the model", path)
        return None
    return state


def load_piper_state_dict(onnx_path: Path | str, fingerprint: str | None = None, hp: VitsHParams | None = None,
                          cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """Imported weights of a Piper ONNX file, via a safetensors cache keyed by the file's sha256."""
    hp = hp or VitsHParams()
    fingerprint = fingerprint or file_sha256(Path(onnx_path))
    cache_dir = cache_dir or default_cache_dir()
    cache_path = cache_dir / f"{fingerprint}.safetensors"
    if cache_path.is_file() and (state := _read_cache(cache_path, _expected_shapes(hp))) is not None:
        return state
    state = import_piper_onnx(onnx_path, hp)
    try:
        atomic_write(cache_path, lambda tmp: save_file(state, tmp, metadata={"source": str(onnx_path),
                                                                            "sha256": fingerprint}))
    except OSError as exc:  # e.g. a read-only file system in a container: work on, just slower next time
        log.warning("could not cache imported weights in %s: %s", cache_path, exc)
    return state


def load_vits_model(voice: BaseVoice | None = None, hp: VitsHParams | None = None,
                    cache_dir: Path | None = None) -> VitsModel:
    """A VitsModel in eval mode with the voice's weights (default: the bundled base voice)."""
    voice = voice or load_base_voice()
    model = VitsModel(hp)
    state = load_piper_state_dict(voice.onnx_path, voice.fingerprint, model.hp, cache_dir)
    model.load_state_dict(state, strict=True)
    return model.eval()
