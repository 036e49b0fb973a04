"""The every-count section of the results table (issue 26): one model for all counts, scored by evaluate.py.

Each seed's run (``logs/train/runs/abid_allcount_s<seed>/``, ``python train.py
experiment=abid_sample_allcount seed=<seed>``) is evaluated once on the all-count preparation's test
split, with the check set's automatic-decision thresholds fitted on its validation split
(``<run>/eval/metrics.json``). The moderate level is the 0..5 test images, the very images the 0..5
recipe's rows are scored on, twice: with the answers as served (any count) and as abid_challenge's
moderate task poses it (answers restricted to 0..5, ``levels.moderate_task``); the hard level every test image, against the constant (median) predictor.
``benchmarks/abid_results.py`` calls ``collect`` and ``markdown``; seeds not on this machine keep the
numbers recorded in ``benchmarks/results/abid_results.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "abid_sample_allcount"
RUNS = ROOT / "logs" / "train" / "runs"
LABEL = ("every count: the sample prepared with max_count=null (counts 0..15 and 'more than 15'), "
         "CORN ordinal head, the count rule chosen on validation RMSE (answers.choose_rule=rmse), "
         "12 epochs, channels_last")
COMMAND = "python train.py experiment=abid_sample_allcount"
# metrics.json path -> the summary's key; the numbers averaged over seeds.
FIELDS = {
    ("levels", "moderate", "acc"): "moderate_acc", ("levels", "moderate", "rmse"): "moderate_rmse",
    ("levels", "moderate_task", "acc"): "task_acc", ("levels", "moderate_task", "rmse"): "task_rmse",
    ("levels", "hard", "acc"): "hard_acc", ("levels", "hard", "rmse"): "hard_rmse",
    ("levels", "hard", "mae"): "hard_mae", ("levels", "hard", "within1"): "hard_within1",
    ("levels", "moderate", "constant", "acc"): "moderate_const_acc",
    ("levels", "moderate", "constant", "rmse"): "moderate_const_rmse",
    ("levels", "hard", "constant", "acc"): "hard_const_acc", ("levels", "hard", "constant", "rmse"): "hard_const_rmse",
    ("levels", "hard", "constant", "mae"): "hard_const_mae",
    ("levels", "hard", "constant", "within1"): "hard_const_within1",
    ("check", "caught_at_10"): "caught_at_10", ("check", "caught_at_20"): "caught_at_20",
    ("check", "auto_95", "decided_share"): "auto95_decided", ("check", "auto_95", "accuracy"): "auto95_right",
    ("check", "auto_97", "decided_share"): "auto97_decided", ("check", "auto_97", "accuracy"): "auto97_right",
    ("check", "auto_95", "mismatch_precision"): "mismatch_precision_95",
    ("check", "off_by_1", "roc_auc"): "auc_off1", ("check", "off_by_2", "roc_auc"): "auc_off2",
    ("answer_interval", "coverage"): "interval80_coverage",
}


def run_dir(seed: int, runs: Path = RUNS) -> Path:
    return runs / f"abid_allcount_s{seed}"


def train(seed: int, runs: Path = RUNS) -> float:
    """Train one seed unless its artifact exists; returns wall seconds (0 when skipped)."""
    out = run_dir(seed, runs)
    if (out / "model" / "model_config.json").is_file():
        return 0.0
    start = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "experiment=abid_sample_allcount", f"seed={seed}",
                    f"hydra.run.dir={out}", "callbacks.progress_bar=null"], cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    (out / "wall_seconds.txt").write_text(f"{seconds:.0f}\n")
    return seconds


def evaluate(run: Path) -> dict[str, Any] | None:
    """``<run>/eval/metrics.json``, running evaluate.py on the run's artifact first when missing."""
    out = run / "eval"
    if not (out / "metrics.json").is_file():
        if not (run / "model" / "model_config.json").is_file():
            return None
        subprocess.run([sys.executable, "evaluate.py", f"model_dir={run / 'model'}", f"eval_dir={DATA / 'test'}",
                        f"val_dir={DATA / 'val'}", f"output_dir={out}", f"hydra.run.dir={out / 'hydra'}"],
                       cwd=ROOT, check=True)
    return json.loads((out / "metrics.json").read_text())


