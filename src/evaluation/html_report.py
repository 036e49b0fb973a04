"""report.html: one self-contained evaluation page beside metrics.json (opens from disk, offline).

Headline numbers beside the abid_challenge baseline and the constant predictors, the confusion
matrix, per-class accuracy and RMSE, every plot of the run folder as an embedded PNG, and a gallery
of the worst mistakes with embedded JPEG thumbnails. Rendered with Jinja2 under autoescape, so file
names (which a dataset may spell like HTML) reach the page as text, never as markup.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader

from src.data.images import load_rgb
from src.evaluation.report import BASELINE, baseline_applies, honesty_warnings
from src.inference.folder import FolderPredictions
from src.utils.provenance import describe_model

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
REPORT_FILE = "report.html"
GALLERY_SIZE = 24
THUMBNAIL_PX = 160


def class_labels(metrics: dict[str, Any], num_classes: int) -> list[str]:
    """Display names of the classes: the model's own when it lists them (e.g. ``">5"``)."""
    model = metrics.get("model") or {}
    if model.get("overflow"):  # the last class means "more than max_count": never show it as a count
        return [str(c) for c in range(num_classes - 1)] + [f">{num_classes - 2}"]
    classes = model.get("classes")
    if isinstance(classes, list) and len(classes) == num_classes:
        return [str(c) for c in classes]
    return [str(c) for c in range(num_classes)]


