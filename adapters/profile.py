"""The voice profile's pitch path at serving speed and chunk by chunk: fast f0, streaming TD-PSOLA and resampling.

`adapters.adapted.apply_profile` runs pYIN (a Viterbi pass over the whole utterance) before TD-PSOLA: 2-4x the
engine's own synthesis time, and only on a whole utterance. Here:
- `fast_f0` / `F0Tracker`: YIN's cumulative mean normalised difference on 4x box-decimated audio, all frames of a
  chunk in one FFT batch (hop 256 as pitch.F0_HOP; 60-200 Hz, since the engine's output is the base voice's), the
  dip chosen with a penalty per octave away from the median of the recent confidently periodic frames (causal, no
  look-ahead). On 17.9 s of base-voice speech: median |log ratio| to pYIN 0.013 on frames both call voiced, one
  octave error in 429 frames, 9 ms.
- `ProfileStream`: TD-PSOLA (the algorithm of adapters.psola; unvoiced stretches copied in place) and/or
  soxr.ResampleStream, fed chunk by chunk; the streamed output is the whole-signal output (bit-identical in the
  bench) and lags the input by at most `lookahead_s` (measured: psola 50-55 ms, resample 37 ms, split 80-88 ms).
- Raised voices on the resample and split paths (resampling up by rho > 1): resampling shortens the audio by
  rho, so rendering the engine at the profile's length_scale (fitted for that) costs rho times the base voice's
  model time per output second. `ProfileStream.model_length` (1 / rho) has the engine render at the base
  voice's length instead, and `_Wsola` stretches that by rho (pitch kept) before soxr: bench/results/
  profile-raised.md measures it against apply_profile's path (DNSMOS, word errors, similarity, cost).
- `apply_profile_fast`: the whole-signal call (one stream, final=True).
Measured (bench/results/profile-cost.md, `PYTHONSAFEPATH=1 python -m chorus.adapters.profile`; 17.9 s of engine
output, engine RTF 0.049 on 2 threads, a shared machine): psola x1.4 costs 1.8% of the engine's time (RTF 0.0009;
apply_profile 263%), x0.8 2.1%, resample 0.6%, split 3.0%. Quality on 24 sentences: pYIN misses voicing where
pitch moves fast (its 93 ms frames), so apply_profile leaves 23-28% of voiced frames at the base pitch and this
path 0-3%; DNSMOS OVRL vs apply_profile +0.04 (s.e. 0.03) at x1.4, -0.17 (0.04) at x0.8, where moving those
frames costs what PSOLA costs (adapters.psola fed the same f0 scores no better); median f0 within 1.5% of target.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from chorus.adapters.pitch import F0_HOP
from chorus.adapters.train import VoiceProfile

F0_MIN, F0_MAX = 60.0, 200.0
"""Search range of the fast tracker (Hz): the engine's output is the base voice's (pYIN 10th-90th pct 79-103 Hz)."""

TRACK_RATE = 5512
"""The tracker runs on audio box-decimated to about this rate (Hz): 4x at 22,050 Hz, plenty below 200 Hz."""

YIN_WINDOW = 512
"""Integration window of the difference function (input samples, ~23 ms at 22,050 Hz)."""

VOICED_BELOW = 0.35
"""A frame is voiced when its chosen dip of the normalised difference lies below this (and it is not silent)."""

CONFIDENT_BELOW = 0.15
"""Frames whose deepest dip lies below this feed the octave reference."""

REFERENCE_FRAMES = 32
"""The octave reference: median period of the confident frames among the last this many (~0.37 s)."""

OCTAVE_PENALTY = 0.4
"""Cost added per octave between a candidate period and the reference (kills octave jumps at voicing edges)."""

SHORTER_LAG_SLACK = (1.2, 0.005)
"""A dip at a shorter lag wins when no deeper than 1.2 x the deepest + 0.005 (octave-down errors above 120 Hz)."""

SILENT_RMS = 1e-3
"""Frames quieter than this (RMS, full scale 1) are unvoiced."""

UNVOICED_STEP_S = 0.005
"""Grain spacing in unvoiced stretches (copied in place), as adapters.psola."""

RESAMPLE_LOOKAHEAD_S = 0.05
"""Most input soxr's HQ stream holds back (filter delay plus its block size; measured up to ~38 ms at 22,050 Hz)."""

PASSTHROUGH = 1e-6
"""Factors within this of 1 are not applied (as psola_shift and pitch.resample)."""


def _check_chunk(chunk: np.ndarray) -> np.ndarray:
    x = np.asarray(chunk)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {x.shape}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"audio must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    return x


