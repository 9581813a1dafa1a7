"""adapters.merge: the numpy merge of a real engine LoRA artifact equals peft's own merge; bad artifacts are refused.

The artifact is a real peft LoRA on the real engine (decoder and flow), so the keys, shapes and scaling
are peft's; the reference is peft's `merge_and_unload` of the same files on a copy of the base model.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from chorus.adapters.artifact import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from chorus.adapters.lora import load_adapter_dir
from chorus.adapters.merge import MergeError, merge_lora
from chorus.adapters.testartifacts import make_engine_artifact

PREFIX = "base_model.model."
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def artifact(model, base_fp, tmp_path_factory) -> Path:
    """A real LoRA artifact (rank 8, alpha 16) on every decoder and flow Conv1d the engine lets LoRA adapt."""
    out = tmp_path_factory.mktemp("artifact") / "v1"
    make_engine_artifact(out, model, tenant="acme", voice="narrator", base_fingerprint=base_fp,
                         targets="decoder+flow")
    return out


@pytest.fixture(scope="module")
def base(model) -> dict[str, np.ndarray]:
    """The base weights by state-dict key (copies: the session's model is never touched)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _files(artifact_dir: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    return (artifact_dir / ADAPTER_CONFIG_FILE).read_bytes(), load_file(str(artifact_dir / ADAPTER_WEIGHTS_FILE))


def _peft_merged(artifact_dir: Path, model) -> dict[str, np.ndarray]:
    merged = load_adapter_dir(artifact_dir, copy.deepcopy(model)).state_dict()
    return {k: v.detach().numpy() for k, v in merged.items()}


def _variant(artifact: Path, tmp_path: Path, tensors: dict[str, np.ndarray] | None = None, **config) -> Path:
    """A copy of the artifact with adapter_config.json fields replaced (and optionally other tensors)."""
    out = tmp_path / "variant"
    shutil.copytree(artifact, out)
    data = json.loads((out / ADAPTER_CONFIG_FILE).read_text())
    data.update(config)
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(data))
    if tensors is not None:
        save_file(tensors, str(out / ADAPTER_WEIGHTS_FILE))
    return out


def _assert_same_as_peft(merged: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                         base: dict[str, np.ndarray]) -> None:
    for key, value in merged.items():
        assert value.dtype == np.float32 and value.shape == base[key].shape, key
        diff = float(np.abs(value - reference[key]).max())
        assert diff < TOLERANCE, f"{key}: differs from peft's merge by {diff:.2e}"


def test_merge_equals_peft_merge_on_adapted_keys_only(artifact, model, base):
    config, tensors = _files(artifact)
    merged = merge_lora(config, tensors, base)
    reference = _peft_merged(artifact, model)

    adapted = {k[len(PREFIX):].replace(".lora_A.weight", ".weight") for k in tensors if ".lora_A." in k}
    assert len(adapted) == 52  # 20 decoder + 32 flow convolutions
    assert set(merged) == adapted
    # exactly the keys peft's merge changes, and each by a clear margin (so the comparison can fail)
    changed = {k for k in reference if not np.array_equal(reference[k], base[k])}
    assert changed == adapted
    assert all(np.abs(merged[k] - base[k]).max() > 1e-3 for k in adapted)
    _assert_same_as_peft(merged, reference, base)
    # untouched layers are not in the result, even ones of the same kind
    assert "dec.ups.0.weight" not in merged and "flow.flows.0.pre.weight" not in merged
    assert not any(k.startswith(("enc_p.", "dp.")) for k in merged)


def test_merge_leaves_the_base_weights_alone(artifact, model, base):
    config, tensors = _files(artifact)
    before = {k: v.copy() for k, v in base.items()}
    merge_lora(config, tensors, base)
    assert all(np.array_equal(base[k], before[k]) for k in before)
    # and the session's model was not changed by the peft reference either
    state = model.state_dict()
    assert all(np.array_equal(state[k].numpy(), before[k]) for k in before)


