"""Every count (issue 26): all-count preparation with pooled strata, synthetic bins above five items,
a tail read from count folders, the ordinal (CORN) head, and answers for any expected quantity."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.data.datamodule import BinDataModule, check_data_folder
from src.data.images import CountFolder
from src.data.labels import LabelSpace
from src.data.prepare import prepare
from src.data.split import MIN_STRATUM, assign_splits, count_strata, pool_name
from src.data.synthetic import DEFAULT_CLASS_PROBS, class_probs_for, make_bucket, make_imagefolder
from src.inference.artifact import export_artifact, model_config, read_config
from src.inference.predictor import CountPredictor
from src.models.backbones import CountNet
from src.models.counting import count_interval, p_more_than, predict_counts
from src.models.heads import HEADS, OrdinalHead
from tests.helpers import SHARED_ABID, TINY, compose_cfg

FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small models, two shared cores


# -- the ordinal head -------------------------------------------------------------------------------
def corn_loss_reference(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """coral-pytorch 1.4.0's ``corn_loss`` (Shi, Cao, Raschka 2021), summed instead of averaged."""
    total = torch.zeros(())
    for k in range(num_classes - 1):
        mask = y > k - 1
        label = (y[mask] > k).float()
        total = total + F.binary_cross_entropy_with_logits(logits[mask, k], label, reduction="sum")
    return total


def test_the_ordinal_head_gives_an_ordered_distribution_and_corns_loss():
    labels = LabelSpace(15, tail=True)
    assert HEADS["ordinal"] is OrdinalHead and OrdinalHead.out_width(labels) == 16 == labels.num_classes - 1
    torch.manual_seed(0)
    outputs = torch.randn(64, 16) * 6  # large outputs too: computed in log space, no NaN, no negative mass
    for temperature in (None, 0.5, 2.0):
        p = OrdinalHead.probabilities(outputs, temperature)
        assert p.shape == (64, 17) and torch.isfinite(p).all() and (p >= 0).all()
        assert torch.allclose(p.sum(-1), torch.ones(64), atol=1e-5)
        above = 1 - p.cumsum(-1)[:, :-1]  # P(count > k) from the distribution
        assert (above[:, 1:] <= above[:, :-1] + 1e-6).all()  # non-increasing in k
    assert torch.allclose(OrdinalHead.above(outputs), 1 - OrdinalHead.probabilities(outputs).cumsum(-1)[:, :-1],
                          atol=1e-5)
    # The head's loss is CORN's: the per-task binary cross-entropies, here averaged per image.
    y = torch.randint(0, 17, (64,))
    assert OrdinalHead.loss(outputs, y).item() == pytest.approx(corn_loss_reference(outputs, y, 17).item() / 64,
                                                                rel=1e-4)
    # A net built with it: width num_classes - 1, and it learns an ordered answer in a few steps.
    net = CountNet("resnet18", weights=None, head="ordinal", max_count=15, tail=True)
    assert net.head.fc.out_features == 16 and net.num_classes == 17 and net.spec["head"] == "ordinal"


def test_counts_intervals_and_p_more_than():
    probs = torch.tensor([
        [0.10, 0.50, 0.30, 0.10, 0.00],
        [0.05, 0.05, 0.10, 0.30, 0.50],
        [0.25, 0.25, 0.25, 0.25, 0.00],
        [0.00, 0.00, 0.00, 0.00, 1.00],
    ])
    assert count_interval(probs).tolist() == [[1, 2], [3, 4], [0, 3], [4, 4]]  # shortest run holding >= 80 %
    assert count_interval(probs, 0.5).tolist()[0] == [1, 1]
    assert predict_counts(probs, "median").tolist() == [1, 3, 1, 4]  # row 2: P(count <= 3) = 1/2
    assert p_more_than(probs, 2).tolist() == pytest.approx([0.1, 0.8, 0.25, 1.0])
    assert count_interval(probs[0]).tolist() == [1, 2]  # one row alone
    with pytest.raises(ValueError, match="interval mass"):
        count_interval(probs, 0.0)


