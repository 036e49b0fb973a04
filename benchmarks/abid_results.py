"""Results on real ABID images: the README table, every row on the ABID sample's test split.

    python benchmarks/abid_results.py            # collect finished runs, add the free ablations
    python benchmarks/abid_results.py --train    # first train the rows/seeds missing (CPU: hours)
    python benchmarks/abid_results.py --train --rows main capstone --seeds 42
    python benchmarks/abid_results.py --train --rows allcount    # the every-count model, 3 seeds

Runs live in ``logs/train/runs/abid_<row>_s<seed>/`` (metrics.json, checkpoints). Free ablations
reuse the main recipe's best checkpoint: argmax vs rounded expected count, with and without
horizontal-flip test-time augmentation; the same on the main recipe's seeds as one ensemble. Rows in
``CUT_ROWS`` also get a "+ val-fitted count cuts" row: the same checkpoints, the count decided by
cuts fitted on the validation split (``answers.count_cuts=true`` does exactly this after training).
Val and test probabilities are cached per checkpoint in each run's ``{val,test}_probs.pt``.
Rows trained with a "more than 5" class are scored on the same 0..5 images (``in_range``); the
seeds of the rows in ``ENSEMBLE_ROWS`` are also scored as one ensemble on validation and test.

Rows and seeds whose runs are not on this machine keep the numbers recorded in
``benchmarks/results/abid_results.json`` (marked "recorded earlier"): same seed gives the same
numbers on one machine, not across CPUs (docs/results.md), so a rerun here replaces them.
The every-count model (``benchmarks/allcount_results.py``) is its own section: moderate and hard
levels and the warehouse's check set, from evaluate.py on each seed's artifact.
Writes ``bench_out/abid_results.{json,md}`` and ``frontier.png`` (accuracy against training minutes,
every row) to ``bench_out/`` (or the folder in ``BENCH_OUT``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import allcount_results  # noqa: E402
from benchmarks.serving_speed import arch_key, serving_speed  # noqa: E402
from src.data.images import CountFolder  # noqa: E402
from src.data.layout import IMAGE_EXTENSIONS  # noqa: E402
from src.data.transforms import eval_transform  # noqa: E402
from src.inference.checkpoint import load_checkpoint  # noqa: E402
from src.models.counting import predict_counts  # noqa: E402
from src.models.metrics import metrics_from_confusion  # noqa: E402

DATA = ROOT / "data" / "abid_sample"
RUNS = ROOT / "logs" / "train" / "runs"
RECORDED = ROOT / "benchmarks" / "results" / "abid_results.json"
K = 6
CUT_ROWS = ("main", "distill", "distill_countmap")
ENSEMBLE_ROWS = ("countmap_meta", "distill_countmap_meta_e30", "countmap_meta_224")  # teachers, students

# key -> (label, train.py overrides). "main" is the recipe; the rest justify it. The ablations
# measured before the EMA joined the recipe keep their commands exact with PLAIN.
PLAIN = ["experiment=abid_sample", "callbacks.weight_averaging=null"]
FAST = ["experiment=abid_sample", "model.channels_last=true"]
COUNTMAP_META = [*FAST, "model.net.pooling=countmap", "data.metadata_dir=${paths.abid_sample}/metadata",
                 "model.aux_weight=0.1"]


def teachers(row: str) -> str:
    """The data.teachers override naming a row's three seeds as teachers."""
    return "data.teachers=[" + ",".join(f"${{paths.log_dir}}/train/runs/abid_{row}_s{s}/model" for s in (42, 43, 44)) + "]"


