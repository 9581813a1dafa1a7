"""Target-voice generators (chorus.adapters.targets, chorus.adapters.generators): each gives the asked median f0
and tempo, moves the spectral envelope the asked way, and repeats itself for a seed. Two sentences each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from chorus.adapters.generators import LpcTarget, lpc_formant_warp, lpc_transform
from chorus.adapters.pitch import formant_ratio, median_f0
from chorus.adapters.targets import (HELDOUT_SENTENCES, EspeakTarget, WorldTarget, render_base, render_espeak,
                                     render_target, world_transform, write_target_set)

SR = 22050
GENERATORS = {"world": (WorldTarget, world_transform), "lpc": (LpcTarget, lpc_transform)}


@pytest.fixture(scope="module")
def base(voice) -> list[np.ndarray]:
    """Two base-voice sentences (seed 0)."""
    return [render_base(text, voice, seed=0) for text in HELDOUT_SENTENCES[:2]]


@pytest.fixture(scope="module")
def base_f0(base) -> float:
    return median_f0(base, SR)


def _make(generator: str, base: list[np.ndarray], f0: float, formant: float, tempo: float) -> list[np.ndarray]:
    cls, transform = GENERATORS[generator]
    target = cls(name="t", f0_factor=f0, formant_factor=formant, tempo=tempo)
    return [transform(b, SR, target) for b in base]


@pytest.mark.parametrize("generator", sorted(GENERATORS))
@pytest.mark.parametrize("f0, formant, tempo", [(0.7, 0.7 ** -0.3, 0.9), (2.0, 2.0 ** 0.5, 1.1)])
def test_median_f0_and_tempo_are_as_asked(generator, base, base_f0, f0, formant, tempo):
    out = _make(generator, base, f0, formant, tempo)
    ratio = median_f0(out, SR) / base_f0
    assert ratio == pytest.approx(f0, rel=0.04), f"{generator}: median f0 x{ratio:.3f}, asked x{f0}"
    length = sum(map(len, out)) / sum(map(len, base))
    assert length == pytest.approx(1 / tempo, rel=0.02)


@pytest.mark.parametrize("generator", sorted(GENERATORS))
@pytest.mark.parametrize("formant", [0.85, 1.2])
def test_formant_shift_moves_the_envelope_the_asked_way(generator, base, formant):
    """The LTAS warp fit (the profile's own formant estimate) follows the asked factor, with pitch moved too."""
    out = _make(generator, base, 1.45, formant, 1.0)
    measured = formant_ratio(out, base, SR)
    assert measured == pytest.approx(formant, abs=0.05), f"{generator}: formants x{measured:.2f}, asked x{formant}"


def test_lpc_warp_keeps_harmonics_and_level(base):
    """Formants move, f0 stays, the level is about kept (the warp is a spectral ratio, not a gain)."""
    up = lpc_formant_warp(base[0], SR, 1.2)
    assert len(up) == len(base[0]) and up.dtype == np.float32
    assert median_f0([up], SR) == pytest.approx(median_f0([base[0]], SR), rel=0.02)
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    assert 0.5 < rms(up) / rms(base[0]) < 2.0
    np.testing.assert_array_equal(lpc_formant_warp(base[0], SR, 1.0), base[0])


@pytest.mark.parametrize("target", [LpcTarget(name="l", f0_factor=1.45, formant_factor=1.1, tempo=0.95),
                                    WorldTarget(name="w", f0_factor=0.85, formant_factor=0.95, tempo=1.05)])
def test_target_sets_are_deterministic_for_a_seed(voice, target, tmp_path):
    """The same clips for a seed whatever was rendered before in the process; another seed, other clips."""
    texts, heldout = HELDOUT_SENTENCES[2:4], HELDOUT_SENTENCES[4:5]

    def clips(folder: Path) -> list[np.ndarray]:
        return [sf.read(p)[0] for p in sorted(folder.rglob("*.wav"))]

    first = clips(write_target_set(tmp_path / "a", target, 3, texts, heldout))
    render_target(HELDOUT_SENTENCES[5], target, seed=3)  # advances the seeded session's noise
    again = clips(write_target_set(tmp_path / "b", target, 3, texts, heldout))
    assert len(first) == 3 and all(np.array_equal(x, y) for x, y in zip(first, again))
    other = clips(write_target_set(tmp_path / "c", target, 4, texts, heldout))
    assert not any(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(first, other)), "the seed changes nothing"


def test_espeak_pitch_variant_moves_f0_and_repeats():
    low = EspeakTarget(name="lo", espeak_voice="en-us+m3", pitch=30)
    high = EspeakTarget(name="hi", espeak_voice="en-us+m3", pitch=80)
    text = HELDOUT_SENTENCES[0]
    a = render_espeak(text, low)
    np.testing.assert_array_equal(a, render_espeak(text, low))
    assert median_f0([render_espeak(text, high)], SR) > 1.2 * median_f0([a], SR)
