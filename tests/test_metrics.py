import math

import pytest
import torch

from src.models.counting import predict_counts
from src.models.losses import CountLoss, class_weights
from src.models.metrics import CountMetrics, metrics_from_confusion


def test_metrics_match_hand_computed_values():
    target = torch.tensor([0, 0, 1, 2, 3, 5])
    preds = torch.tensor([0, 1, 1, 4, 3, 2])
    m = CountMetrics(num_classes=6)
    m.update(preds, target)
    out = m.compute()
    # errors: 0, 1, 0, 2, 0, -3 -> squared 0,1,0,4,0,9 = 14 over 6
    assert out["acc"] == pytest.approx(3 / 6)
    assert out["rmse"] == pytest.approx(math.sqrt(14 / 6))
    assert out["mae"] == pytest.approx(6 / 6)
    assert out["within1"] == pytest.approx(4 / 6)
    assert out["acc_class_0"] == pytest.approx(0.5)
    assert out["rmse_class_0"] == pytest.approx(math.sqrt(1 / 2))
    assert out["acc_class_5"] == 0.0 and out["rmse_class_5"] == pytest.approx(3.0)
    assert "acc_class_4" not in out  # no true 4s: undefined, not 0
    assert out["n"] == 6


def test_metrics_accumulate_across_batches_and_reset():
    m = CountMetrics(6)
    m.update(torch.tensor([1]), torch.tensor([1]))
    m.update(torch.tensor([3]), torch.tensor([1]))
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(2))
    m.reset()
    m.update(torch.tensor([2]), torch.tensor([2]))
    assert m.compute()["acc"] == 1.0


def test_confusion_of_constant_predictor():
    cm = torch.zeros(6, 6)
    cm[:, 3] = torch.tensor([1, 1, 1, 1, 1, 1])
    out = metrics_from_confusion(cm)
    assert out["acc"] == pytest.approx(1 / 6)
    assert out["rmse"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 1 + 4) / 6))


def test_class_weights_schemes():
    counts = torch.tensor([10, 40, 0, 20, 20, 10])
    assert class_weights(counts, "none") is None
    inv = class_weights(counts, "inverse")
    assert inv[2] == 0  # no images: no weight
    assert inv[0] / inv[1] == pytest.approx(4.0)
    assert inv[counts > 0].mean() == pytest.approx(1.0)
    sq = class_weights(counts, "sqrt_inverse")
    assert sq[0] / sq[1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="valid: none, inverse, sqrt_inverse"):
        class_weights(counts, "balanced")


def test_weighted_loss_values_match_formula():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    target = torch.tensor([0, 1])
    loss = CountLoss(6, weighting="inverse")
    loss.set_class_counts(torch.tensor([1, 3, 1, 1, 1, 1]))
    w = loss.weight
    nll = -torch.log_softmax(logits, -1)[torch.arange(2), target]
    expected = (w[0] * nll[0] + w[1] * nll[1]) / (w[0] + w[1])
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert w[0] / w[1] == pytest.approx(3.0)


def test_distance_term_penalises_far_counts_more():
    target = torch.tensor([5])
    near = torch.full((1, 6), -5.0)
    near[0, 4] = 5.0
    far = torch.full((1, 6), -5.0)
    far[0, 0] = 5.0
    plain, aware = CountLoss(6), CountLoss(6, distance_weight=1.0)
    assert plain(near, target).item() == pytest.approx(plain(far, target).item(), rel=1e-4)
    assert aware(far, target).item() > aware(near, target).item() + 10


def test_decision_rules():
    probs = torch.tensor([[0.0, 0.4, 0.0, 0.3, 0.3, 0.0]])
    assert predict_counts(probs, "argmax").item() == 1
    assert predict_counts(probs, "expected").item() == 2  # 0.4 + 0.9 + 1.2 = 2.5 -> round half even 2
    assert predict_counts(probs, "median").item() == 3  # P(count <= 3) = 0.7 is the first >= 1/2
    with pytest.raises(ValueError, match="argmax, expected, median"):
        predict_counts(probs, "mode")