def _get(metrics: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one seed, plus each promise's status (met, within bound, broken or vacuous)."""
    out = {name: _get(metrics, path) for path, name in FIELDS.items()}
    promises = metrics.get("promises") or {}
    out["promises"] = {k: {"promised": v["promised"], "delivered": v["delivered"], "n": v["n"], "status": v["status"]}
                       for k, v in promises.items() if isinstance(v, dict) and "status" in v}
    out["rule"] = _get(metrics, ("model", "decision_rule"))  # chosen on validation with answers.choose_rule
    out["n_test"] = _get(metrics, ("levels", "hard", "n"))
    out["n_moderate"] = _get(metrics, ("levels", "moderate", "n"))
    return out


def collect(seeds: list[int], earlier: dict[str, Any] | None = None, root: Path = RUNS) -> dict[str, Any] | None:
    """The section's row: each seed's summary (this machine's runs under ``root``, else ``earlier``'s)."""
    runs: dict[str, dict] = {}
    for seed in seeds:
        metrics = evaluate(run_dir(seed, root))
        if metrics is not None:
            wall = run_dir(seed, root) / "wall_seconds.txt"
            runs[str(seed)] = {**summary(metrics), "wall_s": float(wall.read_text()) if wall.is_file() else None}
        elif earlier and str(seed) in earlier.get("seeds", {}):
            runs[str(seed)] = {**earlier["seeds"][str(seed)], "recorded_earlier": True}
    if not runs:
        return None
    mean = {}
    for name in FIELDS.values():
        values = [r[name] for r in runs.values() if r.get(name) is not None]
        if values:
            mean[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    walls = [r["wall_s"] for r in runs.values() if r.get("wall_s")]
    return {"label": LABEL, "command": COMMAND, "seeds": runs, "over_seeds": mean,
            "minutes": round(statistics.fmean(walls) / 60, 1) if walls else None}


def _ms(row: dict, name: str, pct: bool) -> str:
    v = row["over_seeds"].get(name)
    if v is None:
        return "-"
    if pct:
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} %" if len(row["seeds"]) > 1 else f"{100 * v['mean']:.1f} %"
    return f"{v['mean']:.3f} ± {v['std']:.3f}" if len(row["seeds"]) > 1 else f"{v['mean']:.3f}"


def _promise(name: str, p: dict[str, Any]) -> str:
    delivered = "-" if p["delivered"] is None else f"{100 * p['delivered']:.1f} %"
    return f"{name} {100 * p['promised']:.0f} % -> {delivered} (n {p['n']}, {p['status']})"


def markdown(row: dict[str, Any] | None, main: dict[str, Any] | None = None) -> list[str]:
    """The section's lines: moderate beside the 0..5 recipe (``main``: its row), hard beside the
    constant, then the warehouse's check set."""
    if not row:
        return []
    seeds = ", ".join(f"{s}{'*' if r.get('recorded_earlier') else ''}" for s, r in sorted(row["seeds"].items()))
    first = next(iter(row["seeds"].values()))
    lines = ["", f"Every count (issue 26): {row['label']}; seeds {seeds}, {row['minutes']} minutes a run; "
             f"`{row['command']} seed=<seed>`, then `python benchmarks/abid_results.py` (evaluate.py on each "
             f"seed's artifact). Test split: {first['n_test']} images, {first['n_moderate']} of them 0..5. "
             "Count rule per seed: " + ", ".join(f"{s} {r.get('rule') or '?'}" for s, r in sorted(row["seeds"].items()))
             + ".", "",
             "| level | this model: acc | RMSE | MAE | within one | constant (median): acc | RMSE |",
             "|---|---|---|---|---|---|---|"]
    lines.append(f"| hard (every count) | {_ms(row, 'hard_acc', True)} | {_ms(row, 'hard_rmse', False)} | "
                 f"{_ms(row, 'hard_mae', False)} | {_ms(row, 'hard_within1', True)} | "
                 f"{_ms(row, 'hard_const_acc', True)} | {_ms(row, 'hard_const_rmse', False)} |")
    lines.append(f"| moderate (0..5 images), answers as served | {_ms(row, 'moderate_acc', True)} | "
                 f"{_ms(row, 'moderate_rmse', False)} | - | - | {_ms(row, 'moderate_const_acc', True)} | "
                 f"{_ms(row, 'moderate_const_rmse', False)} |")
    lines.append(f"| moderate task (0..5 images, answers restricted to 0..5 as a 0..5 model's are) | "
                 f"{_ms(row, 'task_acc', True)} | {_ms(row, 'task_rmse', False)} | - | - | "
                 f"{_ms(row, 'moderate_const_acc', True)} | {_ms(row, 'moderate_const_rmse', False)} |")
    if main and "over_seeds" in main:
        a, r = main["over_seeds"]["acc"], main["over_seeds"]["rmse"]
        lines.append(f"| moderate, the 0..5 recipe (row main) | {100 * a['mean']:.1f} ± {100 * a['std']:.1f} % | "
                     f"{r['mean']:.3f} ± {r['std']:.3f} | - | - | - | - |")
    lines += ["", "The check set (test split, 10 % of records wrong; thresholds fitted on the validation split):", "",
              "| wrong records caught, 10 % / 20 % reviewed | decided automatically at 95 % (right) | "
              "at 97 % (right) | mismatch precision (95 %) | ROC AUC off by 1 / 2 | 80 % probability-mass interval covers |",
              "|---|---|---|---|---|---|",
              f"| {_ms(row, 'caught_at_10', True)} / {_ms(row, 'caught_at_20', True)} | "
              f"{_ms(row, 'auto95_decided', True)} ({_ms(row, 'auto95_right', True)}) | "
              f"{_ms(row, 'auto97_decided', True)} ({_ms(row, 'auto97_right', True)}) | "
              f"{_ms(row, 'mismatch_precision_95', True)} | {_ms(row, 'auc_off1', False)} / "
              f"{_ms(row, 'auc_off2', False)} | {_ms(row, 'interval80_coverage', True)} |"]
    promised = [f"seed {s}: " + "; ".join(_promise(k, p) for k, p in r["promises"].items())
                for s, r in sorted(row["seeds"].items()) if r.get("promises")]
    if promised:
        lines += ["", "Promises (fitted on the validation split, scored on test): " + " | ".join(promised)]
    return lines
