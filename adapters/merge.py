"""Merge a peft LoRA artifact into the base model's Conv1d weights with numpy: what serving runs a voice with.

peft's `merge_and_unload` needs the torch model and a peft wrapper (~0.5 s); a voice is only its merged
weights, W + scaling * B @ A per adapted Conv1d (the kernel as [out, in * k]), which this computes
straight from the artifact's two files in a few milliseconds. Checked against peft's own merge in
tests/unit/test_merge.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import numpy as np

from chorus.adapters.artifact import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterArtifactError

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.(?P<name>[^.]+))?\.weight$")


class MergeError(AdapterArtifactError):
    """A LoRA artifact that cannot be merged into the base weights (unknown layer, shape, unsupported option)."""


def _scaling(config: dict, module: str, rank: int) -> float:
    """peft's scaling for one module: alpha / r (alpha / sqrt(r) with rsLoRA), honouring per-module patterns."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):  # as peft matches it: a suffix of the name, first wins
            alpha = value
            break
    return alpha / (rank ** 0.5 if config.get("use_rslora") else rank)


def merge_lora(config_bytes: bytes, tensors: Mapping[str, np.ndarray],
               base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{state-dict key: merged float32 weight} for each Conv1d the adapter changes.

    `config_bytes` is adapter_config.json, `tensors` the safetensors contents, `base` the base model's
    weights by state-dict key. Raises MergeError naming the problem.
    """
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise MergeError(f"{ADAPTER_CONFIG_FILE} is not JSON: {exc}", file=ADAPTER_CONFIG_FILE) from None
    if not isinstance(config, dict):
        raise MergeError(f"{ADAPTER_CONFIG_FILE} is not a JSON object", file=ADAPTER_CONFIG_FILE)
    if config.get("peft_type") != "LORA":
        raise MergeError(f"{ADAPTER_CONFIG_FILE}: peft_type {config.get('peft_type')!r} is not 'LORA'",
                         file=ADAPTER_CONFIG_FILE)
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise MergeError(f"{ADAPTER_CONFIG_FILE}: {flag}=true is not supported by the serving merge",
                             file=ADAPTER_CONFIG_FILE)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if not match:
            raise MergeError(f"{ADAPTER_WEIGHTS_FILE}: tensor {key!r} is not a LoRA A/B weight", file=ADAPTER_WEIGHTS_FILE)
        pairs.setdefault(match["module"], {})[match["part"]] = np.asarray(value, dtype=np.float32)
    if not pairs:
        raise MergeError(f"{ADAPTER_WEIGHTS_FILE} holds no LoRA weights", file=ADAPTER_WEIGHTS_FILE)
    merged: dict[str, np.ndarray] = {}
    for module, parts in sorted(pairs.items()):
        key = f"{module}.weight"
        if set(parts) != {"A", "B"}:
            raise MergeError(f"{ADAPTER_WEIGHTS_FILE}: {module} has lora_{''.join(parts)} only", file=ADAPTER_WEIGHTS_FILE)
        if key not in base:
            raise MergeError(f"{ADAPTER_WEIGHTS_FILE}: {module} is not a layer of the base model",
                             file=ADAPTER_WEIGHTS_FILE)
        w = base[key]
        a, b = parts["A"], parts["B"]
        rank = a.shape[0]
        if w.ndim != 3 or a.ndim != 3 or b.shape != (w.shape[0], rank, 1) or a.shape[1:] != w.shape[1:]:
            raise MergeError(f"{ADAPTER_WEIGHTS_FILE}: {module} lora_A {a.shape} / lora_B {b.shape} do not fit "
                             f"the base Conv1d weight {w.shape}", file=ADAPTER_WEIGHTS_FILE)
        delta = (b.reshape(b.shape[0], rank) @ a.reshape(rank, -1)).reshape(w.shape)
        merged[key] = (w + _scaling(config, module, rank) * delta).astype(np.float32)
    return merged
