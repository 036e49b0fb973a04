"""Promises with finite-sample guarantees: fitted on validation, met on a test split like it, flagged
as broken on a test split that shifted (synthetic probabilities and, end to end, evaluate.py)."""

from __future__ import annotations

import json

import pytest
import torch

from src.evaluation.promises import broken_promises, check_promises, fit_on_predictions
from src.evaluation.report import honesty_warnings, summary_table, write_report
from src.inference.calibration import clopper_pearson, conformal_interval, conformal_set_threshold
from src.inference.folder import FolderPredictions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 10  # counts 0..10 and a tail "more than 10"


def synthetic(n: int, noise: float = 0.3, shift: float = 0.0, seed: int = 0) -> FolderPredictions:
    """A counting model's predictions on bins of 0..12 items: it sees count + shift + noise and
    answers a discretised normal around it (sd 0.6). ``noise`` up or ``shift`` below 0: harder bins
    (more items hidden) than it was fitted on."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 13, (n,), generator=g)
    seen = truth.double() + shift + torch.randn(n, generator=g, dtype=torch.float64) * noise * (
        1 + torch.rand(n, generator=g, dtype=torch.float64))
    ks = torch.arange(K + 2, dtype=torch.float64)
    logits = -(ks[None, :] - seen[:, None].clamp(max=K + 1)) ** 2 / (2 * 0.6**2)
    probs = logits.softmax(1)
    return FolderPredictions([f"{t}/s{i}.jpg" for i, t in enumerate(truth.tolist())], truth.clamp(max=K + 1), probs,
                             probs.argmax(1), logits=logits, raw_probs=probs, settings={"max_count": K, "overflow": True})


def test_clopper_pearson_matches_the_beta_quantiles():
    from scipy.stats import beta

    for k, n in ((0, 10), (8, 10), (10, 10), (437, 500), (1, 3000)):
        lo, hi = clopper_pearson(k, n)
        assert lo == pytest.approx(0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1), abs=1e-9)
        assert hi == pytest.approx(1.0 if k == n else beta.ppf(0.975, k + 1, n - k), abs=1e-9)


def test_conformal_sets_cover_at_the_promised_rate_on_average():
    """Split conformal's guarantee is marginal: over many validation/test draws the coverage averages
    at least the target (and not much more: LAC sets are tight)."""
    coverages = []
    for seed in range(20):
        val, test = synthetic(300, seed=2 * seed), synthetic(1000, seed=2 * seed + 1)
        t = conformal_set_threshold(val.raw_probs, val.targets, 0.8)
        lo_hi = conformal_interval(test.raw_probs, t)
        coverages.append(float(((lo_hi[:, 0] <= test.targets) & (test.targets <= lo_hi[:, 1])).double().mean()))
    mean = sum(coverages) / len(coverages)
    assert 0.8 - 0.01 <= mean <= 0.9, coverages


def test_every_promise_is_met_within_its_bound_on_a_test_split_like_validation():
    promises = fit_on_predictions(synthetic(600, seed=1), target_accuracy=0.8, verdict_accuracy=0.95)
    assert promises["accepted"]["threshold"] < 1.0 and promises["verdicts"]["match_threshold"] < 1.0  # not vacuous
    checked = check_promises(promises, synthetic(2000, seed=2))
    for key in ("interval", "accepted", "verdicts"):
        entry = checked[key]
        assert entry["status"] in ("met", "within bound"), entry
        assert entry["ci95"][1] >= entry["promised"] and entry["n"] > 500
    assert not broken_promises({"promises": checked})


def test_a_shifted_test_split_breaks_the_promises_and_the_report_says_so(tmp_path):
    val = synthetic(600, seed=1)
    promises = fit_on_predictions(val, target_accuracy=0.8, verdict_accuracy=0.95)
    harder = synthetic(2000, shift=-1.0, seed=4)  # more items: the model sees one fewer than there are
    metrics = write_report(harder, tmp_path, K + 2, {"eval_dir": "x"}, val=val, promises=promises)
    assert {k: metrics["promises"][k]["status"] for k in ("interval", "accepted", "verdicts")} == dict.fromkeys(
        ("interval", "accepted", "verdicts"), "broken")
    kinds = [w["kind"] for w in metrics["warnings"]]
    assert kinds.count("promise_broken") == 3 and kinds == [w["kind"] for w in honesty_warnings(metrics)]
    table = summary_table(metrics)
    assert "Promise broken: the count interval covers the true count 80 %" in table and "BROKEN" in table
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["promises"]["interval"]["delivered"] < 0.8 and saved["check"]["fitted_on"] == "validation split"


def test_fitted_promises_travel_in_the_artifact_and_old_artifacts_answer_as_before(tmp_path):
    from src.inference.artifact import check_answers, export_artifact, read_config
    from src.inference.predictor import CountPredictor
    from src.training.answers import fit_answer_settings
    from tests.helpers import IMAGE_SIZE, tiny_net

    g = torch.Generator().manual_seed(5)
    targets = torch.randint(0, 6, (800,), generator=g)
    logits = torch.randn(800, 6, generator=g)
    logits[torch.arange(800), targets] += 4.0
    fitted = fit_answer_settings(logits, targets, "argmax", False, target_accuracy=0.9, verdict_precision=0.9)
    promises = fitted["promises"]
    assert promises["n"] == 800 and promises["scores"] == "raw" and promises["interval"]["target"] == 0.8
    assert 0.0 < promises["interval"]["set_threshold"] < 1.0 and promises["accepted"]["threshold"] <= 1.0
    new = export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", tmp_path / "new", tarball=False, answers=fitted)
    old_answers = {k: v for k, v in fitted.items() if k != "promises"}
    old = export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", tmp_path / "old", tarball=False, answers=old_answers)
    assert read_config(new)["promises"] == json.loads(json.dumps(promises)) and "promises" not in read_config(old)
    batch = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    a = CountPredictor.from_model_dir(old, channels_last=False).predict_batch(batch, expected=[0, 1, 2, 3])
    b = CountPredictor.from_model_dir(new, channels_last=False).predict_batch(batch, expected=[0, 1, 2, 3])
    assert a == b  # the promises change nothing a served answer says
    config = read_config(new)
    for bad in ({**promises, "interval": {"target": 1.5, "set_threshold": 0.2}},
                {**promises, "accepted": {"target": 0.9, "threshold": "high"}}, [1, 2]):
        with pytest.raises(ValueError, match="promises"):
            check_answers({**config, "promises": bad})


def _constant_artifact(path, bias: list[float]):
    """A model that answers the same distribution for every photo (its head's weights zeroed)."""
    from src.inference.artifact import export_artifact
    from tests.helpers import IMAGE_SIZE, tiny_net

    net = tiny_net(1)
    with torch.no_grad():
        net.head.fc.weight.zero_()
        net.head.fc.bias.copy_(torch.tensor(bias))
    return export_artifact(net, IMAGE_SIZE, "argmax", path, tarball=False)


def test_evaluate_flags_a_broken_promise_when_test_bins_hold_more_items_than_validation(tmp_path):
    """evaluate.py end to end: promises fitted on val_dir (bins of 0..2 items), checked on a test
    folder like it (kept) and on one of 3..5 items (broken, with the banner's warning)."""
    from src.data.synthetic import make_imagefolder
    from src.evaluation.runner import evaluate

    few = (0.4, 0.3, 0.3, 0.0, 0.0, 0.0)
    many = (0.0, 0.0, 0.0, 0.4, 0.3, 0.3)
    make_imagefolder(tmp_path / "few", {"val": 30, "test": 30}, image_size=64, seed=2, class_probs=few, workers=1)
    make_imagefolder(tmp_path / "many", {"test": 30}, image_size=64, seed=3, class_probs=many, workers=1)
    model = _constant_artifact(tmp_path / "model", [2.0, 1.5, 1.0, -1.0, -2.0, -3.0])
    kept = evaluate(tmp_path / "few" / "test", tmp_path / "kept", model_dir=model, val_dir=tmp_path / "few" / "val",
                    batch_size=16, print_table=False)
    assert kept["promises"]["fitted_on"].startswith("val_dir") and kept["val_dir"].endswith("val")
    assert kept["promises"]["interval"]["status"] == "met" and not broken_promises(kept)
    broke = evaluate(tmp_path / "many" / "test", tmp_path / "broke", model_dir=model,
                     val_dir=tmp_path / "few" / "val", batch_size=16, print_table=False)
    assert broke["promises"]["interval"]["status"] == "broken" and broke["promises"]["interval"]["delivered"] == 0.0
    assert "promise_broken" in [w["kind"] for w in broke["warnings"]]
    html = (tmp_path / "broke" / "report.html").read_text()
    assert "Promise broken" in html and 'id="promises"' in html


def test_the_binomial_tail_matches_scipy_on_both_sides():
    from scipy.stats import binom

    from src.inference.calibration import binomial_cdf

    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 2000, (1,), generator=g))
        k = int(torch.randint(-1, n + 1, (1,), generator=g))
        p = float(torch.rand(1, generator=g))
        assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), abs=1e-9)


