"""Chorus's ONNX export vs the torch engine vs Piper's own ONNX file, and per-run weight overrides."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from chorus.engine.export import cached_export
from chorus.engine.frontend.ids import phonemes_to_ids
from chorus.engine.frontend.phonemize import Phonemizer
from chorus.engine.ort_adapters import AdapterError, read_adapter, write_adapter
from chorus.engine.runtime_ort import OnnxRuntime, OrtSettings

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Chorus serves many voices from one shared model, doesn't it?",
    "On Tuesday, forty two engineers met in Lisbon; nobody was late!",
]
OVERRIDDEN = ["dec.conv_pre.weight", "dec.resblocks.4.convs.1.weight", "dec.conv_post.weight",
              "flow.flows.2.enc.in_layers.1.weight", "flow.flows.6.post.weight"]


@pytest.fixture(scope="module")
def export(model, voice, tmp_path_factory):
    return cached_export(model, voice.fingerprint, cache_dir=tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def runtime(export):
    return OnnxRuntime(export, OrtSettings(threads=2, adapter_cache_size=2))


@pytest.fixture(scope="module")
def piper_graph(voice):
    """Piper's own ONNX file, with its ceil'd per-phoneme durations exposed as a second output."""
    proto = onnx.load(str(voice.onnx_path))
    (ceil,) = [node for node in proto.graph.node if node.op_type == "Ceil"]
    proto.graph.output.append(onnx.helper.make_tensor_value_info(ceil.output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def batches(voice):
    out = []
    for phonemes in Phonemizer(voice.espeak_voice).phonemize_many(SENTENCES):
        ids = phonemes_to_ids(phonemes, voice.phoneme_id_map)
        out.append((np.array([ids], np.int64), np.array([len(ids)], np.int64)))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def _perturbed(model, names, seed=0, scale=0.1) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    return {name: (state[name] * (1 + scale * torch.randn(state[name].shape, generator=gen))).numpy()
            for name in names}


def test_noise_free_parity_torch_chorus_onnx_piper_onnx(model, runtime, piper_graph, batches):
    for ids, lengths in batches:
        torch_out = model.infer(torch.from_numpy(ids), torch.from_numpy(lengths), 0.0, 1.0, 0.0)
        ours = runtime.run(ids, lengths, (0.0, 1.0, 0.0))
        piper_audio, piper_durations = piper_graph.run(None, {"input": ids, "input_lengths": lengths,
                                                              "scales": np.array([0.0, 1.0, 0.0], np.float32)})
        piper_audio = piper_audio.reshape(-1)
        assert np.array_equal(torch_out.durations.numpy(), ours.durations)
        assert np.array_equal(piper_durations.reshape(-1).astype(np.int64), ours.durations[0])
        reference = torch_out.audio[0].numpy()
        assert ours.audio.shape[1] == reference.size == piper_audio.size  # same durations as Piper too
        assert _corr(reference, ours.audio[0]) >= 0.99
        assert _corr(piper_audio, ours.audio[0]) >= 0.99
        assert np.abs(reference - ours.audio[0]).max() < 1e-3


def test_same_seed_gives_torch_output(model, runtime, batches):
    ids, lengths = batches[1]
    torch_out = model.infer(torch.from_numpy(ids), torch.from_numpy(lengths), 0.667, 1.0, 0.8,
                            generator=torch.Generator().manual_seed(11))
    ours = runtime.run(ids, lengths, (0.667, 1.0, 0.8), generator=torch.Generator().manual_seed(11))
    other = runtime.run(ids, lengths, (0.667, 1.0, 0.8), generator=torch.Generator().manual_seed(12))
    assert np.array_equal(torch_out.durations.numpy(), ours.durations)
    assert np.abs(torch_out.audio.numpy() - ours.audio).max() < 1e-3
    assert not np.array_equal(other.audio, ours.audio) and other.audio.shape != (0,)


def test_padded_batch_matches_single_runs(runtime, batches):
    (a, la), (b, lb) = batches[0], batches[1]
    ids = np.zeros((2, max(a.shape[1], b.shape[1])), np.int64)
    ids[0, : a.shape[1]], ids[1, : b.shape[1]] = a[0], b[0]
    both = runtime.run(ids, np.concatenate([la, lb]), (0.0, 1.0, 0.0))
    for row, (x, lx) in enumerate(((a, la), (b, lb))):
        single = runtime.run(x, lx, (0.0, 1.0, 0.0))
        n = int(single.audio_lengths[0])
        assert int(both.audio_lengths[row]) == n
        assert np.abs(both.audio[row, :n] - single.audio[0, :n]).max() < 1e-4
        assert not both.audio[row, n:].any()


def test_adapter_changes_output_exactly_as_torch(model, runtime, batches, tmp_path):
    ids, lengths = batches[0]
    weights = _perturbed(model, OVERRIDDEN)
    adapter_path = write_adapter(weights, tmp_path / "voice.onnx_adapter", runtime.overridable)
    assert set(read_adapter(adapter_path)) == set(OVERRIDDEN)

    tuned = copy.deepcopy(model)
    tuned.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    expected = tuned.infer(torch.from_numpy(ids), torch.from_numpy(lengths), 0.0, 1.0, 0.0).audio[0].numpy()
    base = runtime.run(ids, lengths, (0.0, 1.0, 0.0)).audio[0]
    adapted = runtime.run(ids, lengths, (0.0, 1.0, 0.0), adapter=adapter_path).audio[0]
    fed = runtime.run_with_weights(ids, lengths, weights, (0.0, 1.0, 0.0)).audio[0]

    assert _corr(base, expected) < 0.99  # the perturbation is audible, so the checks below can fail
    assert _corr(adapted, expected) >= 0.999
    assert np.abs(adapted - expected).max() < 1e-3
    assert np.array_equal(adapted, fed)
    # the adapter applies to that run only
    assert np.array_equal(runtime.run(ids, lengths, (0.0, 1.0, 0.0)).audio[0], base)


def test_adapter_cache_is_lru(model, runtime, tmp_path):
    paths = [write_adapter(_perturbed(model, OVERRIDDEN[:1], seed=i), tmp_path / f"v{i}.onnx_adapter")
             for i in range(3)]
    first = runtime.load_adapter(paths[0])
    assert runtime.load_adapter(paths[0]) is first
    runtime.load_adapter(paths[1])
    runtime.load_adapter(paths[2])  # cache size 2: paths[0] is evicted
    assert runtime.load_adapter(paths[0]) is not first


def test_bad_adapters_are_refused_with_the_bad_name(model, runtime, tmp_path):
    good = _perturbed(model, OVERRIDDEN[:1])
    unknown = {**good, "enc_p.encoder.attn_layers.0.conv_q.weight": np.zeros((192, 192, 1), np.float32)}
    with pytest.raises(AdapterError, match="enc_p.encoder.attn_layers.0.conv_q.weight"):
        write_adapter(unknown, tmp_path / "a.onnx_adapter", runtime.overridable)
    misshapen = {"dec.conv_post.weight": np.zeros((1, 32, 5), np.float32)}
    with pytest.raises(AdapterError, match=r"dec.conv_post.weight has shape \(1, 32, 5\)"):
        write_adapter(misshapen, tmp_path / "b.onnx_adapter", runtime.overridable)
    with pytest.raises(AdapterError, match="float32"):
        write_adapter({k: v.astype(np.float64) for k, v in good.items()}, tmp_path / "c.onnx_adapter",
                      runtime.overridable)
    # files written without checks are refused when loaded, before any run
    for name, weights in (("d", unknown), ("e", misshapen)):
        path = write_adapter(weights, tmp_path / f"{name}.onnx_adapter")
        with pytest.raises(AdapterError):
            runtime.load_adapter(path)
    with pytest.raises(AdapterError, match="not found"):
        runtime.load_adapter(tmp_path / "missing.onnx_adapter")


def test_export_is_cached_by_fingerprint(model, voice, export):
    mtimes = [p.stat().st_mtime_ns for p in export]
    again = cached_export(model, voice.fingerprint, cache_dir=export.text.parent)
    assert again == export and [p.stat().st_mtime_ns for p in again] == mtimes
    assert voice.fingerprint[:16] in export.audio.name


def test_every_flow_and_decoder_conv_weight_is_overridable(model, runtime):
    expected = {f"{name}.weight": tuple(mod.weight.shape) for name, mod in model.named_modules()
                if isinstance(mod, torch.nn.Conv1d) and name.startswith(("flow.", "dec."))}
    assert len(expected) == 60
    assert runtime.overridable == expected
