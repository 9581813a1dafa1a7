"""engine.runtime_stream: windows tile a sentence, windowed decoding equals whole decoding at DECODER_CONTEXT
(and not with too little context), the streamed audio is the one-graph runtime's for a seed, and a tenant's
merged weights give the torch engine's output for the peft-merged model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from chorus.adapters.artifact import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from chorus.adapters.lora import load_adapter_dir
from chorus.adapters.merge import merge_lora
from chorus.adapters.testartifacts import make_engine_artifact
from chorus.engine.export import cached_export, cached_stream_export
from chorus.engine.frontend import TextFrontEnd
from chorus.engine.ort_adapters import AdapterError
from chorus.engine.runtime_ort import HOP_LENGTH, OnnxRuntime, OrtSettings
from chorus.engine.runtime_stream import DECODER_CONTEXT, FIRST_WINDOW, GROWTH, StreamingRuntime, windows

TEXT = "Chorus streams each sentence in windows, and nobody hears a seam."
SCALES = (0.667, 1.0, 0.8)
SEED = 5


# --- windows() ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, growth", [(FIRST_WINDOW, GROWTH), (10, 2), (1, 1), (7, 1.5), (50, 8)])
def test_windows_tile_the_frames_exactly(first, growth):
    for frames in range(0, 400):
        spans = windows(frames, first, growth)
        if frames == 0:
            assert spans == []
            continue
        assert spans[0][0] == 0 and spans[-1][1] == frames
        assert all(a < b for a, b in spans)  # no empty windows
        assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:]))  # no gaps, no overlaps
        # the first window is `first` frames unless the rest would be a tail shorter than `first`
        expected_first = first if frames - first >= first else frames
        assert spans[0] == (0, min(frames, expected_first))
        sizes = [b - a for a, b in spans]
        for k, n in enumerate(sizes[:-1]):  # each window `growth` times the one before (whole frames)
            assert n == int(first * growth**k)
        if len(sizes) > 1:  # the last is never a tiny tail: it is folded into the one before
            assert sizes[-1] >= first


def test_windows_by_hand():
    assert windows(0) == [] and windows(-3) == []
    assert windows(5) == [(0, 5)]
    assert windows(40) == [(0, 40)]  # 16 left after 24 < 24: one window
    assert windows(48) == [(0, 24), (24, 48)]
    assert windows(130) == [(0, 24), (24, 130)]  # 10 left after 120: folded into the second window
    assert windows(150) == [(0, 24), (24, 120), (120, 150)]
    assert windows(1030) == [(0, 24), (24, 120), (120, 504), (504, 1030)]  # a 12 s sentence: 4 windows
    assert windows(10, first=4, growth=1) == [(0, 4), (4, 10)]
    with pytest.raises(ValueError):
        windows(10, first=0)


# --- the runtime on the real base model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(model, base_fp):
    return cached_export(model, base_fp), cached_stream_export(model, base_fp)


@pytest.fixture(scope="module")
def runtime(exports) -> StreamingRuntime:
    text, stream = exports
    return StreamingRuntime(text.text, stream, OrtSettings(threads=2))


@pytest.fixture(scope="module")
def ids(voice) -> list[int]:
    (utterance,) = TextFrontEnd(voice).utterances(TEXT)
    return utterance.ids


@pytest.fixture(scope="module")
def latents(runtime, ids):
    return runtime.latents(ids, SCALES, torch.Generator().manual_seed(SEED))


@pytest.fixture(scope="module")
def whole(runtime, latents) -> np.ndarray:
    return runtime.decode(latents.z, 0, latents.frames)


@pytest.fixture(scope="module")
def merged_weights(model, base_fp, tmp_path_factory):
    """A real LoRA artifact on the decoder and the flow, merged into the base weights; and its directory."""
    out = tmp_path_factory.mktemp("artifact") / "v1"
    make_engine_artifact(out, model, tenant="acme", voice="narrator", base_fingerprint=base_fp,
                         targets="decoder+flow")
    base = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    weights = merge_lora((out / ADAPTER_CONFIG_FILE).read_bytes(), load_file(str(out / ADAPTER_WEIGHTS_FILE)), base)
    return weights, out


def test_latents_shape_and_durations(runtime, latents, ids):
    assert latents.z.dtype == np.float32 and latents.z.shape[:2] == (1, 192)
    assert latents.durations.shape == (len(ids),)
    assert latents.frames == int(latents.durations.sum())
    assert len(windows(latents.frames)) >= 3  # the sentence spans several windows, so seams are checked


def test_windowed_decode_equals_whole_decode(runtime, latents, whole):
    assert whole.shape == (latents.frames * HOP_LENGTH,)
    parts = list(runtime.stream(latents))
    assert [p.size for p in parts] == [(b - a) * HOP_LENGTH for a, b in windows(latents.frames)]
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() < 1e-5
    explicit = np.concatenate([runtime.decode(latents.z, a, b, context=DECODER_CONTEXT)
                               for a, b in windows(latents.frames)])
    assert np.array_equal(explicit, streamed)  # stream() decodes at DECODER_CONTEXT
    assert np.abs(whole).max() > 0.1  # real audio, not silence


def test_too_little_context_leaves_seams(runtime, latents, whole):
    """The same check at 2 frames of context fails: the context is what makes windows seamless."""
    spans = windows(latents.frames)
    short = np.concatenate([runtime.decode(latents.z, a, b, context=2) for a, b in spans])
    assert np.abs(short - whole).max() > 1e-3


def test_stream_equals_the_one_graph_runtime_for_a_seed(exports, runtime, latents, ids):
    one_graph = OnnxRuntime(exports[0], OrtSettings(threads=2))
    streamed = np.concatenate(list(runtime.stream(latents)))
    result = one_graph.run(np.array([ids]), np.array([len(ids)]), SCALES, torch.Generator().manual_seed(SEED))
    assert np.array_equal(result.durations[0], latents.durations)
    assert int(result.audio_lengths[0]) == streamed.size
    assert np.abs(result.audio[0] - streamed).max() < 1e-5
    # another seed is another take: the comparison above can fail
    other = runtime.latents(ids, SCALES, torch.Generator().manual_seed(SEED + 1))
    assert other.frames != latents.frames or np.abs(other.z - latents.z).max() > 0.1


def test_merged_weights_give_the_peft_merged_torch_engine(model, runtime, ids, merged_weights, whole):
    weights, artifact = merged_weights
    assert any(k.startswith("flow.") for k in weights) and any(k.startswith("dec.") for k in weights)
    runtime.check(weights)
    adapted = runtime.latents(ids, SCALES, torch.Generator().manual_seed(SEED), weights)
    audio = np.concatenate(list(runtime.stream(adapted, weights)))

    tuned = load_adapter_dir(artifact, copy.deepcopy(model))
    expected = tuned.infer(torch.tensor([ids]), torch.tensor([len(ids)]), *SCALES,
                           generator=torch.Generator().manual_seed(SEED))
    assert np.array_equal(expected.durations[0].numpy(), adapted.durations)
    assert audio.shape == expected.audio[0].shape
    assert np.abs(audio - expected.audio[0].numpy()).max() < 1e-4
    # the voice is a different one: the weights changed the output by far more than the tolerance
    assert audio.shape == whole.shape and np.abs(audio - whole).max() > 0.1


def test_weights_go_to_their_own_graph_and_only_that_run(runtime, ids, latents, merged_weights, whole):
    weights, _ = merged_weights
    flow = {k: v for k, v in weights.items() if k.startswith("flow.")}
    dec = {k: v for k, v in weights.items() if k.startswith("dec.")}
    # flow weights change the latents (same noise: same seed); decoder weights are ignored by the flow graph
    with_flow = runtime.latents(ids, SCALES, torch.Generator().manual_seed(SEED), flow)
    with_dec = runtime.latents(ids, SCALES, torch.Generator().manual_seed(SEED), dec)
    assert np.abs(with_flow.z - latents.z).max() > 1e-2
    assert np.array_equal(with_dec.z, latents.z)
    # decoder weights change the audio of the same latents; flow weights are ignored by the decoder
    assert np.abs(runtime.decode(latents.z, 0, latents.frames, dec) - whole).max() > 1e-2
    assert np.array_equal(runtime.decode(latents.z, 0, latents.frames, flow), whole)
    # a run without weights is the base voice again
    assert np.array_equal(runtime.decode(latents.z, 0, latents.frames), whole)


def test_check_refuses_unknown_keys_and_wrong_shapes(model, runtime, merged_weights):
    weights, _ = merged_weights
    runtime.check(weights)  # a real voice passes
    state = model.state_dict()
    with pytest.raises(AdapterError, match=r"enc_p\.encoder\.attn_layers\.0\.conv_q\.weight"):
        runtime.check({**weights, "enc_p.encoder.attn_layers.0.conv_q.weight":
                       state["enc_p.encoder.attn_layers.0.conv_q.weight"].numpy()})
    with pytest.raises(AdapterError, match=r"dec\.ups\.0\.weight"):  # a ConvTranspose1d: not overridable
        runtime.check({"dec.ups.0.weight": state["dec.ups.0.weight"].numpy()})
    with pytest.raises(AdapterError, match=r"dec\.conv_post\.weight has shape \(1, 32, 5\)"):
        runtime.check({"dec.conv_post.weight": np.zeros((1, 32, 5), np.float32)})
    with pytest.raises(AdapterError, match="float32"):
        runtime.check({"dec.conv_post.weight": weights["dec.conv_post.weight"].astype(np.float64)})
    # every flow and decoder Conv1d weight of the engine is overridable, with its shape
    expected = {f"{name}.weight": tuple(mod.weight.shape) for name, mod in model.named_modules()
                if isinstance(mod, torch.nn.Conv1d) and name.startswith(("flow.", "dec."))}
    assert runtime.overridable == expected