class F0Tracker:
    """Incremental fast f0: push audio, get per-frame periods (input samples, 0 = unvoiced) as they are known."""

    def __init__(self, sample_rate: int, hop: int = F0_HOP):
        self.sample_rate = sample_rate
        self.hop = hop
        self.dec = max(1, int(sample_rate // TRACK_RATE))
        while hop % self.dec:
            self.dec -= 1
        rate = sample_rate / self.dec
        self.h = hop // self.dec
        self.win = max(8, 2 * round(YIN_WINDOW * sample_rate / 22050 / self.dec / 2))
        self.tmin = int(math.floor(rate / F0_MAX))
        self.tmax = int(math.ceil(rate / F0_MIN))
        self.span = self.win + self.tmax + 1
        self.nfft = 1 << (self.span - 1).bit_length()
        self.log_lags = np.log2(np.arange(self.tmin, self.tmax + 1)).astype(np.float32)
        self.max_period = self.tmax * self.dec + 1
        # Decimated signal from absolute decimated index y0 (negative: the leading zero padding).
        self._y = np.zeros(self.win // 2)
        self._y0 = -(self.win // 2)
        self._pending = np.zeros(0)
        self._n_in = 0
        self._next = 0
        self._confident = np.zeros(0)
        self.finished = False

    def lookahead(self) -> int:
        """Input samples past a frame's centre needed before the frame is known."""
        return (self.span - self.win // 2) * self.dec

    def push(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        """Add input samples; the periods (input samples, 0 unvoiced) of the frames that became known."""
        if self.finished:
            raise RuntimeError("f0 tracker already finished")
        self._n_in += len(x)
        raw = np.concatenate([self._pending, x]) if len(self._pending) else x
        usable = len(raw) // self.dec * self.dec
        self._pending = raw[usable:].copy()
        parts = [self._y, raw[:usable].reshape(-1, self.dec).mean(axis=1)]
        if final:
            if len(self._pending):
                parts.append([self._pending.sum() / self.dec])
            self._pending = np.zeros(0)
            self.finished = True
        y = np.concatenate(parts)
        y_end = self._y0 + len(y)
        if final:
            last = self._n_in // self.hop  # frames 0..last, as pYIN's centred frames
            need = last * self.h - self.win // 2 + self.span
            if need > y_end:
                y = np.concatenate([y, np.zeros(need - y_end)])
        else:
            last = (y_end - self.span + self.win // 2) // self.h
        first = self._next
        periods = self._frames(y, first, last) if last >= first else np.zeros(0)
        self._next = max(first, last + 1)
        keep_from = self._next * self.h - self.win // 2
        self._y = y[keep_from - self._y0:] if keep_from > self._y0 else y
        self._y0 = max(self._y0, keep_from)
        return periods

    def _frames(self, y: np.ndarray, first: int, last: int) -> np.ndarray:
        import scipy.fft

        w, tmax, n_frames = self.win, self.tmax, last - first + 1
        starts = np.arange(first, last + 1) * self.h - self.win // 2 - self._y0
        sq = np.concatenate([[0.0], np.cumsum(y * y)])
        loud = np.flatnonzero(sq[starts + w] - sq[starts] >= SILENT_RMS ** 2 * w)
        periods = np.zeros(n_frames)
        conf = np.full(n_frames, np.nan)
        if len(loud):
            frames = np.lib.stride_tricks.sliding_window_view(y, self.span)[starts[loud]].astype(np.float32)
            spec = scipy.fft.rfft(frames, self.nfft)
            spec *= np.conj(scipy.fft.rfft(frames[:, :w], self.nfft))
            acf = scipy.fft.irfft(spec, self.nfft)[:, : tmax + 1]
            cs = np.zeros((len(loud), self.span + 1), dtype=np.float32)
            np.cumsum(frames * frames, axis=1, out=cs[:, 1:])
            energy = cs[:, w:w + tmax + 1] - cs[:, : tmax + 1]  # energy of the window shifted by each lag
            diff = energy[:, 1:] + energy[:, :1]
            diff -= 2.0 * acf[:, 1:]
            np.maximum(diff, 0.0, out=diff)
            cmnd = diff * np.arange(1, tmax + 1, dtype=np.float32) / np.maximum(np.cumsum(diff, axis=1), 1e-12)
            seg = cmnd[:, self.tmin - 1:]  # lags tmin..tmax
            rows = np.arange(len(loud))
            deepest = seg.argmin(axis=1)
            minima = np.zeros(seg.shape, dtype=bool)
            minima[:, 1:-1] = (seg[:, 1:-1] <= seg[:, :-2]) & (seg[:, 1:-1] < seg[:, 2:])
            minima[rows, deepest] = True
            # The shortest lag about as deep as the deepest dip (a clean 140 Hz tone also dips at 70 Hz).
            slack = SHORTER_LAG_SLACK[0] * seg[rows, deepest] + SHORTER_LAG_SLACK[1]
            best = (minima & (seg <= slack[:, None])).argmax(axis=1)
            conf[loud] = np.where(seg[rows, best] < CONFIDENT_BELOW, self.tmin + best, np.nan)
        # Octave reference: causal median of the confident frames' picks over the last REFERENCE_FRAMES.
        hist = np.concatenate([np.full(REFERENCE_FRAMES - len(self._confident), np.nan), self._confident, conf])
        self._confident = hist[-REFERENCE_FRAMES:]
        if not len(loud):
            return periods
        recent = np.sort(np.lib.stride_tricks.sliding_window_view(hist, REFERENCE_FRAMES + 1)[loud], axis=1)
        valid = np.isfinite(recent).sum(axis=1)  # NaNs sort last
        ref = 0.5 * (recent[rows, np.maximum(valid - 1, 0) // 2] + recent[rows, valid // 2])
        ref = np.where(valid > 0, ref, self.tmin + best)
        # Candidates: the local minima and the deepest dip, charged OCTAVE_PENALTY per octave from the reference.
        cost = np.abs(self.log_lags[None, :] - np.log2(ref).astype(np.float32)[:, None])
        cost *= OCTAVE_PENALTY
        cost += seg
        cost[~minima] = np.inf
        k = cost.argmin(axis=1)
        kk = np.clip(k, 1, seg.shape[1] - 2)
        y0, y1, y2 = seg[rows, kk - 1], seg[rows, kk], seg[rows, kk + 1]
        den = y0 - 2.0 * y1 + y2
        shift = np.where((kk == k) & (den > 1e-12), 0.5 * (y0 - y2) / np.where(den > 1e-12, den, 1.0), 0.0)
        tau = self.tmin + k + np.clip(shift, -1.0, 1.0)
        periods[loud] = np.where(seg[rows, k] < VOICED_BELOW, tau * self.dec, 0.0)
        return periods


def fast_f0(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Fast f0 (Hz, NaN unvoiced) and frame times (s), frames as pitch.pyin_f0's (hop 256, centred)."""
    periods = F0Tracker(sample_rate).push(_check_chunk(audio), final=True)
    f0 = np.where(periods > 0, sample_rate / np.maximum(periods, 1e-9), np.nan)
    return f0, np.arange(len(f0)) * F0_HOP / sample_rate


_HANN: dict[int, np.ndarray] = {}
"""Grain windows by half-width, shared by all streams."""


class _Psola:
    """Streaming TD-PSOLA by a constant factor (analysis marks, synthesis marks and overlap-add as input arrives)."""

    def __init__(self, sample_rate: int, factor: float):
        self.sr, self.factor = sample_rate, float(factor)
        self.f0 = F0Tracker(sample_rate)
        self.hop = self.f0.hop
        self.step = max(1, int(UNVOICED_STEP_S * sample_rate))
        self.maxw = max(self.f0.max_period + 1, self.step)
        self.periods: list[int] = []
        self.n_in = 0
        self.final = False
        self.x = np.zeros(0)
        self.x0 = 0
        self.marks: list[int] = []
        self.widths: list[int] = []
        self.t_next = 0
        self.analysis_done = False
        self.s = 0.0
        self.out = np.zeros(0)
        self.weight = np.zeros(0)
        self.o0 = 0  # absolute index of out[0] (= samples emitted so far)

    def lookahead(self) -> int:
        """Upper bound on the input samples held back: a frame's f0, the marks and a grain past the next synthesis mark.

        Output is final up to one grain before the next synthesis mark s, which waits for its frame's f0
        (hop / 2 + the tracker's look-ahead) and for its nearest analysis mark with that mark's grain (< 2.25 periods).
        """
        return self.f0.lookahead() + self.hop // 2 + 3 * self.maxw

    def _period_at(self, i: int) -> int | None:
        """The period at sample i (0 unvoiced), None when its frame is not known yet."""
        fi = int(i / self.hop + 0.5)
        if fi >= len(self.periods):
            if not (self.final and self.periods):
                return None
            fi = len(self.periods) - 1
        return self.periods[fi]

    def push(self, x: np.ndarray, final: bool) -> np.ndarray:
        """Add input; the output samples that no later grain can change."""
        self.periods.extend(np.rint(self.f0.push(x, final)).astype(int).tolist())
        self.n_in += len(x)
        self.final = final
        self.x = np.concatenate([self.x, x]) if len(self.x) else x.copy()
        self._analysis()
        self._synthesis()
        return self._emit()

    def _analysis(self) -> None:
        x, x0, n, final = self.x, self.x0, self.n_in, self.final
        marks, widths, step, periods = self.marks, self.widths, self.step, self.periods
        t = self.t_next
        while t < n:
            p = self._period_at(t)
            if p is None:
                break
            if p:  # one period on, snapped to the waveform's peak within a quarter period
                lo, hi = max(0, t - p // 4), t + p // 4 + 1
                if hi > n and not final:
                    break
                t = lo + int(x[lo - x0:min(hi, n) - x0].argmax())
                marks.append(t)
                widths.append(p)
                t += p
            else:  # a run of unvoiced frames: marks every `step` to the run's last known frame
                fj = int(t / self.hop + 0.5)
                while fj + 1 < len(periods) and periods[fj + 1] == 0:
                    fj += 1
                end = n if (final and fj >= len(periods) - 1) else min(n, math.ceil((fj + 0.5) * self.hop))
                run = range(t, max(end, t + 1), step)
                marks.extend(run)
                widths.extend([step] * len(run))
                t = run[-1] + step
        self.t_next = t
        self.analysis_done = final and t >= n

    @staticmethod
    def _window(w: int) -> np.ndarray:
        win = _HANN.get(w)
        if win is None:
            win = _HANN[w] = np.hanning(2 * w + 1)
        return win

    def _synthesis(self) -> None:
        marks, widths, periods, n, final = self.marks, self.widths, self.periods, self.n_in, self.final
        step, hop = self.step, self.hop
        grains: list[tuple[int, int, int]] = []  # voiced (destination, source, half-width); unvoiced (first, last, -1)
        s = self.s
        while True:
            i = int(s + 0.5)
            if i >= n:
                break
            p = self._period_at(i)
            if p is None:
                break
            if p:  # a grain from the nearest analysis mark, the next one period / factor on
                k = bisect.bisect_left(marks, i)
                if k == len(marks) and not self.analysis_done:
                    break
                if k == len(marks) or (k > 0 and i - marks[k - 1] <= marks[k] - i):
                    k -= 1
                c, w = marks[k], widths[k]
                if c + w + 1 > n and not final:
                    break
                grains.append((i, c, w))
                s += p / self.factor
            else:  # the run of unvoiced frames is copied in place, `step`-spaced grains summed into one
                fj = int(i / hop + 0.5)
                while fj + 1 < len(periods) and periods[fj + 1] == 0:
                    fj += 1
                end = n if (final and fj >= len(periods) - 1) else min(n, math.ceil((fj + 0.5) * hop))
                if not final:
                    end = min(end, n - step)
                if end <= i:
                    break
                count = (end - 1 - i) // step + 1
                grains.append((i, i + (count - 1) * step, -1))
                s += count * step
        self.s = s
        if grains:
            self._overlap_add(grains)

    def _overlap_add(self, grains: list[tuple[int, int, int]]) -> None:
        n, step = self.n_in, self.step
        end = min(n, max(c + step + 1 if w < 0 else i + w + 1 for i, c, w in grains))
        if end - self.o0 > len(self.out):
            grow = np.zeros(end - self.o0 - len(self.out))
            self.out, self.weight = np.concatenate([self.out, grow]), np.concatenate([self.weight, grow])
        x, x0, out, weight, o0 = self.x, self.x0, self.out, self.weight, self.o0
        ramp = self._window(step)
        for i, c, w in grains:
            if w < 0:  # Hann grains `step` apart sum to 1: ones between the first and last, half windows outside
                lo, hi = max(0, i - step), min(n, c + step + 1)
                win = np.ones(hi - lo)
                win[: i - lo] = ramp[step - (i - lo):step]
                win[c + 1 - lo:] = ramp[step + 1:step + 1 + hi - c - 1]
                out[lo - o0:hi - o0] += x[lo - x0:hi - x0] * win
                weight[lo - o0:hi - o0] += win
                continue
            win = _HANN.get(w)
            if win is None:
                win = self._window(w)
            if w <= i and w <= c and i + w < n and c + w < n:  # the usual case, away from the ends
                a, b = i - w - o0, c - w - x0
                out[a:a + 2 * w + 1] += x[b:b + 2 * w + 1] * win
                weight[a:a + 2 * w + 1] += win
                continue
            lo, hi = max(-w, -i, -c), min(w + 1, n - i, n - c)
            if hi > lo:
                win = win[w + lo:w + hi]
                out[i + lo - o0:i + hi - o0] += x[c + lo - x0:c + hi - x0] * win
                weight[i + lo - o0:i + hi - o0] += win

    def _emit(self) -> np.ndarray:
        n = self.n_in
        safe = n if self.final else min(n, int(self.s + 0.5) - self.maxw - 1)
        count = max(0, safe - self.o0)
        if count > len(self.out):
            grow = np.zeros(count - len(self.out))
            self.out, self.weight = np.concatenate([self.out, grow]), np.concatenate([self.weight, grow])
        done, weight = self.out[:count], self.weight[:count]
        np.divide(done, weight, out=done, where=weight > 1e-3)  # grains overlap more densely when pitch goes up
        self.out, self.weight = self.out[count:], self.weight[count:]
        self.o0 += count
        self._trim()
        return done

    def _trim(self) -> None:
        """Drop input and marks no future grain can reach (synthesis never looks back more than ~1.25 periods)."""
        keep = min(int(self.s), self.t_next) - 3 * self.maxw
        if keep - self.x0 > self.sr:  # amortised: cut once a second is behind
            self.x = self.x[keep - self.x0:]
            self.x0 = keep
            cut = bisect.bisect_left(self.marks, keep)
            del self.marks[:cut], self.widths[:cut]


WSOLA_WINDOW = 512
"""WSOLA grain length (samples, ~23 ms at 22,050 Hz; grains overlap by half)."""

WSOLA_TOLERANCE = 256
"""How far (samples, ±) a grain may move from its nominal input position to continue the previous grain's
waveform: more than one period of the base voice's lowest pitch (F0_MIN)."""

WSOLA_DECIMATION = 4
"""The similarity search runs on audio box-decimated by this, then refines at full rate around the best block."""


def _padded(buf: np.ndarray, offset: int, start: int, length: int) -> np.ndarray:
    """buf's samples [start, start + length) in absolute indices (buf[0] is `offset`), zeros outside buf:
    a view when the span lies inside."""
    lo, hi = max(start, offset), min(start + length, offset + len(buf))
    if lo == start and hi == start + length:
        return buf[start - offset:hi - offset]
    seg = np.zeros(length)
    if hi > lo:
        seg[lo - start:hi - start] = buf[lo - offset:hi - offset]
    return seg


class _Wsola:
    """Streaming WSOLA time stretch (output seconds per input second = `stretch`), pitch and formants kept.

    Output grains of `WSOLA_WINDOW` samples, half overlapping with a periodic Hann window (they sum to 1); grain
    k is read near input sample k * hop / stretch, moved within ± `WSOLA_TOLERANCE` to where it best
    continues the previous grain's waveform (cross-correlation, coarse on decimated audio, refined at full rate).
    Measured on base-voice speech (6 sentences, DNSMOS 3.38): stretching by 1.2 and 1.5 moved DNSMOS by +0.01 and
    -0.05, where TD-PSOLA stretching lost 0.15 and 0.17 (adapters/README.md, Limits; bench/results/
    profile-raised.md measures the served path).
    """

    def __init__(self, sample_rate: int, stretch: float):
        self.sr, self.stretch = sample_rate, float(stretch)
        self.win = max(16, int(round(WSOLA_WINDOW * sample_rate / 22050 / 4)) * 4)
        self.hop = self.win // 2
        self.tol = int(round(WSOLA_TOLERANCE * sample_rate / 22050))
        self.window = np.hanning(self.win + 1)[:-1]
        self.k = -1  # next grain; grain -1 reads the zeros before the input, so the window sum is 1 from sample 0
        self.prev: int | None = None  # input start of the grain before
        self.x = np.zeros(0)
        self.x0 = 0  # absolute input index of x[0] (a multiple of WSOLA_DECIMATION)
        self.xd = np.zeros(0)  # x decimated: sums of WSOLA_DECIMATION samples from x0
        self.n_in = 0
        self.out = np.zeros(0)
        self.o0 = 0  # absolute output index of out[0]

    def lookahead(self) -> int:
        """Upper bound on the input samples held back."""
        return self.tol + self.win + self.hop

    def _read(self, start: int, length: int) -> np.ndarray:
        """Input [start, start + length), zeros outside what exists."""
        return _padded(self.x, self.x0, start, length)

    def _read_coarse(self, start: int, length: int) -> np.ndarray:
        """Decimated input (sums of WSOLA_DECIMATION samples) for blocks [start, start + length), zeros outside."""
        return _padded(self.xd, self.x0 // WSOLA_DECIMATION, start, length)

    def _place(self, nominal: int) -> int:
        """Input start for a grain near `nominal`: where it best continues the previous grain."""
        if self.prev is None:
            return nominal
        tol, win, d = self.tol, self.win, WSOLA_DECIMATION
        cont = self.prev + self.hop  # where the previous grain's waveform would continue
        tb = -(-cont // d)  # the first whole block at or after cont
        target = self._read_coarse(tb, win // d)
        if float(target @ target) < SILENT_RMS ** 2 * win * d:  # block sums: d^2 a^2 per block, win / d blocks
            return nominal  # nothing to line up with
        first = -(-(nominal - tol) // d)  # coarse candidates: whole blocks within the tolerance
        cc = np.correlate(self._read_coarse(first, (nominal + tol) // d - first + win // d), target, "valid")
        coarse = (first + int(cc.argmax())) * d - (tb * d - cont)  # the grain start that block match implies
        lo, hi = max(nominal - tol, coarse - d - 2), min(nominal + tol, coarse + d + 2)
        if hi < lo:
            return nominal
        fine = np.correlate(self._read(lo, hi - lo + win), self._read(cont, win), "valid")
        return lo + int(fine.argmax())

    def push(self, x: np.ndarray, final: bool) -> np.ndarray:
        """Add input; the output samples no later grain can change."""
        self.x = np.concatenate([self.x, x]) if len(self.x) else np.asarray(x, dtype=np.float64).copy()
        self.n_in += len(x)
        d = WSOLA_DECIMATION
        self.xd = self.x[:len(self.x) // d * d].reshape(-1, d).sum(axis=1)  # x0 stays a multiple of d
        n_out = int(round(self.n_in * self.stretch))
        hop, win, tol = self.hop, self.win, self.tol
        room = n_out + win - self.o0  # every grain this call can add ends before this
        if room > len(self.out):
            self.out = np.concatenate([self.out, np.zeros(room - len(self.out))])
        while self.k * hop < n_out:
            nominal = int(round(self.k * hop / self.stretch))
            need = max(nominal + tol + win, (self.prev or 0) + hop + win)
            if need > self.n_in and not final:
                break
            start = self._place(nominal)
            dest = self.k * hop
            end = dest + win - self.o0
            skip = max(0, self.o0 - dest)
            self.out[dest + skip - self.o0:end] += (self._read(start, win) * self.window)[skip:]
            self.prev, self.k = start, self.k + 1
        done_to = n_out if final else min(n_out, self.k * hop)
        count = max(0, done_to - self.o0)
        if count > len(self.out):
            self.out = np.concatenate([self.out, np.zeros(count - len(self.out))])
        done, self.out = self.out[:count], self.out[count:]
        self.o0 += count
        keep = min(self.prev if self.prev is not None else 0, int(self.k * hop / self.stretch) - tol) - hop
        keep -= keep % WSOLA_DECIMATION
        if keep - self.x0 > self.sr:  # amortised: cut once a second is behind
            self.x = self.x[keep - self.x0:]
            self.x0 = keep
        return done


class _Resample:
    """soxr's streaming resampler: play the audio `factor` times faster (pitch and formants x factor)."""

    def __init__(self, sample_rate: int, factor: float):
        import soxr

        self.sample_rate = sample_rate
        self.stream = soxr.ResampleStream(sample_rate * factor, sample_rate, 1, dtype="float32", quality="HQ")

    def lookahead(self) -> int:
        """Upper bound on the input samples held back."""
        return int(RESAMPLE_LOOKAHEAD_S * self.sample_rate)

    def push(self, x: np.ndarray, final: bool) -> np.ndarray:
        """Add input; resampled output as soxr releases it."""
        return self.stream.resample_chunk(x.astype(np.float32), last=final)


class ProfileStream:
    """A voice profile's pitch path applied to consecutive engine chunks, output as soon as it is final."""

    def __init__(self, profile: VoiceProfile, sample_rate: int):
        self.profile, self.sample_rate = profile, int(sample_rate)
        r, method = float(profile.pitch_factor), profile.pitch_method
        if method == "world":
            raise ValueError("pitch path 'world' cannot stream (WORLD analyses the whole signal): use "
                             "apply_profile_fast, which falls back to whole-signal processing, or another path")
        if method == "psola":
            psola, rho = r, 1.0
        elif method == "split":
            rho = float(profile.resample_factor)
            psola = r / rho
        elif method == "resample":
            psola, rho = 1.0, r
        else:
            raise ValueError(f"unknown pitch path {method!r}")
        self.stages: list = []
        if abs(psola - 1.0) >= PASSTHROUGH:
            self.stages.append(_Psola(self.sample_rate, psola))
        raised = rho >= 1.0 + PASSTHROUGH
        if raised:  # stretch by rho first, so the model renders 1/rho as many frames: base-voice cost
            self.stages.append(_Wsola(self.sample_rate, rho))
        if abs(rho - 1.0) >= PASSTHROUGH:
            self.stages.append(_Resample(self.sample_rate, rho))
        self.model_length = 1.0 / rho if raised else 1.0
        """Factor on the profile's length_scale for the engine audio this stream takes: resampling up by rho
        (resample / split paths) shortens the audio by rho, which the profile's length_scale was fitted to
        make up for. For rho > 1 that would cost rho times the base voice's model time per output second, so
        the engine renders at length_scale / rho and WSOLA stretches its output by rho before the resampling."""
        self.time_scale = 1.0 / rho if abs(rho - 1.0) >= PASSTHROUGH and not raised else 1.0
        """Output seconds per input second (1/r for lowered 'resample' voices, 1/resample_factor for lowered
        'split' voices, else 1)."""
        self.samples_in = 0
        self.samples_out = 0
        self.finished = False

    @property
    def lookahead_s(self) -> float:
        """Upper bound on the input held back before it shows in the output (seconds)."""
        return sum(stage.lookahead() for stage in self.stages) / self.sample_rate

    def process(self, chunk: np.ndarray, final: bool = False) -> np.ndarray:
        """Feed the next chunk of engine audio; float32 output that is final (everything when final=True)."""
        if self.finished:
            raise RuntimeError("stream already finished (final=True was passed)")
        x = _check_chunk(chunk)
        self.samples_in += len(x)
        for stage in self.stages:
            x = stage.push(np.asarray(x, dtype=np.float64), final)
        self.finished = final
        out = np.asarray(x, dtype=np.float32)
        self.samples_out += len(out)
        return out


def apply_profile_fast(audio: np.ndarray, sample_rate: int, profile: VoiceProfile) -> np.ndarray:
    """Whole-signal pitch path (one ProfileStream, final=True); 'world' falls back to pitch.world_pitch_shift.

    `audio` is engine output rendered at the profile's length_scale times `ProfileStream.model_length`."""
    if profile.pitch_method == "world":
        from chorus.adapters.pitch import world_pitch_shift

        return world_pitch_shift(_check_chunk(audio).astype(np.float32), sample_rate, profile.pitch_factor)
    return ProfileStream(profile, sample_rate).process(audio, final=True)


BENCH_TEXT = ("The quick brown fox jumps over the lazy dog near the riverbank. "
              "Please call Stella and ask her to bring these things with her from the store. "
              "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob. "
              "We also need a small plastic snake and a big toy frog for the kids.")
"""About 18 s of base-voice speech for the cost and quality bench."""


def _best_time(fn, repeats: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _unshifted(audio: np.ndarray, out: np.ndarray, sample_rate: int) -> float:
    """Fraction of frames voiced in both whose f0 stayed within 5% of the input's (fast tracker on both)."""
    f_in, _ = fast_f0(audio, sample_rate)
    f_out, _ = fast_f0(out, sample_rate)
    n = min(len(f_in), len(f_out))
    both = np.isfinite(f_in[:n]) & np.isfinite(f_out[:n])
    return float(np.mean(np.abs(f_out[:n][both] / f_in[:n][both] - 1) < 0.05)) if both.any() else float("nan")


def _psola_on_fast_f0(audio: np.ndarray, sample_rate: int, profile: VoiceProfile) -> np.ndarray:
    """adapters.psola.psola_shift (the whole-signal algorithm) with this module's f0 instead of pYIN's."""
    from chorus.adapters.psola import psola_shift

    return psola_shift(audio, sample_rate, profile.pitch_factor, f0=fast_f0(audio, sample_rate)[0])


def bench(out_path: str = "bench/results/profile-cost.md", repeats: int = 5) -> str:
    """Cost (vs the engine's own time) and quality (vs apply_profile) of the fast pitch path; writes markdown."""
    import platform
    from pathlib import Path

    from chorus.adapters.adapted import apply_profile
    from chorus.adapters.pitch import median_f0, pyin_f0
    from chorus.adapters.targets import HELDOUT_SENTENCES, TRAIN_SENTENCES
    from chorus.engine.synth import SynthesisOptions, Synthesizer
    from chorus.quality.dnsmos import dnsmos

    synth = Synthesizer(backend="onnx", num_threads=2)
    sr = synth.sample_rate
    synth.synthesize("Warm up.")
    pyin_f0(synth.synthesize("Warm up."), sr)  # librosa/numba load outside the timings
    options = SynthesisOptions(seed=0)
    audio = synth.synthesize(BENCH_TEXT, options)
    duration = len(audio) / sr
    engine_runs = [_best_time(lambda: synth.synthesize(BENCH_TEXT, options), 2)]  # topped up between the rows
    profiles = {"psola x1.4": VoiceProfile(pitch_method="psola", pitch_factor=1.4),
                "psola x0.8": VoiceProfile(pitch_method="psola", pitch_factor=0.8),
                "resample x1.4": VoiceProfile(pitch_method="resample", pitch_factor=1.4),
                "split x1.4 (resample x1.1)": VoiceProfile(pitch_method="split", pitch_factor=1.4, resample_factor=1.1)}
    rows, rng = [], np.random.default_rng(0)
    for name, prof in profiles.items():
        engine_runs.append(_best_time(lambda: synth.synthesize(BENCH_TEXT, options), 1))
        whole = apply_profile_fast(audio, sr, prof)
        fast_s = _best_time(lambda: apply_profile_fast(audio, sr, prof), repeats)
        stream, pieces, pos, held = ProfileStream(prof, sr), [], 0, 0.0
        while pos < len(audio):
            step = int(rng.uniform(0.3, 1.5) * sr)
            pieces.append(stream.process(audio[pos:pos + step], final=pos + step >= len(audio)))
            pos += step
            if pos < len(audio):
                held = max(held, pos / sr - stream.samples_out / sr / stream.time_scale)
        streamed = np.concatenate(pieces)
        diff = float(np.max(np.abs(streamed - whole))) if len(streamed) == len(whole) else float("nan")
        rows.append((name, "apply_profile_fast", fast_s, f"{diff:.1e}", f"{held * 1000:.0f} ms"))
        if prof.pitch_method in ("psola", "resample"):
            rows.append((name, "apply_profile", _best_time(lambda: apply_profile(audio, sr, prof), 1), "-", "all"))
    engine_s = min(engine_runs)
    lines = ["# Voice-profile pitch path: cost and quality (adapters/profile.py)", "",
             f"Base-voice engine output, {duration:.1f} s (`BENCH_TEXT`, seed 0). Engine `Synthesizer(backend='onnx', "
             f"num_threads=2)`: {engine_s:.2f} s (RTF {engine_s / duration:.3f}), best of {len(engine_runs) + 1} runs "
             f"spread over the timings ({platform.machine()}, Python {platform.python_version()}; a 2-core machine "
             "shared with other jobs, so timings are noisy).", "",
             "Rerun: `PYTHONSAFEPATH=1 python -m chorus.adapters.profile` (writes this file).", "",
             f"## Cost (whole signal, best of {repeats}; streamed in random 0.3-1.5 s chunks)", "",
             "| profile | implementation | time | RTF | % of engine time | streamed vs whole (max abs diff) "
             "| held back |", "|---|---|---|---|---|---|---|"]
    for name, impl, secs, diff, held in rows:
        lines.append(f"| {name} | {impl} | {secs * 1000:.1f} ms | {secs / duration:.4f} | "
                     f"{100 * secs / engine_s:.1f}% | {diff} | {held} |")
    texts = list(HELDOUT_SENTENCES) + list(TRAIN_SENTENCES[:12])
    clips = [synth.synthesize(text, SynthesisOptions(seed=seed)) for seed, text in enumerate(texts)]
    impls = {"apply_profile": apply_profile, "apply_profile_fast": apply_profile_fast,
             "psola_shift on fast_f0": _psola_on_fast_f0}
    f0_in = median_f0(clips, sr)
    base = np.array([dnsmos(clip, sr).ovrl for clip in clips])
    lines += ["", "## Quality: psola path, apply_profile_fast vs adapters.adapted.apply_profile on the same inputs", "",
              f"{len(clips)} sentences (HELDOUT_SENTENCES and TRAIN_SENTENCES[:12], one clip each, seeds 0-"
              f"{len(clips) - 1}; {sum(map(len, clips)) / sr:.0f} s), input DNSMOS OVRL {base.mean():.3f}, median f0 "
              f"{f0_in:.1f} Hz. DNSMOS: mean over clips (standard error); the difference to apply_profile is taken "
              "clip by clip. Median f0: pYIN over all clips, as the gate measures it. 'Left at base pitch': frames "
              "voiced in input and output whose f0 moved by less than 5% (fast tracker on both). "
              "'psola_shift on fast_f0' is adapters.psola's whole-signal PSOLA given this module's f0.", "",
              "| factor | implementation | DNSMOS OVRL | vs apply_profile | median f0 vs input x factor "
              "| left at base pitch |", "|---|---|---|---|---|---|"]
    for factor in (1.4, 0.8):
        prof = VoiceProfile(pitch_method="psola", pitch_factor=factor)
        reference = None
        for impl, fn in impls.items():
            outs = [fn(clip, sr, prof) for clip in clips]
            ovrl = np.array([dnsmos(out, sr).ovrl for out in outs])
            reference = ovrl if reference is None else reference
            delta = ovrl - reference
            sem = np.std(ovrl) / np.sqrt(len(ovrl))
            vs = "-" if impl == "apply_profile" else f"{delta.mean():+.3f} ({np.std(delta) / np.sqrt(len(delta)):.3f})"
            f0_err = median_f0(outs, sr) / (f0_in * factor) - 1
            left = np.mean([_unshifted(clip, out, sr) for clip, out in zip(clips, outs)])
            lines.append(f"| {factor} | {impl} | {ovrl.mean():.3f} ({sem:.3f}) | {vs} | {100 * f0_err:+.1f}% | "
                         f"{100 * left:.0f}% |")
    lines += ["", "pYIN (2048-sample frames, HMM voicing) calls unvoiced many voiced stretches where pitch moves fast, "
              "and apply_profile leaves those at the base pitch ('left at base pitch'): they keep their DNSMOS, but "
              "the voice's pitch jumps within a sentence. Given the same f0, adapters.psola's whole-signal PSOLA "
              "scores no better than the streaming one ('psola_shift on fast_f0'): the DNSMOS difference at x0.8 "
              "comes from moving those frames, not from streaming."]
    text = "\n".join(lines) + "\n"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(text)
    return text


def bench_raised(out_path: str = "bench/results/profile-raised.md",
                 factors: tuple[float, ...] = (1.2, 1.45, 1.7, 2.0)) -> str:
    """Raised voices on the resample path: what serving streams (engine at length_scale / r, WSOLA x r, soxr)
    against apply_profile's whole-signal path (engine at length_scale, soxr), on the base voice; writes markdown."""
    import json
    import time
    from pathlib import Path

    from chorus.adapters.adapted import apply_profile
    from chorus.adapters.pitch import median_f0
    from chorus.adapters.targets import HELDOUT_SENTENCES, TRAIN_SENTENCES
    from chorus.engine.synth import SynthesisOptions, Synthesizer
    from chorus.quality.dnsmos import dnsmos
    from chorus.quality.similarity import embed_speaker
    from chorus.quality.whisper import audio_wer

    synth = Synthesizer(backend="onnx", num_threads=2)
    sr = synth.sample_rate
    texts = list(HELDOUT_SENTENCES)[:6] + list(TRAIN_SENTENCES[:6])
    rows = []
    for r in factors:
        profile = VoiceProfile(pitch_method="resample", pitch_factor=r, length_scale=r)
        served_scale = profile.length_scale * ProfileStream(profile, sr).model_length
        ref, served, errors, words, engine_s, dsp_s = [], [], [0, 0], 0, 0.0, 0.0
        for seed, text in enumerate(texts):
            ref.append(apply_profile(synth.synthesize(text, SynthesisOptions(seed=seed, length_scale=r)), sr, profile))
            start = time.perf_counter()
            audio = synth.synthesize(text, SynthesisOptions(seed=seed, length_scale=served_scale))
            engine_s += time.perf_counter() - start
            start = time.perf_counter()
            served.append(apply_profile_fast(audio, sr, profile))
            dsp_s += time.perf_counter() - start
            for k, out in enumerate((ref[-1], served[-1])):
                w = audio_wer(text, out, sr)
                errors[k] += w.substitutions + w.deletions + w.insertions
            words += w.reference_words
        e_ref = np.mean([embed_speaker(a, sr) for a in ref], axis=0)
        e_served = np.mean([embed_speaker(a, sr) for a in served], axis=0)
        d_ref = np.array([dnsmos(a, sr).ovrl for a in ref])
        d_served = np.array([dnsmos(a, sr).ovrl for a in served])
        delta = d_served - d_ref
        rows.append({"factor": r, "clips": len(texts), "words": words,
                     "dnsmos_reference": round(float(d_ref.mean()), 3),
                     "dnsmos_served": round(float(d_served.mean()), 3),
                     "dnsmos_diff": round(float(delta.mean()), 3),
                     "dnsmos_diff_se": round(float(delta.std() / np.sqrt(len(delta))), 3),
                     "word_errors_reference": errors[0], "word_errors_served": errors[1],
                     "similarity_served_to_reference": round(float(
                         e_ref @ e_served / np.linalg.norm(e_ref) / np.linalg.norm(e_served)), 3),
                     "f0_reference": round(median_f0(ref, sr), 1), "f0_served": round(median_f0(served, sr), 1),
                     "engine_s_served": round(engine_s, 2), "dsp_s_served": round(dsp_s, 3)})
    lines = ["# Raised voices on the resample path: served vs whole-signal (adapters/profile.py)", "",
             "Base voice (no adapter), 12 sentences (HELDOUT_SENTENCES[:6], TRAIN_SENTENCES[:6]; seeds 0-11), "
             "profile `resample` x r with length_scale r. Reference: `apply_profile` (engine at length_scale r, "
             "soxr plays it back r times faster: r times the base voice's model time per output second). Served: "
             "`ProfileStream` (engine at length_scale 1, WSOLA stretches by r, soxr: the base voice's model time "
             "plus the DSP). Similarity: Resemblyzer cosine between the two renderings' mean embeddings. DNSMOS "
             "difference taken clip by clip (standard error). DSP share: the served path's WSOLA + soxr time over "
             "its engine time (Synthesizer, ONNX, 2 threads; a shared 2-core machine).", "",
             "Rerun: `PYTHONSAFEPATH=1 python -m chorus.adapters.profile raised` (~5 min; writes this file and .json).",
             "", "| r | DNSMOS reference | DNSMOS served | difference (s.e.) | word errors reference / served "
             "(of words) | similarity served to reference | median f0 reference / served | DSP share of engine |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['factor']} | {row['dnsmos_reference']:.3f} | {row['dnsmos_served']:.3f} | "
                     f"{row['dnsmos_diff']:+.3f} ({row['dnsmos_diff_se']:.3f}) | {row['word_errors_reference']} / "
                     f"{row['word_errors_served']} ({row['words']}) | {row['similarity_served_to_reference']:.3f} | "
                     f"{row['f0_reference']} / {row['f0_served']} Hz | "
                     f"{100 * row['dsp_s_served'] / row['engine_s_served']:.1f}% |")
    text = "\n".join(lines) + "\n"
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(text)
    Path(out_path).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return text


if __name__ == "__main__":
    import sys

    print(bench_raised() if sys.argv[1:] == ["raised"] else bench())