ROWS: dict[str, tuple[str, list[str]]] = {
    "capstone": ("capstone recipe: frozen, sampler + loss weights, 10 % data, 50 epochs", ["experiment=abid_capstone"]),
    "main": ("this recipe: full fine-tune, plain CE, expected count, 160 px, 12 epochs cosine, "
             "EMA of the weights (decay 0.997)", ["experiment=abid_sample"]),
    "noema": ("the previous recipe: the same without the EMA", PLAIN),
    "plateau5": ("previous recipe, 5 epochs of ReduceLROnPlateau (patience 1, x0.2) instead of 12 of cosine",
                 [*PLAIN, "trainer.max_epochs=5", "model/scheduler=plateau", "model.scheduler.patience=1",
                  "model.scheduler.factor=0.2"]),
    "dihedral": ("previous recipe + vertical flips and 90-degree turns (data.dihedral)", [*PLAIN, "data.dihedral=true"]),
    "frozen": ("previous recipe, frozen backbone (cached features)",
               [*PLAIN, "model.net.freeze_backbone=true", "data=features"]),
    "partial": ("previous recipe, backbone frozen up to features.10 (the last 8 of 19 stages train)",
                [*PLAIN, "model.net.freeze_backbone=true", "model.net.trainable_stages=8"]),
    "dist": ("previous recipe + count-distance loss (weight 0.5)", [*PLAIN, "model.criterion.distance_weight=0.5"]),
    "sqrtw": ("this recipe + sqrt-inverse loss weights", ["experiment=abid_sample", "model.criterion.weighting=sqrt_inverse"]),
    "ls": ("this recipe + label smoothing 0.1", ["experiment=abid_sample", "model.criterion.label_smoothing=0.1"]),
    "px224": ("this recipe at 224 px, the stored size (1.8x the time of a 160 px run here)",
              ["experiment=abid_sample", "data.image_size=224"]),
    "px224_e6": ("this recipe at 224 px, 6 epochs", ["experiment=abid_sample", "data.image_size=224", "trainer.max_epochs=6"]),
    # Issue 29, on this recipe with channels_last (NHWC: same arithmetic, 1.35x the training images/s here).
    "cl": ("this recipe, channels_last memory layout", [*FAST]),
    "bf16": ("this recipe, channels_last + bf16 autocast (AVX-512 BF16)", [*FAST, "trainer.precision=bf16-mixed"]),
    "attention": ("this recipe, channels_last, attention pooling of the feature map",
                  [*FAST, "model.net.pooling=attention"]),
    "lite0": ("this recipe, channels_last, EfficientNet-Lite0 (timm, ImageNet 74.9 %) instead of MobileNetV2",
              [*FAST, "model=efficientnet_lite0", "model.net.weights=imagenet"]),
    "countmap": ("this recipe, channels_last, count-map pooling (per-location evidence, averaged)",
                 [*FAST, "model.net.pooling=countmap"]),
    "countmap_bf16": ("this recipe, channels_last, count-map pooling, bf16 autocast (AVX-512 BF16)",
                      [*FAST, "model.net.pooling=countmap", "trainer.precision=bf16-mixed"]),
    "countmap_meta": ("this recipe, channels_last, count-map pooling + metadata auxiliary targets (distinct products, "
                      "volume, weight; weight 0.1)",
                      COUNTMAP_META),
    "countmap_synth": ("this recipe, channels_last, count-map pooling, started from a network pretrained on 3,000 "
                       "synthetic bins (experiment=synthetic_pretrain, 3 epochs; its time not counted)",
                       [*FAST, "model.net.pooling=countmap",
                        "init_from=${paths.log_dir}/train/runs/synthetic_pretrain_s42/model"]),
    "overflow_countmap": ("this recipe, channels_last, count-map pooling, trained on the whole sample: the 2,849 bins "
                          "of more than five items as a 7th class (answers restricted to 0..5 on the 0..5 images)",
                          ["experiment=abid_sample_overflow", "model.channels_last=true", "model.net.pooling=countmap"]),
    "distill": ("this recipe distilled from the main recipe's three seeds (soft targets on training images and "
                "mirrors, weight 0.5, T 2; teachers' time not counted)", ["experiment=abid_sample_distill"]),
    "distill_countmap": ("count-map pooling, channels_last, distilled from the count-map row's three seeds "
                         "(weight 0.5, T 2; teachers' time not counted)",
                         ["experiment=abid_sample_distill", "model.channels_last=true", "model.net.pooling=countmap",
                          teachers("countmap")]),
    "distill_countmap_meta": ("count-map pooling, channels_last, metadata auxiliary targets, distilled from the "
                              "countmap_meta row's three seeds (weight 0.5, T 2; teachers' time not counted)",
                              ["experiment=abid_sample_distill", "model.channels_last=true", "model.net.pooling=countmap",
                               "data.metadata_dir=${paths.abid_sample}/metadata", "model.aux_weight=0.1",
                               teachers("countmap_meta")]),
    "distill_countmap_meta_e30": ("the countmap_meta student (same teachers, weight 0.5, T 2) trained 30 epochs instead "
                                  "of 12: a patient student (experiment=abid_sample_student's first teachers)",
                                  ["experiment=abid_sample_student", teachers("countmap_meta")]),
    "student_224": ("the patient student at 224 px, the stored size (same teachers at 160 px), 16 epochs to stay "
                    "within 40 minutes", ["experiment=abid_sample_student", "data.image_size=224",
                                          "trainer.max_epochs=16", teachers("countmap_meta")]),
    "countmap_meta_e30": ("countmap_meta trained 30 epochs, as long as the patient student, without teachers: is it "
                          "the teachers or the schedule?", [*COUNTMAP_META, "trainer.max_epochs=30"]),
    # Out-of-fold teachers: seed 42 + k trains without fold k of 3 ("{fold}"), and answers for it only.
    "oof_countmap_meta": ("countmap_meta trained without a third of the training images (seed 42 + k holds out fold "
                          "k of 3): out-of-fold teachers", [*COUNTMAP_META, "data.folds=3", "data.held_out_fold={fold}"]),
    "student_oof": ("the patient student distilled from the three out-of-fold teachers, each answering only for the "
                    "third of the training images it never saw", ["experiment=abid_sample_student",
                                                               teachers("oof_countmap_meta")]),
    "student_e20": ("the patient student with 20 epochs instead of 30 and one loader worker instead of two (the "
                    "faster layout of 2 cores)", ["experiment=abid_sample_student", "trainer.max_epochs=20",
                                                  "data.num_workers=1", teachers("countmap_meta")]),
    # Sharper teachers: the main recipe gained 2.3 validation points at 224 px (seed 42), at 1.8x the time.
    "countmap_meta_224": ("countmap_meta at 224 px, the stored size: sharper teachers for the student",
                          [*COUNTMAP_META, "data.image_size=224"]),
    "student_t224": ("the patient student (160 px) distilled from the three 224 px countmap_meta seeds (the teachers "
                     "see the stored 224 px image): experiment=abid_sample_student",
                     ["experiment=abid_sample_student"]),
    "student_w08": ("the adopted student with the teachers' share of the loss at 0.8 instead of 0.5 (T 2)",
                    ["experiment=abid_sample_student", "model.criterion.distill_weight=0.8"]),
    "student_aux03": ("the adopted student with the metadata targets' weight at 0.3 instead of 0.1",
                      ["experiment=abid_sample_student", "model.aux_weight=0.3"]),
    "student_wd5e4": ("the adopted student with weight decay 5e-4 instead of 1e-4 (it peaks mid-schedule, then overfits)",
                      ["experiment=abid_sample_student", "model.optimizer.weight_decay=5e-4"]),
    "lite0_countmap_meta": ("countmap_meta with EfficientNet-Lite0 (timm, its own preprocessing) at half the "
                            "learning rate (0.005): a stronger ImageNet backbone under the count-map recipe",
                            [*COUNTMAP_META, "model=efficientnet_lite0", "model.net.weights=imagenet",
                             "model.optimizer.lr=0.005"]),
}