# -- answers for any count --------------------------------------------------------------------------
def predictor_for(labels: LabelSpace, head: str = "ordinal", rule: str = "median") -> CountPredictor:
    net = CountNet("resnet18", weights=None, head=head, max_count=labels.max_count, tail=labels.tail, input_size=32)
    return CountPredictor(net.eval(), model_config(net, None, rule))


def peaked(num_classes: int, at: int, mass: float = 0.9) -> torch.Tensor:
    row = torch.full((num_classes,), (1 - mass) / (num_classes - 1))
    row[at] = mass
    return row


def test_every_answer_of_an_all_count_model_carries_p_more_than_5_an_interval_and_what_was_checked():
    predictor = predictor_for(LabelSpace(15, tail=True))
    assert predictor.all_counts
    probs = torch.stack([peaked(17, 7), peaked(17, 16), peaked(17, 2)])
    a, b, c = predictor.results(probs, ids=["a", "b", "c"], expected=[7, 40, 16])
    assert a["count"] == 7 and a["interval"] == [7, 7] and a["p_more_than_5"] == pytest.approx(0.9 + 10 * 0.1 / 16)
    assert a["checked_against"] == "7" and a["verdict"] == "match" and a["p_expected"] == pytest.approx(0.9)
    # The tail: "16 or more" is an open-ended interval; 40 and 16 are both checked against it, and say so.
    assert b["count"] is None and b["label"] == ">15" and b["overflow"] is True and b["interval"] == [16, None]
    assert b["checked_against"] == ">15" and b["verdict"] == "match" and b["p_expected"] == pytest.approx(0.9)
    assert c["count"] == 2 and c["checked_against"] == ">15" and c["verdict"] == "mismatch"
    # A verdict flips when the expected quantity moves from the true count to a far one.
    [near], [far] = predictor.results(probs[:1], expected=[7]), predictor.results(probs[:1], expected=[12])
    assert (near["verdict"], far["verdict"]) == ("match", "mismatch") and far["p_expected"] < near["p_expected"]
    # Without a tail, counts above max_count are still refused with the fix.
    with pytest.raises(ValueError, match="above what this model can check"):
        predictor_for(LabelSpace(15)).check_expected(16)
    # Below 5 there is no P(count > 5) to report, but an interval still is.
    [small] = predictor_for(LabelSpace(3, tail=True)).results(peaked(5, 4)[None])
    assert "p_more_than_5" not in small and small["interval"] == [4, None]


def test_old_0_to_5_and_overflow_models_answer_exactly_as_before():
    for labels in (LabelSpace(5), LabelSpace(5, tail=True)):
        predictor = predictor_for(labels, head="softmax", rule="argmax")
        assert not predictor.all_counts
        [r] = predictor.results(peaked(labels.num_classes, 3)[None], ids=["x"], expected=[3])
        keys = ["id", "count", "label", *(["overflow"] if labels.tail else []), "confidence", "probabilities",
                "expected_quantity", "p_expected", "verdict"]
        assert list(r) == keys


def test_an_all_count_artifact_answers_alike_on_torch_and_onnx(tmp_path):
    torch.manual_seed(1)
    net = CountNet("resnet18", weights=None, head="ordinal", max_count=10, tail=True, input_size=32).eval()
    model_dir = export_artifact(net, None, "median", tmp_path / "model", onnx=True, tarball=False)
    assert read_config(model_dir)["net"]["head"] == "ordinal"
    batch = torch.randn(3, 3, 32, 32)
    torch_answers = CountPredictor.from_model_dir(model_dir).predict_batch(batch, expected=[0, 11, 30])
    onnx_answers = CountPredictor.from_model_dir(model_dir, backend="onnx").predict_batch(batch, expected=[0, 11, 30])
    for x, y in zip(torch_answers, onnx_answers, strict=True):
        assert {k: x[k] for k in ("count", "interval", "checked_against", "verdict")} == \
            {k: y[k] for k in ("count", "interval", "checked_against", "verdict")}
        assert x["p_more_than_5"] == pytest.approx(y["p_more_than_5"], abs=1e-4)
    assert [r["checked_against"] for r in torch_answers] == ["0", ">10", ">10"]


