"""evaluate.py: metrics against hand-computed values, the report files, bad images, real ABID."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.synthetic import make_imagefolder
from src.evaluation.report import build_metrics, summary_table, write_report
from src.evaluation.runner import evaluate
from src.inference.artifact import export_artifact
from src.inference.folder import FolderPredictions
from src.models.backbones import CountNet
from tests.helpers import IMAGE_SIZE, compose_cfg, fake_checkpoint, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", tmp_path_factory.mktemp("eval") / "model")


def hand_set() -> FolderPredictions:
    targets = torch.tensor([0, 1, 2, 3, 3, 5])
    counts = torch.tensor([0, 2, 2, 3, 1, 5])
    probs = torch.nn.functional.one_hot(counts, 6).float() * 0.5 + 0.5 / 6
    return FolderPredictions([f"{t}/img{i}.jpg" for i, t in enumerate(targets.tolist())], targets, probs, counts)


def test_metrics_match_hand_computed_values():
    m = build_metrics(hand_set(), 6)
    # errors (pred - true): 0, +1, 0, 0, -2, 0
    assert m["n"] == 6
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 6))
    assert m["mae"] == pytest.approx(3 / 6)
    assert m["within1"] == pytest.approx(5 / 6)
    assert m["acc_class_3"] == pytest.approx(0.5) and m["rmse_class_3"] == pytest.approx(math.sqrt(2))
    assert m["acc_class_1"] == 0.0 and m["rmse_class_1"] == pytest.approx(1.0)
    assert "acc_class_4" not in m and m["per_class"]["4"] == {"n": 0, "acc": None, "rmse": None}
    cm = np.zeros((6, 6), dtype=int)
    for t, p in [(0, 0), (1, 2), (2, 2), (3, 3), (3, 1), (5, 5)]:
        cm[t, p] += 1
    assert m["confusion_matrix"] == cm.tolist()
    # Constants on the same images: "3" is the majority (2/6); "2" has the lowest RMSE (mean 2.33):
    # always 2 -> squared errors 4,1,0,1,1,9 -> sqrt(16/6); always 3 -> 9,4,1,0,0,4 -> sqrt(18/6).
    const = m["constant_predictor"]
    assert const["majority"]["count"] == 3 and const["majority"]["acc"] == pytest.approx(2 / 6)
    assert const["best_rmse"]["count"] == 2 and const["best_rmse"]["rmse"] == pytest.approx(math.sqrt(16 / 6))


def test_table_sets_model_beside_baseline_and_constants():
    table = summary_table(build_metrics(hand_set(), 6))
    header, _, acc, rmse = table.splitlines()[:4]
    assert "abid baseline" in header and "always 3 (majority)" in header and "always 2 (min RMSE)" in header
    assert acc.split() == ["accuracy", "%", "66.7", "55.7", "33.3", "16.7"]
    assert rmse.split()[1:3] == ["0.913", "0.930"]
    assert "97.7" in table and "1.311" in table and "n = 6 images" in table


def test_report_files(tmp_path):
    pred = hand_set()
    write_report(pred, tmp_path, 6, {"eval_dir": "x"})
    with open(tmp_path / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == pred.names
    assert [int(r["true_count"]) for r in rows] == pred.targets.tolist()
    assert [int(r["pred_count"]) for r in rows] == pred.counts.tolist()
    assert float(rows[1]["p2"]) == pytest.approx(0.5 + 0.5 / 6, abs=1e-6) == float(rows[1]["confidence"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["acc"] == pytest.approx(4 / 6) and saved["eval_dir"] == "x"
    for png in ("confusion_matrix.png", "per_class_accuracy.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC


def test_evaluate_excludes_unreadable_images(model_dir, tmp_path):
    data = make_imagefolder(tmp_path / "data", {"test": 14}, image_size=80, seed=4) / "test"
    (data / "2" / "empty.jpg").write_bytes(b"")
    (data / "3" / "cut.jpg").write_bytes((data / "0").glob("*.jpg").__next__().read_bytes()[:300])
    # A valid header and end marker around garbage: passes the cheap check, fails to decode.
    (data / "4" / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(500) + b"\xff\xd9")
    (data / "7").mkdir()  # not a count 0..5: ignored
    (data / "7" / "x.jpg").write_bytes((data / "1").glob("*.jpg").__next__().read_bytes())
    metrics = evaluate(data, tmp_path / "out", model_dir=model_dir, batch_size=4, print_table=False)
    assert metrics["n"] == 14
    assert sorted(s["name"] for s in metrics["skipped"]) == ["2/empty.jpg", "3/cut.jpg", "4/garbage.jpg"]
    assert metrics["n_skipped"] == 3
    # Recompute from predictions.csv independently of the metrics code.
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14
    t = np.array([int(r["true_count"]) for r in rows])
    p = np.array([int(r["pred_count"]) for r in rows])
    assert t.tolist() == [int(r["name"].split("/")[0]) for r in rows]
    assert metrics["acc"] == pytest.approx((t == p).mean())
    assert metrics["rmse"] == pytest.approx(np.sqrt(((t - p) ** 2).mean()))
    assert metrics["within1"] == pytest.approx((np.abs(t - p) <= 1).mean())
    probs = np.array([[float(r[f"p{c}"]) for c in range(6)] for r in rows])
    assert (probs.argmax(1) == p).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert metrics["model"]["net"]["name"] == "torchvision/resnet18" and metrics["images_per_s"] > 0


def test_evaluate_errors_name_the_fix(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="eval_dir="):
        evaluate(tmp_path / "nowhere", tmp_path / "out", model_dir=model_dir)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate(tmp_path, tmp_path / "out", model_dir=model_dir, ckpt_path=tmp_path / "x.ckpt")


def test_evaluate_entry_with_a_checkpoint(tmp_path, capsys):
    """evaluate.py's body on its real config (composed as Hydra would): ckpt_path + eval_dir."""
    import evaluate as evaluate_script

    data = make_imagefolder(tmp_path / "data", {"test": 8}, image_size=64, seed=5) / "test"
    ckpt = fake_checkpoint(tiny_net(3), tmp_path / "epoch_000.ckpt")
    out = tmp_path / "run"
    cfg = compose_cfg("evaluate", [f"ckpt_path={ckpt}", f"eval_dir={data}", "num_workers=0", f"output_dir={out}"])
    assert cfg.backend == "torch" and cfg.model_dir is None
    evaluate_script.run(cfg)
    printed = capsys.readouterr().out
    # Synthetic images: the published baseline (real photos) is not set beside them.
    assert "abid baseline" not in printed and "no published baseline" in printed and "n = 8 images" in printed
    assert "model: torchvision/resnet18, 64 px" in printed.splitlines()[0]
    for name in ("predictions.csv", "metrics.json", "confusion_matrix.png", "per_class_accuracy.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 8 and saved["model"]["ckpt_path"] == str(ckpt)
    assert saved["model"]["net"]["name"] == "torchvision/resnet18" and saved["model"]["image_size"] == IMAGE_SIZE


def test_evaluate_default_eval_dir_is_the_prepared_test_split():
    cfg = compose_cfg("evaluate", ["data=synthetic"])
    assert cfg.eval_dir == f"{cfg.data.data_dir}/test" and cfg.val_dir is None
    assert compose_cfg("evaluate", ["val_dir=/data/val"]).val_dir == "/data/val"  # reaches evaluate(val_dir=...)
    import inspect

    assert "val_dir" in inspect.signature(evaluate).parameters


def abid_folder(shared_abid: Path, dest: Path, per_class: int = 3) -> Path:
    """A 0..5 folder of real ABID images, copied from the shared sample via its metadata (copies,
    not symlinks: evaluation never follows a link out of its folder)."""
    picked = {c: 0 for c in range(6)}
    for meta in sorted((shared_abid / "metadata").glob("*.json")):
        count = json.loads(meta.read_text()).get("EXPECTED_QUANTITY")
        image = shared_abid / "bin-images" / f"{meta.stem}.jpg"
        if count in picked and picked[count] < per_class and image.is_file():
            (dest / str(count)).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dest / str(count) / image.name)
            picked[count] += 1
        if all(v == per_class for v in picked.values()):
            break
    assert all(v == per_class for v in picked.values()), picked
    return dest