# Rows that start from another run: that run (trained once, before the row's first seed), and its command.
STAGES: dict[str, tuple[str, list[str]]] = {
    "countmap_synth": ("synthetic_pretrain_s42", ["experiment=synthetic_pretrain", "seed=42"]),
}


def run_dir(key: str, seed: int) -> Path:
    return RUNS / f"abid_{key}_s{seed}"


def run_config(run: Path):
    """The composed config train.py saved for a run (None when the folder has none)."""
    config = run / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else None


def overrides(key: str, seed: int) -> list[str]:
    """A row's train.py overrides for one seed ("{fold}": the fold seed 42 + k holds out, k of 3)."""
    return [arg.replace("{fold}", str((seed - 42) % 3)) for arg in ROWS[key][1]] + [f"seed={seed}"]


def command(key: str, seed: int) -> str:
    return " ".join(["python train.py", *overrides(key, seed)])


def train_row(key: str, seed: int) -> float:
    """Train one row/seed unless its metrics exist; returns wall seconds (0 when skipped)."""
    out = run_dir(key, seed)
    if (out / "metrics.json").is_file():
        return 0.0
    if key in STAGES and not (RUNS / STAGES[key][0] / "metrics.json").is_file():
        timed_train(STAGES[key][1], RUNS / STAGES[key][0])
    return timed_train(overrides(key, seed), out)


def timed_train(overrides: list[str], out: Path) -> float:
    """``train.py`` with ``overrides`` into ``out``; its wall seconds go to ``out/wall_seconds.txt``."""
    start = time.perf_counter()
    args = [*overrides, f"hydra.run.dir={out}", "callbacks.progress_bar=null"]
    subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    (out / "wall_seconds.txt").write_text(f"{seconds:.0f}\n")
    return seconds


def split_counts(split: str, data: Path = DATA) -> list[int]:
    return [len(list((data / split / str(k)).glob("*.jpg"))) for k in range(K)]


def confusion(true: torch.Tensor, pred: torch.Tensor, k: int = K) -> torch.Tensor:
    return torch.bincount(true * k + pred.clamp(0, k - 1), minlength=k * k).reshape(k, k)


def constant_rows(data: Path = DATA) -> dict[str, dict]:
    """Always answer one count, chosen on the training split: its mode (accuracy) and its rounded mean (RMSE)."""
    train, test = split_counts("train", data), split_counts("test", data)
    true = torch.repeat_interleave(torch.arange(K), torch.tensor(test))
    mode = max(range(K), key=lambda k: train[k])
    mean = round(sum(k * n for k, n in enumerate(train)) / sum(train))
    rows = {}
    for name, c in (("constant_mode", mode), ("constant_mean", mean))[: 1 if mode == mean else 2]:
        m = metrics_from_confusion(confusion(true, torch.full_like(true, c)))
        what = name.split("_")[1] if mode != mean else "mode and rounded mean"
        rows[name] = {"label": f'constant: always "{c}" (training split\'s {what})', "value": c, "metrics": m}
    return rows