# -- synthetic bins above five items ----------------------------------------------------------------
def test_the_generator_draws_more_than_five_items_only_when_asked(tmp_path):
    assert class_probs_for(None) == DEFAULT_CLASS_PROBS == class_probs_for(5)
    probs = class_probs_for(12)
    assert len(probs) == 13 and probs[:6] == DEFAULT_CLASS_PROBS and all(a > b for a, b in zip(probs[5:-1], probs[6:], strict=True))
    root = make_imagefolder(tmp_path / "all", {"train": 60}, image_size=32, seed=2, max_items=12, workers=1)
    per_count = Counter(int(p.parent.name) for p in root.glob("train/*/*.jpg"))
    assert max(per_count) == 12 and sum(n for c, n in per_count.items() if c > 5) >= 20
    plain = make_imagefolder(tmp_path / "plain", {"train": 60}, image_size=32, seed=2, workers=1)
    assert {int(p.parent.name) for p in plain.glob("train/*/*.jpg")} <= set(range(6))
    # Bins of up to six items render exactly as before (the default datasets stay bit for bit).
    same = make_imagefolder(tmp_path / "same", {"train": 60}, image_size=32, seed=2, max_items=None, workers=1)
    assert all((same / p.relative_to(plain)).read_bytes() == p.read_bytes() for p in plain.rglob("*.jpg"))
    with pytest.raises(ValueError, match="max_items"):
        class_probs_for(0)


# -- the tail read from count folders ---------------------------------------------------------------
def test_a_tail_reads_every_count_folder_above_max_count(tmp_path):
    root = make_imagefolder(tmp_path / "d", {"train": 80}, image_size=32, seed=4, max_items=12, workers=1)
    truth = Counter(int(p.parent.name) for p in root.glob("train/*/*.jpg"))
    folder = CountFolder(root / "train", num_classes=12, overflow=True)  # 0..10 and ">10"
    got = Counter(folder.targets)
    assert got[11] == truth[11] + truth[12] > 0 and all(got[c] == truth[c] for c in range(11))
    assert folder.classes[-1] == "11plus"
    (root / "train" / "11plus").mkdir()  # an overflow preparation's folder is read into the same class
    (root / "train" / "11plus" / "x.jpg").write_bytes(next(root.glob("train/12/*.jpg")).read_bytes())
    got[11] += 1
    assert Counter(CountFolder(root / "train", num_classes=12, overflow=True).targets) == got
    # No tail: counts above max_count are left out, as before.
    assert set(CountFolder(root / "train", num_classes=6).targets) <= set(range(6))
    check_data_folder(root, ("train",), labels=LabelSpace(10, tail=True))  # 11/ and 12/ count as the tail
    with pytest.raises(ValueError, match=r"13plus.*does not exist.*data\.overflow=false"):
        check_data_folder(root, ("train",), labels=LabelSpace(12, tail=True))
    check_data_folder(root, ("train",), generator={"max_items": 12}, labels=LabelSpace(10, tail=True))
    with pytest.raises(ValueError, match=r"data\.overflow=false.*max_items"):
        check_data_folder(root, ("train",), generator={"max_items": 12}, labels=LabelSpace(15, tail=True))
    dm = BinDataModule(str(root), image_size=32, max_count=10, overflow=True, num_workers=0)
    assert dm.num_classes == 12 and Counter(dm._split("train", train=False).targets) == got


