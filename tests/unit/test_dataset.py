"""Dataset preparation on generated speech (espeak-ng): every rejection reason, slicing, Whisper labels."""

from __future__ import annotations

import hashlib
import json
import uuid

import fsspec
import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

from chorus.adapters import clips as C
from chorus.adapters import testvoices as T
from chorus.adapters.dataset import (
    REJECT_REASONS,
    DatasetConfig,
    ClipRecord,
    DatasetError,
    dataset_hash,
    prepare_dataset,
)
from chorus.adapters.prepared import format_report, load_prepared
from chorus.adapters.transcripts import TranscriptError, parse_transcripts
from chorus.quality import wer

S = T.SENTENCES
SMALL = DatasetConfig(min_total_s=5.0, max_clip_s=10.0, target_clip_s=6.0)

# source file -> the reason it must be rejected for
EXPECTED_REJECTIONS = {
    "short.wav": "too_short",
    "silent.wav": "silent",
    "loud.wav": "clipped",
    "broken.wav": "undecodable",
    "blank.wav": "empty_transcript",
    "long.wav": "too_long",
    "ghost.wav": "missing_audio",
}
EXPECTED_KEPT = {"good/a.wav": S[0], "good/b.flac": S[1], "c.ogg": S[2], "d.mp3": S[3], "e_44k.wav": S[4]}


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def mixed_source(tmp_path_factory):
    """A folder with five good files in four formats and one damaged file per rejection reason."""
    root = tmp_path_factory.mktemp("mixed")
    sr = T.ESPEAK_SAMPLE_RATE
    for name, text in EXPECTED_KEPT.items():
        audio, sr = T.espeak_say(text)
        if name == "e_44k.wav":  # another rate, and stereo: must come out 22.05 kHz mono
            up = C.resample(audio, sr, 44100)
            sf.write(root / name, np.stack([up, 0.5 * up], axis=1), 44100)
            continue
        _write(root / name, T.encode(audio, sr, name.rsplit(".", 1)[1]))
    _write(root / "short.wav", T.encode(T.espeak_say("Hi.")[0], sr))
    _write(root / "silent.wav", T.encode(T.silence(3.0), sr))
    _write(root / "loud.wav", T.encode(T.clipped(T.espeak_say(S[5])[0]), sr))
    _write(root / "broken.wav", T.undecodable_bytes())
    _write(root / "blank.wav", T.encode(T.espeak_say(S[6])[0], sr))
    _write(root / "long.wav", T.encode(T.long_recording(S[7:12])[0], sr))
    (root / "notes.txt").write_text("not audio: ignored")
    lines = [f"{name}|{text}" for name, text in EXPECTED_KEPT.items() if name != "d.mp3"]
    lines += [f"d|{S[3].upper()}|{S[3]}",  # LJSpeech shape, matched by stem; the normalized column wins
              "short.wav|Hi.", f"loud.wav|{S[5]}", "broken.wav|whatever", "blank.wav|   ",
              f"long.wav|{' '.join(S[7:12])}", "ghost.wav|Nobody recorded this.", "silent.wav|Hello."]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def prepared(mixed_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare_dataset(str(mixed_source), out, SMALL)


def test_each_rejection_reason_is_reported(prepared):
    out, report = prepared
    got = {r.source: r.reason for r in report.rejected}
    assert got == EXPECTED_REJECTIONS
    assert set(got.values()) == set(REJECT_REASONS)
    by_source = {r.source: r for r in report.rejected}
    assert "below the silence floor" in by_source["silent.wav"].message
    assert "full-scale" in by_source["loud.wav"].message
    assert "shorter than min_clip_s" in by_source["short.wav"].message
    assert "longer than max_clip_s 10.0" in by_source["long.wav"].message
    assert "cannot decode" in by_source["broken.wav"].message
    on_disk = json.loads((out / "report.json").read_text())
    assert {r["source"]: r["reason"] for r in on_disk["rejected"]} == EXPECTED_REJECTIONS
    table = format_report(report)
    for reason in REJECT_REASONS:
        assert reason in table
    assert f"{len(report.clips)} clips kept" in table


def test_kept_clips_are_22k_mono_normalised_and_hashed(prepared):
    out, report = prepared
    assert {c.source: c.text for c in report.clips} == EXPECTED_KEPT
    lines = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines) and len(lines) == len(EXPECTED_KEPT)
    for clip in report.clips:
        info = sf.info(out / clip.file)
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        assert info.duration == pytest.approx(clip.duration, abs=1e-3)
        assert 1.5 < clip.duration < 4.0 and clip.text_source == "transcript"
        audio, sr = sf.read(out / clip.file, dtype="float32")
        level = C.active_level_db(audio, sr)
        peak_db = 20 * np.log10(np.abs(audio).max())
        # at the target level, or lower only where the peak limiter held the gain back
        assert level == pytest.approx(SMALL.loudness_target_db, abs=0.5) or peak_db > SMALL.peak_limit_db - 0.2
        import hashlib

        assert hashlib.sha256((out / clip.file).read_bytes()).hexdigest() == clip.sha256
    assert report.usable_seconds == pytest.approx(sum(c.duration for c in report.clips), abs=0.01)


