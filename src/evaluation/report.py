"""Evaluation report: metrics, baselines side by side, predictions.csv, metrics.json and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from src.evaluation.answers import answer_metrics, verdicts, write_answer_plots
from src.evaluation.levels import level_metrics, point_counts, true_counts
from src.evaluation.promises import answer_interval_coverage, broken_promises, check_promises
from src.evaluation.reconciliation import check_metrics
from src.inference.folder import FolderPredictions
from src.models.metrics import metrics_from_confusion
from src.utils.figures import save_figure
from src.utils.provenance import describe_model, trained_on_kind

# abid_challenge baseline (ResNet-34 from scratch, full train split, 40 epochs) on its validation split.
BASELINE = {
    "name": "abid_challenge ResNet-34",
    "acc": 0.5567,
    "rmse": 0.930,
    "acc_class": [0.977, 0.834, 0.672, 0.549, 0.426, 0.449],
    "rmse_class": [0.187, 0.542, 0.710, 0.867, 1.025, 1.311],
}


def confusion(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows: true count, columns: predicted count."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((targets.long(), preds.long()), torch.ones_like(targets, dtype=torch.long), accumulate=True)
    return cm


def constant_predictors(cm: torch.Tensor) -> dict[str, dict[str, Any]]:
    """The two best constant predictors on the same images: the majority count (best accuracy)
    and the count with the lowest RMSE (the one nearest the mean count)."""
    per_class = cm.sum(dim=1)
    k = cm.shape[0]
    scores = {}
    for c in range(k):
        const = torch.zeros_like(cm)
        const[:, c] = per_class
        scores[c] = metrics_from_confusion(const)
    majority = max(range(k), key=lambda c: (scores[c]["acc"], -c))
    best_rmse = min(range(k), key=lambda c: (scores[c]["rmse"], c))
    return {
        "majority": {"count": majority, **scores[majority]},
        "best_rmse": {"count": best_rmse, **scores[best_rmse]},
    }


SYNTHETIC_MARKER = ".synthetic.json"  # src.data.synthetic writes it at the root of generated data
SYNTHETIC_PREFIX = "syn-"  # and names every image syn-<split>-<index>.jpg


def eval_data_kind(names: list[str], eval_dir: str | Path | None = None) -> str:
    """``"synthetic"`` for the project's generated bins, else ``"photos"`` (real or unknown)."""
    if eval_dir is not None:
        root = Path(eval_dir)
        if (root / SYNTHETIC_MARKER).is_file() or (root.parent / SYNTHETIC_MARKER).is_file():
            return "synthetic"
    if names and all(Path(n).name.startswith(SYNTHETIC_PREFIX) for n in names):
        return "synthetic"
    return "photos"


def baseline_applies(metrics: dict[str, Any]) -> bool:
    """The published baseline was measured on real photos: never set it beside synthetic numbers."""
    return metrics.get("eval_data") != "synthetic" and metrics.get("baseline", BASELINE) is not None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