# -- preparation of every count ---------------------------------------------------------------------
def test_strata_pool_rare_counts_above_five_and_leave_0_to_5_alone():
    counts = {f"a{i:04d}": i % 6 for i in range(600)}  # 100 of each of 0..5
    counts.update({f"b{i:04d}": 6 + i % 2 for i in range(60)})  # 30 sixes and sevens: their own strata
    counts.update({f"c{i:04d}": 8 + i % 3 for i in range(12)})  # 4 each of 8, 9, 10: pooled "6-10"
    counts.update({f"d{i:04d}": 11 + i for i in range(10)})  # 11..20 once each: "11-20"
    counts.update({f"e{i:04d}": 21 + 3 * i for i in range(10)})  # 21..48: "21+"
    strata = count_strata(counts)
    assert {strata[n] for n, c in counts.items() if c <= 7} == set(range(8))
    assert {strata[n] for n, c in counts.items() if c > 7} == {"6-10", "11-20", "21+"}
    assert pool_name(6) == "6-10" and pool_name(20) == "11-20" and pool_name(300) == "21+" and MIN_STRATUM == 20
    plan = assign_splits(counts, FRACTIONS, 42, strata=strata)
    plain = assign_splits({n: c for n, c in counts.items() if c <= 5}, FRACTIONS, 42)
    assert all(plan[n] == s for n, s in plain.items())  # 0..5: the same splits as a 0..5 preparation
    for pool in ("6-10", "11-20", "21+"):  # every pool reaches every split, at the fractions
        split_sizes = Counter(plan[n] for n in counts if strata[n] == pool)
        total = sum(split_sizes.values())
        assert all(abs(split_sizes[s] - total * f) < 1 for s, f in FRACTIONS.items())
    # Stratified alone, each single rare count would land in train: the reason for pooling.
    alone = assign_splits({n: c for n, c in counts.items() if c > 10}, FRACTIONS, 42)
    assert set(alone.values()) == {"train"}
    with pytest.raises(ValueError, match="min_stratum"):
        count_strata(counts, 0)


def test_prepare_with_max_count_null_keeps_every_count_in_its_own_folder(tmp_path):
    source = tmp_path / "bucket"
    make_bucket(source, 60, image_size=32, seed=5, max_count=14, workers=1)
    truth = {p.stem: json.loads(p.read_text())["EXPECTED_QUANTITY"] for p in (source / "metadata").glob("*.json")}
    out = tmp_path / "all"
    report = prepare(source=str(source), output=str(out), max_count=None, progress=False, workers=2, plot=False)
    found = {p.stem: (p.parts[-3], int(p.parts[-2])) for p in out.glob("*/*/*.jpg")}
    assert {n: c for n, (_, c) in found.items()} == truth and report.above_max_count == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["max_count"] is None and stats["settings"]["min_stratum"] == MIN_STRATUM
    pooled = stats["pooled_strata"]
    assert set(pooled) <= {"6-10", "11-20"} and all(c > 5 for cs in pooled.values() for c in cs)
    # The 0..5 part is split exactly as the default preparation splits it.
    default = tmp_path / "default"
    prepare(source=str(source), output=str(default), progress=False, workers=2, plot=False)
    assert "min_stratum" not in json.loads((default / "stats.json").read_text())["settings"]  # as before
    for path in default.glob("*/*/*.jpg"):
        assert found[path.stem] == (path.parts[-3], int(path.parts[-2]))
    with pytest.raises(ValueError, match="overflow=true.*max_count=null"):
        prepare(source=str(source), output=str(tmp_path / "x"), max_count=None, overflow=True, progress=False)
    # "all", or "None" as Hydra reads max_count=None and a launcher may render a null: every count too.
    again = prepare(source=str(source), output=str(out), max_count="None", progress=False, workers=2, plot=False)
    assert again.written == 0 and len(again.dataset) == len(truth)
    with pytest.raises(ValueError, match="or null for every count"):
        prepare(source=str(source), output=str(tmp_path / "x"), max_count="five", progress=False)