def test_evaluate_on_real_abid_images(shared_abid, model_dir, tmp_path):
    data = abid_folder(shared_abid, tmp_path / "abid")
    metrics = evaluate(data, tmp_path / "out", model_dir=model_dir, batch_size=6, print_table=False)
    assert metrics["n"] + metrics["n_skipped"] == 18
    assert metrics["n"] >= 15
    assert [sum(row) for row in metrics["confusion_matrix"]] == [
        metrics["per_class"][str(c)]["n"] for c in range(6)
    ]
    assert metrics["constant_predictor"]["majority"]["acc"] == pytest.approx(1 / 6, abs=0.1)
    assert (tmp_path / "out" / "confusion_matrix.png").is_file()


def _always_zero_model(path: Path, provenance: dict | None) -> Path:
    """An artifact whose network answers 0 for every photo (its last linear layer: zero weights, a
    bias for class 0), with ``provenance`` written into model_config.json as train.py records it."""
    net = tiny_net(3)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([10.0] + [0.0] * (last.bias.numel() - 1)))
    model_dir = export_artifact(net, IMAGE_SIZE, "argmax", path)
    if provenance is not None:
        config = json.loads((model_dir / "model_config.json").read_text())
        config["provenance"] = provenance
        (model_dir / "model_config.json").write_text(json.dumps(config, indent=2))
    return model_dir


