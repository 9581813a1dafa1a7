"""Synthesizer: options, text -> audio, streaming long texts with bounded memory."""

from __future__ import annotations

import itertools
import time
import tracemalloc

import numpy as np
import pytest
from pydantic import ValidationError

from chorus.engine.synth import SynthesisOptions, Synthesizer, text_blocks
from chorus.engine.voice import load_base_voice


@pytest.fixture(scope="module")
def synth():
    return Synthesizer(load_base_voice(), backend="torch", num_threads=2)


def test_options_reject_bad_values_by_name():
    with pytest.raises(ValidationError, match="speed"):
        SynthesisOptions(speed=0)
    with pytest.raises(ValidationError, match="noise_scale"):
        SynthesisOptions(noise_scale=-0.1)
    with pytest.raises(ValidationError, match="sped"):
        SynthesisOptions(sped=1.2)
    with pytest.raises(ValidationError, match="not both"):
        SynthesisOptions(speed=2, length_scale=0.5)
    voice = load_base_voice()
    assert SynthesisOptions().scales(voice) == (voice.noise_scale, voice.length_scale, voice.noise_w)
    assert SynthesisOptions(speed=2.0, noise_w=0).scales(voice) == (voice.noise_scale, 0.5, 0.0)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'tpu'.*torch"):
        Synthesizer(backend="tpu")


def test_synthesize_short_text(synth):
    audio = synth.synthesize("Hello there.", SynthesisOptions(seed=3))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert synth.sample_rate == 22050
    assert 0.4 * 22050 < audio.size < 3 * 22050
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence
    again = synth.synthesize("Hello there.", SynthesisOptions(seed=3))
    assert np.array_equal(audio, again)


def test_sentences_are_separated_by_silence(synth):
    options = SynthesisOptions(seed=1, noise_scale=0, noise_w=0, sentence_silence=0.25)
    chunks = list(synth.stream("Good morning. See you soon.", options))
    assert len(chunks) == 2
    gap = int(0.25 * 22050)
    assert not chunks[1][:gap].any()
    whole = synth.synthesize("Good morning. See you soon.", options)
    assert np.array_equal(whole, np.concatenate(chunks))


def test_speed_shortens_audio(synth):
    normal = synth.synthesize("This sentence is spoken at two speeds.", SynthesisOptions(noise_w=0, seed=0))
    fast = synth.synthesize("This sentence is spoken at two speeds.", SynthesisOptions(speed=2.0, noise_w=0, seed=0))
    assert 0.4 < fast.size / normal.size < 0.7


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_a_clear_error(synth, text):
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize(text)


def test_batch_gives_one_array_per_text(synth):
    texts = ["One.", "Two words here.", "Three. Sentences. Now."]
    batched = Synthesizer(synth.voice, batch_size=3, frontend=synth.frontend)
    options = SynthesisOptions(noise_scale=0, noise_w=0)
    out = batched.synthesize_batch(texts, options)
    assert len(out) == 3
    for text, audio in zip(texts, out):
        single = synth.synthesize(text, options)
        assert audio.dtype == np.float32
        assert audio.size == single.size, text
        assert np.corrcoef(audio, single)[0, 1] > 0.99
    with pytest.raises(ValueError, match="empty"):
        batched.synthesize_batch(["fine", ""], options)


def _stream_peak_bytes(synth, sentences: int) -> tuple[int, int]:
    text = " ".join(["Yes, that is right."] * sentences)
    tracemalloc.start()
    try:
        count = sum(1 for _ in synth.stream(text, SynthesisOptions(seed=0, noise_w=0)))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_memory_does_not_grow_with_length(synth):
    count_2, peak_2 = _stream_peak_bytes(synth, 2)
    count_8, peak_8 = _stream_peak_bytes(synth, 8)
    assert (count_2, count_8) == (2, 8)
    # Four times the text: peak Python/numpy memory stays that of one chunk, not four times it.
    assert peak_8 < 1.5 * peak_2 + 200_000, (peak_2, peak_8)


def test_very_long_text_streams_chunk_by_chunk(synth):
    sentence = "The long report goes on and on, one sentence after another. "
    text = (sentence * (100_000 // len(sentence) + 1))[:100_000]
    started = time.monotonic()
    stream = synth.stream(text, SynthesisOptions(seed=0))
    first = list(itertools.islice(stream, 2))
    stream.close()
    assert len(first) == 2 and all(chunk.size > 22050 for chunk in first)
    # Only the first block went through the front end and the network.
    assert time.monotonic() - started < 60


def test_text_blocks_cut_at_natural_breaks():
    text = "Dr. Smith went home. " * 300 + "\n\nA new paragraph, with words" * 50
    blocks = list(text_blocks(text, 2000))
    assert "".join(blocks) == text
    assert all(len(block) <= 2000 for block in blocks)
    for block in blocks[:-1]:
        assert block.endswith(("home. ", "\n\n", "words")) and not block.endswith("Dr. "), block[-20:]
    assert [len(b) for b in text_blocks("a" * 4500, 2000)] == [2000, 2000, 500]
    assert list(text_blocks("short", 2000)) == ["short"]


def test_onnx_backend_matches_torch_with_the_same_seed(synth):
    onnx_synth = Synthesizer(synth.voice, backend="onnx", num_threads=2)
    options = SynthesisOptions(seed=5)
    text = "Testing the other backend, with the same seed."
    ours, theirs = synth.synthesize(text, options), onnx_synth.synthesize(text, options)
    assert ours.size == theirs.size
    assert np.corrcoef(ours, theirs)[0, 1] > 0.999