def test_the_real_sample_keeps_every_count_in_every_split_or_pool():
    if not (SHARED_ABID / "metadata").is_dir():
        pytest.skip(f"real ABID sample not found at {SHARED_ABID} (only present on the team's machines)")
    counts = {p.stem: json.loads(p.read_text())["EXPECTED_QUANTITY"] for p in (SHARED_ABID / "metadata").glob("*.json")}
    strata = count_strata(counts)
    plan = assign_splits(counts, FRACTIONS, 42, strata=strata)
    by_stratum: dict = {}
    for name, stratum in strata.items():
        by_stratum.setdefault(stratum, Counter())[plan[name]] += 1
    for stratum, sizes in by_stratum.items():
        total = sum(sizes.values())
        assert all(abs(sizes[s] - total * f) <= 1 for s, f in FRACTIONS.items()), (stratum, sizes)
        assert total >= MIN_STRATUM or isinstance(stratum, str) or stratum <= 5
    assert sum(1 for c in counts.values() if c > 5) > 1000 and {"21+"} <= set(by_stratum)


# -- configs and a short training run ---------------------------------------------------------------
def test_the_all_count_experiments_compose():
    cfg = compose_cfg("train", ["experiment=allcount_quickstart"])
    assert (cfg.data.max_count, cfg.data.overflow, cfg.data.generator.max_items) == (10, True, 12)
    assert cfg.model.net.head == "ordinal" and cfg.model.decision_rule == "median"
    assert cfg.model.net.max_count == 10 and cfg.model.net.tail is True
    check_data_folder(cfg.data.data_dir, ("train",), dict(cfg.data.generator), labels=LabelSpace(10, True))
    real = compose_cfg("train", ["experiment=abid_sample_allcount"])
    assert real.data.max_count == 15 and real.data.prepare.max_count is None and real.model.net.head == "ordinal"
    plain = compose_cfg("train", ["experiment=quickstart"])
    assert plain.data.generator.max_items is None and plain.model.net.head == "softmax"


def test_a_short_all_count_run_beats_the_constant_median(tmp_path):
    """Synthetic bins of 0..12 items, label space 0..10 + tail, the ordinal head on a tiny CNN:
    about 10 s on one core. Scored on the test split's class (the tail as 11)."""
    import tests.toy_model  # noqa: F401 - the toy/tiny backbone
    from src.training.pipeline import train

    root = make_imagefolder(tmp_path / "data", {"train": 600, "val": 150, "test": 150}, image_size=48, seed=7,
                            max_items=12)
    cfg = compose_cfg("train", TINY + [
        f"data.data_dir={root}", f"paths.output_dir={tmp_path / 'run'}", "model.net.name=toy/tiny",
        "model.net.head=ordinal", "data.image_size=null", "data.max_count=10", "data.overflow=true",
        "model.decision_rule=median", "model/optimizer=adamw", "model.optimizer.lr=0.01", "model/scheduler=cosine",
        "trainer.max_epochs=10", "seed=0", "answers.choose_rule=rmse",
    ])
    metrics, _ = train(cfg)
    train_classes = CountFolder(root / "train", num_classes=12, overflow=True).targets
    test_classes = torch.tensor(CountFolder(root / "test", num_classes=12, overflow=True).targets, dtype=torch.float)
    constant = float(statistics.median_low(train_classes))
    const_acc = (test_classes == constant).float().mean().item()
    const_rmse = (test_classes - constant).pow(2).mean().sqrt().item()
    acc, rmse = metrics["test/acc"].item(), metrics["test/rmse"].item()
    print(f"all-count tiny run: acc {acc:.3f} RMSE {rmse:.3f}; constant {constant:.0f}: acc {const_acc:.3f} "
          f"RMSE {const_rmse:.3f}")
    assert acc > const_acc + 0.03 and rmse < const_rmse - 0.3
    config = read_config(Path(metrics["artifact_dir"]))
    assert config["net"]["head"] == "ordinal" and config["max_count"] == 10 and config["overflow"] is True
    choice = config["calibration"]["rule_choice"]  # chosen on val by RMSE; the test above scored it
    assert set(choice["val"]) == {"argmax", "expected", "median"} and choice["n"] == 150
    assert config["decision_rule"] == choice["chosen"] == min(choice["val"], key=lambda r: choice["val"][r]["rmse"])
    [answer] = CountPredictor.from_model_dir(metrics["artifact_dir"]).predict_batch(torch.zeros(1, 3, 40, 40),
                                                                                    expected=[12])
    assert answer["checked_against"] == ">10" and len(answer["interval"]) == 2 and 0 <= answer["p_more_than_5"] <= 1


