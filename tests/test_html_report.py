"""report.html: worst-mistake order, escaping of file names, self-contained, numbers = metrics.json."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.evaluation.html_report import worst_mistakes, write_html_report
from src.evaluation.report import write_report
from src.inference.folder import FolderPredictions
from tests.helpers import HTML_NAME


def predictions(names: list[str], targets: list[int], probs: list[list[float]]) -> FolderPredictions:
    p = torch.tensor(probs)
    return FolderPredictions(names, torch.tensor(targets), p, p.argmax(1))


def one_hot_ish(k: int, p: float) -> list[float]:
    rest = (1 - p) / 5
    return [p if c == k else rest for c in range(6)]


def test_worst_mistakes_largest_error_first_then_least_confident_in_the_truth():
    pred = predictions(
        ["right", "off_by_1_sure", "off_by_4", "off_by_1_unsure", "off_by_2"],
        [2, 2, 0, 2, 1],
        [one_hot_ish(2, 0.9), one_hot_ish(3, 0.5), one_hot_ish(4, 0.6), one_hot_ish(1, 0.95), one_hot_ish(3, 0.7)],
    )
    order = [pred.names[i] for i in worst_mistakes(pred)]
    # off_by_1_unsure gives its true count 0.01, off_by_1_sure 0.1: the lower p(true) first.
    assert order == ["off_by_4", "off_by_2", "off_by_1_unsure", "off_by_1_sure"]
    assert len(worst_mistakes(pred, limit=2)) == 2


def _images(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / name, format="JPEG")


def test_report_escapes_file_names_and_embeds_everything(tmp_path):
    names = [f"3/{HTML_NAME}", "1/a&b.jpg", "0/ok.jpg"]
    _images(tmp_path / "data", names)
    pred = predictions(names, [3, 1, 0], [one_hot_ish(0, 0.8), one_hot_ish(2, 0.6), one_hot_ish(0, 0.9)])
    metrics = write_report(pred, tmp_path / "out", 6, {"eval_dir": "<b>eval</b>"})
    html = write_html_report(pred, metrics, tmp_path / "data", tmp_path / "out").read_text()

    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    assert "<img src=x" not in html and "onerror=alert(1)>" not in html
    assert "1/a&amp;b.jpg" in html and "&lt;b&gt;eval&lt;/b&gt;" in html
    # Self-contained: nothing fetched from anywhere; the two plots and two thumbnails are data URIs.
    assert not re.search(r'(src|href)="(?!data:)', html) and "http" not in html
    assert html.count('src="data:image/png;base64,') == 2  # confusion_matrix.png, per_class_accuracy.png
    assert html.count('src="data:image/jpeg;base64,') == 2  # the two mistakes, not the right answer
    assert re.search(r'id="headline-acc">33\.3 %<', html)


def test_evaluate_writes_report_beside_metrics(html_name_evaluation):
    out = html_name_evaluation
    html = (out / "report.html").read_text()
    saved = json.loads((out / "metrics.json").read_text())
    assert f'id="headline-acc">{100 * saved["acc"]:.1f} %<' in html
    with open(out / "predictions.csv") as f:
        wrong = sum(r["true_count"] != r["pred_count"] for r in csv.DictReader(f))
    assert wrong > 0
    assert html.count('src="data:image/jpeg;base64,') == min(wrong, 24)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html


def test_overflow_class_is_shown_as_more_than_and_answer_tiles_appear():
    from src.evaluation.html_report import answer_tiles, class_labels

    metrics = {"model": {"overflow": True, "classes": list(range(7))},
               "calibration": {"ece_before": 0.221, "ece_after": 0.039}, "selective": {"acc_at_50": 0.624},
               "reconciliation": {"off_by_2": {"roc_auc": 0.79}},
               "overflow": {"overflow_precision": 0.637, "overflow_recall": 0.716}}
    assert class_labels(metrics, 7) == ["0", "1", "2", "3", "4", "5", ">5"]
    assert class_labels({"model": {"classes": list(range(6))}}, 6)[-1] == "5"
    assert answer_tiles(metrics) == {"ECE calibrated": "0.039 (raw 0.221)", "accuracy at 50 % coverage": "62.4 %",
                                     "mismatch AUC, off by 2": "0.790",
                                     "more than 5: precision / recall": "63.7 / 71.6 %"}
    assert answer_tiles({}) == {}


def test_levels_check_set_and_promises_reach_the_page_and_a_broken_promise_is_marked(tmp_path):
    from src.evaluation.html_report import level_rows, render_report

    k = 6
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 9, (60,), generator=g)
    probs = torch.softmax(torch.randn(60, k + 2, generator=g) * 3, 1)
    targets = counts.clamp(max=k + 1)
    pred = FolderPredictions([f"{c}/b{i}.jpg" for i, c in enumerate(counts.tolist())], targets, probs,
                             probs.argmax(1), logits=probs.log(), raw_probs=probs,
                             settings={"max_count": k, "overflow": True})
    promises = {"split": "val", "n": 100, "interval": {"target": 0.8, "set_threshold": 0.9}}  # sets far too small
    metrics = write_report(pred, tmp_path, k + 2, {"eval_dir": "x"}, promises=promises)
    assert metrics["promises"]["interval"]["status"] == "broken"
    rows = level_rows(metrics)
    assert [r["name"] for r in rows[:2]] == ["hard: all counts", "moderate: 0..5"] and rows[0]["v"]["n"] == 60
    html = render_report(metrics, pred, "/nonexistent", gallery_size=0)
    assert 'id="levels"' in html and 'id="check"' in html and 'id="answer-interval"' in html
    assert re.search(r'<tr class="worse"><td>the count interval covers the true count', html)
    assert 'class="status-broken">broken<' in html and "Promise broken" in html
    assert f'id="caught-20">{100 * metrics["check"]["caught_at_20"]:.1f} %<' in html
