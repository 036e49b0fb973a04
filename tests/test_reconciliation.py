"""Reconciliation as a warehouse meets it: the seeded check set, p_expected for any quantity, wrong
records caught within a review budget, automatic decisions at 95/97 %, ROC AUC off by one and two."""

from __future__ import annotations

import itertools

import pytest
import torch

from src.evaluation.reconciliation import auto_decisions, caught_within, check_metrics, fit_auto_thresholds
from src.inference.calibration import check_set, p_expected_any
from src.inference.folder import FolderPredictions


def test_check_set_has_the_stated_share_of_wrong_records_of_each_kind():
    counts = torch.randint(0, 13, (1000,), generator=torch.Generator().manual_seed(3))
    expected, kind = check_set(counts, seed=7)
    wrong = expected != counts
    assert int(wrong.sum()) == 100 and (wrong == (kind > 0)).all()  # 10 %, and only the chosen ones
    assert torch.bincount(kind, minlength=4).tolist() == [900, 40, 30, 30]  # 40/30/30 of the wrong ones
    diff = (expected - counts).abs()
    assert (diff[kind == 1] == 1).all() and (diff[kind == 2] == 2).all() and (expected >= 0).all()
    assert set(expected[kind == 3].tolist()) <= set(counts.tolist())  # drawn from the data's own counts
    assert (expected[kind == 1] > counts[kind == 1]).any() and (expected[kind == 1] < counts[kind == 1]).any()
    again, _ = check_set(counts, seed=7)
    other, _ = check_set(counts, seed=8)
    assert torch.equal(again, expected) and not torch.equal(other, expected)
    zeros = torch.zeros(50, dtype=torch.long)
    zeros[0] = 1
    e0, k0 = check_set(zeros, seed=0, error_rate=0.5, shares=(0.5, 0.5, 0.0))
    assert (e0 >= 0).all() and ((e0 - zeros).abs()[k0 == 2] == 2).all()  # below 0: goes up instead
    with pytest.raises(ValueError, match="shares"):
        check_set(zeros, shares=(0.5, 0.5, 0.5))
    one_count = torch.full((40,), 3)  # nothing else to draw: those records are off by one
    e1, k1 = check_set(one_count, seed=0, error_rate=0.5)
    assert int((e1 != 3).sum()) == 20 and (k1 != 3).all() and ((e1 - 3).abs() <= 2).all()


def test_p_expected_for_any_quantity_uses_the_tail_at_and_above_its_first_count():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # counts 0, 1, 2 and a tail "more than 2"
    q = torch.tensor([0, 2, 3, 9])
    rows = probs.expand(4, 4)
    assert p_expected_any(rows, q, 2, tail=True).tolist() == pytest.approx([0.1, 0.3, 0.4, 0.4])
    # Without a tail (counts 0..3) a quantity above the range has probability 0.
    assert p_expected_any(rows, torch.tensor([3, 4, 12, 1]), 3, tail=False).tolist() == pytest.approx([0.4, 0, 0, 0.2])


