"""A tenant voice's model work on the serving runtime (chorus.serving.speaker): every pitch path decodes no more
latent frames per second of output audio than the base voice does, so a tenant voice costs the base voice's
model time plus its DSP (whose time `make bench-serve` and `python -m chorus.adapters.profile raised` measure
as ratios). Before raised resample voices were WSOLA-stretched, a x1.2 voice decoded 1.2 times the frames."""

from __future__ import annotations

import pytest

from chorus.adapters.train import VoiceProfile
from chorus.serving.speaker import Speaker
from chorus.serving.voices import LoadedVoice, VoiceKey

pytestmark = pytest.mark.integration

TEXT = "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring these things."
PROFILES = {
    "psola x1.4": VoiceProfile(pitch_method="psola", pitch_factor=1.4),
    "resample x1.2": VoiceProfile(pitch_method="resample", pitch_factor=1.2, length_scale=1.2),
    "resample x1.7": VoiceProfile(pitch_method="resample", pitch_factor=1.7, length_scale=1.7),
    "resample x0.8": VoiceProfile(pitch_method="resample", pitch_factor=0.8, length_scale=0.8),
    "split x1.4 (resample x1.2)": VoiceProfile(pitch_method="split", pitch_factor=1.4, resample_factor=1.2,
                                               length_scale=1.2),
}


@pytest.fixture(scope="module")
def speaker():
    speaker = Speaker(threads=2)
    frames = [0]
    decode = speaker.runtime.decode

    def counting(z, start, stop, weights=None, **kw):
        frames[0] += stop - start
        return decode(z, start, stop, weights, **kw)

    speaker.runtime.decode = counting
    speaker.frames = frames
    return speaker


def _frames_per_output_second(speaker: Speaker, voice: LoadedVoice | None) -> tuple[float, float]:
    speaker.frames[0] = 0
    audio, words = speaker.synthesize(TEXT, voice, seed=3)
    seconds = len(audio) / speaker.sample_rate
    assert words and words[-1].end <= seconds + 0.01
    return speaker.frames[0] / seconds, seconds


def test_every_pitch_path_decodes_at_most_the_base_voices_frames_per_output_second(speaker):
    base_rate, base_s = _frames_per_output_second(speaker, None)
    for name, profile in PROFILES.items():
        voice = LoadedVoice(key=VoiceKey("t", name.split()[0], 1, "file:///none"),
                            weights=dict(speaker.cache.base_weights),
                            profile=profile, nbytes=0, load_ms=0.0)
        rate, seconds = _frames_per_output_second(speaker, voice)
        # each profile's length scale makes up for its resampling: about the base voice's length (whole frames)
        assert seconds == pytest.approx(base_s, rel=0.15), name
        limit = base_rate * (1.02 if profile.pitch_factor >= 1 else 0.85)  # a lowered voice decodes fewer
        assert rate <= limit, f"{name}: {rate:.1f} frames per output second, base voice {base_rate:.1f}"
