"""chorus.quality on real speech from Debian's espeak-ng (a separate process) with the real bundled models.

Each model loads once per process (module-level cache in chorus.quality), so this file pays the
load cost once. DNSMOS runs on a ~9.8 s clip: one 9.01 s window (shorter clips are tiled to
16 s, i.e. 7 windows, which costs 7 times as much).
"""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest

from chorus.engine.audio import decode, save_audio
from chorus.quality import dnsmos as dnsmos_mod
from chorus.quality.cli import read_texts
from chorus.quality.pitch import median_f0, pitch_stats
from chorus.quality.report import evaluate, render_table, summarize, to_json
from chorus.quality.similarity import cosine, embed_speaker, embed_voice, speaker_similarity
from chorus.quality.textnorm import normalize_for_wer, number_to_words, ordinal_to_words
from chorus.quality.whisper import model_dir, transcribe, wer, wer_details

STELLA = "Please call Stella and ask her to bring these things with her from the store."
FOX = "The quick brown fox jumps over the lazy dog near the river bank."
LONG = f"{STELLA} {FOX} We will meet again tomorrow morning."  # ~9.8 s: one DNSMOS window, no tiling


def espeak(text: str, voice: str) -> tuple[np.ndarray, int]:
    """Speech from the espeak-ng CLI as (float32 mono, 22050)."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, text], capture_output=True, check=True).stdout
    return decode(wav)


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, int]]:
    """male_*: espeak en-us; female_*: en-us+f3 (a formant female variant); noisy: long at 0 dB SNR."""
    out = {
        "male_stella": espeak(STELLA, "en-us"),
        "male_fox": espeak(FOX, "en-us"),
        "female_stella": espeak(STELLA, "en-us+f3"),
        "female_fox": espeak(FOX, "en-us+f3"),
        "long": espeak(LONG, "en-us"),
    }
    audio, sr = out["long"]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(audio.size).astype(np.float32) * np.sqrt(np.mean(audio**2))
    out["noisy"] = (np.clip(audio + noise, -1, 1).astype(np.float32), sr)
    return out


# ---- text normalisation and WER (pure) ------------------------------------------------------


def test_number_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(21_000_042) == "twenty one million forty two"
    assert ordinal_to_words(21) == "twenty first" and ordinal_to_words(40) == "fortieth"
    assert ordinal_to_words(12) == "twelfth" and ordinal_to_words(100) == "one hundredth"


def test_normaliser_treats_digits_and_words_alike() -> None:
    pairs = [
        ("I have 21 cats.", "i have twenty-one cats"),
        ("It costs $5.50!", "It costs five dollars fifty cents"),
        ("Meet me at 3:30 on the 2nd.", "meet me at three thirty on the second"),
        ("One hundred and five", "105"),
        ("Dr. Smith said 50% & more", "doctor smith said fifty percent and more"),
        ("1,000 people", "one thousand people"),
    ]
    for a, b in pairs:
        assert normalize_for_wer(a) == normalize_for_wer(b), (a, b)
    assert normalize_for_wer("Don't \"quote\" me—okay?") == "don't quote me okay"


def test_wer_counts_edits() -> None:
    d = wer_details("the cat sat on the mat", "the cat sat on mat today")
    assert (d.substitutions, d.deletions, d.insertions, d.reference_words) == (0, 1, 1, 6)
    assert d.wer == pytest.approx(2 / 6)
    assert wer("Hello, world!", "hello world") == 0.0
    assert wer("a b", "c d e f") == pytest.approx(2.0)  # 2 substitutions + 2 insertions
    with pytest.raises(ValueError, match="no words after normalisation"):
        wer("?!", "something")


# ---- models on real speech --------------------------------------------------------------------


def test_whisper_model_is_bundled() -> None:
    assert (model_dir() / "model.bin").stat().st_size > 10_000_000


def test_whisper_transcribes_known_sentence(clips) -> None:
    text = transcribe(*clips["male_stella"])
    assert wer(STELLA, text) <= 0.15, text
    assert wer(FOX, text) >= 0.7  # the wrong reference must score badly


def test_dnsmos_clean_beats_heavy_noise(clips) -> None:
    clean = dnsmos_mod.dnsmos(*clips["long"])
    noisy = dnsmos_mod.dnsmos(*clips["noisy"])
    for scores in (clean, noisy):
        for v in scores.model_dump().values():
            assert 1.0 <= v <= 5.0
    assert clean.ovrl > noisy.ovrl + 0.5, (clean, noisy)
    assert clean.bak > noisy.bak + 1.0, (clean, noisy)


def test_dnsmos_matches_speechmos_reference(clips) -> None:
    """Our batched runner gives speechmos.dnsmos.run's numbers (same models, same windows)."""
    from speechmos import dnsmos as ref

    from chorus.engine.audio import resample

    audio, sr = clips["long"]
    x16 = resample(audio, sr, 16_000)
    ours = dnsmos_mod.dnsmos(x16, 16_000)
    theirs = ref.run(x16, 16_000)
    assert ours.ovrl == pytest.approx(theirs["ovrl_mos"], abs=1e-3)
    assert ours.sig == pytest.approx(theirs["sig_mos"], abs=1e-3)
    assert ours.bak == pytest.approx(theirs["bak_mos"], abs=1e-3)
    assert ours.p808 == pytest.approx(float(theirs["p808_mos"]), abs=1e-3)


def test_dnsmos_rejects_silence() -> None:
    with pytest.raises(ValueError, match="silent"):
        dnsmos_mod.dnsmos(np.zeros(16_000, dtype=np.float32), 16_000)


