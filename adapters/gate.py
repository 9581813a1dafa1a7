"""Quality gate: measured metrics of an adapted voice against thresholds -> pass/fail with reasons.

Defaults follow issue 4's targets: close >= 70% of the speaker-similarity gap between the base voice and
the target's own ceiling, WER no more than 3 points above the base voice, DNSMOS OVRL >= 3.0 (or, where
the target clips score lower themselves, no lower than they do), median f0 within 10% of the target's.
A metric the gate needs but was not measured fails the gate: a voice is never passed by omission.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GateThresholds(BaseModel):
    """Pass/fail thresholds for an adapted voice (tenants may override these later)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_gap_closed: float = Field(
        0.70, ge=0, le=1,
        description="(sim_adapted - sim_base) / (sim_ceiling - sim_base) must reach this; 0 disables")
    max_wer_increase: float = Field(
        0.03, ge=0, le=1, description="WER of adapted speech minus WER of the base voice (fraction, 0.03 = 3 points)")
    relative_to_target_wer: bool = Field(
        True, description="if the target's own clips are harder for the recogniser than the base voice on the same "
                          "held-out texts, the adapted voice may be that much harder too")
    min_dnsmos_ovrl: float = Field(
        3.0, ge=1, le=5, description="DNSMOS OVRL floor for adapted speech")
    relative_to_target_dnsmos: bool = Field(
        True, description="if the target clips score below min_dnsmos_ovrl, their own score is the floor")
    dnsmos_margin: float = Field(
        0.0, ge=0, le=2, description="how far below the floor (absolute or the target's) still passes")
    f0_tolerance: float | None = Field(
        0.10, ge=0, le=1, description="|median f0 adapted / target - 1| must not exceed this; None skips the check")
    max_adapter_bytes: int | None = Field(
        4 * 1024 * 1024, gt=0, description="adapter weights file size limit; None skips the check")


class QualityMetrics(BaseModel):
    """Measured quality of an adapted voice on held-out clips (None = not measured).

    Extra fields are kept (the evaluation may record more than the gate uses).
    """

    model_config = ConfigDict(extra="allow")

    similarity_base: float | None = Field(None, description="speaker similarity of base speech to the target clips")
    similarity_adapted: float | None = Field(None, description="speaker similarity of adapted speech to the target")
    similarity_ceiling: float | None = Field(None, description="similarity of target clips to each other")
    wer_base: float | None = Field(None, ge=0, description="word error rate of the base voice (fraction)")
    wer_adapted: float | None = Field(None, ge=0, description="word error rate of adapted speech (fraction)")
    wer_words: int | None = Field(None, ge=1, description="reference words wer_base and wer_adapted rest on")
    wer_heldout_base: float | None = Field(None, ge=0, description="WER of the base voice on the held-out texts")
    wer_heldout_adapted: float | None = Field(None, ge=0, description="WER of adapted speech on the held-out texts")
    wer_heldout_target: float | None = Field(None, ge=0, description="WER of the target clips themselves")
    heldout_words: int | None = Field(None, ge=1, description="reference words of the held-out texts")
    dnsmos_base: float | None = Field(None, description="DNSMOS OVRL of the base voice")
    dnsmos_adapted: float | None = Field(None, description="DNSMOS OVRL of adapted speech")
    dnsmos_target: float | None = Field(None, description="DNSMOS OVRL of the target clips themselves")
    f0_base: float | None = Field(None, gt=0, description="median f0 of base speech (Hz)")
    f0_adapted: float | None = Field(None, gt=0, description="median f0 of adapted speech (Hz)")
    f0_target: float | None = Field(None, gt=0, description="median f0 of the target clips (Hz)")
    adapter_bytes: int | None = Field(None, ge=0, description="size of the adapter weights file")

    def gap_closed(self) -> float | None:
        """Fraction of the base-to-ceiling similarity gap the adapter closed, or None if unmeasured."""
        s = (self.similarity_base, self.similarity_adapted, self.similarity_ceiling)
        if any(v is None for v in s) or s[2] - s[0] <= 1e-6:
            return None
        return (s[1] - s[0]) / (s[2] - s[0])


class GateCheck(BaseModel):
    """One threshold check: the value measured, the limit, and whether it passed."""

    name: str
    passed: bool
    value: float | None
    limit: float | None
    message: str


class GateResult(BaseModel):
    """The gate's verdict: passed only if every check passed; reasons lists each failure."""

    passed: bool
    reasons: list[str]
    checks: list[GateCheck]


def _check(name: str, passed: bool, value, limit, message: str) -> GateCheck:
    return GateCheck(name=name, passed=passed, value=value, limit=limit, message=message)