@torch.no_grad()
def _split_probabilities(ckpt: Path, split: str = "test", size: int | None = None,
                         mirror: bool = True) -> dict[str, torch.Tensor]:
    """One pass over a split with a run's checkpoint: softmax of each image and (``mirror``) of its mirror.
    The net is rebuilt from the checkpoint's own spec (pooling, preprocessing), as export.py does;
    ``size`` evaluates at another input size than it was trained at (the rest of its preprocessing kept)."""
    net = load_checkpoint(ckpt).net
    prep = net.preprocessing if size is None else dataclasses.replace(net.preprocessing, size=size)
    data = CountFolder(DATA / split, K, eval_transform(prep))
    loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=2)
    probs, probs_flip, true = [], [], []
    for x, y in loader:
        probs.append(net(x).softmax(-1))
        if mirror:
            probs_flip.append(net(torch.flip(x, dims=[-1])).softmax(-1))
        true.append(y)
    out = {"probs": torch.cat(probs), "true": torch.cat(true)}
    return {**out, "probs_flip": torch.cat(probs_flip)} if mirror else out


def split_probabilities(run: Path, ckpt: Path, split: str = "test") -> dict[str, torch.Tensor]:
    """_split_probabilities, cached in the run folder (one pass per checkpoint and split)."""
    cache = run / f"{split}_probs.pt"
    if cache.is_file():
        cached = torch.load(cache, map_location="cpu", weights_only=True)
        if cached.get("ckpt") == str(ckpt):
            return cached
    out = {"ckpt": str(ckpt), **_split_probabilities(ckpt, split)}
    torch.save(out, cache)
    return out


def with_cuts(run: Path, ckpt: Path) -> dict:
    """Test metrics when the count comes from cuts fitted on the validation split (no TTA)."""
    from src.inference.calibration import fit_count_cuts
    from src.models.counting import expected_count

    val, test = split_probabilities(run, ckpt, "val"), split_probabilities(run, ckpt)
    cuts = fit_count_cuts(expected_count(val["probs"].double()), val["true"], K)
    pred = predict_counts(test["probs"].double(), "expected", cuts=cuts)
    return {"metrics": metrics_from_confusion(confusion(test["true"], pred)), "cuts": [round(c, 4) for c in cuts]}


def rule_and_tta(probs: torch.Tensor, probs_flip: torch.Tensor, true: torch.Tensor) -> dict[str, dict]:
    """Test metrics for argmax vs rounded expected count, with and without flip TTA."""
    out = {}
    for tta, q in (("no TTA", probs), ("flip TTA", (probs + probs_flip) / 2)):
        for rule in ("argmax", "expected"):
            out[f"{rule}, {tta}"] = metrics_from_confusion(confusion(true, predict_counts(q, rule)))
    return out


def free_ablations(run: Path, ckpt: Path) -> dict[str, dict]:
    """Decision rule x flip TTA on one trained model."""
    t = split_probabilities(run, ckpt)
    return rule_and_tta(t["probs"], t["probs_flip"], t["true"])


def seed_ensemble(ckpts: dict[Path, Path], split: str = "test") -> dict[str, dict]:
    """Decision rule x flip TTA on the average of several runs' probabilities (a k-model ensemble)."""
    tests = [split_probabilities(run, ckpt, split) for run, ckpt in ckpts.items()]
    true = tests[0]["true"]
    assert all(torch.equal(t["true"], true) for t in tests), "seeds were tested on different images"
    mean = {k: torch.stack([t[k] for t in tests]).mean(0) for k in ("probs", "probs_flip")}
    return rule_and_tta(mean["probs"], mean["probs_flip"], true)


def row_ensemble(key: str, runs: dict[int, dict]) -> dict:
    """A row's seeds as one ensemble (mean probabilities, the row's decision rule, no TTA) on validation
    and test, beside the mean of its single models: what a student of those seeds could learn from."""
    rule = run_config(run_dir(key, min(runs))).model.decision_rule
    ckpts = {run_dir(key, s): Path(r["best_ckpt"]) for s, r in runs.items()}
    out = {"seeds": sorted(runs), "rule": rule}
    for split in ("val", "test"):
        out[split] = seed_ensemble(ckpts, split)[f"{rule}, no TTA"]
    return out


def input_sizes(keys: list[str], seeds: list[int], sizes: list[int]) -> dict:
    """Each row's best checkpoints evaluated at other input sizes than they were trained at (FixRes's
    question: does a model trained small answer better on a larger photo?), the row's decision rule."""
    out: dict = {}
    for key in keys:
        for seed in seeds:
            run = run_dir(key, seed)
            r = local_run(key, seed)
            if not r or not r["best_ckpt"]:
                continue
            rule = run_config(run).model.decision_rule
            for split in ("val", "test"):
                for size in sizes:
                    t = _split_probabilities(Path(r["best_ckpt"]), split, size, mirror=False)
                    m = metrics_from_confusion(confusion(t["true"], predict_counts(t["probs"], rule)))
                    out.setdefault(key, {}).setdefault(str(seed), {}).setdefault(split, {})[str(size)] = m
                    print(f"{key} seed {seed} {split} at {size} px: {m['acc']:.1%} / RMSE {m['rmse']:.3f}", flush=True)
    return out