def _fmt_pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def honesty_warnings(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """What a reader must not miss, each ``{"kind", "text"}``: the model is worse than the constant
    predictor (``worse_than_constant``), calibration made the confidence worse (``calibration_worse``),
    a rate the artifact promises was missed on these images (``promise_missed``), the model was trained
    on synthetic bins and is judged on photos (``synthetic_model``)."""
    out: list[dict[str, str]] = []
    consts = metrics.get("constant_predictor") or {}
    major, best = consts.get("majority") or {}, consts.get("best_rmse") or {}
    worse = []
    if _is_num(metrics.get("acc")) and _is_num(major.get("acc")) and metrics["acc"] < major["acc"]:
        worse.append(f"accuracy {_fmt_pct(metrics['acc'])} vs {_fmt_pct(major['acc'])} for always answering {major['count']}")
    if _is_num(metrics.get("rmse")) and _is_num(best.get("rmse")) and metrics["rmse"] > best["rmse"]:
        worse.append(f"RMSE {metrics['rmse']:.3f} vs {best['rmse']:.3f} for always answering {best['count']}")
    if worse:
        out.append({"kind": "worse_than_constant", "text": (
            "This model is worse than the constant predictor on these images: " + "; ".join(worse)
            + ". Its counts carry no information here: do not act on them.")})
    cal = metrics.get("calibration") or {}
    before, after = cal.get("ece_before"), cal.get("ece_after")
    if _is_num(before) and _is_num(after) and after > before + 1e-9:
        out.append({"kind": "calibration_worse", "text": (
            f"Calibration made the confidence worse on these images: ECE {before:.3f} raw -> {after:.3f} with the "
            f"temperature fitted on the validation split; these images do not behave like that split.")})
    model_cal = ((metrics.get("model") or {}).get("calibration") or {})
    sel = metrics.get("selective") or {}
    target = model_cal.get("target_accuracy")
    if isinstance(target, (int, float)) and "review_share" in sel:
        accepted = sel.get("accepted_accuracy")
        if accepted is None:
            out.append({"kind": "promise_missed", "text": (
                f"Every image was sent to review: no answer reached the confidence whose accepted answers were "
                f"promised {_fmt_pct(target)} accuracy.")})
        elif accepted < target:
            out.append({"kind": "promise_missed", "text": (
                f"Promised rate missed: accepted answers (not sent to review) are {_fmt_pct(accepted)} right here, "
                f"the review threshold was fitted for {_fmt_pct(target)} ({_fmt_pct(sel['review_share'])} sent to review).")})
    novelty = metrics.get("novelty") or {}
    share, alpha = novelty.get("unlike_training_share"), novelty.get("alpha")
    if _is_num(share) and _is_num(alpha) and share > max(0.2, 5 * alpha):
        out.append({"kind": "unlike_training", "text": (
            f"{_fmt_pct(share)} of these photos look unlike anything the model was trained on (at most "
            f"{_fmt_pct(alpha)} of photos like its training data would be): its answers on them are sent to review "
            "and its numbers here say little about it.")})
    precision = model_cal.get("verdict_precision")
    rec = (metrics.get("reconciliation") or {}).get("all") or {}
    if isinstance(precision, (int, float)):
        for verdict in ("match", "mismatch"):
            value = rec.get(f"{verdict}_precision")
            if _is_num(value) and value < precision:
                out.append({"kind": "promise_missed", "text": (
                    f"Promised rate missed: '{verdict}' verdicts are {_fmt_pct(value)} right here (checks against the "
                    f"true count and counts off by 1 and 2), the thresholds were fitted for {_fmt_pct(precision)}.")})
    out += broken_promises(metrics)
    outside = (metrics.get("levels") or {}).get("out_of_range") or {}
    if outside.get("n"):
        out.append({"kind": "out_of_range", "text": (
            f"{outside['n']} image(s) in count folders above this model's range ({', '.join(outside['folders'])}) "
            f"were not scored: it counts 0..{metrics['levels']['label_space']['max_count']} and has no 'more than' "
            "class, so the hard level here covers only the counts it can answer.")})
    if trained_on_kind(metrics.get("model")) == "synthetic" and metrics.get("eval_data") == "photos":
        out.append({"kind": "synthetic_model", "text": (
            "This model was trained on synthetic bins only; these images are not synthetic. Train on real photos "
            "(experiment=abid_sample) before trusting it on them.")})
    return out


def build_metrics(pred: FolderPredictions, num_classes: int, eval_dir: str | Path | None = None,
                  val: FolderPredictions | None = None, promises: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every number of metrics.json. ``val``: the validation split's predictions (the check set's
    automatic-decision thresholds are fitted there); ``promises``: the artifact's (or fitted on ``val``)."""
    cm = confusion(pred.targets, pred.counts, num_classes)
    metrics: dict[str, Any] = metrics_from_confusion(cm)
    metrics["per_class"] = {
        str(c): {"n": int(cm[c].sum()), "acc": metrics.get(f"acc_class_{c}"), "rmse": metrics.get(f"rmse_class_{c}")}
        for c in range(num_classes)
    }
    metrics["confusion_matrix"] = cm.tolist()
    metrics["n_skipped"] = len(pred.skipped)
    metrics["skipped"] = [{"name": n, "reason": why} for n, why in pred.skipped]
    metrics["constant_predictor"] = constant_predictors(cm)
    metrics["baseline"] = BASELINE
    metrics["levels"] = level_metrics(pred, eval_dir)  # hard (every count) and moderate (0..5)
    if pred.logits is not None:  # calibration, risk-coverage, reconciliation (and overflow)
        metrics.update(answer_metrics(pred))
        metrics["check"] = check_metrics(pred, val)  # the warehouse's check set (10 % wrong records)
        metrics["answer_interval"] = answer_interval_coverage(pred)  # the served 80 % interval, as it is
    if promises:
        metrics["promises"] = check_promises(promises, pred)
    return metrics


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary_table(metrics: dict[str, Any]) -> str:
    """Model vs the abid_challenge baseline vs the constant predictors, overall and per class."""
    consts = metrics["constant_predictor"]
    with_baseline = baseline_applies(metrics)
    columns = [("this model", metrics)] + ([("abid baseline", None)] if with_baseline else [])
    columns.append((f"always {consts['majority']['count']} (majority)", consts["majority"]))
    if consts["best_rmse"]["count"] != consts["majority"]["count"]:
        columns.append((f"always {consts['best_rmse']['count']} (min RMSE)", consts["best_rmse"]))
    rows: list[list[str]] = []

    def row(label: str, key: str, fmt, baseline_value) -> None:
        cells = [label]
        for _, source in columns:
            cells.append(fmt(baseline_value) if source is None else fmt(source.get(key)))
        rows.append(cells)

    base_values = BASELINE if with_baseline else {"acc": None, "rmse": None, "acc_class": [], "rmse_class": []}
    row("accuracy %", "acc", _pct, base_values["acc"])
    row("RMSE", "rmse", _num, base_values["rmse"])
    row("MAE", "mae", _num, None)
    row("within one %", "within1", _pct, None)
    num_classes = len(metrics["confusion_matrix"])
    for c in range(num_classes):
        base = base_values["acc_class"][c] if c < len(base_values["acc_class"]) else None
        row(f"acc count {c} %", f"acc_class_{c}", _pct, base)
    for c in range(num_classes):
        base = base_values["rmse_class"][c] if c < len(base_values["rmse_class"]) else None
        row(f"RMSE count {c}", f"rmse_class_{c}", _num, base)
    header = ["metric"] + [name for name, _ in columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # noqa: E731
    lines = [f"{k}: {v}" for k, v in describe_model(metrics.get("model")).items()] if metrics.get("model") else []
    lines += [fmt_row(header), "  ".join("-" * w for w in widths), *map(fmt_row, rows)]
    lines += answer_lines(metrics)
    lines += level_lines(metrics) + check_lines(metrics) + promise_lines(metrics)
    lines.append(
        f"n = {metrics['n']} images ({metrics['n_skipped']} unreadable, excluded); "
        + ("the baseline's figures are on the abid_challenge validation split, not these images" if with_baseline else
           "no published baseline beside these numbers: the images are synthetic, the abid_challenge baseline was "
           "measured on real photos")
    )
    warnings = metrics["warnings"] if "warnings" in metrics else honesty_warnings(metrics)
    lines += [f"WARNING: {w['text']}" for w in warnings]
    return "\n".join(lines)


def answer_lines(metrics: dict[str, Any]) -> list[str]:
    """The warehouse's numbers under the table (docs/warehouse.md)."""
    lines = []
    if "overflow" in metrics:
        o = metrics["overflow"]
        lines.append(f"more than {len(metrics['confusion_matrix']) - 2}: precision {_pct(o['overflow_precision'])} %, "
                     f"recall {_pct(o['overflow_recall'])} % (n = {o['n_overflow']}); on the in-range images: "
                     f"accuracy {_pct(o['inrange_acc'])} %, RMSE {_num(o['inrange_rmse'])}")
    if "calibration" in metrics:
        c, s = metrics["calibration"], metrics["selective"]
        lines.append(f"ECE {_num(c['ece_before'])} raw -> {_num(c['ece_after'])} calibrated; accuracy at 50 % coverage "
                     f"{_pct(s['acc_at_50'])} %, at 80 % {_pct(s['acc_at_80'])} %"
                     + (f"; review share {_pct(s['review_share'])} %, accepted accuracy {_pct(s['accepted_accuracy'])} %"
                        if "review_share" in s else ""))
        target = ((metrics.get("model") or {}).get("calibration") or {}).get("target_accuracy")
        if "review_share" in s:
            accepted = s.get("accepted_accuracy")
            verdict = "" if not isinstance(target, (int, float)) else " (MISSED: none accepted)" if accepted is None else (
                " (met)" if accepted >= target else " (MISSED)")
            lines.append(f"sent to review {_pct(s['review_share'])} %; accuracy of the accepted answers "
                         f"{_pct(accepted)} %" + (f", target {_pct(target)} %{verdict}" if isinstance(target, (int, float)) else ""))
        if "novelty" in metrics:
            n = metrics["novelty"]
            lines.append(f"unlike the training data: {_pct(n['unlike_training_share'])} % of these photos (at most "
                         f"{_pct(n['alpha'])} % of photos like it); accuracy on them {_pct(n['acc_unlike'])} %, "
                         f"on the rest {_pct(n['acc_like'])} %")
        r = metrics["reconciliation"]
        lines.append(f"mismatch ROC AUC off by 1: {_num(r['off_by_1']['roc_auc'])}, off by 2: {_num(r['off_by_2']['roc_auc'])}; "
                     f"mismatch precision {_pct(r['all']['mismatch_precision'])} %, recall {_pct(r['all']['mismatch_recall'])} %, "
                     f"sent to review {_pct(r['all']['review_share'])} %")
    return lines


def level_lines(metrics: dict[str, Any]) -> list[str]:
    """abid_challenge's two levels, each beside its constant (median) predictor."""
    levels = metrics.get("levels")
    if not levels:
        return []
    rows = [("hard (all counts)", levels["hard"]), ("moderate (0..5)", levels["moderate"])]
    if "moderate_task" in levels:
        rows.append(("moderate task (answers 0..5)", levels["moderate_task"]))
    rows += [(f"  count {name}", b) for name, b in levels["hard"]["buckets"].items() if b["n"]]
    lines = ["level               n     acc %   RMSE    MAE  within1 %   | median constant: count, acc %, RMSE, MAE"]
    for name, v in rows:
        c = v["constant"]
        lines.append(f"{name:<18}{v['n']:>4} {_pct(v['acc']):>7} {_num(v['rmse']):>7}{_num(v['mae']):>7} "
                     f"{_pct(v['within1']):>8}     | always {c['count']}: {_pct(c['acc'])}, {_num(c['rmse'])}, {_num(c['mae'])}")
    if levels.get("tail_point") is not None:
        lines.append(f"a tail answer ('>{levels['tail_point'] - 1}') counts as {levels['tail_point']}, the tail's first count")
    if levels["out_of_range"]["n"]:
        lines.append(f"out of range, not scored: {levels['out_of_range']['n']} image(s) above count "
                     f"{levels['label_space']['max_count']} (hard level incomplete)")
    if levels.get("n_unknown_count"):
        lines.append(f"{levels['n_unknown_count']} image(s) without an exact count (a 'plus' folder) left out of both levels")
    return lines


def check_lines(metrics: dict[str, Any]) -> list[str]:
    """The warehouse's check set: wrong records caught, automatic decisions."""
    c = metrics.get("check")
    if not c or not c.get("n"):
        return []
    lines = [f"check set: {c['n']} bins, {c['n_wrong']} wrong records ({100 * c['error_rate']:.0f} %); caught in the "
             f"10 % most suspicious {_pct(c['caught_at_10'])} %, in 20 % {_pct(c['caught_at_20'])} %; ROC AUC off by 1 "
             f"{_num(c['off_by_1']['roc_auc'])}, off by 2 {_num(c['off_by_2']['roc_auc'])}"]
    art = c.get("artifact_verdicts")
    if art:
        lines.append(f"  artifact thresholds: mismatch precision {_pct(art['mismatch_precision'])} % "
                     f"({art['n_mismatch_calls']} calls), decided automatically {_pct(art['decided_share'])} %")
    for key in ("auto_95", "auto_97"):
        a = c[key]
        lines.append(f"  verdicts {100 * a['target']:.0f} % right: {_pct(a['decided_share'])} % decided automatically, "
                     f"{_pct(a['accuracy'])} % right (95 % CI {_pct(a['accuracy_ci95'][0])}-{_pct(a['accuracy_ci95'][1])}"
                     + ("; below the target even at the interval's top" if a["n_decided"] and a["accuracy_ci95"][1] < a["target"]
                        else "") + f"); thresholds fitted on the {c['fitted_on']}")
    return lines


def promise_lines(metrics: dict[str, Any]) -> list[str]:
    """Each promise beside what was delivered here."""
    lines = []
    iv = metrics.get("answer_interval")
    if iv and iv.get("n"):
        lines.append(f"answers' {100 * iv['mass']:.0f} % interval (shortest run, calibrated; no guarantee) covers the true "
                     f"count {_pct(iv['coverage'])} % (95 % CI {_pct(iv['ci95'][0])}-{_pct(iv['ci95'][1])}), "
                     f"mean width {iv['mean_width']:.2f}")
    p = metrics.get("promises")
    if not p:
        return lines
    lines.append(f"promises (fitted on {p['fitted_on']}, n = {p['n_fit']}):")
    for key in ("interval", "accepted", "verdicts"):
        e = p.get(key)
        if e:
            if e["status"] == "vacuous":
                lines.append(f"  {e['what']}: promised {_pct(e['promised'])} %: VACUOUS (nothing decided: no threshold "
                             "passed its test on validation, so this model promises nothing here)")
                continue
            width = f", mean width {e['mean_width']:.2f}" if isinstance(e.get("mean_width"), float) else ""
            lines.append(f"  {e['what']}: promised {_pct(e['promised'])} %, delivered {_pct(e['delivered'])} % of "
                         f"{e['n']} (95 % CI {_pct(e['ci95'][0])}-{_pct(e['ci95'][1])}{width}): {e['status'].upper()}")
    return lines


def _label(c: int, settings: dict) -> str:
    return f">{settings['max_count']}" if settings.get("overflow") and c > settings["max_count"] else str(c)


def write_predictions(pred: FolderPredictions, path: Path) -> Path:
    """One row per image. For a model with the overflow class, ``pred_count`` (and ``true_count``) is
    empty when the answer (the truth) is "more than max_count": read ``pred_label`` (``>5``).
    ``p_true`` and ``verdict_true``: p_expected and the verdict when the bin is checked against its
    true count (what a correct inventory record would get).

    The count distribution, so any expected quantity can be scored from the file alone:
    ``p_0``..``p_K`` (P(count = k), K = max_count) and, for a model with a tail, ``p_gtK`` (P(count > K));
    ``count`` is the true count from the folder name (a ``12/`` image of a tail model too; empty for
    ``6plus/``) and ``point_count`` the answer as a count (the tail: its first count, K + 1).
    The older columns ``p0``.. and ``p_overflow`` hold the same numbers, kept for existing readers.
    Models that answer every count add ``interval_lo`` and ``interval_hi``: the interval served with
    each answer (``interval_hi`` empty: "interval_lo or more", the tail)."""
    num_classes = pred.probs.shape[1]
    settings = pred.settings
    overflow = bool(settings.get("overflow"))
    k = num_classes - 1 - overflow
    p_cols = [f"p{c}" for c in range(num_classes - overflow)] + (["p_overflow"] if overflow else [])
    dist_cols = [f"p_{c}" for c in range(k + 1)] + ([f"p_gt{k}"] if overflow else [])
    review_t = settings.get("review_threshold")
    novelty = pred.novelty.tolist() if pred.novelty is not None else None
    unlike = pred.unlike.tolist() if pred.unlike is not None else [False] * len(pred.names)
    exact_count, exact = true_counts(pred)
    point = point_counts(pred).tolist()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["name", "true_count", "pred_count", "confidence", *p_cols, "true_label", "pred_label"]
        writer.writerow(header + (["review"] if review_t is not None else []) + ["p_true", "verdict_true", "count",
                                                                                 "point_count", *dist_cols]
                        + (["novelty_score", "unlike_training"] if novelty is not None else [])
                        + (["interval_lo", "interval_hi"] if pred.intervals is not None else []))
        p_true = pred.probs.gather(1, pred.targets.long()[:, None])[:, 0]
        v_true = verdicts(p_true, pred.counts, pred.targets, settings)
        rows = zip(pred.names, pred.targets.tolist(), pred.counts.tolist(), pred.probs.tolist(), strict=True)
        for i, (name, t, c, p) in enumerate(rows):
            tl, cl = _label(t, settings), _label(c, settings)
            probs = [f"{v:.6f}" for v in p]
            row = [name, t if tl == str(t) else "", c if cl == str(c) else "", f"{p[c]:.6f}", *probs, tl, cl]
            row += [str(p[c] < review_t or unlike[i]).lower()] if review_t is not None else []
            count = int(exact_count[i]) if exact[i] else ""
            extra = [f"{novelty[i]:.4f}", str(unlike[i]).lower()] if novelty is not None else []
            if pred.intervals is not None:
                lo, hi = pred.intervals[i]
                extra += [lo, "" if hi is None else hi]
            writer.writerow(row + [f"{p[t]:.6f}", v_true[i], count, point[i], *probs, *extra])
    return path


def plot_confusion(cm: list[list[int]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(cm)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(cm, cmap="Blues")
    top = max(max(r) for r in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", color="white" if cm[i][j] > top / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted count", ylabel="true count", title="Confusion matrix")
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def plot_per_class_accuracy(metrics: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(metrics["confusion_matrix"])
    xs = list(range(k))
    model = [100 * (metrics.get(f"acc_class_{c}") or 0.0) for c in xs]
    base = [100 * v for v in BASELINE["acc_class"][:k]] if baseline_applies(metrics) else []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar([x - 0.2 for x in xs] if base else xs, model, width=0.4 if base else 0.6, label="this model")
    if base:
        ax.bar([x + 0.2 for x in xs[: len(base)]], base, width=0.4, label=BASELINE["name"] + " (real photos)")
    ax.axhline(100 * metrics["acc"], color="C0", linestyle="--", linewidth=1, label=f"overall {100 * metrics['acc']:.1f} %")
    ax.set(xticks=xs, xlabel="true count", ylabel="accuracy %", ylim=(0, 100), title="Per-class accuracy")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(pred: FolderPredictions, out_dir: str | Path, num_classes: int, extra: dict | None = None,
                 val: FolderPredictions | None = None, promises: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write predictions.csv, metrics.json, confusion_matrix.png, per_class_accuracy.png (and, with
    logits, reliability_diagram.png and risk_coverage.png)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = build_metrics(pred, num_classes, (extra or {}).get("eval_dir"), val, promises)
    if extra:
        metrics.update(extra)
    metrics["eval_data"] = eval_data_kind(pred.names, metrics.get("eval_dir"))
    if metrics["eval_data"] == "synthetic":
        metrics["baseline"] = None  # measured on real photos: not comparable with synthetic numbers
    metrics["warnings"] = honesty_warnings(metrics)
    write_predictions(pred, out / "predictions.csv")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_confusion(metrics["confusion_matrix"], out / "confusion_matrix.png")
    plot_per_class_accuracy(metrics, out / "per_class_accuracy.png")
    if "calibration" in metrics:
        write_answer_plots(metrics, out)
    return metrics
