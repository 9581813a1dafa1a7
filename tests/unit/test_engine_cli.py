"""`chorus synth` end to end through the installed console script."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from chorus.cli import main
from chorus.engine.audio import decode

CHORUS = [sys.executable, "-m", "chorus.cli"]


def run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CHORUS, *args], input=stdin, capture_output=True, timeout=300)


def test_text_argument_to_wav(tmp_path):
    out = tmp_path / "hello.wav"
    proc = run(["synth", "Hello from Chorus.", "-o", str(out), "--seed", "1"])
    assert proc.returncode == 0, proc.stderr.decode()
    audio, rate = decode(out.read_bytes())
    assert rate == 22050
    assert 0.5 < audio.size / rate < 4
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 0.01
    assert b"wrote" in proc.stderr


def test_stdin_to_stdout_raw_pcm_and_file_to_flac(tmp_path):
    text = "Reading from standard input. Two sentences."
    proc = run(["synth", "-", "-o", "-", "--format", "pcm", "--speed", "1.3", "--noise-w", "0", "--seed", "2"],
               stdin=text.encode())
    assert proc.returncode == 0, proc.stderr.decode()
    pcm = np.frombuffer(proc.stdout, dtype="<i2")
    assert len(proc.stdout) % 2 == 0 and 1.0 < pcm.size / 22050 < 6

    source = tmp_path / "in.txt"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "nested" / "out.flac"
    proc = run(["synth", "--file", str(source), "-o", str(out), "--speed", "1.3", "--noise-w", "0", "--seed", "2"])
    assert proc.returncode == 0, proc.stderr.decode()
    audio, rate = decode(out.read_bytes())
    # Same text, options and seed: the lossless FLAC holds the very samples the raw PCM did.
    assert rate == 22050 and np.array_equal(np.round(audio * 32768).astype(np.int32), pcm.astype(np.int32))


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    # In-process through the same entry point as the console script: these fail before any model loads.
    out = str(tmp_path / "x.wav")
    cases = [
        (["synth", "Hi.", "-o", out, "--speed", "0"], ["--speed", "greater than 0"]),
        (["synth", "   ", "-o", out], ["empty"]),
        (["synth", "Hi.", "-o", str(tmp_path / "x.xyz")], ["--format", "x.xyz"]),
        (["synth", "Hi.", "-o", "-"], ["--format is required"]),
    ]
    for argv, words in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("chorus: error:") and all(w in err for w in words), (argv, err)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "Hi.", "-o", out, "--backend", "tpu"])
    assert exit_info.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
