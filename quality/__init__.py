"""chorus.quality: the quality harness (WER with Whisper, DNSMOS, speaker similarity, f0).

Models load lazily, once per process; importing this package is cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "transcribe": "whisper", "wer": "whisper", "wer_details": "whisper", "audio_wer": "whisper",
    "normalize_for_wer": "textnorm",
    # `dnsmos` itself is the submodule (chorus.quality.dnsmos.dnsmos is the function): a lazy
    # export of the same name would change meaning once the submodule is imported.
    "DnsmosScores": "dnsmos",
    "embed_speaker": "similarity", "embed_voice": "similarity", "speaker_similarity": "similarity",
    "cosine": "similarity",
    "median_f0": "pitch", "pitch_stats": "pitch",
    "evaluate": "report", "QualityReport": "report", "render_table": "report", "to_json": "report",
    "summarize": "report",
    "bar_chart": "plot",
    "QualityModelError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chorus.quality' has no attribute {name!r}")
    return getattr(importlib.import_module(f"chorus.quality.{module}"), name)
