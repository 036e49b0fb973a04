"""Answers a warehouse can act on (issue 12): the "more than five" class from preparation to the
answer, calibrated confidence, review flags, expected-quantity verdicts, the CSV manifest, and
the evaluation report's calibration / risk-coverage / reconciliation numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.data.images import CountFolder
from src.data.prepare import prepare
from src.data.synthetic import make_bucket
from src.evaluation.runner import evaluate
from src.inference.artifact import CONFIG_FILE, export_artifact, read_config
from src.inference.predictor import CountPredictor
from src.models.backbones import CountNet

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: small models run faster single-threaded
    yield
    torch.set_num_threads(before)


def net_with(num_classes: int, favourite: int | None = None, seed: int = 0) -> CountNet:
    """A random resnet18 head; ``favourite`` biases every image towards that class."""
    torch.manual_seed(seed)
    net = CountNet("resnet18", weights=None, num_classes=num_classes).eval()
    with torch.no_grad():
        net.head.fc.weight.mul_(30.0)
        if favourite is not None:
            net.head.fc.bias[favourite] += 1e4
    return net


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    """ABID's bucket layout with counts 0..12 (about half above five)."""
    root = tmp_path_factory.mktemp("bucket")
    make_bucket(root, 120, image_size=SIZE, seed=7, max_count=12, workers=1)
    return root


@pytest.fixture(scope="module")
def overflow_data(bucket, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "abid"
    prepare(source=str(bucket), output=str(out), overflow=True, progress=False, workers=2, plot=False)
    return out


@pytest.fixture(scope="module")
def images(overflow_data) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((overflow_data / "test").rglob("*.jpg"))[:4]]