def test_learn_then_test_keeps_its_promise_in_all_but_a_few_validation_draws():
    """Learn then Test's guarantee: with probability >= 1 - delta (95 %) over the validation draw the
    accepted answers' true accuracy is at least the target. Over 40 draws, judged on 20,000 images
    each, at most a handful may fall short (expected: at most 2)."""
    from src.inference.calibration import ltt_threshold

    big = synthetic(20000, seed=999)
    conf_big = big.raw_probs.gather(1, big.counts[:, None])[:, 0]
    right_big = big.counts == big.targets
    short, accepted = 0, []
    for seed in range(40):
        val = synthetic(400, seed=1000 + seed)
        conf = val.raw_probs.gather(1, val.counts[:, None])[:, 0]
        t = ltt_threshold(conf, val.counts == val.targets, 0.8)
        kept = conf_big >= t
        accepted.append(float(kept.double().mean()))
        short += bool(kept.any()) and float(right_big[kept].double().mean()) < 0.8
    assert short <= 4 and min(accepted) > 0.1  # kept, and not by accepting nothing


def test_a_weak_model_promises_nothing_rather_than_something_false():
    weak = synthetic(600, noise=2.0, seed=5)
    promises = fit_on_predictions(weak, target_accuracy=0.95, verdict_accuracy=0.99)
    assert promises["accepted"]["threshold"] > 1.0 and promises["verdicts"]["match_threshold"] > 1.0
    checked = check_promises(promises, synthetic(600, noise=2.0, seed=6))
    assert checked["accepted"]["status"] == checked["verdicts"]["status"] == "vacuous"
    assert checked["accepted"]["n"] == 0 and not broken_promises({"promises": checked})
    from src.evaluation.report import promise_lines

    assert "VACUOUS (nothing decided" in "\n".join(promise_lines({"promises": checked}))