def test_caught_within_a_budget_shares_ties_out_evenly():
    score = torch.tensor([0.9, 0.8, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1])
    wrong = torch.tensor([1, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    assert caught_within(score, wrong, 0.2) == pytest.approx(1 / 3)  # top 2: one of three wrong ones
    # top 4: 0.9, 0.8 and 2 of the four tied at 0.5 (one of them wrong): 1 + 2 * 1/4 = 1.5 of 3.
    assert caught_within(score, wrong, 0.4) == pytest.approx(1.5 / 3)
    assert caught_within(score, torch.zeros(10, dtype=torch.bool), 0.2) is None


def test_auto_thresholds_decide_the_most_bins_at_the_target_and_brute_force_agrees():
    g = torch.Generator().manual_seed(0)
    right = torch.rand(300, generator=g) > 0.1
    p = torch.where(right, torch.rand(300, generator=g) * 0.7 + 0.3, torch.rand(300, generator=g) * 0.6)
    p = (p * 20).round() / 20  # few distinct values: brute force over every pair is cheap
    for target in (0.95, 0.97):
        t = fit_auto_thresholds(p, right, target)
        got = auto_decisions(p, right, t)
        assert got["accuracy"] >= target
        best = 0
        values = sorted(set(p.tolist())) + [1.01]
        for a, b in itertools.product(values, [-0.01] + values):
            if b >= a:
                continue
            match, mismatch = p >= a, p <= b
            n = int((match | mismatch).sum())
            if n and int((match & right).sum() + (mismatch & ~right).sum()) / n >= target:
                best = max(best, n)
        assert got["n_decided"] == best


def _predictions(counts: torch.Tensor, probs: torch.Tensor, max_count: int, tail: bool) -> FolderPredictions:
    targets = counts.clamp(max=max_count + 1) if tail else counts
    names = [f"{c}/b{i}.jpg" for i, c in enumerate(counts.tolist())]
    return FolderPredictions(names, targets, probs, probs.argmax(1), logits=probs.log(), raw_probs=probs,
                             settings={"max_count": max_count, "overflow": tail})


def test_a_sure_and_right_model_catches_every_wrong_record_and_a_blind_one_catches_its_budget():
    counts = torch.randint(0, 9, (400,), generator=torch.Generator().manual_seed(1))
    sure = torch.nn.functional.one_hot(counts, 9).double() * 0.99 + 0.01 / 9
    m = check_metrics(_predictions(counts, sure, 8, tail=False))
    assert m["n"] == 400 and m["n_wrong"] == 40
    assert m["caught_at_10"] == 1.0 and m["caught_at_20"] == 1.0
    assert m["off_by_1"]["roc_auc"] == 1.0 and m["off_by_2"]["roc_auc"] == 1.0
    assert m["auto_97"]["decided_share"] == 1.0 and m["auto_97"]["accuracy"] == 1.0
    assert m["fitted_on"] == "same images (a ceiling)"
    blind = torch.full((400, 12), 1 / 12, dtype=torch.float64)  # 0..11: every record of the check set in range
    b = check_metrics(_predictions(counts, blind, 11, tail=False), val=_predictions(counts, blind, 11, tail=False))
    assert b["caught_at_10"] == pytest.approx(0.1) and b["caught_at_20"] == pytest.approx(0.2)
    assert b["off_by_1"]["roc_auc"] == pytest.approx(0.5) and b["fitted_on"] == "validation split"
    assert b["auto_95"]["decided_share"] in (0.0, 1.0) or b["auto_95"]["accuracy"] < 0.95  # nothing to decide on


def test_a_folder_without_exact_counts_gets_no_check_set_and_no_crash():
    probs = torch.full((6, 5), 0.2, dtype=torch.float64)
    pred = FolderPredictions([f"4plus/b{i}.jpg" for i in range(6)], torch.full((6,), 4), probs, probs.argmax(1),
                             logits=probs.log(), raw_probs=probs, settings={"max_count": 3, "overflow": True})
    assert check_metrics(pred) == {"n": 0, "note": "no image of exact count (only 'plus' folders): no check set"}


def test_a_tail_model_checks_quantities_above_its_range_against_the_tail():
    counts = torch.tensor([1, 2, 7, 12] * 50)
    probs = torch.zeros(200, 5, dtype=torch.float64)  # counts 0..3 and a tail "more than 3"
    probs[torch.arange(200), counts.clamp(max=4)] = 1.0
    m = check_metrics(_predictions(counts, probs.clamp_min(1e-6), 3, tail=True))
    # Records of 7 for a bin of 12 (or 8 for 7) stay unseen: the tail holds them all.
    assert m["caught_at_20"] < 1.0 and m["off_by_1"]["roc_auc"] < 1.0


def test_thresholds_fitted_on_validation_are_scored_on_test_and_a_shortfall_is_named():
    from src.evaluation.report import check_lines

    counts = torch.randint(0, 9, (400,), generator=torch.Generator().manual_seed(1))
    sure = torch.nn.functional.one_hot(counts, 9).double() * 0.99 + 0.01 / 9
    shifted = torch.nn.functional.one_hot((counts + 1).clamp(max=8), 9).double() * 0.99 + 0.01 / 9  # sure and wrong
    m = check_metrics(_predictions(counts, shifted, 8, tail=False), val=_predictions(counts, sure, 8, tail=False))
    assert m["fitted_on"] == "validation split"
    assert m["auto_95"]["n_decided"] > 300 and m["auto_95"]["accuracy_ci95"][1] < 0.95
    assert "below the target even at the interval's top" in "\n".join(check_lines({"check": m}))