def _similarity(m: QualityMetrics, t: GateThresholds) -> GateCheck:
    gap = m.gap_closed()
    if gap is None:
        if m.similarity_base is not None and m.similarity_ceiling is not None and m.similarity_adapted is not None:
            return _check("similarity_gap_closed", False, None, t.min_gap_closed,
                          f"ceiling similarity {m.similarity_ceiling:.3f} is not above base {m.similarity_base:.3f}: "
                          "the gap cannot be measured")
        return _check("similarity_gap_closed", False, None, t.min_gap_closed,
                      "speaker similarity not measured (need similarity_base, _adapted and _ceiling)")
    ok = gap >= t.min_gap_closed
    return _check("similarity_gap_closed", ok, round(gap, 4), t.min_gap_closed,
                  f"closed {gap:.0%} of the similarity gap ({m.similarity_base:.3f} -> {m.similarity_adapted:.3f}, "
                  f"ceiling {m.similarity_ceiling:.3f}); needs {t.min_gap_closed:.0%}")


def _wer(m: QualityMetrics, t: GateThresholds) -> GateCheck:
    if m.wer_base is None or m.wer_adapted is None:
        return _check("wer_increase", False, None, t.max_wer_increase,
                      "WER not measured (need wer_base and wer_adapted)")
    inc = m.wer_adapted - m.wer_base
    allow, why = t.max_wer_increase, ""
    if t.relative_to_target_wer and m.wer_heldout_target is not None and m.wer_heldout_base is not None:
        excess = m.wer_heldout_target - m.wer_heldout_base
        if excess > allow:
            allow = excess
            why = (f" (the target's own clips: WER {m.wer_heldout_target:.1%} vs base {m.wer_heldout_base:.1%} "
                   f"on {m.heldout_words or '?'} held-out words)")
    ok = inc <= allow + 1e-9
    words = f" reading {m.wer_words} words, one word = {100 / m.wer_words:.2f} points" if m.wer_words else ""
    return _check("wer_increase", ok, round(inc, 4), round(allow, 4),
                  f"WER {m.wer_adapted:.1%} vs base {m.wer_base:.1%} (+{inc * 100:.1f} points{words}); "
                  f"at most +{allow * 100:.1f} points{why}")


def _dnsmos(m: QualityMetrics, t: GateThresholds) -> GateCheck:
    floor, why = t.min_dnsmos_ovrl, f"floor {t.min_dnsmos_ovrl:.2f}"
    if t.relative_to_target_dnsmos and m.dnsmos_target is not None and m.dnsmos_target < floor:
        floor, why = m.dnsmos_target, f"the target clips' own score {m.dnsmos_target:.2f}"
    if m.dnsmos_adapted is None:
        return _check("dnsmos_ovrl", False, None, floor, "DNSMOS not measured (need dnsmos_adapted)")
    ok = m.dnsmos_adapted >= floor - t.dnsmos_margin
    margin = f" minus margin {t.dnsmos_margin:.2f}" if t.dnsmos_margin else ""
    return _check("dnsmos_ovrl", ok, round(m.dnsmos_adapted, 3), round(floor - t.dnsmos_margin, 3),
                  f"DNSMOS OVRL {m.dnsmos_adapted:.2f}; needs {why}{margin}")


def _f0(m: QualityMetrics, t: GateThresholds) -> GateCheck:
    if m.f0_adapted is None or m.f0_target is None:
        return _check("f0_median", False, None, t.f0_tolerance,
                      "median f0 not measured (need f0_adapted and f0_target)")
    dev = m.f0_adapted / m.f0_target - 1
    ok = abs(dev) <= t.f0_tolerance + 1e-9
    return _check("f0_median", ok, round(dev, 4), t.f0_tolerance,
                  f"median f0 {m.f0_adapted:.1f} Hz vs target {m.f0_target:.1f} Hz ({dev:+.1%}); "
                  f"within ±{t.f0_tolerance:.0%} needed")


def _size(m: QualityMetrics, t: GateThresholds) -> GateCheck:
    if m.adapter_bytes is None:
        return _check("adapter_size", False, None, t.max_adapter_bytes, "adapter size not recorded (adapter_bytes)")
    ok = m.adapter_bytes <= t.max_adapter_bytes
    return _check("adapter_size", ok, m.adapter_bytes, t.max_adapter_bytes,
                  f"adapter weights {m.adapter_bytes / 1e6:.2f} MB; at most {t.max_adapter_bytes / 1e6:.2f} MB")


def evaluate_gate(metrics: QualityMetrics, thresholds: GateThresholds | None = None) -> GateResult:
    """Check `metrics` against `thresholds` (defaults when None); every failing check gives a reason."""
    t = thresholds or GateThresholds()
    checks = [_wer(metrics, t), _dnsmos(metrics, t)]
    if t.min_gap_closed > 0:
        checks.insert(0, _similarity(metrics, t))
    if t.f0_tolerance is not None:
        checks.append(_f0(metrics, t))
    if t.max_adapter_bytes is not None:
        checks.append(_size(metrics, t))
    reasons = [f"{c.name}: {c.message}" for c in checks if not c.passed]
    return GateResult(passed=not reasons, reasons=reasons, checks=checks)