def test_keys_without_the_peft_prefix_or_with_the_adapter_name_merge_the_same(artifact, base):
    config, tensors = _files(artifact)
    expected = merge_lora(config, tensors, base)
    bare = {k[len(PREFIX):]: v for k, v in tensors.items()}
    named = {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
    for variant in (bare, named):
        got = merge_lora(config, variant, base)
        assert set(got) == set(expected)
        assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_rslora_scaling_equals_peft(artifact, model, base, tmp_path):
    variant = _variant(artifact, tmp_path, use_rslora=True)
    merged = merge_lora(*_files(variant), base)
    plain = merge_lora(*_files(artifact), base)
    # alpha / sqrt(r) instead of alpha / r: a different voice
    assert all(np.abs(merged[k] - plain[k]).max() > 1e-4 for k in merged)
    _assert_same_as_peft(merged, _peft_merged(variant, model), base)


@pytest.mark.parametrize("pattern", [
    {"dec.conv_pre": 64.0, "in_layers.0": 2.0},  # a module's full name; a suffix shared by eight modules
    {"resblocks\\.1": 64.0},  # matches inside dec.resblocks.1.convs.0 but is not a suffix of any name
], ids=["suffix", "infix"])
@pytest.mark.filterwarnings("ignore:The following alpha_pattern keys did not match:RuntimeWarning")
def test_alpha_pattern_equals_peft(artifact, model, base, tmp_path, pattern):
    variant = _variant(artifact, tmp_path, alpha_pattern=pattern)
    merged = merge_lora(*_files(variant), base)
    _assert_same_as_peft(merged, _peft_merged(variant, model), base)


def test_alpha_pattern_changes_only_the_matched_modules(artifact, base, tmp_path):
    variant = _variant(artifact, tmp_path, alpha_pattern={"dec.conv_pre": 64.0})
    merged, plain = merge_lora(*_files(variant), base), merge_lora(*_files(artifact), base)
    changed = {k for k in merged if not np.array_equal(merged[k], plain[k])}
    assert changed == {"dec.conv_pre.weight"}
    # alpha 64 instead of 16: the delta is four times as large
    np.testing.assert_allclose(merged["dec.conv_pre.weight"] - base["dec.conv_pre.weight"],
                               4 * (plain["dec.conv_pre.weight"] - base["dec.conv_pre.weight"]), atol=1e-6)


def test_rank_pattern_equals_peft(artifact, model, base, tmp_path):
    """A module with a lower rank (rank_pattern) is scaled by alpha / its own rank, as peft does."""
    _, tensors = _files(artifact)
    tensors = dict(tensors)
    for part, axis in (("A", 0), ("B", 1)):
        key = f"{PREFIX}dec.conv_post.lora_{part}.weight"
        tensors[key] = np.ascontiguousarray(np.take(tensors[key], range(4), axis=axis))
    variant = _variant(artifact, tmp_path, tensors, rank_pattern={"dec.conv_post": 4})
    merged = merge_lora(*_files(variant), base)
    _assert_same_as_peft(merged, _peft_merged(variant, model), base)


# --- refusals -------------------------------------------------------------------------------------------

A = f"{PREFIX}dec.conv_pre.lora_A.weight"  # (8, 192, 7)
B = f"{PREFIX}dec.conv_pre.lora_B.weight"  # (256, 8, 1)


def _renamed(tensors, old, new):
    return {k.replace(old, new): v for k, v in tensors.items()}


def _with(tensors, **replace):
    out = dict(tensors)
    for which, shape in replace.items():
        out[{"a": A, "b": B}[which]] = np.zeros(shape, np.float32)
    return out


TENSOR_ERRORS = [
    ("not-lora", lambda t: {**t, f"{PREFIX}dec.conv_pre.weight": np.zeros((256, 192, 7), np.float32)},
     r"tensor 'base_model\.model\.dec\.conv_pre\.weight' is not a LoRA A/B weight"),
    ("dora-magnitude", lambda t: {**t, f"{PREFIX}dec.conv_pre.lora_magnitude_vector": np.ones(256, np.float32)},
     r"lora_magnitude_vector' is not a LoRA A/B weight"),
    ("unknown-layer", lambda t: _renamed(t, "dec.conv_pre.", "dec.conv_middle."),
     r"dec\.conv_middle is not a layer of the base model"),
    ("A-only", lambda t: {k: v for k, v in t.items() if k != B}, r"dec\.conv_pre has lora_A only"),
    ("empty", lambda t: {}, r"holds no LoRA weights"),
    ("A-in-channels", lambda t: _with(t, a=(8, 191, 7)), r"dec\.conv_pre lora_A \(8, 191, 7\).*do not fit"),
    ("A-kernel", lambda t: _with(t, a=(8, 192, 5)), r"dec\.conv_pre lora_A \(8, 192, 5\).*do not fit"),
    ("B-out-channels", lambda t: _with(t, b=(255, 8, 1)), r"dec\.conv_pre .*lora_B \(255, 8, 1\) do not fit"),
    ("rank-mismatch", lambda t: _with(t, b=(256, 4, 1)), r"dec\.conv_pre .*lora_B \(256, 4, 1\) do not fit"),
    ("B-kernel", lambda t: _with(t, b=(256, 8, 3)), r"dec\.conv_pre .*lora_B \(256, 8, 3\) do not fit"),
    ("A-2d", lambda t: _with(t, a=(8, 192 * 7)), r"dec\.conv_pre lora_A \(8, 1344\).*do not fit"),
]


@pytest.mark.parametrize("mutate, message", [e[1:] for e in TENSOR_ERRORS], ids=[e[0] for e in TENSOR_ERRORS])
def test_bad_tensors_are_refused_naming_the_problem(artifact, base, mutate, message):
    config, tensors = _files(artifact)
    with pytest.raises(MergeError, match=message) as info:
        merge_lora(config, mutate(tensors), base)
    assert info.value.file == ADAPTER_WEIGHTS_FILE


def _config(artifact: Path, **fields) -> bytes:
    data = json.loads((artifact / ADAPTER_CONFIG_FILE).read_text())
    data.update(fields)
    return json.dumps(data).encode()


CONFIG_ERRORS = [
    ("dora", lambda a: _config(a, use_dora=True), r"use_dora=true is not supported"),
    ("fan-in-fan-out", lambda a: _config(a, fan_in_fan_out=True), r"fan_in_fan_out=true is not supported"),
    ("not-lora", lambda a: _config(a, peft_type="IA3"), r"peft_type 'IA3' is not 'LORA'"),
    ("no-peft-type", lambda a: _config(a, peft_type=None), r"peft_type None is not 'LORA'"),
    ("not-json", lambda a: b'{"peft_type": "LORA", ', r"adapter_config\.json is not JSON"),
    ("not-utf8", lambda a: b"\xff\xfe\x00", r"adapter_config\.json is not JSON"),
    ("json-list", lambda a: b'["LORA"]', r"adapter_config\.json"),
]


@pytest.mark.parametrize("make, message", [e[1:] for e in CONFIG_ERRORS], ids=[e[0] for e in CONFIG_ERRORS])
def test_bad_configs_are_refused_naming_the_problem(artifact, base, make, message):
    _, tensors = _files(artifact)
    with pytest.raises(MergeError, match=message) as info:
        merge_lora(make(artifact), tensors, base)
    assert info.value.file == ADAPTER_CONFIG_FILE
