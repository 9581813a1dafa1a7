"""Cost of the quality harness: model load time and per-clip cost of each metric (wall and CPU seconds).

Run as `python -m bench.quality`; JSON lines on stdout, bench/results/quality.json. Clips come from
Debian's espeak-ng (a separate process): one ~4 s sentence (DNSMOS tiles it to 16 s: 7 windows)
and one ~10 s paragraph (one DNSMOS window).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.common import emit, machine_info, median, write_results

SHORT = "Please call Stella and ask her to bring these things with her from the store."
LONG = f"{SHORT} The quick brown fox jumps over the lazy dog near the river bank. We will meet again tomorrow morning."


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    """Measure load and per-clip cost of Whisper, DNSMOS, Resemblyzer and f0."""
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per metric and clip (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads per model (default 2)")
    args = parser.parse_args(argv)

    from chorus.engine.audio import decode

    def espeak(text: str) -> tuple:
        wav = subprocess.run(["espeak-ng", "--stdout", "-v", "en-us", text], capture_output=True, check=True).stdout
        return decode(wav)

    clips = {"4s": espeak(SHORT), "10s": espeak(LONG)}
    from chorus.quality import dnsmos, pitch, similarity, whisper

    loaders = {
        "whisper": lambda: whisper.get_model(args.threads),
        "dnsmos": lambda: dnsmos.get_sessions(args.threads),
        "resemblyzer": similarity.get_encoder,
        "pyworld": pitch._pyworld,
    }
    metrics = {
        "whisper": lambda a, sr: whisper.transcribe(a, sr, threads=args.threads),
        "dnsmos": lambda a, sr: dnsmos.dnsmos(a, sr, threads=args.threads),
        "resemblyzer": similarity.embed_speaker,
        "f0_pyin": pitch.median_f0,
        "f0_dio": lambda a, sr: pitch.median_f0(a, sr, method="dio"),
    }
    rows = []
    for name, load in loaders.items():
        _, wall, cpu = _timed(load)
        rows.append({"bench": "quality", "kind": "load", "model": name, "wall_s": wall, "cpu_s": cpu})
        emit(rows[-1])
    for name, fn in metrics.items():
        for clip_name, (audio, sr) in clips.items():
            _, first_wall, first_cpu = _timed(lambda: fn(audio, sr))  # includes one-time warm-up (librosa/numba)
            runs = [_timed(lambda: fn(audio, sr))[1:] for _ in range(args.repeats)]
            rows.append({
                "bench": "quality", "kind": "per_clip", "metric": name, "clip": clip_name,
                "clip_s": audio.size / sr, "first_wall_s": first_wall, "first_cpu_s": first_cpu,
                "wall_s": median(r[0] for r in runs), "cpu_s": median(r[1] for r in runs),
            })
            emit(rows[-1])
    write_results("quality", {"machine": machine_info(), "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