# -- data ---------------------------------------------------------------------------------------
def test_prepare_keeps_bins_above_max_count_as_one_class_only_when_asked(bucket, overflow_data, tmp_path):
    truth = {p.stem: json.loads(p.read_text())["EXPECTED_QUANTITY"] for p in (bucket / "metadata").glob("*.json")}
    over = sorted((overflow_data).glob("*/6plus/*.jpg"))
    assert over and {truth[p.stem] for p in over} <= set(range(6, 13))
    assert len(over) == sum(1 for c in truth.values() if c > 5)
    for p in overflow_data.glob("*/[0-5]/*.jpg"):
        assert truth[p.stem] == int(p.parent.name)
    manifest = json.loads((overflow_data / "manifest.json").read_text())
    assert "6plus" in manifest["train"] and "6" not in manifest["train"]
    with open(overflow_data / "splits.csv") as f:
        assert {r["count"] for r in csv.DictReader(f)} == {str(c) for c in range(6)} | {"6plus"}
    stats = json.loads((overflow_data / "stats.json").read_text())
    assert stats["per_class"]["6plus"]["total"] == len(over) and stats["settings"]["overflow"] is True

    plain = prepare(source=str(bucket), output=str(tmp_path / "plain"), progress=False, workers=2, plot=False)
    assert not list((tmp_path / "plain").glob("*/6plus")) and plain.above_max_count == len(over)
    # the 0..5 images land in the same splits either way (each class is split on its own)
    assert {p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").glob("*/*/*.jpg")} == {
        p.relative_to(overflow_data) for p in overflow_data.glob("*/[0-5]/*.jpg")
    }


def test_count_folder_reads_the_overflow_folder_as_the_last_class(overflow_data):
    with_over = CountFolder(overflow_data / "train", 7, overflow=True)
    assert with_over.classes[-1] == "6plus" and 6 in with_over.targets
    assert all(Path(p).parent.name == "6plus" for p, t in with_over.samples if t == 6)
    without = CountFolder(overflow_data / "train", 6)
    assert max(without.targets) <= 5 and len(without) == sum(t <= 5 for t in with_over.targets)


# -- the predictor ------------------------------------------------------------------------------
def test_artifact_without_answer_settings_answers_as_before(tmp_path, images):
    net = net_with(6)
    model_dir = export_artifact(net, SIZE, "argmax", tmp_path / "model", tarball=False)
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    assert not {"overflow", "temperature", "review_threshold", "match_threshold"} & config.keys()
    predictor = CountPredictor.from_model_dir(model_dir)
    with torch.no_grad():
        probs = net(predictor.preprocess(images)).softmax(-1)
    results = predictor.predict(images, expected=[0, None, 3, 5])
    for r, p in zip(results, probs, strict=True):
        assert r["count"] == int(p.argmax()) and r["label"] == str(r["count"])
        assert r["confidence"] == pytest.approx(float(p.max()), abs=1e-5)
        assert r["probabilities"] == pytest.approx(p.tolist(), abs=1e-5)
        assert "review" not in r and "overflow" not in r
    assert "verdict" not in results[1]
    for r in (results[0], results[2], results[3]):  # no thresholds: match means "the answer is that count"
        assert r["verdict"] == ("match" if r["count"] == r["expected_quantity"] else "mismatch")
        assert r["p_expected"] == pytest.approx(r["probabilities"][r["expected_quantity"]])


def test_overflow_answer_is_never_an_exact_count(tmp_path, images):
    model_dir = export_artifact(net_with(7, favourite=6), SIZE, "argmax", tmp_path / "m", tarball=False,
                                answers={"overflow": True})
    config = read_config(model_dir)
    assert config["overflow"] is True and config["max_count"] == 5
    predictor = CountPredictor.from_model_dir(model_dir)
    [r] = predictor.predict(images[:1], expected=[9])
    assert r["count"] is None and r["label"] == ">5" and r["overflow"] is True
    assert len(r["probabilities"]) == 7 and r["confidence"] == r["probabilities"][-1]
    assert r["p_expected"] == r["probabilities"][-1] and r["verdict"] == "match"  # 9 is "more than 5"
    [r] = predictor.predict(images[:1], expected=[5])
    assert r["verdict"] == "mismatch"
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative integer"):
            predictor.check_expected(bad)

    plain = CountPredictor.from_model_dir(export_artifact(net_with(6), SIZE, "argmax", tmp_path / "p", tarball=False))
    with pytest.raises(ValueError, match=r"counts 0\.\.5 and has no 'more than 5' class"):
        plain.check_expected(6)
    [r] = plain.predict(images[:1])
    assert r["count"] is not None and "overflow" not in r


def test_expected_rule_answers_overflow_when_more_likely_than_not():
    from src.models.counting import predict_counts

    probs = torch.tensor([[0.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.6], [0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.4]])
    assert predict_counts(probs, "expected", overflow=True).tolist() == [6, 3]
    assert predict_counts(probs[:, :6] / probs[:, :6].sum(-1, keepdim=True), "expected").tolist() == [2, 3]


def test_temperature_calibrates_without_changing_counts_and_review_follows_confidence(tmp_path, images):
    net = net_with(6, seed=3)
    raw = CountPredictor.from_model_dir(export_artifact(net, SIZE, "expected", tmp_path / "raw", tarball=False))
    answers = {"temperature": 2.5, "review_threshold": 0.5, "match_threshold": 0.6, "mismatch_threshold": 0.1}
    model_dir = export_artifact(net, SIZE, "expected", tmp_path / "cal", tarball=False, answers=answers)
    cal = CountPredictor.from_model_dir(model_dir)
    with torch.no_grad():
        logits = net(cal.preprocess(images))
    for r0, r1, z in zip(raw.predict(images), cal.predict(images), logits, strict=True):
        assert r1["count"] == r0["count"]  # the temperature never moves a count, even with rule=expected
        assert r1["probabilities"] == pytest.approx((z / 2.5).softmax(-1).tolist(), abs=1e-5)
        assert r1["review"] == (r1["confidence"] < 0.5)


def test_verdict_flips_when_the_expected_quantity_does(tmp_path, images):
    answers = {"match_threshold": 0.6, "mismatch_threshold": 0.1}
    model_dir = export_artifact(net_with(6, favourite=2), SIZE, "argmax", tmp_path / "m", tarball=False, answers=answers)
    predictor = CountPredictor.from_model_dir(model_dir)
    right, wrong = predictor.predict(images[:1] * 2, expected=[2, 4])
    assert right["count"] == 2 and right["verdict"] == "match" and right["p_expected"] > 0.99
    assert wrong["verdict"] == "mismatch" and wrong["p_expected"] < 0.01


def test_artifact_refuses_contradicting_answer_settings(tmp_path):
    with pytest.raises(ValueError, match="needs 7 classes"):
        export_artifact(net_with(6), SIZE, "argmax", tmp_path / "a", tarball=False, answers={"overflow": True, "max_count": 5})
    with pytest.raises(ValueError, match="temperature must be a positive"):
        export_artifact(net_with(6), SIZE, "argmax", tmp_path / "b", tarball=False, answers={"temperature": -1.0})
    with pytest.raises(ValueError, match="both match_threshold and mismatch_threshold"):
        export_artifact(net_with(6), SIZE, "argmax", tmp_path / "c", tarball=False, answers={"match_threshold": 0.5})
    with pytest.raises(ValueError, match="Unknown answer setting"):
        export_artifact(net_with(6), SIZE, "argmax", tmp_path / "d", tarball=False, answers={"temprature": 1.0})


def test_export_keeps_the_answer_settings(tmp_path):
    import export

    answers = {"overflow": True, "temperature": 1.7, "review_threshold": 0.4, "match_threshold": 0.7,
               "mismatch_threshold": 0.2, "calibration": {"split": "val", "n": 10}}
    model_dir = export_artifact(net_with(7), SIZE, "argmax", tmp_path / "model", tarball=False, answers=answers)
    assert export.main(["--model-dir", str(model_dir), "--out", str(tmp_path / "again")]) == 0
    again = read_config(tmp_path / "again")
    assert {k: again[k] for k in answers} == answers and again["max_count"] == 5


# -- predict.py --manifest ----------------------------------------------------------------------
def test_manifest_gives_one_verdict_per_row_and_reports_bad_rows_in_place(tmp_path, overflow_data, capsys):
    import predict

    model_dir = export_artifact(net_with(6, favourite=3), SIZE, "argmax", tmp_path / "model", tarball=False,
                                answers={"match_threshold": 0.6, "mismatch_threshold": 0.1})
    good = sorted((overflow_data / "test").rglob("*.jpg"))[:2]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    manifest = tmp_path / "bins.csv"
    manifest.write_text(
        "image,expected_quantity\n"
        f"{good[0]},3\n"
        "broken.jpg,3\n"
        "missing.jpg,1\n"
        f"{good[1]},two\n"
        f"{good[1]},7\n"
        f"{good[1]},0\n"
    )
    out = tmp_path / "verdicts.csv"
    assert predict.main(["--model-dir", str(model_dir), "--manifest", str(manifest), "--out", str(out)]) == 1
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[0]["verdict"] == "match" and rows[0]["count"] == "3" and not rows[0]["error"]
    assert "decode" in rows[1]["error"] and "missing.jpg" in rows[2]["error"]
    assert "integer in 0..1000" in rows[3]["error"] and "'two'" in rows[3]["error"]
    assert "counts 0..5" in rows[4]["error"]
    assert rows[5]["verdict"] == "mismatch" and rows[5]["expected_quantity"] == "0"
    assert "row 2 (broken.jpg)" in capsys.readouterr().err

    bad = tmp_path / "bad.csv"
    bad.write_text("path,qty\nx.jpg,1\n")
    assert predict.main(["--model-dir", str(model_dir), "--manifest", str(bad)]) == 2
    assert "image, expected_quantity" in capsys.readouterr().err


# -- training and evaluation --------------------------------------------------------------------
def test_fitted_answer_settings_meet_their_targets_on_validation():
    from src.training.answers import fit_answer_settings

    g = torch.Generator().manual_seed(5)
    targets = torch.randint(0, 7, (1500,), generator=g)
    logits = torch.randn(1500, 7, generator=g)
    logits[torch.arange(1500), targets] += torch.rand(1500, generator=g) * 6  # informative, noisy
    logits = logits * 3  # and over-confident
    fitted = fit_answer_settings(logits, targets, "argmax", True, target_accuracy=0.9, verdict_precision=0.9)
    cal = fitted["calibration"]
    assert fitted["temperature"] > 1.5 and cal["ece_after"] < cal["ece_before"] / 2
    assert cal["accepted_accuracy"] >= 0.9 and 0.0 < cal["accepted_share"] < 1.0


def test_evaluation_reports_overflow_calibration_coverage_and_reconciliation(tmp_path, overflow_data):
    answers = {"overflow": True, "temperature": 2.0, "review_threshold": 0.6, "match_threshold": 0.7,
               "mismatch_threshold": 0.05}
    model_dir = export_artifact(net_with(7, seed=1), SIZE, "argmax", tmp_path / "m", tarball=False, answers=answers)
    out = tmp_path / "eval"
    m = evaluate(overflow_data / "test", out, model_dir=model_dir, batch_size=16, print_table=False)
    test_images = list((overflow_data / "test").rglob("*.jpg"))
    assert m["n"] == len(test_images) and {"calibration", "selective", "reconciliation", "overflow"} <= m.keys()
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    # recompute the overflow numbers from the rows, independently of the metrics code
    over_true = [r["true_label"] == ">5" for r in rows]
    over_said = [r["pred_label"] == ">5" for r in rows]
    tp = sum(a and b for a, b in zip(over_true, over_said, strict=True))
    assert m["overflow"]["n_overflow"] == sum(over_true) == len(list((overflow_data / "test" / "6plus").glob("*.jpg")))
    if any(over_said):
        assert m["overflow"]["overflow_precision"] == pytest.approx(tp / sum(over_said))
    assert m["overflow"]["overflow_recall"] == pytest.approx(tp / sum(over_true))
    assert all(r["true_count"] == "" for r, o in zip(rows, over_true, strict=True) if o)
    assert all((r["pred_count"] == "") == (r["pred_label"] == ">5") for r in rows)
    review = [r["review"] == "true" for r in rows]
    assert review == [float(r["confidence"]) < 0.6 for r in rows]
    assert m["selective"]["review_share"] == pytest.approx(sum(review) / len(rows))
    assert m["calibration"]["temperature"] == 2.0 and m["calibration"]["ece_after"] != m["calibration"]["ece_before"]
    for offset in ("off_by_1", "off_by_2"):
        rec = m["reconciliation"][offset]
        assert 0.0 <= rec["roc_auc"] <= 1.0 and rec["n"] == 2 * len(rows)
    assert m["reconciliation"]["all"]["n"] == 3 * len(rows)
    for name in ("reliability_diagram.png", "risk_coverage.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.slow  # ~25 s on two shared cores; the two tests above cover its parts quickly
def test_training_with_overflow_fits_answers_and_evaluation_reports_them(tiny_cfg, overflow_data, tmp_path):
    from src.training.pipeline import train

    cfg = tiny_cfg(f"data.data_dir={overflow_data}", "data.overflow=true", "data.num_classes=7",
                   "data.batch_size=32", "answers.target_accuracy=0.5")
    metrics, _ = train(cfg)
    config = read_config(metrics["artifact_dir"])
    assert config["overflow"] is True and config["max_count"] == 5 and len(config["classes"]) == 7
    assert config["temperature"] > 0 and 0.0 <= config["mismatch_threshold"] <= config["match_threshold"] <= 1.0
    assert config["calibration"]["n"] == len(list((overflow_data / "val").rglob("*.jpg")))

    out = tmp_path / "eval"
    m = evaluate(overflow_data / "test", out, model_dir=metrics["artifact_dir"], batch_size=16, print_table=False)
    assert m["n"] == len(list((overflow_data / "test").rglob("*.jpg")))
    assert {"calibration", "selective", "reconciliation", "overflow"} <= m.keys()
    assert m["overflow"]["n_overflow"] == len(list((overflow_data / "test" / "6plus").glob("*.jpg")))
    assert 0.0 <= m["reconciliation"]["off_by_2"]["roc_auc"] <= 1.0
    for name in ("reliability_diagram.png", "risk_coverage.png", "predictions.csv"):
        assert (out / name).stat().st_size > 0
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    over_rows = [r for r in rows if r["true_label"] == ">5"]
    assert over_rows and all(r["true_count"] == "" for r in over_rows)
    assert all((r["pred_count"] == "") == (r["pred_label"] == ">5") for r in rows)
    assert {"p_overflow", "review"} <= rows[0].keys()


def test_counts_are_decided_before_calibration_even_from_calibrated_probabilities():
    """The handler passes probabilities() to results(): the count must still be the raw one."""
    from src.inference.artifact import model_config
    from src.models.counting import predict_counts

    config = model_config(net_with(6), SIZE, "expected", {"temperature": 4.0})
    predictor = CountPredictor(net_with(6), config, channels_last=False)
    logits = torch.tensor([[10.0, 0, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 2.0]])
    calibrated = predictor.calibrate(logits)
    raw_counts = predict_counts(logits.softmax(-1), "expected")
    assert not torch.equal(predict_counts(calibrated, "expected"), raw_counts)  # the trap is real
    assert torch.equal(predictor.decide(calibrated), raw_counts)
    assert [r["count"] for r in predictor.results(calibrated)] == raw_counts.tolist()


# -- count cuts: where the expected rule's sum k * p_k turns into each count ---------------------------
def shrunk_expected_counts(n: int = 900, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected counts squeezed towards the middle, as a hedging model's are: 5 rarely reaches 4.5."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 6, (n,), generator=g)
    return (1.0 + 0.6 * y.double() + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)).clamp(0, 5), y


def test_fitted_cuts_beat_rounding_on_a_hedging_model_without_losing_rmse():
    from src.inference.calibration import fit_count_cuts

    mean, y = shrunk_expected_counts()
    cuts = fit_count_cuts(mean, y, 6)
    assert len(cuts) == 5 and cuts == sorted(cuts) and cuts[-1] < 4.5  # count 5 starts below 4.5
    rounded = mean.round().long()
    fitted = (mean[:, None] > torch.tensor(cuts, dtype=torch.float64)).sum(1)
    rmse = lambda p: float(((p - y).double() ** 2).mean().sqrt())  # noqa: E731
    assert (fitted == y).double().mean() > (rounded == y).double().mean() + 0.10
    assert rmse(fitted) <= rmse(rounded)
    # held-out data from the same model: the gain is not an artefact of fitting
    mean2, y2 = shrunk_expected_counts(seed=1)
    held = (mean2[:, None] > torch.tensor(cuts, dtype=torch.float64)).sum(1)
    assert (held == y2).double().mean() > (mean2.round().long() == y2).double().mean() + 0.05


def test_a_calibrated_model_keeps_cuts_near_rounding():
    from src.inference.calibration import fit_count_cuts

    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 6, (1200,), generator=g)
    mean = (y.double() + 0.25 * torch.randn(1200, generator=g, dtype=torch.float64)).clamp(0, 5)
    assert fit_count_cuts(mean, y, 6) == pytest.approx([0.5, 1.5, 2.5, 3.5, 4.5], abs=0.2)


def test_cuts_decide_counts_everywhere_the_artifact_is_served(tmp_path, images):
    from src.models.counting import predict_counts

    net = net_with(6, seed=4)
    plain = CountPredictor.from_model_dir(export_artifact(net, SIZE, "expected", tmp_path / "plain", tarball=False))
    cuts = [0.1, 0.2, 0.3, 0.4, 0.5]  # anything above 0.5 expected is a 5
    model_dir = export_artifact(net, SIZE, "expected", tmp_path / "cuts", tarball=False, answers={"count_cuts": cuts})
    cut = CountPredictor.from_model_dir(model_dir)
    with torch.no_grad():
        probs = net(cut.preprocess(images)).softmax(-1)
    mean = (probs * torch.arange(6)).sum(-1)
    assert [r["count"] for r in cut.predict(images)] == (mean[:, None] > torch.tensor(cuts)).sum(1).tolist()
    assert [r["count"] for r in plain.predict(images)] == predict_counts(probs, "expected").tolist()
    assert [r["count"] for r in plain.predict(images)] != [r["count"] for r in cut.predict(images)]
    with pytest.raises(ValueError, match="count_cuts go with decision_rule 'expected'"):
        export_artifact(net, SIZE, "argmax", tmp_path / "a", tarball=False, answers={"count_cuts": cuts})
    with pytest.raises(ValueError, match="5 ascending numbers"):
        export_artifact(net, SIZE, "expected", tmp_path / "b", tarball=False, answers={"count_cuts": [3, 2, 1, 4, 5]})


def test_fitted_cuts_reach_the_artifact_and_decide_the_test(tiny_cfg, synthetic_dir, tmp_path):
    """answers.count_cuts=true: fitted on val, stored with their val scores, and train.py's test
    scores exactly what the exported model answers (evaluate.py on the same split)."""
    from src.training.pipeline import train

    cfg = tiny_cfg("model.decision_rule=expected", "answers.count_cuts=true", "answers.target_accuracy=0.5")
    metrics, _ = train(cfg)
    config = read_config(metrics["artifact_dir"])
    assert len(config["count_cuts"]) == 5 and config["count_cuts"] == sorted(config["count_cuts"])
    val = config["calibration"]["count_cuts_val"]
    assert val["cuts"]["acc"] >= val["rounding"]["acc"] and val["cuts"]["rmse"] <= val["rounding"]["rmse"] + 1e-9
    m = evaluate(Path(synthetic_dir) / "test", tmp_path / "eval", model_dir=metrics["artifact_dir"], batch_size=16,
                 print_table=False)
    assert m["acc"] == pytest.approx(float(metrics["test/acc"]), abs=1e-6)
