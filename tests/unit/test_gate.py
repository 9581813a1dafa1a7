"""Quality gate: each threshold fails on its own, unmeasured metrics fail, DNSMOS relative to the target."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chorus.adapters.gate import GateThresholds, QualityMetrics, evaluate_gate

GOOD = dict(similarity_base=0.69, similarity_adapted=0.85, similarity_ceiling=0.88, wer_base=0.02, wer_adapted=0.04,
            dnsmos_base=3.3, dnsmos_adapted=3.1, dnsmos_target=3.2, f0_base=88.0, f0_adapted=140.0, f0_target=145.0,
            adapter_bytes=320_000)


def _gate(thresholds: GateThresholds | None = None, **changes):
    return evaluate_gate(QualityMetrics(**{**GOOD, **changes}), thresholds)


def test_good_voice_passes_every_check():
    result = _gate()
    assert result.passed and result.reasons == []
    assert [c.name for c in result.checks] == ["similarity_gap_closed", "wer_increase", "dnsmos_ovrl", "f0_median",
                                                "adapter_size"]
    assert result.checks[0].value == pytest.approx((0.85 - 0.69) / (0.88 - 0.69), abs=1e-4)


@pytest.mark.parametrize("changes, failing", [
    ({"similarity_adapted": 0.789}, "similarity_gap_closed"),  # the prototype's 52%
    ({"wer_adapted": 0.06}, "wer_increase"),
    ({"dnsmos_adapted": 2.9}, "dnsmos_ovrl"),
    ({"f0_adapted": 87.0}, "f0_median"),  # pitch did not move
    ({"adapter_bytes": 5_000_000}, "adapter_size"),
])
def test_each_threshold_fails_alone(changes, failing):
    result = _gate(**changes)
    assert not result.passed
    assert [c.name for c in result.checks if not c.passed] == [failing]
    assert len(result.reasons) == 1 and result.reasons[0].startswith(failing)


def test_dnsmos_floor_follows_target_clips_that_score_lower():
    assert _gate(dnsmos_target=2.88, dnsmos_adapted=2.9).passed  # WORLD-made targets score below 3 themselves
    low = _gate(dnsmos_target=2.88, dnsmos_adapted=2.8)
    assert not low.passed and "target clips' own score 2.88" in low.reasons[0]
    strict = GateThresholds(relative_to_target_dnsmos=False)
    assert not _gate(strict, dnsmos_target=2.88, dnsmos_adapted=2.9).passed
    assert _gate(GateThresholds(dnsmos_margin=0.1), dnsmos_target=2.88, dnsmos_adapted=2.8).passed


def test_far_voice_collapse_is_refused_with_reasons():
    result = _gate(similarity_adapted=0.75, wer_adapted=0.4, dnsmos_adapted=1.15, dnsmos_target=3.4)
    assert not result.passed
    assert {r.split(":")[0] for r in result.reasons} == {"similarity_gap_closed", "wer_increase", "dnsmos_ovrl"}


def test_unmeasured_metrics_fail_rather_than_pass():
    result = evaluate_gate(QualityMetrics())
    assert not result.passed and all("not measured" in r or "not recorded" in r for r in result.reasons)
    assert len(result.reasons) == 5
    relaxed = GateThresholds(min_gap_closed=0, f0_tolerance=None, max_adapter_bytes=None)
    only = evaluate_gate(QualityMetrics(wer_base=0.0, wer_adapted=0.0, dnsmos_adapted=3.5), relaxed)
    assert only.passed and [c.name for c in only.checks] == ["wer_increase", "dnsmos_ovrl"]


def test_degenerate_similarity_ceiling_fails():
    result = _gate(similarity_ceiling=0.6)
    assert not result.passed and "cannot be measured" in result.reasons[0]


def test_thresholds_reject_bad_values():
    with pytest.raises(ValidationError, match="min_gap_closed"):
        GateThresholds(min_gap_closed=1.5)
    with pytest.raises(ValidationError, match="extra"):
        GateThresholds(max_wer=0.1)


def test_wer_allowance_follows_the_targets_own_difficulty_and_names_its_evidence():
    hard_target = dict(GOOD, wer_base=0.02, wer_adapted=0.08, wer_words=376, wer_heldout_base=0.0,
                       wer_heldout_target=0.107, heldout_words=28)
    passed = evaluate_gate(QualityMetrics(**hard_target))
    check = next(c for c in passed.checks if c.name == "wer_increase")
    assert check.passed and check.limit == 0.107
    assert "reading 376 words, one word = 0.27 points" in check.message and "28 held-out words" in check.message
    strict = evaluate_gate(QualityMetrics(**hard_target), GateThresholds(relative_to_target_wer=False))
    assert not next(c for c in strict.checks if c.name == "wer_increase").passed
    easy_target = dict(hard_target, wer_heldout_target=0.0)
    assert not evaluate_gate(QualityMetrics(**easy_target)).passed