def unfinished(run: Path) -> dict | None:
    """A run stopped before its test (e.g. for time): its best saved checkpoint on the test split,
    with the run's own decision rule and no TTA, exactly what train.py's test would report."""
    ckpts = sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    if not ckpts:
        return None
    rule = run_config(run).model.decision_rule
    m = free_ablations(run, ckpts[-1])[f"{rule}, no TTA"]
    return {"metrics": m, "stopped_after_epoch": int(ckpts[-1].stem.split("_")[1]), "best_ckpt": str(ckpts[-1])}


def in_range(run: Path, ckpt: Path, rule: str) -> dict[str, dict]:
    """A model with a "more than 5" class on the sample's 0..5 val and test images: its answers restricted
    to 0..5 (in-range probabilities renormalised, the run's rule: what a 0..5 model answers), and on
    test as served (a "more than 5" answer is wrong and counts as 6 in the RMSE)."""
    out = {}
    for split in ("val", "test"):
        t = split_probabilities(run, ckpt, split)
        p = t["probs"][:, :K] / t["probs"][:, :K].sum(-1, keepdim=True)
        out[split] = metrics_from_confusion(confusion(t["true"], predict_counts(p, rule)))
    served = predict_counts(t["probs"], rule, overflow=True)  # t: the test split's
    out["as_served"] = metrics_from_confusion(confusion(t["true"], served, K + 1))
    return out


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def local_run(key: str, seed: int) -> dict | None:
    """A run of this machine: its test metrics, best checkpoint and wall time (or None)."""
    f = run_dir(key, seed) / "metrics.json"
    if not f.is_file():
        return unfinished(run_dir(key, seed))
    m = json.loads(f.read_text())
    wall = run_dir(key, seed) / "wall_seconds.txt"
    best = m.get("best_ckpt")
    out = {
        "metrics": {k.removeprefix("test/"): v for k, v in m.items() if k.startswith("test/")},
        "val_acc_best": m.get("val/acc_best"),
        "best_ckpt": str(run_dir(key, seed) / "checkpoints" / Path(best).name) if best else None,  # folder may move
        "wall_s": float(wall.read_text()) if wall.is_file() else None,
    }
    cfg = run_config(run_dir(key, seed))
    if cfg is not None and cfg.data.get("overflow") and out["best_ckpt"]:  # with "more than 5": scored on 0..5 images
        scores = in_range(run_dir(key, seed), Path(out["best_ckpt"]), cfg.model.decision_rule)
        out.update(metrics=scores["test"], val_acc_best=scores["val"]["acc"], as_served=scores["as_served"])
    return out


def same_numbers(a: dict, b: dict) -> bool:
    """One run recorded twice (this machine's own earlier collect), not the same seed on another CPU."""
    return all(abs(a[m] - b[m]) < 1e-9 for m in ("acc", "rmse"))


def row_setup(key: str) -> dict:
    """What a row trains: epochs, input size, backbone and pooling (its composed train.py config)."""
    from src.utils.config import compose_config

    cfg = compose_config("train", overrides(key, 42)[:-1])
    net = cfg.model.net
    train = Path(cfg.data.data_dir) / "train"
    subset = float(cfg.data.get("subset") or 1.0)
    if cfg.data.get("held_out_fold") is not None:  # out-of-fold: about (folds - 1) / folds of the images
        subset *= (cfg.data.folds - 1) / cfg.data.folds
    return {"epochs": int(cfg.trainer.max_epochs), "subset": subset,
            "train_images": None if train.parent == DATA else  # another preparation (e.g. with "more than 5")
            sum(1 for f in train.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS),
            "arch": arch_key(net.name, net.get("pooling") or "avg", int(cfg.data.image_size))}


def this_machine() -> dict:
    from benchmarks.bench_int8 import cpu_flags
    from benchmarks.run import hardware

    return {**hardware(), "cpu_flags": cpu_flags()}


def serving(rows: dict, earlier: dict | None) -> dict:
    """Serving images/s of every architecture the rows train (``benchmarks/serving_speed.py``); an earlier
    measurement is kept when it was taken on this kind of CPU."""
    here = this_machine()
    same_cpu = earlier and earlier.get("hardware", {}).get("cpu") == here["cpu"]
    archs = dict(earlier["archs"]) if same_cpu else {}
    for row in rows.values():
        key = row.get("arch")
        if key and key not in archs:
            net, pooling, size = key.split(", ")
            print(f"serving speed: {key}", flush=True)
            archs[key] = serving_speed(net, pooling.split()[0], int(size.split()[0]))
    return {"hardware": here if not same_cpu else earlier["hardware"], "archs": archs,
            "what": "ONNX Runtime, batch 32, 2 threads, random weights; int8: QDQ static per-channel, minmax"}


