"""`chorus adapter prepare | train | eval` end to end on a few generated clips, without Kubernetes."""

from __future__ import annotations

import json

import soundfile as sf

from chorus.adapters import testvoices as T
from chorus.cli import main as chorus_main

TRAIN = T.SENTENCES[:4]
HELDOUT = T.SENTENCES[4:6]


def _folder(root, sentences, voice):
    root.mkdir(parents=True)
    lines = []
    for i, text in enumerate(sentences):
        audio, sr = T.espeak_say(text, voice=voice)
        sf.write(root / f"c{i}.wav", audio, sr)
        lines.append(f"c{i}.wav|{text}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_prepare_train_eval_from_the_command_line(tmp_path, capsys):
    source = _folder(tmp_path / "samples", TRAIN, "en-us+m3")
    heldout = _folder(tmp_path / "heldout", HELDOUT, "en-us+m3")
    dataset, artifact = tmp_path / "dataset", tmp_path / "artifact"
    assert chorus_main(["adapter", "prepare", str(source), str(dataset), "--min-total-s", "5", "--no-whisper"]) == 0
    code = chorus_main(["adapter", "train", str(dataset), str(artifact), "--tenant", "acme", "--voice", "narrator",
                        "--steps", "3", "--threads", "1", "--checkpoint-every", "1", "--pitch-path", "resample"])
    assert code == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out
    assert {p.name for p in artifact.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                    "chorus_manifest.json"}
    manifest = json.loads((artifact / "chorus_manifest.json").read_text())
    # resample: the cheap pitch path, as the evaluation below reads the 376-word list in this voice
    assert manifest["training"]["steps"] == 3 and manifest["training"]["pitch_path"] == "resample"
    assert manifest["profile"]["pitch_method"] == "resample" and manifest["profile"]["pitch_factor"] > 0
    assert (tmp_path / "artifact.checkpoints" / "checkpoint.pt").is_file()
    # Three steps make no voice: the gate fails (exit 1) and says why; the verdict lands in the manifest.
    assert chorus_main(["adapter", "eval", str(artifact), "--heldout", str(heldout), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["gate"]["passed"] is False and verdict["gate"]["reasons"]
    manifest = json.loads((artifact / "chorus_manifest.json").read_text())
    assert manifest["quality"]["gate"]["passed"] is False
    metrics = manifest["quality"]["metrics"]
    assert metrics["heldout_clips"] == 2 and metrics["wer_words"] == 376 and metrics["heldout_words"] > 0