def test_dataset_hash_is_content_based_and_verified(prepared, mixed_source, tmp_path):
    out, report = prepared
    ds = load_prepared(out)
    assert ds.dataset_hash == report.dataset_hash == dataset_hash(report.clips)
    assert json.loads((out / "dataset.json").read_text())["dataset_hash"] == report.dataset_hash
    again = prepare_dataset(str(mixed_source), tmp_path / "again", SMALL)
    assert again.dataset_hash == report.dataset_hash  # deterministic
    louder_cfg = SMALL.model_copy(update={"loudness_target_db": -18})
    louder = prepare_dataset(str(mixed_source), tmp_path / "louder", louder_cfg)
    assert louder.dataset_hash != report.dataset_hash
    clip = tmp_path / "again" / again.clips[0].file
    data = bytearray(clip.read_bytes())
    data[-2] ^= 0x40
    clip.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="is corrupted"):
        load_prepared(tmp_path / "again")


def test_too_little_speech_fails_with_seconds(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        _write(src / f"{i}.wav", T.encode(T.espeak_say(S[i])[0], T.ESPEAK_SAMPLE_RATE))
    (src / "metadata.csv").write_text(f"0.wav|{S[0]}\n1.wav|{S[1]}\n")
    msg = r"too little usable speech: \d+\.\d s usable in 2 clips, 30\.0 s needed"
    with pytest.raises(DatasetError, match=msg) as exc:
        prepare_dataset(str(src), tmp_path / "out")
    assert exc.value.report is not None and 3.0 < exc.value.report.usable_seconds < 8.0
    assert (tmp_path / "out" / "report.json").is_file()
    assert not (tmp_path / "out" / "dataset.json").exists()
    with pytest.raises(DatasetError, match="not empty"):
        prepare_dataset(str(src), tmp_path / "out")


def _sentence_spans(texts, gap_s):
    """Where each sentence's speech (espeak's own leading/trailing silence excluded) lies in long_recording."""
    spans, t, sr = [], 0.0, T.ESPEAK_SAMPLE_RATE
    for text in texts:
        t += gap_s
        audio = T.espeak_say(text)[0]
        voiced = np.flatnonzero(np.abs(audio) > 1e-3)
        spans.append((t + voiced[0] / sr, t + voiced[-1] / sr))
        t += len(audio) / sr
    return spans


def test_slicing_cuts_only_in_silences():
    texts, gap = S[:5], 0.8
    audio, sr = T.long_recording(texts, gap_s=gap)
    truth = _sentence_spans(texts, gap)
    kw = dict(relative_db=35, floor_db=-55, min_silence_s=0.3, pad_s=0.1, min_clip_s=1.0, max_clip_s=10.0)
    one_each = C.slice_at_silences(audio, sr, target_clip_s=1.0, **kw)
    assert len(one_each) == len(texts)
    for i, (span, (start, end)) in enumerate(zip(one_each, truth)):
        assert span.start <= start + 0.02 and span.end >= end - 0.02  # all of the sentence's speech
        assert i == 0 or span.start >= truth[i - 1][1]  # none of its neighbours'
        assert i == len(truth) - 1 or span.end <= truth[i + 1][0]
    merged = C.slice_at_silences(audio, sr, target_clip_s=4.0, **kw)
    assert 2 <= len(merged) < len(texts) and all(s.duration <= 10.0 for s in merged)
    cuts = [s.end for s in merged[:-1]]
    assert cuts and all(any(e <= c <= s2 for (_, e), (s2, _) in zip(truth, truth[1:])) for c in cuts)


def test_slicing_splits_speech_without_long_silences():
    audio, sr = T.long_recording(S[:6], gap_s=0.1)
    # every pause is shorter than min_silence_s: one speech region of ~14 s, over max_clip_s
    assert len(C.speech_regions(audio, sr, 35, -55, 1.0, 0.1)) == 1
    spans = C.slice_at_silences(audio, sr, relative_db=35, floor_db=-55, min_silence_s=1.0, pad_s=0.1,
                                min_clip_s=1.0, target_clip_s=4.0, max_clip_s=5.0)
    assert len(spans) >= 3 and all(s.duration <= 5.0 + 1e-6 for s in spans)
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))  # contiguous: nothing dropped
    truth = _sentence_spans(S[:6], 0.1)
    assert spans[0].start <= truth[0][0] and spans[-1].end >= truth[-1][1] - 0.02