def finish_row(row: dict) -> dict:
    runs = row["seeds"]
    row["metrics"] = runs[min(runs)]["metrics"]  # the first seed's numbers
    row.pop("over_seeds", None)
    if len(runs) > 1:
        row["over_seeds"] = {m: summarise([r["metrics"][m] for r in runs.values()]) for m in ("acc", "rmse")}
        row["mean_class"] = {m: [statistics.fmean(r["metrics"][f"{m}_class_{k}"] for r in runs.values()) for k in range(K)]
                             for m in ("acc", "rmse")}  # fmt: skip
    served = [r["as_served"] for r in runs.values() if r.get("as_served")]
    if served:
        row["as_served"] = {m: summarise([s[m] for s in served]) for m in ("acc", "rmse")}
    walls = [r["wall_s"] for r in runs.values() if r.get("wall_s")]
    if walls:
        row["minutes"] = round(statistics.fmean(walls) / 60, 1)
    return row


def collect(seeds: list[int], recorded: Path = RECORDED) -> dict:
    earlier = json.loads(recorded.read_text()) if recorded.is_file() else {"rows": {}}
    results: dict = {"test_counts": split_counts("test"), "train_counts": split_counts("train"), "rows": {}}
    results["rows"].update(constant_rows())
    for key, (label, _) in ROWS.items():
        old = earlier["rows"].get(key, {})
        runs, moved = {}, {}
        for seed in seeds:
            here = local_run(key, seed)
            was = old.get("seeds", {}).get(str(seed))
            if here is not None:
                runs[seed] = here
                if was and not was.get("recorded_earlier") and not same_numbers(was["metrics"], here["metrics"]):
                    moved[seed] = was["metrics"]  # the same seed measured on another machine
            elif was is not None:
                runs[seed] = {**was, "recorded_earlier": True}
        if not runs:
            continue
        first = runs[min(runs)]
        if "stopped_after_epoch" in first:
            label += f" (stopped for time; best checkpoint, epoch {first['stopped_after_epoch']})"
        row = {"label": label, "command": command(key, seeds[0]), "seeds": runs}
        if moved or old.get("other_machine"):
            row["other_machine"] = {**old.get("other_machine", {}), **{str(s): m for s, m in moved.items()}}
        results["rows"][key] = finish_row(row)
        setup = row_setup(key)
        row["arch"] = setup["arch"]
        walls = [r["wall_s"] for r in runs.values() if r.get("wall_s")]
        if all(r.get("recorded_earlier") for r in runs.values()) and "train_images_per_s" in old:
            row["train_images_per_s"] = old["train_images_per_s"]  # its data folder may not be on this machine
        elif walls:  # effective: every training image once per epoch over the whole run (validation included)
            images = (setup["train_images"] or sum(results["train_counts"])) * setup["subset"] * setup["epochs"]
            row["train_images_per_s"] = round(images / statistics.fmean(walls), 1)
        vals = [r["val_acc_best"] for r in runs.values() if r.get("val_acc_best") is not None]
        if vals:
            row["val_acc"] = summarise(vals)
        if key in CUT_ROWS and all(r.get("best_ckpt") and not r.get("recorded_earlier") for r in runs.values()):
            cut_runs = {s: {**with_cuts(run_dir(key, s), Path(r["best_ckpt"])), "wall_s": r.get("wall_s")}
                        for s, r in runs.items()}
            results["rows"][f"{key}_cuts"] = finish_row({
                "label": f"{label} + val-fitted count cuts (same checkpoints)",
                "command": command(key, seeds[0]).replace(" seed=", " answers.count_cuts=true seed="), "seeds": cut_runs})
        elif f"{key}_cuts" in earlier["rows"]:
            results["rows"][f"{key}_cuts"] = earlier["rows"][f"{key}_cuts"]
    main = results["rows"].get("main")
    if main and not any(r.get("recorded_earlier") for r in main["seeds"].values()):
        seed = min(main["seeds"])
        run, ckpt = run_dir("main", seed), Path(main["seeds"][seed]["best_ckpt"])
        results["free_ablations"] = {"run": str(run), "ckpt": str(ckpt), "rows": free_ablations(run, ckpt)}
        if len(main["seeds"]) > 1:
            ckpts = {run_dir("main", s): Path(r["best_ckpt"]) for s, r in main["seeds"].items()}
            results["seed_ensemble"] = {"seeds": sorted(main["seeds"]), "rows": seed_ensemble(ckpts)}
    else:
        for key in ("free_ablations", "seed_ensemble"):
            if key in earlier:
                results[key] = {**earlier[key], "recorded_earlier": True}
    for key in ("noema_free_ablations", "noema_ensemble"):  # the previous recipe's, recorded earlier
        if key in earlier:
            results[key] = earlier[key]
    ensembles = {}
    for key in ENSEMBLE_ROWS:
        row = results["rows"].get(key)
        if row and len(row["seeds"]) > 1 and all(r.get("best_ckpt") and not r.get("recorded_earlier")
                                                 for r in row["seeds"].values()):
            ensembles[key] = row_ensemble(key, row["seeds"])
        elif key in earlier.get("row_ensembles", {}):
            ensembles[key] = {**earlier["row_ensembles"][key], "recorded_earlier": True}
    if ensembles:
        results["row_ensembles"] = ensembles
    results["serving"] = serving(results["rows"], earlier.get("serving"))
    allcount = allcount_results.collect(seeds, earlier.get("allcount"), RUNS)  # issue 26: one model, every count
    if allcount:
        results["allcount"] = allcount
    return results