def _photos_folder(tmp_path: Path, synthetic_dir: Path) -> Path:
    """Real ABID photos where the team's sample is present, else synthetic bins renamed like photos."""
    from tests.helpers import SHARED_ABID

    if (SHARED_ABID / "metadata").is_dir():
        return abid_folder(SHARED_ABID, tmp_path / "photos")
    for src in sorted((synthetic_dir / "test").rglob("*.jpg"))[:30]:
        dest = tmp_path / "photos" / src.parent.name / src.name.replace("syn-", "bin-")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return tmp_path / "photos"


def test_a_synthetic_model_worse_than_the_constant_on_photos_is_called_out(tmp_path, synthetic_dir, capsys):
    """evaluate.py prints the warning and report.html shows it as a banner, with the provenance."""
    import evaluate as evaluate_script

    provenance = {"version": "0.3.0", "code": {"commit": "0123456789abcdef", "dirty": False},
                  "created": "2026-12-06T03:00:00Z", "data": {"source": "data/synthetic", "kind": "synthetic"},
                  "test_metrics": {"test/acc": 0.848, "test/rmse": 0.396}}
    model_dir = _always_zero_model(tmp_path / "model", provenance)
    photos = _photos_folder(tmp_path, synthetic_dir)
    out = tmp_path / "run"
    cfg = compose_cfg("evaluate", [f"model_dir={model_dir}", f"eval_dir={photos}", "num_workers=0", f"output_dir={out}"])
    metrics = evaluate_script.run(cfg)
    printed = capsys.readouterr().out
    assert metrics["eval_data"] == "photos" and metrics["baseline"] is not None
    assert "WARNING: This model is worse than the constant predictor on these images" in printed
    assert "trained on synthetic bins only" in printed
    assert "trained on: synthetic (data/synthetic)" in printed and "bincount 0.3.0, commit 0123456789" in printed
    assert "its test split: accuracy 84.8 %, RMSE 0.396" in printed
    kinds = [w["kind"] for w in json.loads((out / "metrics.json").read_text())["warnings"]]
    assert "worse_than_constant" in kinds and "synthetic_model" in kinds
    html = (out / "report.html").read_text()
    banner = html[html.index('id="warnings"'):html.index("</div>", html.index('id="warnings"'))]
    assert "worse than the constant predictor" in banner and "trained on synthetic bins only" in banner
    assert 'id="provenance"' in html and "0123456789" in html