def test_the_served_interval_is_reported_with_its_coverage_beside_the_promised_one(tmp_path):
    val, test = synthetic(400, seed=11), synthetic(800, noise=1.0, seed=12)  # harder: the heuristic over-promises
    metrics = write_report(test, tmp_path, K + 2, {"eval_dir": "x"}, val=val, promises=fit_on_predictions(val))
    served = metrics["answer_interval"]
    from src.models.counting import count_interval

    lo_hi = count_interval(test.probs, 0.8)
    by_hand = ((lo_hi[:, 0] <= test.targets) & (test.targets <= lo_hi[:, 1])).double().mean()
    assert served["coverage"] == pytest.approx(float(by_hand)) and served["n"] == 800
    assert "interval (shortest run, calibrated; no guarantee) covers" in summary_table(metrics)


def test_training_fits_promises_from_a_folder_with_every_count(tmp_path):
    """fit_on_folder (what train.py's artifact export calls): folders 7/, 8/ read into the tail keep
    their exact counts for the verdicts' check set; the promises validate and travel in the artifact."""
    from src.data.synthetic import make_imagefolder
    from src.inference.artifact import check_promises as valid
    from src.models.backbones import CountNet
    from src.training.answers import fit_answer_settings, fit_on_folder
    from tests.helpers import IMAGE_SIZE

    val = make_imagefolder(tmp_path, {"val": 40}, image_size=64, seed=9, max_items=8, workers=1) / "val"
    torch.manual_seed(0)
    net = CountNet("resnet18", weights=None, max_count=5, tail=True, input_size=IMAGE_SIZE).eval()
    fitted = fit_on_folder(net, None, "argmax", val, overflow=True, batch_size=20)
    promises = fitted["promises"]
    assert promises["n"] == 40 and promises["split"] == "val"
    assert promises["verdicts"]["n_check"] == 40  # the 6/, 7/, 8/ bins too: their folders name their counts
    assert any(p.parent.name in ("6", "7", "8") for p in val.rglob("*.jpg"))
    no_names = fit_answer_settings(torch.randn(40, 7), torch.tensor([6] * 10 + [0, 1, 2, 3, 4, 5] * 5), "argmax", True,
                                   0.9, 0.9)["promises"]
    assert no_names["verdicts"]["n_check"] == 30  # without folder names the tail's bins have no exact count
    valid(promises)
    assert 0.0 <= promises["interval"]["set_threshold"] <= 1.0
