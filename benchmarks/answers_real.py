"""The warehouse numbers of issue 12 on the real sample's test split (docs/warehouse.md).

Two train.py runs on the same prepared sample (``prepare_data.py ... overflow=true``): one with the
"more than 5" class (``data.overflow=true data.num_classes=7``) and one on the 0..5 images only
(``data.overflow=false data.num_classes=6``, the 6plus folder ignored). Evaluates both on the test
split with evaluate()'s report and writes one JSON + Markdown table:

    python -m benchmarks.answers_real --overflow-run <run> --plain-run <run> \
        --data data/abid_sample_overflow --tag head128

Both runs' artifacts (``<run>/model``) carry the temperature, review threshold and verdict
thresholds fitted on the validation split by train.py; nothing here looks at test labels to tune.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu() -> dict:
    """CPU model and the instruction sets that matter for these numbers' run time."""
    name, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": name, "avx2": "avx2" in flags, "avx512_vnni": "avx512_vnni" in flags, "cpu_count": os.cpu_count()}


def summarise(over: dict, plain: dict) -> dict:
    o, c, s, r = over["overflow"], over["calibration"], over["selective"], over["reconciliation"]
    return {
        "overflow_precision": o["overflow_precision"],
        "overflow_recall": o["overflow_recall"],
        "n_test": over["n"],
        "n_test_overflow": o["n_overflow"],
        "inrange_acc_with_overflow_data": o["inrange_acc"],
        "inrange_rmse_with_overflow_data": o["inrange_rmse"],
        "inrange_acc_without": plain["acc"],
        "inrange_rmse_without": plain["rmse"],
        "n_test_inrange": o["inrange_n"],
        "temperature": c["temperature"],
        "ece_before": c["ece_before"],
        "ece_after": c["ece_after"],
        "acc_all": s["acc_all"],
        "acc_at_50": s["acc_at_50"],
        "gain_at_50": s["gain_at_50"],
        "acc_at_80": s["acc_at_80"],
        "review_share": s.get("review_share"),
        "accepted_accuracy": s.get("accepted_accuracy"),
        "auc_off_by_1": r["off_by_1"]["roc_auc"],
        "auc_off_by_2": r["off_by_2"]["roc_auc"],
        "mismatch_precision": r["all"]["mismatch_precision"],
        "mismatch_recall": r["all"]["mismatch_recall"],
        "verdict_review_share": r["all"]["review_share"],
        "plain_ece_before": plain["calibration"]["ece_before"],
        "plain_ece_after": plain["calibration"]["ece_after"],
        "plain_acc_at_50": plain["selective"]["acc_at_50"],
        "plain_auc_off_by_1": plain["reconciliation"]["off_by_1"]["roc_auc"],
        "plain_auc_off_by_2": plain["reconciliation"]["off_by_2"]["roc_auc"],
    }


def markdown(row: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    def num(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [
        "| number (test split) | value | aim |",
        "|---|---|---|",
        f"| overflow (>5) precision / recall | {pct(row['overflow_precision'])} / {pct(row['overflow_recall'])} | both >= 80 % |",
        f"| 0..5 images: accuracy, RMSE with the >5 training images | {pct(row['inrange_acc_with_overflow_data'])}, {num(row['inrange_rmse_with_overflow_data'])} | |",
        f"| 0..5 images: accuracy, RMSE without them (0..5 model) | {pct(row['inrange_acc_without'])}, {num(row['inrange_rmse_without'])} | |",
        f"| ECE raw -> calibrated (T = {num(row['temperature'])}) | {num(row['ece_before'])} -> {num(row['ece_after'])} | <= 0.05 after |",
        f"| accuracy all / at 80 % / at 50 % coverage | {pct(row['acc_all'])} / {pct(row['acc_at_80'])} / {pct(row['acc_at_50'])} (x{num(row['gain_at_50'])}) | x1.4 at 50 % |",
        f"| sent to review at the val-fitted threshold; accuracy of the rest | {pct(row['review_share'])}; {pct(row['accepted_accuracy'])} | |",
        f"| mismatch ROC AUC off by 1 / off by 2 | {num(row['auc_off_by_1'])} / {num(row['auc_off_by_2'])} | >= 0.80 off by 2 |",
        f"| `mismatch` precision / recall; verdicts sent to review | {pct(row['mismatch_precision'])} / {pct(row['mismatch_recall'])}; {pct(row['verdict_review_share'])} | |",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overflow-run", required=True, type=Path)
    parser.add_argument("--plain-run", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="prepared sample with <split>/6plus/")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from src.evaluation.runner import evaluate

    start = time.time()
    work = ROOT / "outputs" / f"answers_real_{args.tag}"  # the full reports (plots, predictions.csv)
    test = args.data / "test"
    over = evaluate(test, work / "overflow", model_dir=args.overflow_run / "model", batch_size=64, print_table=False)
    plain = evaluate(test, work / "plain", model_dir=args.plain_run / "model", batch_size=64, print_table=False)
    row = summarise(over, plain)
    record = {
        "tag": args.tag,
        "command": " ".join(["python -m benchmarks.answers_real", *(argv or sys.argv[1:])]),
        "overflow_model": json.loads((args.overflow_run / "model" / "model_config.json").read_text()),
        "plain_model": json.loads((args.plain_run / "model" / "model_config.json").read_text()),
        "hardware": cpu(),
        "seconds": round(time.time() - start, 1),
        "results": row,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"answers_real_{args.tag}.json").write_text(json.dumps(record, indent=2) + "\n")
    table = markdown(row)
    (args.out / f"answers_real_{args.tag}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