def test_a_good_model_gets_no_warning_and_synthetic_numbers_no_published_baseline(tmp_path):
    """The hand set's model beats both constants: no banner, no WARNING line. On synthetic names the
    abid_challenge baseline (real photos) appears nowhere: not in the table, the tiles or the plot."""
    from src.evaluation.html_report import write_html_report

    pred = hand_set()
    pred.names = [f"{t}/syn-test-{i:06d}.jpg" for i, t in enumerate(pred.targets.tolist())]
    metrics = write_report(pred, tmp_path, 6, {"eval_dir": str(tmp_path / "nowhere")})
    assert metrics["warnings"] == [] and metrics["eval_data"] == "synthetic" and metrics["baseline"] is None
    table = summary_table(metrics)
    assert "WARNING" not in table and "abid baseline" not in table and "55.7" not in table
    html = write_html_report(pred, metrics, tmp_path, tmp_path).read_text()
    assert 'id="warnings"' not in html and "worse than the constant" not in html
    assert "abid_challenge ResNet-34 (published" not in html and "55.67" not in html and "No published baseline here" in html


def test_calibration_worse_and_missed_promises_are_reported():
    from src.evaluation.report import honesty_warnings

    metrics = {"acc": 0.6, "rmse": 0.8, "constant_predictor": {"majority": {"count": 3, "acc": 0.3},
                                                               "best_rmse": {"count": 2, "rmse": 1.4}},
               "calibration": {"ece_before": 0.05, "ece_after": 0.12},
               "selective": {"review_share": 0.4, "accepted_accuracy": 0.71, "review_threshold": 0.6},
               "reconciliation": {"all": {"match_precision": 0.95, "mismatch_precision": 0.62}},
               "model": {"calibration": {"target_accuracy": 0.9, "verdict_precision": 0.9}}}
    texts = {w["text"] for w in honesty_warnings(metrics)}
    assert any("Calibration made the confidence worse" in t and "0.050 raw -> 0.120" in t for t in texts)
    assert any("accepted answers (not sent to review) are 71.0 % right here" in t and "90.0 %" in t for t in texts)
    assert any("'mismatch' verdicts are 62.0 % right" in t for t in texts)
    assert not any("'match' verdicts" in t for t in texts) and not any("constant" in t for t in texts)
    # Kept promises, and an artifact that promised nothing, give no warning.
    metrics["calibration"]["ece_after"] = 0.03
    metrics["selective"]["accepted_accuracy"] = 0.93
    metrics["reconciliation"]["all"]["mismatch_precision"] = 0.91
    assert honesty_warnings(metrics) == []
    metrics["selective"]["accepted_accuracy"] = 0.5
    metrics["model"] = {}
    assert honesty_warnings(metrics) == []
    table_lines = summary_table({**hand_metrics_with_answers(), "model": {"calibration": {"target_accuracy": 0.9}}})
    assert "sent to review 40.0 %; accuracy of the accepted answers 71.0 %, target 90.0 % (MISSED)" in table_lines


def hand_metrics_with_answers() -> dict:
    m = build_metrics(hand_set(), 6)
    m["calibration"] = {"ece_before": 0.1, "ece_after": 0.05}
    m["selective"] = {"acc_at_50": 0.9, "acc_at_80": 0.8, "review_share": 0.4, "accepted_accuracy": 0.71,
                      "review_threshold": 0.6}
    m["reconciliation"] = {"off_by_1": {"roc_auc": 0.7}, "off_by_2": {"roc_auc": 0.8},
                           "all": {"mismatch_precision": 0.9, "mismatch_recall": 0.3, "review_share": 0.5}}
    return m