def test_the_rule_is_chosen_by_the_validation_criterion():
    from src.training.answers import choose_rule

    # Two-humped rows: argmax answers 0, the median 3 (or 1), the rounded mean 2.
    probs = torch.tensor([[0.4, 0.0, 0.0, 0.3, 0.3]] * 6 + [[0.49, 0.03, 0.0, 0.0, 0.48]] + [[0.0] * 4 + [1.0]] * 4)
    count = torch.tensor([0] * 3 + [3] * 3 + [0] + [4] * 4)
    rule, choice = choose_rule(probs, count, criterion="rmse")
    assert rule == "expected" and choice["val"]["expected"]["rmse"] == pytest.approx((19 / 11) ** 0.5)
    assert choice["val"]["median"]["rmse"] == pytest.approx((28 / 11) ** 0.5)
    rule, choice = choose_rule(probs, count, criterion="acc")
    assert rule == "argmax" and choice["val"]["argmax"]["acc"] == pytest.approx(8 / 11)
    with pytest.raises(ValueError, match=r"answers.choose_rule='mae': use one of rmse, acc"):
        choose_rule(probs, count, criterion="mae")


def test_verdicts_csv_carries_what_was_checked_p_more_than_5_and_the_interval(tmp_path):
    import csv

    from src.serving.predict import write_verdicts

    predictor = predictor_for(LabelSpace(15, tail=True))
    rows = predictor.results(torch.stack([peaked(17, 7), peaked(17, 16)]), expected=[7, 40])
    with open(write_verdicts([{"row": i + 1, **r} for i, r in enumerate(rows)], tmp_path / "v.csv"), newline="") as f:
        written = list(csv.DictReader(f))
    assert [(w["checked_against"], w["interval"]) for w in written] == [("7", "7"), (">15", "16+")]
    assert float(written[0]["p_more_than_5"]) == pytest.approx(rows[0]["p_more_than_5"])


def test_a_models_description_names_its_own_tail():
    from src.utils.provenance import describe_model

    assert describe_model({"net": {"name": "x"}, "classes": list(range(17)), "overflow": True})["model"] == \
        "x, counts 0..15 and >15"
    assert describe_model({"net": {"name": "x"}, "classes": list(range(7)), "overflow": True})["model"] == \
        "x, counts 0..5 and >5"


def test_the_served_interval_is_the_conformal_one_when_the_artifact_promises_it(tmp_path):
    from src.inference.artifact import export_artifact
    from src.inference.calibration import conformal_interval

    torch.manual_seed(0)
    net = CountNet("resnet18", weights=None, head="ordinal", max_count=15, tail=True, input_size=32).eval()
    promises = {"interval": {"target": 0.8, "set_threshold": 0.05}}
    model_dir = export_artifact(net, None, "median", tmp_path / "m", tarball=False, answers={"promises": promises})
    predictor = CountPredictor.from_model_dir(model_dir)
    x = torch.randn(4, 3, 32, 32)
    spans = conformal_interval(predictor.raw_probabilities(predictor.logits(x)), 0.05).tolist()
    served = predictor.predict_batch(x)
    assert [r["interval"][0] for r in served] == [lo for lo, _ in spans]
    assert [r["interval"][1] for r in served] == [None if hi == 16 else hi for _, hi in spans]
    assert {r["interval_coverage"] for r in served} == {0.8}
