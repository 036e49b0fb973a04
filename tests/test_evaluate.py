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
    assert metrics["model"]["net"]["name"] == "resnet18" and metrics["images_per_s"] > 0


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
    assert "abid baseline" in printed and "n = 8 images" in printed
    for name in ("predictions.csv", "metrics.json", "confusion_matrix.png", "per_class_accuracy.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 8 and saved["model"]["ckpt_path"] == str(ckpt)
    assert saved["model"]["net"]["name"] == "resnet18" and saved["model"]["image_size"] == IMAGE_SIZE


def test_evaluate_default_eval_dir_is_the_prepared_test_split():
    cfg = compose_cfg("evaluate", ["data=synthetic"])
    assert cfg.eval_dir == f"{cfg.data.data_dir}/test"


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