def test_missing_eval_folder_names_the_data_option_the_model_was_trained_with(tmp_path):
    """The quickstart model (data=synthetic) on evaluate.py's default data/abid/test: the error says
    data=synthetic, read from the run's Hydra record (older artifacts) or the artifact's provenance."""
    import evaluate as evaluate_script

    run = tmp_path / "logs" / "train" / "runs" / "2026-12-06_03-00-00"
    model_dir = export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", run / "model")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      data: synthetic\n      model: resnet18\n")
    cfg = compose_cfg("evaluate", [f"model_dir={model_dir}", f"eval_dir={tmp_path}/data/abid/test"])
    with pytest.raises(FileNotFoundError, match="trained on synthetic data: add data=synthetic to evaluate"):
        evaluate_script.run(cfg)
    # Provenance wins over the run record; a model trained on a prepared folder gets eval_dir=<folder>/test.
    prepared = tmp_path / "my_abid"
    (prepared / "test").mkdir(parents=True)
    config = json.loads((model_dir / "model_config.json").read_text())
    config["provenance"] = {"data": {"kind": "prepared", "source": str(prepared)}}
    (model_dir / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=f"trained on prepared data: add eval_dir={prepared}/test"):
        evaluate_script.run(cfg)
    # Nothing known: the generic fix, which still names data=synthetic for the quickstart model.
    bare = export_artifact(tiny_net(3), IMAGE_SIZE, "argmax", tmp_path / "bare" / "model")
    with pytest.raises(FileNotFoundError, match="data=synthetic for the quickstart model.*prepare_data.py"):
        evaluate_script.run(compose_cfg("evaluate", [f"model_dir={bare}", f"eval_dir={tmp_path}/none"]))