def warehouse_tiles(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The two numbers a warehouse acts on, as headline tiles: the share of photos sent to review, and
    the accuracy of the answers accepted without review against the target the threshold was fitted
    for (``missed`` when below it). Empty for an artifact without a review threshold."""
    sel = metrics.get("selective") or {}
    if "review_share" not in sel:
        return []
    target = ((metrics.get("model") or {}).get("calibration") or {}).get("target_accuracy")
    accepted = sel.get("accepted_accuracy")
    has_target = isinstance(target, (int, float))
    missed = has_target and (accepted is None or accepted < target)
    return [
        {"id": "headline-review", "title": "sent to review", "value": f"{100 * sel['review_share']:.1f} %",
         "note": f"below confidence {sel['review_threshold']:.3f}" if isinstance(sel.get("review_threshold"), (int, float)) else "",
         "missed": False},
        {"id": "headline-accepted", "title": "accuracy of accepted answers",
         "value": "-" if accepted is None else f"{100 * accepted:.1f} %",
         "note": (f"target {100 * target:.0f} %: " + ("missed" if missed else "met")) if has_target else "no target recorded",
         "missed": missed},
    ]


def answer_tiles(metrics: dict[str, Any]) -> dict[str, str]:
    """Headline tiles for the warehouse's numbers, where evaluate.py computed them."""
    tiles = {}
    cal, sel, rec, over = (metrics.get(k) or {} for k in ("calibration", "selective", "reconciliation", "overflow"))
    if cal.get("ece_after") is not None:
        tiles["ECE calibrated"] = f"{cal['ece_after']:.3f} (raw {cal['ece_before']:.3f})"
    if sel.get("acc_at_50") is not None:
        tiles["accuracy at 50 % coverage"] = f"{100 * sel['acc_at_50']:.1f} %"
    if (rec.get("off_by_2") or {}).get("roc_auc") is not None:
        tiles["mismatch AUC, off by 2"] = f"{rec['off_by_2']['roc_auc']:.3f}"
    if over.get("overflow_precision") is not None:
        tiles["more than 5: precision / recall"] = (
            f"{100 * over['overflow_precision']:.1f} / {100 * over['overflow_recall']:.1f} %")
    return tiles


def level_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The hard and moderate levels, then each count bucket holding images."""
    levels = metrics.get("levels")
    if not levels:
        return []
    rows = [{"name": "hard: all counts", "v": levels["hard"]}, {"name": "moderate: 0..5", "v": levels["moderate"]}]
    if "moderate_task" in levels:
        rows.append({"name": "moderate task: 0..5, answers restricted to 0..5", "v": levels["moderate_task"]})
    return rows + [{"name": f"count {name}", "v": v} for name, v in levels["hard"]["buckets"].items() if v["n"]]


def worst_mistakes(pred: FolderPredictions, limit: int = GALLERY_SIZE) -> list[int]:
    """Indices of wrong predictions: largest |predicted - true| first, then lowest p(true count)."""
    wrong = (pred.counts != pred.targets).nonzero().flatten().tolist()
    distance = (pred.counts - pred.targets).abs().tolist()
    p_true = pred.probs.gather(1, pred.targets.long()[:, None]).flatten().tolist()
    return sorted(wrong, key=lambda i: (-distance[i], p_true[i], pred.names[i]))[:limit]


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX) -> str | None:
    """A small JPEG as a data URI; None when the image cannot be read any more."""
    try:
        image = load_rgb(path)
    except (OSError, ValueError, SyntaxError) as err:
        log.warning("No thumbnail for %s: %s", path, err)
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _columns(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The compared predictors: this model, the published baseline (real photos only), the constant
    predictors."""
    consts = metrics["constant_predictor"]
    labels = class_labels(metrics, len(metrics["confusion_matrix"]))
    columns = [{"name": "this model", "values": metrics, "highlight": True}]
    if baseline_applies(metrics):
        columns.append({"name": BASELINE["name"] + " (published, real photos)", "baseline": True, "values": {
            "acc": BASELINE["acc"], "rmse": BASELINE["rmse"],
            **{f"acc_class_{c}": v for c, v in enumerate(BASELINE["acc_class"])},
            **{f"rmse_class_{c}": v for c, v in enumerate(BASELINE["rmse_class"])},
        }})
    columns.append({"name": f"always {labels[consts['majority']['count']]} (majority)", "values": consts["majority"]})
    if consts["best_rmse"]["count"] != consts["majority"]["count"]:
        columns.append({"name": f"always {labels[consts['best_rmse']['count']]} (min RMSE)", "values": consts["best_rmse"]})
    return columns


def render_report(
    metrics: dict[str, Any],
    pred: FolderPredictions,
    eval_dir: str | Path,
    plots: list[Path] = (),
    gallery_size: int = GALLERY_SIZE,
) -> str:
    num_classes = pred.probs.shape[1]
    labels = class_labels(metrics, num_classes)
    gallery = []
    for i in worst_mistakes(pred, gallery_size):
        t, c = int(pred.targets[i]), int(pred.counts[i])
        probs = pred.probs[i].tolist()
        gallery.append({
            "name": pred.names[i],
            "thumbnail": thumbnail_uri(Path(eval_dir) / pred.names[i]),
            "true": labels[t], "pred": labels[c],
            "p_true": probs[t], "p_pred": probs[c], "distance": abs(c - t),
            "bars": [{"label": labels[k], "p": p, "is_true": k == t, "is_pred": k == c} for k, p in enumerate(probs)],
        })
    cm = metrics["confusion_matrix"]
    with_baseline = baseline_applies(metrics)
    consts = metrics["constant_predictor"]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(
        m=metrics,
        labels=labels,
        columns=_columns(metrics),
        cm=cm,
        cm_max=max((v for row in cm for v in row), default=0) or 1,
        per_class=[{"label": labels[c], **metrics["per_class"][str(c)],
                    "base_acc": BASELINE["acc_class"][c] if c < len(BASELINE["acc_class"]) else None,
                    "base_rmse": BASELINE["rmse_class"][c] if c < len(BASELINE["rmse_class"]) else None}
                   for c in range(len(cm))],
        with_baseline=with_baseline,
        baseline=BASELINE,
        majority={"label": labels[consts["majority"]["count"]], **consts["majority"]},
        best_rmse={"label": labels[consts["best_rmse"]["count"]], **consts["best_rmse"]},
        warnings=metrics["warnings"] if "warnings" in metrics else honesty_warnings(metrics),
        warehouse=warehouse_tiles(metrics),
        about=describe_model(metrics.get("model")) if metrics.get("model") else {},
        plots=[{"title": p.stem.replace("_", " "), "uri": png_uri(p)} for p in plots],
        gallery=gallery,
        n_wrong=int((pred.counts != pred.targets).sum()),
        extras=answer_tiles(metrics),
        level_rows=level_rows(metrics),
        promise_rows=[e for k in ("interval", "accepted", "verdicts") if (e := (metrics.get("promises") or {}).get(k))],
    )


def write_html_report(
    pred: FolderPredictions, metrics: dict[str, Any], eval_dir: str | Path, out_dir: str | Path,
    gallery_size: int = GALLERY_SIZE,
) -> Path:
    """Write ``out_dir/report.html``, embedding every ``*.png`` already in ``out_dir``."""
    out = Path(out_dir)
    plots = sorted(out.glob("*.png"))
    path = out / REPORT_FILE
    path.write_text(render_report(metrics, pred, eval_dir, plots, gallery_size), encoding="utf-8")
    return path

