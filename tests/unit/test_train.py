"""Adapter training: DTW alignment against known durations, the pitch paths (resampling, PSOLA, split),
LoRA training that changes the output, deterministic resume after an interruption, save -> reload ->
identical output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chorus.adapters import lora
from chorus.adapters.align import align_durations, boundary_error
from chorus.adapters.adapted import apply_profile
from chorus.adapters.pitch import (choose_pitch_path, contour_factors, formant_ratio, from_model_domain, median_f0,
                                    pyin_f0, split_factors, to_model_domain)
from chorus.adapters.psola import psola_shift
from chorus.adapters.targets import HELDOUT_SENTENCES, WorldTarget, render_ids, world_transform
from chorus.adapters.train import TrainConfig, VoiceProfile, train_adapter
from chorus.adapters.trainset import build_trainset, render_aligned, render_deterministic, text_ids

SR = 22050


@pytest.fixture(scope="module")
def model():
    from chorus.engine.weights import load_vits_model

    torch.set_num_threads(1)
    return load_vits_model()


def _bounds(durations: np.ndarray, factor: float = 1.0) -> np.ndarray:
    return np.round(np.concatenate([[0], np.cumsum(durations)]) * factor).astype(np.int64)


def test_dtw_alignment_recovers_known_durations(voice):
    ids = text_ids(HELDOUT_SENTENCES[2], voice)
    base, base_d = render_ids(ids, voice, 1.0, 0.0, 0.0)
    # A slower rendering of the same text (durations known exactly, not a uniform stretch), then
    # re-voiced with WORLD (other pitch and formants) and sped up uniformly by a known tempo.
    slow, slow_d = render_ids(ids, voice, 1.25, 0.0, 0.0)
    tempo = 0.9
    target = world_transform(slow, SR, WorldTarget(name="t", f0_factor=1.4, formant_factor=1.1, tempo=tempo))
    truth = np.diff(_bounds(slow_d, 1 / tempo))
    frames = len(target) // 256
    truth[-1] += frames - truth.sum()  # WORLD rounds the total length by a frame or so
    est = align_durations(base, base_d, target, SR)
    assert est.sum() == frames and len(est) == len(ids) and (est >= 0).all()
    linear = np.diff(_bounds(base_d, frames / base_d.sum()))
    err, err_linear = boundary_error(est, truth), boundary_error(linear, truth)
    assert err < 1.0, f"mean boundary error {err:.2f} frames"
    assert err < err_linear / 2, f"DTW {err:.2f} frames is not clearly better than a linear stretch {err_linear:.2f}"


def test_alignment_rejects_mismatched_durations(voice):
    ids = text_ids("Short test.", voice)
    audio, d = render_ids(ids, voice, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="base durations sum to"):
        align_durations(audio, d + 1, audio, SR)


def test_pitch_path_scales_f0_and_restores_duration(voice):
    ids = text_ids(HELDOUT_SENTENCES[0], voice)
    audio, _ = render_ids(ids, voice, 1.0, 0.0, 0.0)
    r = 1.3
    shifted = from_model_domain(audio, SR, r)
    assert abs(len(shifted) - len(audio) / r) <= 2
    ratio = median_f0([shifted], SR) / median_f0([audio], SR)
    assert abs(ratio / r - 1) < 0.05, f"f0 ratio {ratio:.3f}, expected {r}"
    back = to_model_domain(shifted, SR, r)
    n = min(len(back), len(audio))
    assert np.corrcoef(back[:n], audio[:n])[0, 1] > 0.95


def test_psola_moves_f0_and_keeps_length_and_formants(voice):
    ids = text_ids(HELDOUT_SENTENCES[1], voice)
    audio, _ = render_ids(ids, voice, 1.0, 0.0, 0.0)
    shifted = psola_shift(audio, SR, 1.3)
    assert len(shifted) == len(audio) and np.isfinite(shifted).all()
    ratio = median_f0([shifted], SR) / median_f0([audio], SR)
    assert abs(ratio / 1.3 - 1) < 0.05, f"f0 ratio {ratio:.3f}, expected 1.3"
    # The spectral envelope stays: long-term average spectra agree far better than after resampling.
    def spectrum(x):
        return np.log(np.abs(np.fft.rfft(x[: 2 ** 14] * np.hanning(2 ** 14))) + 1e-6)

    resampled = from_model_domain(audio, SR, 1.3)
    smooth = np.ones(64) / 64
    env = [np.convolve(spectrum(x), smooth, mode="same")[:4000] for x in (audio, shifted, resampled)]
    assert np.abs(env[1] - env[0]).mean() < np.abs(env[2] - env[0]).mean()


def test_formant_ratio_measured_and_pitch_path_chosen(voice):
    base = [render_ids(text_ids(t, voice), voice, 1.0, 0.0, 0.0)[0] for t in HELDOUT_SENTENCES[3:5]]
    target = [world_transform(a, SR, WorldTarget(name="t", f0_factor=1.0, formant_factor=1.12, tempo=1.0))
              for a in base]
    alpha = formant_ratio(target, base, SR)
    assert abs(alpha - 1.12) <= 0.03, f"formant ratio {alpha:.2f}, expected 1.12"
    assert abs(formant_ratio(base, base, SR) - 1.0) <= 0.01
    rho, shift = split_factors(1.45, 1.10)  # formants move less than pitch: resample by 1.10, PSOLA the rest
    assert rho == pytest.approx(1.10) and rho * shift == pytest.approx(1.45)
    assert split_factors(0.82, 0.83) == (0.82, 1.0)  # formants move with pitch: resampling alone
    assert split_factors(1.3, 1.01) == (1.0, 1.3)  # formants stay: PSOLA alone
    assert split_factors(1.2, float("nan")) == (1.0, 1.2)
    assert split_factors(3.0, 1.9)[0] == 1.5  # resampling bounded to the formant search range
    assert choose_pitch_path(1.45, 1.10) == "psola"  # resampling would leave formants 24% too high
    assert choose_pitch_path(0.82, 0.92) == "resample"  # formants move with pitch: resampling fits
    assert choose_pitch_path(1.2, float("nan")) == "psola"


def test_contour_factors_follow_the_reference_and_bridge_unvoiced_frames():
    nan = float("nan")
    clip = np.array([nan, 100, 100, nan, 110, 120, 120, nan, nan])
    ref = np.array([90, 80, 80, 70, nan, 90, 90, 90, nan])
    f = contour_factors(clip, ref, smooth=1)
    assert np.allclose(f[[1, 2, 5, 6]], [0.8, 0.8, 0.75, 0.75])  # voiced in both: ref / clip
    assert np.allclose(f[[0, 3, 4, 7, 8]], [0.8, 0.8 - 0.05 / 3, 0.8 - 0.1 / 3, 0.75, 0.75])  # bridged, held at ends
    jitter = contour_factors(np.full(9, 100.0), np.array([100, 100, 100, 100, 150, 100, 100, 100, 100.0]))
    assert np.allclose(jitter, 1.0)  # a one-frame pYIN jump is smoothed away
    assert np.array_equal(contour_factors(np.full(4, nan), np.full(4, 100.0)), np.ones(4))


@pytest.mark.parametrize("path", ["psola", "split"])
def test_pitch_path_trains_on_the_base_contour_and_synthesises_at_target_pitch(model, voice, path):
    """Training clips are brought to the base rendering's pitch contour; synthesis moves output to the target's."""
    target = WorldTarget(name="t", f0_factor=1.4, formant_factor=1.1, tempo=1.0)
    clips = []
    for text in HELDOUT_SENTENCES[:2]:
        audio, _ = render_ids(text_ids(text, voice), voice, 1.0, 0.3, 0.3)
        clips.append((text, world_transform(audio, SR, target), SR))
    ts = build_trainset(clips, model, voice, pitch_path=path)  # target_pitch="contour"
    assert ts.pitch_path == path
    assert 1.05 <= ts.resample_factor <= 1.15 if path == "split" else ts.resample_factor == 1.0
    assert abs(ts.pitch_factor / 1.4 - 1) < 0.06
    for clip in ts.clips:
        # Frame by frame, the clip's pitch now follows the base model's rendering at the same durations.
        f0_clip, _ = pyin_f0(clip.audio.numpy(), SR)
        f0_render, _ = pyin_f0(render_aligned(model, clip.ids, clip.durations), SR)
        both = np.isfinite(f0_clip) & np.isfinite(f0_render)
        assert both.mean() > 0.3  # enough frames voiced in both to compare
        err = np.median(np.abs(np.log(f0_clip[both] / f0_render[both])))
        assert err < 0.04, f"median contour error {err:.3f} (log f0)"
    raw = build_trainset(clips, model, voice, pitch_path=path, target_pitch="as-is")
    base_f0 = median_f0([render_deterministic(model, c.ids.tolist())[0] for c in raw.clips], SR)
    raw_f0 = median_f0([c.audio.numpy() for c in raw.clips], SR)
    assert abs(raw_f0 / base_f0 - raw.pitch_factor / raw.resample_factor) < 0.08  # only resampled, if at all
    # Synthesis: PSOLA by r / rho, then resample by rho (1 for psola) -> f0 x r, duration / rho.
    rho = 1.1 if path == "split" else 1.0
    audio = [render_deterministic(model, text_ids(t, voice))[0] for t in HELDOUT_SENTENCES[1:4:2]]
    profile = VoiceProfile(pitch_factor=1.4, pitch_method=path, resample_factor=rho)
    out = [apply_profile(a, SR, profile) for a in audio]
    assert all(abs(len(o) - len(a) / rho) <= 2 for o, a in zip(out, audio))
    ratio = median_f0(out, SR) / median_f0(audio, SR)
    # Medians of two short sentences move by a semitone or so (pYIN on PSOLA output); the gate allows 10%.
    assert abs(ratio / 1.4 - 1) < 0.08, f"f0 ratio {ratio:.3f}, expected 1.4"


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="decoder"):
        TrainConfig(targets="encoder")
    with pytest.raises(ValueError, match="max_window_s"):
        TrainConfig(min_window_s=2.0, max_window_s=1.0)
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(step=3)


@pytest.fixture(scope="module")
def trainset(model, voice):
    target = WorldTarget(name="t", f0_factor=1.3, formant_factor=1.08, tempo=0.95)
    clips = []
    for text in HELDOUT_SENTENCES[:2]:
        audio, _ = render_ids(text_ids(text, voice), voice, 1.0, 0.3, 0.3)
        clips.append((text, world_transform(audio, SR, target), SR))
    return build_trainset(clips, model, voice, pitch_path="resample")


TINY = dict(steps=4, checkpoint_every=2, min_window_s=0.3, max_window_s=0.5, context_frames=8, threads=1)


def test_trainset_fits_profile(trainset):
    assert 1.15 < trainset.pitch_factor < 1.45  # the target's f0 is 1.3x the base voice's
    assert trainset.length_scale > 1.0  # slower target, and slowed again into the model domain
    for clip in trainset.clips:
        assert int(clip.durations.sum()) * 256 == len(clip.audio)


def test_training_changes_output_and_resumes_exactly(trainset, tmp_path):
    cfg = TrainConfig(seed=3, **TINY)
    straight = train_adapter(None, cfg, trainset=trainset, progress=False)
    assert straight.steps == 4 and all(np.isfinite(straight.losses))

    class Interrupted(Exception):
        pass

    def stop_at_two(step, loss):
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_adapter(None, cfg, checkpoint_dir=tmp_path, on_step=stop_at_two, trainset=trainset, progress=False)
    resumed = train_adapter(None, cfg, checkpoint_dir=tmp_path, trainset=trainset, progress=False)
    assert resumed.steps == 4
    a, b = lora.lora_state(straight.peft_model), lora.lora_state(resumed.peft_model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert resumed.losses == straight.losses
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k), "LoRA B still zero"

    # The adapter changes the decoder's output.
    engine = lora.engine_of(straight.peft_model)
    z, mask = torch.randn(1, 192, 20, generator=torch.Generator().manual_seed(0)), torch.ones(1, 1, 20)
    with torch.no_grad():
        adapted = engine.decode(z, mask)
        with straight.peft_model.disable_adapter():
            base = engine.decode(z, mask)
    assert float((adapted - base).abs().max()) > 1e-4


def test_save_reload_gives_identical_output(trainset, model, voice, tmp_path):
    from chorus.adapters.artifact import save_peft_adapter
    from chorus.engine.weights import load_vits_model

    result = train_adapter(None, TrainConfig(seed=1, **{**TINY, "steps": 2}), trainset=trainset, progress=False)
    save_peft_adapter(result.peft_model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    merged = lora.merged_engine(result.peft_model)
    reloaded = lora.load_adapter_dir(tmp_path, load_vits_model())
    ids = text_ids("Saved and loaded.", voice)
    a, _ = render_deterministic(merged, ids)
    b, _ = render_deterministic(reloaded, ids)
    base, _ = render_deterministic(model, ids)
    assert np.array_equal(a, b)
    assert len(a) == len(base) and np.abs(a - base).max() > 1e-4