# -- both levels: every count (hard) and 0..5 (moderate) -----------------------------------------
def test_levels_against_hand_computed_values_with_a_tail():
    """A 0..3 model with a tail: folders 7/ and 12/ are read into the tail; the hard level scores the
    tail answer as 4 (its first count) against the folder's count."""
    from src.evaluation.levels import level_metrics

    names = ["0/a.jpg", "2/b.jpg", "3/c.jpg", "7/d.jpg", "12/e.jpg", "4plus/f.jpg"]
    targets = torch.tensor([0, 2, 4, 4, 4, 4])  # class indices: the tail is class 4
    counts = torch.tensor([0, 3, 4, 4, 2, 4])
    probs = torch.nn.functional.one_hot(counts, 5).float()
    pred = FolderPredictions(names, targets, probs, counts, settings={"max_count": 3, "overflow": True})
    m = level_metrics(pred)
    assert m["tail_point"] == 4 and m["n_unknown_count"] == 1  # 4plus/: no exact count, left out
    hard = m["hard"]
    # points 0, 3, 4, 4, 2 against counts 0, 2, 3, 7, 12: errors 0, 1, 1, -3, -10
    assert hard["n"] == 5 and hard["acc"] == pytest.approx(1 / 5) and hard["mae"] == pytest.approx(15 / 5)
    assert hard["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1 + 9 + 100) / 5)) and hard["within1"] == pytest.approx(3 / 5)
    assert hard["constant"]["count"] == 3  # median of 0, 2, 3, 7, 12
    assert hard["constant"]["mae"] == pytest.approx((3 + 1 + 0 + 4 + 9) / 5)
    assert hard["buckets"]["0..5"]["n"] == 3 and hard["buckets"]["6..10"]["n"] == 1 and hard["buckets"]["11+"]["n"] == 1
    assert hard["buckets"]["11+"]["rmse"] == pytest.approx(10.0)
    moderate = m["moderate"]
    assert moderate["n"] == 3 and moderate["acc"] == pytest.approx(1 / 3) and moderate["constant"]["count"] == 2


def test_the_moderate_task_restricts_answers_to_0_to_5_and_a_0_to_5_model_has_no_such_row():
    """Bins of 2 and 5 items answered 7 as served (mass above 5), but within 0..5 the model's own
    distribution says 2 and 4: the moderate task scores those, the moderate level the served answers."""
    from src.evaluation.levels import level_metrics

    names = ["2/a.jpg", "5/b.jpg", "9/c.jpg"]
    targets = torch.tensor([2, 5, 9])
    probs = torch.zeros(3, 11)
    probs[0, [2, 7]] = torch.tensor([0.3, 0.7])
    probs[1, [3, 4, 7]] = torch.tensor([0.1, 0.3, 0.6])
    probs[2, 9] = 1.0
    pred = FolderPredictions(names, targets, probs, probs.argmax(1), raw_probs=probs,
                             settings={"max_count": 10, "overflow": False, "decision_rule": "argmax"})
    m = level_metrics(pred)
    assert m["moderate"]["n"] == 2 and m["moderate"]["acc"] == 0.0 and m["moderate"]["rmse"] == pytest.approx(math.sqrt((25 + 4) / 2))
    task = m["moderate_task"]
    assert task["n"] == 2 and task["acc"] == pytest.approx(0.5) and task["rmse"] == pytest.approx(math.sqrt(1 / 2))
    pred6 = FolderPredictions(names[:2], targets[:2], probs[:2, :6], probs[:2, :6].argmax(1), settings={"max_count": 5})
    assert "moderate_task" not in level_metrics(pred6)


@pytest.fixture(scope="module")
def allcount_folder(tmp_path_factory) -> Path:
    """Synthetic bins of 0..8 items."""
    return make_imagefolder(tmp_path_factory.mktemp("allcount"), {"test": 36}, image_size=64, seed=6, max_items=8,
                            workers=1) / "test"


def test_a_0_to_5_model_reports_bins_above_its_range_as_out_of_range(model_dir, allcount_folder, tmp_path):
    above = {f.name: len(list(f.glob("*.jpg"))) for f in allcount_folder.iterdir() if f.is_dir() and int(f.name) > 5}
    assert sum(above.values()) > 0
    m = evaluate(allcount_folder, tmp_path / "out", model_dir=model_dir, batch_size=16, print_table=False)
    levels = m["levels"]
    assert levels["out_of_range"]["n"] == sum(above.values()) and not levels["hard"]["complete"]
    assert m["n"] == levels["hard"]["n"] == levels["moderate"]["n"]  # only 0..5 scored
    assert "out_of_range" in [w["kind"] for w in m["warnings"]]
    assert "out of range, not scored" in summary_table(m)


def test_a_tail_model_is_scored_on_every_count_and_predictions_csv_holds_the_distribution(allcount_folder, tmp_path):
    torch.manual_seed(2)
    net = CountNet("resnet18", weights=None, max_count=5, tail=True, input_size=IMAGE_SIZE).eval()
    model = export_artifact(net, IMAGE_SIZE, "argmax", tmp_path / "tail", tarball=False)
    m = evaluate(allcount_folder, tmp_path / "out", model_dir=model, batch_size=16, print_table=False)
    assert m["levels"]["hard"]["complete"] and m["levels"]["hard"]["n"] == m["n"] == 36
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {f"p_{k}" for k in range(6)} | {"p_gt5", "count", "point_count"} <= rows[0].keys()
    truth = np.array([int(r["count"]) for r in rows])
    point = np.array([int(r["point_count"]) for r in rows])
    assert truth.tolist() == [int(r["name"].split("/")[0]) for r in rows] and truth.max() > 5
    assert point.max() <= 6  # the tail answers its first count
    dist = np.array([[float(r[f"p_{k}"]) for k in range(6)] + [float(r["p_gt5"])] for r in rows])
    assert np.allclose(dist.sum(1), 1, atol=1e-4)
    hard = m["levels"]["hard"]
    assert hard["rmse"] == pytest.approx(np.sqrt(((point - truth) ** 2).mean()))
    assert hard["within1"] == pytest.approx((np.abs(point - truth) <= 1).mean())
    moderate = truth <= 5
    assert m["levels"]["moderate"]["acc"] == pytest.approx((point[moderate] == truth[moderate]).mean())
    # Any expected quantity can be scored from the file: P(count > 5) for a record of 7 is p_gt5.
    assert m["check"]["n"] == 36 and "auto_95" in m["check"] and m["check"]["fitted_on"] == "same images (a ceiling)"
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="levels"' in html and 'id="check"' in html
