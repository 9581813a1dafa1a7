"""Strict weight import from Piper ONNX files, and the safetensors cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from chorus.engine.voice import file_sha256
from chorus.engine.vits import VitsModel
from chorus.engine.weights import (
    WeightImportError,
    import_piper_onnx,
    load_piper_state_dict,
    map_onnx_initializers,
)


@pytest.fixture(scope="module")
def proto(voice):
    return onnx.load(str(voice.onnx_path))


def _save_copy(proto, tmp_path, edit) -> str:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    edit(copy.graph)
    path = tmp_path / "edited.onnx"
    onnx.save(copy, str(path))
    return str(path)


def _replace(graph, name: str, array: np.ndarray) -> None:
    (index,) = [i for i, init in enumerate(graph.initializer) if init.name == name]
    graph.initializer[index].CopyFrom(numpy_helper.from_array(array, name))


def test_every_weight_maps_to_every_parameter(proto):
    mapped = map_onnx_initializers(proto)
    model_keys = set(VitsModel().state_dict())
    assert set(mapped) == model_keys
    assert len(mapped) == 350
    # The flow's WN convs come from `onnx::Conv_*` initializers, named from their Conv nodes.
    assert mapped["flow.flows.6.enc.in_layers.0.weight"].shape == (384, 192, 5)
    assert mapped["flow.flows.0.enc.res_skip_layers.3.weight"].shape == (192, 192, 1)
    # The duration predictor's affine flow is stored as exp(-logs).
    exp_value = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == "/dp/flows.0/Exp_output_0")
    np.testing.assert_allclose(np.exp(-mapped["dp.flows.0.logs"]), exp_value, rtol=1e-6)


def test_extra_unknown_initializer_is_named(proto, tmp_path):
    def add(graph):
        graph.initializer.append(numpy_helper.from_array(np.zeros((4, 4), np.float32), "dec.extra_conv.weight"))

    with pytest.raises(WeightImportError, match=r"unmapped ONNX weights.*dec\.extra_conv\.weight"):
        import_piper_onnx(_save_copy(proto, tmp_path, add))


def test_unused_large_constant_is_named(proto, tmp_path):
    def add(graph):
        graph.initializer.append(numpy_helper.from_array(np.ones((192, 3), np.float32), "onnx::Conv_99999"))

    with pytest.raises(WeightImportError, match=r"no model parameter: onnx::Conv_99999"):
        import_piper_onnx(_save_copy(proto, tmp_path, add))


def test_misshapen_weight_is_named(proto, tmp_path):
    def shrink(graph):
        _replace(graph, "dec.conv_post.weight", np.zeros((1, 32, 5), np.float32))

    with pytest.raises(WeightImportError, match=r"misshapen.*dec\.conv_post\.weight onnx \[1, 32, 5\] vs model \[1, 32, 7\]"):
        import_piper_onnx(_save_copy(proto, tmp_path, shrink))


def test_missing_weight_is_named(proto, tmp_path):
    def drop(graph):
        (index,) = [i for i, init in enumerate(graph.initializer) if init.name == "dp.proj.bias"]
        del graph.initializer[index]

    with pytest.raises(WeightImportError, match=r"model parameters with no ONNX weight: dp\.proj\.bias"):
        import_piper_onnx(_save_copy(proto, tmp_path, drop))


def test_cache_is_keyed_by_fingerprint_and_survives_corruption(voice, tmp_path):
    first = load_piper_state_dict(voice.onnx_path, voice.fingerprint, cache_dir=tmp_path)
    cached = tmp_path / f"{voice.fingerprint}.safetensors"
    assert cached.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [cached.name]
    second = load_piper_state_dict(voice.onnx_path, voice.fingerprint, cache_dir=tmp_path)
    assert second.keys() == first.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    cached.write_bytes(b"not a safetensors file")
    third = load_piper_state_dict(voice.onnx_path, voice.fingerprint, cache_dir=tmp_path)
    assert all(torch.equal(first[k], third[k]) for k in first)
    assert cached.stat().st_size > 50_000_000


def test_cache_key_follows_file_contents(proto, voice, tmp_path):
    def nudge(graph):
        bias = next(numpy_helper.to_array(i) for i in graph.initializer if i.name == "dp.proj.bias")
        _replace(graph, "dp.proj.bias", bias + 1.0)

    edited = _save_copy(proto, tmp_path, nudge)
    cache = tmp_path / "cache"
    state = load_piper_state_dict(edited, cache_dir=cache)
    assert (cache / f"{file_sha256(tmp_path / 'edited.onnx')}.safetensors").is_file()
    assert file_sha256(tmp_path / "edited.onnx") != voice.fingerprint
    original = map_onnx_initializers(proto)["dp.proj.bias"]
    np.testing.assert_allclose(state["dp.proj.bias"].numpy(), original + 1.0)


def test_unwritable_cache_still_loads(voice, tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    state = load_piper_state_dict(voice.onnx_path, voice.fingerprint, cache_dir=blocker / "weights")
    assert len(state) == 350
    assert "could not cache imported weights" in caplog.text
