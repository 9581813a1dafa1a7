"""Phoneme durations for a target clip: DTW between the base voice's rendering of the same text and the clip.

Why this is sound: the base model's deterministic rendering (noise 0) of the transcript has *known*
phoneme boundaries (its own rounded durations, in frames of 256 samples). Both utterances say the same
phonemes in the same order, so the correspondence between them is monotone in time; dynamic time
warping finds the cheapest monotone frame-to-frame path between their log-mel spectrograms
(normalised per utterance so level and timbre offsets cost nothing), and each base boundary is carried
through that path to the target. The result is a duration per phoneme that sums exactly to the
target's frame count. Errors come only from DTW's local path; measured against known durations in
tests/unit/test_train.py (a time-stretched WORLD copy and a slower base rendering).
"""

from __future__ import annotations

import numpy as np

HOP = 256
"""Samples per model frame (the decoder upsamples 8*8*4)."""
N_FFT = 1024
N_MELS = 80


def log_mel(audio: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel spectrogram [frames, n_mels], one frame per HOP samples (len(audio) // HOP frames)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=sample_rate, n_fft=N_FFT,
                                         hop_length=HOP, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2,
                                         center=True)
    frames = len(audio) // HOP
    return np.log(np.maximum(mel[:, :frames], 1e-5)).T


def _normalise(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of each feature dimension."""
    return (features - features.mean(0)) / (features.std(0) + 1e-5)


def dtw_path(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost monotone path through a cost matrix [N, M] with steps (1,0), (0,1), (1,1); [L, 2]."""
    import librosa

    _, path = librosa.sequence.dtw(C=cost, step_sizes_sigma=np.array([[1, 1], [0, 1], [1, 0]]),
                                   backtrack=True)
    return path[::-1]


def map_boundaries(boundaries: np.ndarray, path: np.ndarray, n_target: int) -> np.ndarray:
    """Carry frame boundaries of sequence A through a DTW path into sequence B's frames."""
    n_source = int(path[:, 0].max()) + 1
    first = np.full(n_source + 1, n_target, dtype=np.int64)
    # The first target frame paired with each source frame: a boundary before source frame b lands
    # before the first target frame that DTW matched to b.
    for i, j in path[::-1]:
        first[i] = j
    first[n_source] = n_target
    mapped = first[np.clip(boundaries, 0, n_source)]
    return np.maximum.accumulate(mapped)


def align_durations(base_audio: np.ndarray, base_durations: np.ndarray, target_audio: np.ndarray,
                    sample_rate: int) -> np.ndarray:
    """Target durations (frames) per phoneme from the base rendering's known durations and DTW."""
    base_durations = np.asarray(base_durations, dtype=np.int64)
    n_base = len(base_audio) // HOP
    if int(base_durations.sum()) != n_base:
        raise ValueError(f"base durations sum to {int(base_durations.sum())} frames, "
                         f"but the base audio has {n_base} frames of {HOP} samples")
    a = _normalise(log_mel(base_audio, sample_rate))
    b = _normalise(log_mel(target_audio, sample_rate))
    if len(b) < 2:
        raise ValueError(f"target clip too short to align: {len(target_audio)} samples")
    cost = np.sqrt(np.maximum(((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T), 0.0))
    path = dtw_path(cost)
    bounds = np.concatenate([[0], np.cumsum(base_durations)])
    mapped = map_boundaries(bounds, path, len(b))
    mapped[0], mapped[-1] = 0, len(b)
    return np.diff(mapped)


def boundary_error(durations: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute difference of phoneme boundaries (frames) between two duration sequences."""
    return float(np.abs(np.cumsum(durations) - np.cumsum(reference)).mean())
