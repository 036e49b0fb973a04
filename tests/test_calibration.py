"""src.inference.calibration: temperature scaling, ECE, the review threshold and verdict thresholds."""

from __future__ import annotations

import math

import pytest
import torch

from src.inference.calibration import (
    VerdictRule,
    accuracy_at_coverage,
    apply_temperature,
    ece,
    fit_temperature,
    fit_verdict_thresholds,
    reconciliation_pairs,
    review_threshold,
    wrong_quantities,
)


def calibrated_logits(n: int, classes: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose softmax is the true distribution of the labels: calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * 2.0
    targets = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]
    return logits, targets


def test_ece_of_known_cases():
    conf = torch.tensor([0.95, 0.95, 0.95, 0.95])
    assert ece(conf, torch.tensor([True, True, True, True])) == pytest.approx(0.05)
    assert ece(conf, torch.tensor([False, False, False, False])) == pytest.approx(0.95)
    # two bins, each perfectly calibrated
    assert ece(torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0]), torch.tensor([True, False, False, False, True])) == pytest.approx(0.0)


def test_temperature_scaling_lowers_ece_on_overconfident_data():
    logits, targets = calibrated_logits(6000)
    overconfident = logits * 4.0  # what an over-trained network looks like: same ranking, too sharp
    fit, held = slice(0, 3000), slice(3000, None)
    t = fit_temperature(overconfident[fit], targets[fit])
    assert t == pytest.approx(4.0, rel=0.15)

    def held_ece(temperature: float) -> float:
        probs = apply_temperature(overconfident[held], temperature)
        conf, pred = probs.max(-1)
        return ece(conf, pred == targets[held])

    before, after = held_ece(1.0), held_ece(t)
    assert before > 0.15  # built to be badly over-confident
    assert after < 0.03 and after < before / 5
    assert torch.equal(apply_temperature(overconfident, t).argmax(-1), overconfident.argmax(-1))  # counts unchanged


def test_temperature_of_calibrated_logits_stays_near_one():
    logits, targets = calibrated_logits(4000, seed=1)
    assert fit_temperature(logits, targets) == pytest.approx(1.0, abs=0.1)


def test_review_threshold_meets_its_target_on_the_data_it_was_chosen_on():
    g = torch.Generator().manual_seed(2)
    conf = torch.rand(2000, generator=g)
    correct = torch.rand(2000, generator=g) < conf  # right as often as it is confident
    for target in (0.7, 0.8, 0.9):
        t = review_threshold(conf, correct, target)
        accepted = conf >= t
        assert correct[accepted].double().mean() >= target
        # the largest coverage that does: accepting the next answer down breaks the target
        below = conf[conf < t]
        if len(below):
            wider = conf >= below.max()
            assert correct[wider].double().mean() < target
    assert (conf >= review_threshold(conf, correct, 0.9)).double().mean() < (conf >= review_threshold(conf, correct, 0.7)).double().mean()


def test_review_threshold_sends_everything_to_review_when_unreachable():
    conf = torch.tensor([0.9, 0.8, 0.7])
    t = review_threshold(conf, torch.tensor([False, False, True]), 0.99)
    assert t > 1.0 and not (conf >= t).any()
    with pytest.raises(ValueError, match="target accuracy"):
        review_threshold(conf, torch.tensor([True, True, True]), 1.5)


def test_accuracy_at_coverage_keeps_the_most_confident():
    conf = torch.tensor([0.9, 0.8, 0.3, 0.2])
    correct = torch.tensor([True, True, False, False])
    assert accuracy_at_coverage(conf, correct, 0.5) == 1.0
    assert accuracy_at_coverage(conf, correct, 1.0) == 0.5


def test_wrong_quantities_are_off_by_exactly_the_offset_and_in_range():
    targets = torch.arange(7).repeat(50)
    for offset in (1, 2):
        wrong = wrong_quantities(targets, offset, 7, seed=offset)
        assert torch.equal((wrong - targets).abs(), torch.full_like(targets, offset))
        assert wrong.min() >= 0 and wrong.max() <= 6
        assert (wrong > targets).any() and (wrong < targets).any()  # both directions drawn


def test_verdict_rule_and_its_validation():
    rule = VerdictRule(match_threshold=0.6, mismatch_threshold=0.1)
    assert [rule(p) for p in (0.9, 0.6, 0.3, 0.1, 0.0)] == ["match", "match", "review", "mismatch", "mismatch"]
    with pytest.raises(ValueError, match="mismatch"):
        VerdictRule(match_threshold=0.2, mismatch_threshold=0.5)


def test_verdict_thresholds_reach_their_precision_on_validation():
    logits, targets = calibrated_logits(3000, seed=4)
    probs = logits.softmax(-1)
    th = fit_verdict_thresholds(probs, targets, target_precision=0.9)
    rule = VerdictRule(**th)
    p, is_match = reconciliation_pairs(probs, targets)
    verdicts = [rule(v) for v in p.tolist()]
    said_match = torch.tensor([v == "match" for v in verdicts])
    said_mismatch = torch.tensor([v == "mismatch" for v in verdicts])
    assert said_match.any() and said_mismatch.any()
    assert is_match[said_match].double().mean() >= 0.9
    assert (~is_match[said_mismatch]).double().mean() >= 0.9
    assert not math.isnan(th["match_threshold"])


def test_unreachable_verdict_precision_never_calls_match():
    probs = torch.full((40, 6), 1 / 6)  # a model that knows nothing
    targets = torch.arange(40) % 6
    th = fit_verdict_thresholds(probs, targets, target_precision=0.99)
    rule = VerdictRule(**th)
    assert rule(1.0) != "match" and th["match_threshold"] > 1.0
