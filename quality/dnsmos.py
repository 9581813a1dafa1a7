"""Naturalness: DNSMOS P.835 (SIG/BAK/OVRL) and P.808 MOS with the ONNX models bundled by PyPI `speechmos`.

Same algorithm as Microsoft's reference script (and speechmos.dnsmos.run): 16 kHz audio, clips
shorter than 9.01 s are tiled, 9.01 s windows every `hop_s` seconds, the P.835 raw scores mapped
by the published polynomials, the P.808 model fed a log-mel spectrogram. We run the sessions
ourselves so the thread count is ours and all windows go through each model in one batch.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from chorus.engine.audio import check_audio, resample
from chorus.quality.errors import QualityModelError

DNSMOS_RATE = 16_000
WINDOW_S = 9.01
_lock = threading.Lock()
_sessions: dict[int, tuple] = {}
# Polynomials of the non-personalised P.835 model (speechmos / DNSMOS reference script).
_P_OVRL = np.poly1d([-0.06766283, 1.11546468, 0.04602535])
_P_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_P_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])


class DnsmosScores(BaseModel):
    """DNSMOS scores on the 1–5 MOS scale."""

    ovrl: float
    """Overall quality (P.835 OVRL)."""
    sig: float
    """Speech signal quality (P.835 SIG)."""
    bak: float
    """Background noise quality (P.835 BAK; higher is quieter)."""
    p808: float
    """P.808 overall MOS."""


def model_paths() -> tuple[Path, Path]:
    """Paths of the bundled P.835 and P.808 ONNX models; QualityModelError when speechmos is missing."""
    try:
        import speechmos
    except ImportError as exc:
        raise QualityModelError("DNSMOS models not found: install PyPI package 'speechmos'") from exc
    base = Path(speechmos.__file__).parent / "dnsmos_models"
    paths = (base / "sig_bak_ovr.onnx", base / "model_v8.onnx")
    for p in paths:
        if not p.is_file():
            raise QualityModelError(f"DNSMOS model file missing: {p}")
    return paths


def get_sessions(threads: int = 2) -> tuple:
    """The shared (P.835, P.808) onnxruntime sessions, loaded once per thread count."""
    with _lock:
        sessions = _sessions.get(threads)
        if sessions is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            # Batches differ in size (every window of a clip goes in one): with ONNX Runtime's arena and
            # memory patterns each new size grew the process for good (+1.1 GB on the first three clips,
            # +0.7 GB on the next call), which OOM-killed a training Job at 4 GiB. Plain allocations.
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False
            sessions = tuple(
                ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in model_paths()
            )
            _sessions[threads] = sessions
        return sessions


def _p808_features(segment: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=segment, sr=DNSMOS_RATE, n_fft=321, hop_length=160, n_mels=120)
    return ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T.astype(np.float32)


def dnsmos(audio: np.ndarray, sample_rate: int, *, hop_s: float = 1.0, threads: int = 2) -> DnsmosScores:
    """DNSMOS of mono speech at any rate (resampled to 16 kHz); `hop_s` > 1 trades accuracy for speed."""
    if hop_s <= 0:
        raise ValueError(f"hop_s must be positive, got {hop_s}")
    x = resample(check_audio(audio), sample_rate, DNSMOS_RATE)
    if not np.any(x):
        raise ValueError("audio is silent: DNSMOS needs speech")
    window = int(WINDOW_S * DNSMOS_RATE)
    while len(x) < window:
        x = np.concatenate([x, x])
    n_windows = int(np.floor(len(x) / DNSMOS_RATE) - WINDOW_S) + 1
    hop = int(hop_s * DNSMOS_RATE)
    starts = [i * hop for i in range(n_windows) if i * hop + window <= len(x)] or [0]
    segments = np.stack([x[s : s + window] for s in starts]).astype(np.float32)
    p835, p808 = get_sessions(threads)
    raw = p835.run(None, {"input_1": segments})[0]
    mels = np.stack([_p808_features(seg[:-160]) for seg in segments])
    p808_scores = p808.run(None, {"input_1": mels})[0][:, 0]
    return DnsmosScores(
        ovrl=float(np.mean(_P_OVRL(raw[:, 2]))),
        sig=float(np.mean(_P_SIG(raw[:, 0]))),
        bak=float(np.mean(_P_BAK(raw[:, 1]))),
        p808=float(np.mean(p808_scores)),
    )
