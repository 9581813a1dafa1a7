"""Overridable weights in an ONNX graph and ONNX Runtime adapter files that override them per run."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

# Conv nodes whose weights a tenant voice may replace: the flow and the HiFi-GAN decoder.
OVERRIDABLE_PREFIXES = ("/flow/", "/dec/")
_CONV_NODE = re.compile(r"^/(?P<path>.+)/Conv$")


class AdapterError(ValueError):
    """An adapter names a weight the graph cannot override, or gives it the wrong shape or type."""


def conv_weight_keys(model: onnx.ModelProto, prefixes: tuple[str, ...] = OVERRIDABLE_PREFIXES) -> dict[str, str]:
    """Map each Conv weight initializer under `prefixes` to its torch state-dict key.

    The key comes from the Conv node's name (`/flow/flows.6/enc/in_layers.0/Conv` ->
    `flow.flows.6.enc.in_layers.0.weight`), because exporters may give the initializer itself a
    generated name (`onnx::Conv_8168`). ConvTranspose nodes are left out: peft cannot adapt them.
    """
    initializers = {init.name for init in model.graph.initializer}
    keys: dict[str, str] = {}
    for node in model.graph.node:
        match = _CONV_NODE.match(node.name)
        if node.op_type != "Conv" or not match or not node.name.startswith(prefixes):
            continue
        weight = node.input[1]
        if weight not in initializers:
            raise AdapterError(f"Conv node {node.name} takes its weight {weight!r} from no initializer")
        keys[weight] = match["path"].replace("/", ".") + ".weight"
    return keys


def expose_weights(model: onnx.ModelProto, keys: Mapping[str, str]) -> onnx.ModelProto:
    """Rename the initializers in `keys` to their state-dict keys and make each a graph input too.

    ONNX Runtime overrides only initializers that are also graph inputs (else "Invalid input name");
    the initializer stays as the default, so a run without an adapter is the base voice. Each
    initializer must feed only its own Conv: a shared one would be overridden in both places.
    """
    graph = model.graph
    uses = collections.Counter(name for node in graph.node for name in node.input)
    shared = sorted(name for name in keys if uses[name] != 1)
    if shared:
        raise AdapterError(f"initializers used by more than one node cannot be overridden alone: {shared[:5]}")
    clash = sorted(set(keys.values()) & ({i.name for i in graph.initializer} - set(keys)))
    if clash:
        raise AdapterError(f"state-dict keys already name other initializers: {clash[:5]}")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in keys:
                node.input[i] = keys[name]
    existing_inputs = {inp.name for inp in graph.input}
    for init in graph.initializer:
        if init.name not in keys:
            continue
        init.name = keys[init.name]
        if init.name not in existing_inputs:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return model


def overridable_weights(session: ort.InferenceSession) -> dict[str, tuple[int, ...]]:
    """The weights a session lets an adapter override: graph inputs that have a default, with their shapes."""
    return {inp.name: tuple(inp.shape) for inp in session.get_overridable_initializers()}


def check_weights(weights: Mapping[str, np.ndarray], allowed: Mapping[str, tuple[int, ...]]) -> None:
    """Raise AdapterError naming every unknown key, wrong shape or non-float32 array in `weights`."""
    if not weights:
        raise AdapterError("an adapter needs at least one weight")
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        sample = ", ".join(sorted(allowed)[:3])
        raise AdapterError(
            f"adapter weights not overridable in this graph: {unknown[:5]}"
            f"{' …' if len(unknown) > 5 else ''} (valid: the {len(allowed)} flow/decoder Conv weights, e.g. {sample})"
        )
    for key, value in weights.items():
        shape = tuple(np.shape(value))
        if shape != tuple(allowed[key]):
            raise AdapterError(f"adapter weight {key} has shape {shape}, the graph expects {tuple(allowed[key])}")
        if np.asarray(value).dtype != np.float32:
            raise AdapterError(f"adapter weight {key} has dtype {np.asarray(value).dtype}, expected float32")


def write_adapter(weights: Mapping[str, np.ndarray], path: Path | str,
                  allowed: Mapping[str, tuple[int, ...]] | None = None) -> Path:
    """Write `{state-dict key: float32 array}` as an `.onnx_adapter` file (checked against `allowed` if given)."""
    if allowed is not None:
        check_weights(weights, allowed)
    # ortvalue_from_numpy does not copy: the arrays must stay alive until export_adapter has run.
    arrays = {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()}
    params = {key: ort.OrtValue.ortvalue_from_numpy(array) for key, array in arrays.items()}
    adapter = ort.AdapterFormat()
    adapter.set_parameters(params)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    adapter.export_adapter(str(tmp))
    del params
    tmp.replace(path)
    return path


def read_adapter(path: Path | str) -> dict[str, np.ndarray]:
    """The weights stored in an `.onnx_adapter` file, as numpy arrays (copies)."""
    params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
    return {key: np.array(value.numpy()) for key, value in params.items()}


def adapter_shapes(path: Path | str) -> dict[str, tuple[int, ...]]:
    """Names and shapes stored in an `.onnx_adapter` file (memory-mapped, nothing copied)."""
    params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
    return {key: tuple(value.shape()) for key, value in params.items()}