def test_untranscribed_recording_is_sliced_and_labelled_by_whisper(tmp_path):
    texts = (S[1], S[5], S[7])  # sentences Whisper tiny.en hears well from espeak
    audio, sr = T.long_recording(texts, gap_s=1.0, speed_wpm=150)
    _write(tmp_path / "src" / "session.flac", T.encode(audio, sr, "flac"))
    cfg = DatasetConfig(min_total_s=3.0, min_clip_s=1.0, target_clip_s=1.0, max_clip_s=10.0)
    report = prepare_dataset(str(tmp_path / "src"), tmp_path / "out", cfg)
    assert [c.id for c in report.clips] == ["session_000", "session_001", "session_002"]
    for clip, text in zip(report.clips, texts):
        assert clip.text_source == "whisper" and clip.source == "session.flac"
        assert wer(text, clip.text) <= 0.5, (text, clip.text)
    assert report.rejected == []


def test_memory_uri_and_gpt_sovits_list(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/chorus-test-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        fs.pipe_file(f"{root}/wavs/{i}.ogg", T.encode(T.espeak_say(S[i])[0], T.ESPEAK_SAMPLE_RATE, "ogg"))
    fs.pipe_file(f"{root}/lists/voice.list",
                 "".join(f"wavs/{i}.ogg|speaker|en|{S[i]}\n" for i in range(3)).encode())
    report = prepare_dataset(f"memory://{root}/wavs", tmp_path / "out", DatasetConfig(min_total_s=5.0),
                             transcripts_uri=f"memory://{root}/lists/voice.list")
    assert sorted(c.source for c in report.clips) == ["0.ogg", "1.ogg", "2.ogg"]
    assert {c.text for c in report.clips} == set(S[:3])
    fs.rm(root, recursive=True)


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="min_clip_s"):
        DatasetConfig(min_clip_s=-1)
    with pytest.raises(ValidationError, match=r"min_clip_s \(5.0\) must be below max_clip_s \(2.0\)"):
        DatasetConfig(min_clip_s=5, max_clip_s=2, target_clip_s=2)
    with pytest.raises(ValidationError, match="target_clip_s"):
        DatasetConfig(target_clip_s=30, max_clip_s=15)
    with pytest.raises(ValidationError, match="extra"):
        DatasetConfig(min_totl_s=3)


def test_transcript_list_shapes():
    lines = parse_transcripts("# comment\n\na.wav|plain text\nLJ001|Raw Text|normalized text\n"
                              "x/y.wav|spk|en|sovits text\nempty|\n")
    assert [(ln.file, ln.text) for ln in lines] == [
        ("a.wav", "plain text"), ("LJ001", "normalized text"), ("x/y.wav", "sovits text"), ("empty", "")]
    with pytest.raises(TranscriptError, match="list.txt:2: expected 2"):
        parse_transcripts("ok.wav|fine\na|b|c|d|e\n", "list.txt")


def test_cli_prepare(mixed_source, tmp_path, capsys):
    from chorus.cli import main as chorus_main

    assert chorus_main(["adapter", "prepare", str(mixed_source), str(tmp_path / "ok"), "--min-total-s", "5",
                        "--max-clip-s", "10", "--target-clip-s", "6"]) == 0
    out = capsys.readouterr().out
    assert "5 clips kept" in out and "dataset hash" in out and "too_long" in out
    assert chorus_main(["adapter", "prepare", str(mixed_source), str(tmp_path / "few"), "--max-clip-s", "10"]) == 1
    err = capsys.readouterr().err
    assert "too little usable speech" in err and "30.0 s needed" in err and "undecodable" in err


def test_split_prepared_holds_out_clips_spread_over_the_set(tmp_path):
    from chorus.adapters.prepared import load_prepared, split_prepared

    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    records = []
    for i in range(10):
        data = f"wav{i}".encode()
        (src / "clips" / f"c{i}.wav").write_bytes(data)
        records.append(ClipRecord(id=f"c{i}", file=f"clips/c{i}.wav", text=f"text {i}", text_source="transcript",
                                  duration=2.0, source=f"s{i}.wav", start=0, end=2, gain_db=0,
                                  sha256=hashlib.sha256(data).hexdigest()))
    (src / "metadata.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    (src / "dataset.json").write_text(json.dumps({"dataset_hash": dataset_hash(records), "sample_rate": 22050}))
    split_prepared(src, tmp_path / "train", tmp_path / "heldout", 3)
    train, held = load_prepared(tmp_path / "train"), load_prepared(tmp_path / "heldout")
    assert [c.id for c in held.clips] == ["c1", "c5", "c8"] and len(train.clips) == 7
    assert {c.id for c in train.clips} | {c.id for c in held.clips} == {r.id for r in records}
    with pytest.raises(DatasetError, match="cannot hold out 9 of 10"):
        split_prepared(src, tmp_path / "t2", tmp_path / "h2", 9)