def test_speaker_similarity_separates_voices(clips) -> None:
    e = {name: embed_speaker(*clip) for name, clip in clips.items() if name not in ("noisy", "long")}
    for v in e.values():
        assert v.shape == (256,) and abs(np.linalg.norm(v) - 1) < 1e-3
    same_voice = cosine(e["male_stella"], e["male_fox"])
    other_voice = cosine(e["male_stella"], e["female_stella"])
    assert same_voice > other_voice + 0.1, (same_voice, other_voice)
    assert cosine(e["female_stella"], e["female_fox"]) > cosine(e["female_fox"], e["male_fox"]) + 0.1
    # a voice given by several clips: the mean embedding
    male_voice = embed_voice([clips["male_fox"], clips["male_stella"]])
    assert speaker_similarity(*clips["male_fox"], male_voice) > speaker_similarity(*clips["female_fox"], male_voice)
    assert speaker_similarity(*clips["male_fox"], clips["male_fox"]) == pytest.approx(1.0, abs=1e-5)


def test_f0_of_female_variant_is_higher(clips) -> None:
    male = median_f0(*clips["male_stella"])
    female = median_f0(*clips["female_stella"])
    assert 70 < male < 160 and female > 1.5 * male, (male, female)
    for method in ("harvest", "dio"):  # espeak-ng has a strong fundamental: WORLD agrees with pyin here
        other = pitch_stats(*clips["male_stella"], method=method)
        assert other.median_hz == pytest.approx(male, rel=0.1) and 0.3 < other.voiced_fraction <= 1
    assert math.isnan(median_f0(np.zeros(22_050, dtype=np.float32), 22_050))
    with pytest.raises(ValueError, match="valid: pyin, harvest, dio"):
        median_f0(*clips["male_stella"], method="yin")  # type: ignore[arg-type]


def test_f0_with_a_missing_fundamental() -> None:
    """Harmonics 2-11 of a 100 Hz tone (vibrato 5%): the default estimator finds 100 Hz, not 200."""
    sr = 22_050
    t = np.arange(2 * sr) / sr
    phase = 2 * np.pi * np.cumsum(100 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))) / sr
    tone = sum(np.sin(k * phase) / k for k in range(2, 12))
    tone = (0.5 * tone / np.abs(tone).max()).astype(np.float32)
    assert median_f0(tone, sr) == pytest.approx(100, rel=0.05)
    assert median_f0(tone, sr, method="harvest") > 180  # why pyin is the default


# ---- report and CLI ---------------------------------------------------------------------------


def test_evaluate_report_table_and_json(clips) -> None:
    refs = [clips["male_fox"]]
    good = evaluate(*clips["long"], LONG, refs, name="male")
    other = evaluate(*clips["female_stella"], STELLA, refs, name="female", metrics=("similarity", "f0"))
    assert good.wer is not None and good.wer <= 0.1 and good.transcript
    assert good.dnsmos is not None and good.similarity is not None and good.f0_median_hz is not None
    assert set(good.seconds) == {"wer", "dnsmos", "similarity", "f0"}
    assert other.wer is None and other.dnsmos is None and other.similarity < good.similarity
    table = render_table([good, other])
    assert table.splitlines()[0].split() == ["clip", "dur", "s", "WER", "%", "OVRL", "SIG", "BAK", "P808", "sim", "f0", "Hz"]
    assert len(table.splitlines()) == 3 and " - " in table.splitlines()[2]
    data = json.loads(to_json([good, other]))
    assert data[0]["name"] == "male" and data[1]["wer"] is None
    summary = summarize([good, other])
    assert summary["similarity"] == pytest.approx((good.similarity + other.similarity) / 2)
    silent = evaluate(np.zeros(16_000, dtype=np.float32), 16_000, metrics=("dnsmos", "f0"), name="silence")
    assert silent.dnsmos is None and silent.f0_median_hz is None and "silent" in silent.errors["dnsmos"]
    with pytest.raises(ValueError, match="unknown metric.*valid: wer, dnsmos, similarity, f0"):
        evaluate(*clips["male_stella"], metrics=("mos",))


def test_chorus_eval_cli(clips, tmp_path, capsys) -> None:
    from chorus.cli import main

    paths = []
    for name in ("male_stella", "female_stella"):
        path = tmp_path / f"{name}.wav"
        save_audio(path, *clips[name])
        paths.append(str(path))
    ref = tmp_path / "ref.flac"
    save_audio(ref, *clips["male_fox"])
    texts = tmp_path / "texts.txt"
    texts.write_text(f"male_stella.wav|{STELLA}\nfemale_stella|{STELLA}\n")
    png = tmp_path / "plot.png"
    rc = main(["eval", *paths, "--texts", str(texts), "--ref", str(ref), "--json", "--metrics", "wer,similarity,f0",
               "--plot", str(png)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["male_stella.wav", "female_stella.wav"]
    assert rows[0]["similarity"] > rows[1]["similarity"] and rows[0]["dnsmos"] is None
    assert rows[1]["f0_median_hz"] > rows[0]["f0_median_hz"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = main(["eval", paths[0], "--text", STELLA, "--metrics", "wer"])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[1].startswith("male_stella.wav")
    assert main(["eval", str(tmp_path / "missing.wav")]) == 1
    assert "no such audio file" in capsys.readouterr().err


def test_read_texts_by_order_and_errors(tmp_path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("first text\n\nsecond text\n")
    assert read_texts(str(f), ["a.wav", "b.wav"]) == ["first text", "second text"]
    with pytest.raises(ValueError, match="2 non-empty lines but 3 audio files"):
        read_texts(str(f), ["a", "b", "c"])
    f.write_text("a.wav|hello\n")
    with pytest.raises(ValueError, match="no text for 'b.wav'"):
        read_texts(str(f), ["a.wav", "b.wav"])