def fmt(m: dict) -> str:
    return f"{100 * m['acc']:.1f} % | {m['rmse']:.3f}"


def fmt_row(row: dict) -> str:
    """acc | RMSE: mean ± sd over seeds when there are several, else the one seed's numbers."""
    if "over_seeds" not in row:
        return fmt(row["metrics"])
    a, r = row["over_seeds"]["acc"], row["over_seeds"]["rmse"]
    return f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f} % | {r['mean']:.3f} ± {r['std']:.3f}"


def seeds_cell(row: dict) -> str:
    seeds = row.get("seeds", {})
    if not seeds:
        return "-"
    return ", ".join(f"{s}{'*' if r.get('recorded_earlier') else ''}" for s, r in sorted(seeds.items(), key=lambda x: int(x[0])))


def class_table(results: dict, keys: tuple[str, ...]) -> list[str]:
    """Per-count accuracy and RMSE on the test split, mean over each row's seeds."""
    lines = ["| count | " + " | ".join(str(k) for k in range(K)) + " |", "|---" * (K + 1) + "|",
             "| test images | " + " | ".join(str(n) for n in results["test_counts"]) + " |"]
    for key in keys:
        row = results["rows"].get(key)
        if not row:
            continue
        per = row.get("mean_class") or {m: [row["metrics"][f"{m}_class_{k}"] for k in range(K)] for m in ("acc", "rmse")}
        lines.append(f"| {key}: accuracy | " + " | ".join(f"{100 * v:.1f} %" for v in per["acc"]) + " |")
        lines.append(f"| {key}: RMSE | " + " | ".join(f"{v:.3f}" for v in per["rmse"]) + " |")
    return lines


def val_cell(row: dict) -> str:
    v = row.get("val_acc")
    if not v:
        return "-"
    return f"{100 * v['mean']:.1f}" + (f" ± {100 * v['std']:.1f}" if v.get("std") else "") + " %"


def speed_cells(row: dict, archs: dict) -> str:
    """train images/s | serving images/s, ONNX fp32 / int8."""
    train = row.get("train_images_per_s", "-")
    serve = archs.get(row.get("arch"))
    return f"{train} | " + (f"{serve['onnx_fp32']:.0f} / {serve['onnx_int8']:.0f}" if serve else "-")


