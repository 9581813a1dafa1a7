"""Front-end benchmark: what the out-of-process espeak-ng costs per sentence, and parity with Piper.

`python -m bench.frontend` prints JSON lines and writes bench/results/frontend.json.
Cost is measured per sentence (one `utterances()` call each, as a request would; with the long-lived
espeak-ng process, and with one process per call) and batched
(all sentences in one call, as a long text is), in wall time and in espeak-ng's own CPU time
(the child processes' rusage). Piper's in-process phonemizer (piper-tts, GPL-3.0, reference only)
is timed on the same sentences. Parity: the share of the parity-test corpus whose ids equal Piper's.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from pathlib import Path

from bench.common import emit, machine_info, median, write_results
from bench.engine import SENTENCES as ENGINE_SENTENCES
from chorus.engine.frontend import Phonemizer, TextFrontEnd, normalize_text
from chorus.engine.voice import load_base_voice

REPEATS = 5
PARITY_TEST = Path(__file__).resolve().parents[1] / "tests" / "unit" / "test_frontend_parity.py"


def _children_cpu(front_end: TextFrontEnd | None = None) -> float:
    """CPU seconds used so far by espeak-ng: finished children plus the long-lived one (from /proc)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    process = front_end.phonemizer.runner._process if front_end is not None else None
    if process is not None and process.poll() is None:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _parity_corpus() -> tuple[list[str], dict]:
    """The parity test's sentences and known differences (loaded from the test file)."""
    spec = importlib.util.spec_from_file_location("frontend_parity_corpus", PARITY_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SENTENCES, module.KNOWN_DIFFERENCES


def _time(fn, repeats: int, front_end: TextFrontEnd | None) -> dict[str, float]:
    """Median wall and espeak-ng CPU seconds of fn() over repeats."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu0, wall0 = _children_cpu(front_end), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(_children_cpu(front_end) - cpu0)
    return {"wall_s": median(walls), "espeak_cpu_s": median(cpus)}


def main() -> int:
    """Run the benchmark, print JSON lines, write bench/results/frontend.json."""
    from piper.phoneme_ids import phonemes_to_ids as piper_ids
    from piper.phonemize_espeak import EspeakPhonemizer

    voice = load_base_voice()
    front_end = TextFrontEnd(voice)  # one long-lived espeak-ng process
    oneshot = TextFrontEnd(voice, phonemizer=Phonemizer(voice.espeak_voice, persistent=False))
    piper = EspeakPhonemizer()
    corpus, known = _parity_corpus()
    sentences = list(ENGINE_SENTENCES) + corpus
    n = len(sentences)

    def per_sentence() -> None:
        for sentence in sentences:
            front_end.utterances(sentence)

    def per_sentence_oneshot() -> None:
        for sentence in sentences:
            oneshot.utterances(sentence)

    def batched() -> None:
        front_end.utterances(" ".join(sentences))

    def piper_in_process() -> None:
        for sentence in sentences:
            piper.phonemize(voice.espeak_voice, normalize_text(sentence))

    def normalise_only() -> None:
        for sentence in sentences:
            normalize_text(sentence)

    per_sentence()  # warm the page cache for espeak-ng's data
    rows = {}
    for name, fn in (("chorus_per_sentence", per_sentence), ("chorus_per_sentence_oneshot", per_sentence_oneshot),
                     ("chorus_batched", batched),
                     ("piper_in_process", piper_in_process), ("normalise_only", normalise_only)):
        timing = _time(fn, REPEATS, front_end if name in ("chorus_per_sentence", "chorus_batched") else None)
        row = {"bench": "frontend", "mode": name, "sentences": n,
               "ms_per_sentence_wall": 1000 * timing["wall_s"] / n,
               "ms_per_sentence_espeak_cpu": 1000 * timing["espeak_cpu_s"] / n}
        rows[name] = row
        emit(row)

    same = 0
    for sentence in corpus:
        ours = [u.ids for u in front_end.utterances(sentence)]
        theirs = [piper_ids(s, voice.phoneme_id_map) for s in piper.phonemize(voice.espeak_voice,
                                                                              normalize_text(sentence))]
        same += ours == theirs
    parity = {"bench": "frontend", "parity_sentences": len(corpus), "identical_ids": same,
              "parity_rate": same / len(corpus), "known_differences": len(known)}
    emit(parity)
    payload = {"machine": machine_info(), "timings": rows, "parity": parity}
    write_results("frontend", payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
