"""The PyTorch VITS port against Piper's own ONNX file under onnxruntime (noise scales 0)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

# piper-tts (GPL, in requirements.lock for tests/bench) is only the reference here: its in-process
# espeak phonemizer gives Piper's exact ids, so the parity check does not depend on our front end.
from piper import phonemize_espeak as piper_espeak
from piper.phoneme_ids import phonemes_to_ids


SENTENCES = [
    "Hello from Chorus, a multi-tenant speech platform.",
    "The quick brown fox jumps over the lazy dog!",
    "Is it really forty-two degrees outside today?",
    "Doctor Smith paid three dollars for twelve apples on March third; she was not pleased.",
]


@pytest.fixture(scope="module")
def piper_ids(voice):
    phonemizer = piper_espeak.EspeakPhonemizer()
    out = []
    for text in SENTENCES:
        sentences = phonemizer.phonemize(voice.espeak_voice, text)
        assert len(sentences) == 1, text
        out.append(phonemes_to_ids(sentences[0], voice.phoneme_id_map))
    return out


@pytest.fixture(scope="module")
def piper_session(voice):
    """Piper's graph with the ceil'd per-phoneme durations exposed as a second output."""
    proto = onnx.load(str(voice.onnx_path))
    ceil = [node for node in proto.graph.node if node.op_type == "Ceil"]
    assert len(ceil) == 1, "expected one Ceil (the durations) in Piper's graph"
    proto.graph.output.append(onnx.helper.make_tensor_value_info(ceil[0].output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_piper(session, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    feed = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }
    audio, durations = session.run(None, feed)
    return audio.reshape(-1), durations.reshape(-1).astype(np.int64)


def test_torch_matches_piper_onnx(model, piper_session, piper_ids):
    for text, ids in zip(SENTENCES, piper_ids):
        ref_audio, ref_durations = run_piper(piper_session, ids)
        result = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]), noise_scale=0.0, length_scale=1.0,
                             noise_w=0.0)
        durations = result.durations[0].numpy()
        audio = result.audio[0, : int(result.audio_lengths[0])].numpy()
        assert durations.tolist() == ref_durations.tolist(), f"durations differ for {text!r}"
        assert audio.shape == ref_audio.shape, text
        corr = np.corrcoef(audio, ref_audio)[0, 1]
        assert corr >= 0.99, f"correlation {corr:.5f} for {text!r}"
        assert np.abs(audio - ref_audio).max() < 1e-3, text


def test_batch_matches_single_items(model, piper_ids):
    piper_ids = piper_ids[:3]
    lengths = torch.tensor([len(ids) for ids in piper_ids])
    batch = torch.zeros(len(piper_ids), int(lengths.max()), dtype=torch.long)
    for row, ids in enumerate(piper_ids):
        batch[row, : len(ids)] = torch.tensor(ids)
    result = model.infer(batch, lengths, noise_scale=0.0, noise_w=0.0)
    for row, ids in enumerate(piper_ids):
        single = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]), noise_scale=0.0, noise_w=0.0)
        assert result.durations[row, : len(ids)].tolist() == single.durations[0].tolist()
        assert int(result.durations[row, len(ids):].sum()) == 0
        n = int(single.audio_lengths[0])
        assert int(result.audio_lengths[row]) == n
        assert float(result.audio[row, n:].abs().sum()) == 0.0
        corr = np.corrcoef(result.audio[row, :n].numpy(), single.audio[0, :n].numpy())[0, 1]
        assert corr >= 0.999, f"row {row}: correlation {corr:.5f}"


def test_seed_reproducible_and_noise_matters(model, piper_ids):
    ids = torch.tensor([piper_ids[0]])
    lengths = torch.tensor([len(piper_ids[0])])

    def run(seed: int):
        return model.infer(ids, lengths, 0.667, 1.0, 0.8, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.audio, b.audio) and torch.equal(a.durations, b.durations)
    assert a.audio.shape != c.audio.shape or not torch.allclose(a.audio, c.audio)
    assert torch.isfinite(a.audio).all() and float(a.audio.abs().max()) <= 1.0


def test_length_scale_slows_speech(model, piper_ids):
    ids = torch.tensor([piper_ids[1]])
    lengths = torch.tensor([len(piper_ids[1])])
    normal = model.infer(ids, lengths, 0.0, 1.0, 0.0)
    slow = model.infer(ids, lengths, 0.0, 1.5, 0.0)
    # Whole frames per phoneme: ceil(1.5 w) / ceil(w) is below 1.5 for short phonemes.
    assert (slow.durations >= normal.durations).all()
    ratio = int(slow.audio_lengths[0]) / int(normal.audio_lengths[0])
    assert 1.25 < ratio < 1.6, ratio


def test_stages_compose_to_infer(model, piper_ids):
    ids = torch.tensor([piper_ids[2]])
    lengths = torch.tensor([len(piper_ids[2])])
    with torch.no_grad():
        enc = model.encode_text(ids, lengths)
        durations = model.predict_durations(enc, noise_w=0.0)
        prior = model.expand_prior(enc.m_p, enc.logs_p, durations)
        assert prior.m_p.shape == (1, model.hp.inter_channels, int(durations.sum()))
        # Frame f carries the prior of the phoneme whose span covers f.
        owner = torch.repeat_interleave(torch.arange(ids.shape[1]), durations[0])
        assert torch.equal(prior.m_p[0], enc.m_p[0][:, owner])
        z = model.flow_reverse(model.sample_prior(prior, noise_scale=0.0), prior.y_mask)
        audio = model.decode(z, prior.y_mask)
    whole = model.infer(ids, lengths, 0.0, 1.0, 0.0)
    assert torch.equal(whole.audio, audio)


@pytest.mark.parametrize(
    ("ids", "lengths", "message"),
    [
        (torch.tensor([1, 5, 2]), torch.tensor([3]), "ids must be a"),
        (torch.tensor([[1, 5, 2]]), torch.tensor([3, 3]), "lengths must have shape"),
        (torch.tensor([[1, 5, 2]]), torch.tensor([0]), "lengths must be in 1..3"),
        (torch.tensor([[1, 5, 2]]), torch.tensor([4]), "lengths must be in 1..3"),
        (torch.tensor([[1, 300, 2]]), torch.tensor([3]), "phoneme ids must be in 0..255"),
    ],
)
def test_bad_inputs_are_named(model, ids, lengths, message):
    with pytest.raises(ValueError, match=message):
        model.infer(ids, lengths)