def markdown(results: dict) -> str:
    archs = (results.get("serving") or {}).get("archs", {})
    lines = ["| row | seeds | test acc | test RMSE | val acc | minutes per run | train img/s | serve img/s fp32 / int8 "
             "| command |", "|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"].values():
        cmd = f"`{row['command']}`" if "command" in row else "`python benchmarks/abid_results.py`"
        lines.append(f"| {row['label']} | {seeds_cell(row)} | {fmt_row(row)} | {val_cell(row)} | {row.get('minutes', '-')} "
                     f"| {speed_cells(row, archs)} | {cmd} |")
    hw = (results.get("serving") or {}).get("hardware", {})
    lines += ["", "Several seeds: mean ± sd. \\* recorded earlier on another machine of the same kind "
              "(benchmarks/results/abid_results.json); minutes: wall time of train.py on 2 CPU cores. val acc: "
              "the best epoch's validation accuracy (what checkpoints and recipes are chosen by). train img/s: "
              "training images x epochs / wall time (validation and start-up included). serve img/s: the row's "
              "architecture in ONNX Runtime, batch 32, fp32 and int8 (`benchmarks/serving_speed.py`"
              + (f"; {hw.get('cpu')}, {', '.join(hw.get('cpu_flags') or [])}" if hw else "") + ")."]
    for key, row in results["rows"].items():
        for seed, m in row.get("other_machine", {}).items():
            here = row["seeds"].get(int(seed)) or row["seeds"].get(seed)
            if here:
                where = "in the table (\\*)" if here.get("recorded_earlier") else "here"
                lines.append(f"\n{key}, seed {seed}: {fmt(here['metrics'])} {where}, {fmt(m)} on the machine of an "
                             "earlier record (same seed, other CPU kernels)")
    for key, row in results["rows"].items():
        if "as_served" in row:
            served = {"over_seeds": row["as_served"]} if row["as_served"]["acc"]["n"] > 1 else \
                {"metrics": {m: v["mean"] for m, v in row["as_served"].items()}}
            lines.append(f"\n{key}: scored on the 0..5 images with its answers restricted to 0..5; as served (a \"more "
                         f"than 5\" answer there is wrong, and 6 in the RMSE): {fmt_row(served)}")
    for key, what in (("free_ablations", "this recipe's"), ("noema_free_ablations", "the previous recipe's")):
        if key in results:
            lines += ["", f"Free ablations on {what} best checkpoint of its first seed:", "",
                      "| decision rule, test-time augmentation | test acc | test RMSE |", "|---|---|---|"]  # fmt: skip
            for name, m in results[key]["rows"].items():
                lines.append(f"| {name} | {fmt(m)} |")
    for key, what in (("seed_ensemble", "recipe"), ("noema_ensemble", "previous recipe")):
        if key in results:
            ens = results[key]
            lines += ["", f"The {what}'s seeds {ens['seeds']} as one ensemble (mean probabilities; "
                      f"{len(ens['seeds'])}x the inference cost):", "",
                      "| decision rule, test-time augmentation | test acc | test RMSE |", "|---|---|---|"]  # fmt: skip
            for name, m in ens["rows"].items():
                lines.append(f"| {name} | {fmt(m)} |")
    if results.get("row_ensembles"):
        lines += ["", "A row's seeds as one ensemble (mean probabilities, the row's rule, no TTA; one network per seed "
                  "at inference) against its single models (mean over the same seeds):", "",
                  "| row | seeds | ensemble: val acc | test acc | test RMSE | single: val acc | test acc | test RMSE |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, ens in results["row_ensembles"].items():
            row = results["rows"].get(key, {})
            single = row.get("over_seeds")
            single_cells = (f"{100 * row['val_acc']['mean']:.1f} % | {100 * single['acc']['mean']:.1f} % | "
                            f"{single['rmse']['mean']:.3f}") if single and row.get("val_acc") else "- | - | -"
            lines.append(f"| {key} | {', '.join(map(str, ens['seeds']))} | {100 * ens['val']['acc']:.1f} % | "
                         f"{fmt(ens['test'])} | {single_cells} |")
    lines += allcount_results.markdown(results.get("allcount"), results["rows"].get("main"))
    lines += ["", "Per count, test split (mean over the row's seeds):", ""]
    lines += class_table(results, ("noema", "main", "main_cuts", "ls", "countmap", "countmap_meta", "distill",
                                   "distill_countmap", "distill_countmap_meta", "distill_countmap_meta_e30"))
    return "\n".join(lines) + "\n"


def frontier_plot(results: dict, path: Path) -> Path | None:
    """Test accuracy (0..5 images; mean over seeds, error bar one sd) against training minutes per run,
    one point per row that has both: where the time went. The every-count model's moderate level joins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.utils.figures import save_figure

    points = []
    for key, row in results["rows"].items():
        if row.get("minutes"):
            acc = row.get("over_seeds", {}).get("acc") or {"mean": row["metrics"]["acc"], "std": 0.0}
            points.append((key, row["minutes"], acc["mean"], acc["std"]))
    allcount = results.get("allcount")
    key = next((k for k in ("task_acc", "moderate_acc") if allcount and k in allcount["over_seeds"]), None)
    if key and allcount.get("minutes"):  # the moderate task: answers in 0..5, like every other row's
        acc = allcount["over_seeds"][key]
        points.append(("allcount (moderate task)", allcount["minutes"], acc["mean"], acc["std"]))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, minutes, mean, sd in points:
        ax.errorbar(minutes, 100 * mean, yerr=100 * sd, fmt="o", capsize=3)
        ax.annotate(key, (minutes, 100 * mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if "constant_mode" in results["rows"]:
        ax.axhline(100 * results["rows"]["constant_mode"]["metrics"]["acc"], ls=":", c="grey", label="constant")
        ax.legend(loc="lower right")
    ax.set_xlabel("training minutes per run (2 CPU cores)")
    ax.set_ylabel("test accuracy, 0..5 images (%)")
    ax.set_title("ABID sample: accuracy against training time (mean ± sd over seeds)")
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="train the missing rows first")
    parser.add_argument("--rows", nargs="+", default=[*ROWS, "allcount"], choices=[*ROWS, "allcount"],
                        help="allcount: the every-count model (benchmarks/allcount_results.py)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--input-sizes", nargs="+", type=int, metavar="PX",
                        help="only evaluate the rows' trained seeds at these input sizes (input_sizes.json)")
    args = parser.parse_args()
    out = Path(os.environ.get("BENCH_OUT", ROOT / "bench_out"))
    out.mkdir(parents=True, exist_ok=True)
    if args.input_sizes:
        sizes = input_sizes(args.rows, args.seeds, args.input_sizes)
        (out / "input_sizes.json").write_text(json.dumps({"hardware": this_machine(), "rows": sizes}, indent=2))
        return
    if args.train:
        for seed in args.seeds:
            for key in args.rows:
                allcount_results.train(seed) if key == "allcount" else train_row(key, seed)
    results = collect(args.seeds)
    (out / "abid_results.json").write_text(json.dumps(results, indent=2))
    (out / "abid_results.md").write_text(markdown(results))
    frontier_plot(results, out / "frontier.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
