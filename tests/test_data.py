import json
import logging
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.datamodule import BinDataModule, stratified_subset
from src.data.images import image_problem
from src.data.synthetic import _rng, make_bucket, make_imagefolder, render_bin
from src.data.transforms import eval_transform, train_transform


def _dm(root, **kw):
    kw = {"image_size": 64, "batch_size": 16, "num_workers": 0, **kw}
    dm = BinDataModule(str(root), **kw)
    dm.setup("fit")
    return dm


def test_synthetic_is_deterministic_and_counts_are_balanced_as_configured(tmp_path):
    a = make_imagefolder(tmp_path / "a", {"train": 50, "val": 10}, image_size=64, seed=1, workers=1)
    b = make_imagefolder(tmp_path / "b", {"train": 50, "val": 10}, image_size=64, seed=1, workers=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    per_class = Counter(int(f.parts[1]) for f in files_a if f.parts[0] == "train")
    assert sorted(per_class) == [0, 1, 2, 3, 4, 5]
    assert per_class[0] < per_class[5]  # ABID-like imbalance: few empty bins


def test_more_objects_means_more_foreground():
    """Objects really are drawn: image variance from the bare background grows with the count."""
    rng_key = 7
    empty = np.asarray(render_bin(0, _rng(rng_key), 128), dtype=np.float32)
    full = np.asarray(render_bin(5, _rng(rng_key), 128), dtype=np.float32)
    assert np.abs(full - empty).mean() > 5


def test_bucket_layout_matches_abid(tmp_path):
    names = make_bucket(tmp_path, 12, image_size=64, seed=2, workers=1)
    assert names[0] == "00001"
    for name in names:
        meta = json.loads((tmp_path / "metadata" / f"{name}.json").read_text())
        assert meta["EXPECTED_QUANTITY"] == sum(i["quantity"] for i in meta["BIN_FCSKU_DATA"].values())
        with Image.open(tmp_path / "bin-images" / f"{name}.jpg") as img:
            assert img.format == "JPEG"


def test_subset_is_stratified_and_seeded():
    targets = [0] * 20 + [1] * 100 + [2] * 80
    keep = stratified_subset(targets, 0.1, seed=5)
    assert Counter(targets[i] for i in keep) == {0: 2, 1: 10, 2: 8}
    assert keep == stratified_subset(targets, 0.1, seed=5)
    assert keep != stratified_subset(targets, 0.1, seed=6)


def test_datamodule_labels_are_counts_and_subset_applies(synthetic_dir):
    dm = _dm(synthetic_dir, subset=0.5)
    assert dm.class_counts.sum() == pytest.approx(90, abs=3)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 64, 64) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 1.5  # ImageNet-normalised, not 0..1
    full = _dm(synthetic_dir)
    # folder "4" must be class 4 whatever else exists
    path, label = full.datasets["train"].samples[-1]
    assert path.split("/")[-2] == str(label)


def test_weighted_sampler_balances_classes(synthetic_dir):
    dm = _dm(synthetic_dir, weighted_sampler=True)
    sampler = dm.train_sampler()
    draws = Counter(dm.train_targets[i] for _ in range(20) for i in sampler)
    fractions = np.array([draws[c] for c in range(6)]) / sum(draws.values())
    assert np.allclose(fractions, 1 / 6, atol=0.03), fractions
    natural = dm.class_counts.numpy() / dm.class_counts.sum().item()
    assert natural[0] < 0.12  # without the sampler class 0 is rare


def test_missing_data_folder_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        _dm(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "train") in str(err.value)
    assert "prepare_data.py" in str(err.value) and "data=synthetic" in str(err.value)


def test_empty_class_folder_warns_and_training_data_still_loads(synthetic_dir, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dir, root)
    for f in (root / "train" / "2").iterdir():
        f.unlink()
    with caplog.at_level(logging.WARNING):
        dm = _dm(root)
    assert "No images for count(s) 2" in caplog.text
    assert dm.class_counts[2] == 0 and dm.class_counts.sum() > 0


def test_corrupt_images_are_skipped_and_counted(synthetic_dir, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(synthetic_dir, root)
    victims = sorted((root / "train" / "3").iterdir())[:3]
    victims[0].write_bytes(b"")
    victims[1].write_bytes(victims[1].read_bytes()[:300])  # truncated JPEG
    victims[2].write_text("not an image")
    with caplog.at_level(logging.WARNING):
        dm = _dm(root)
    assert "Skipped 3 unreadable image(s)" in caplog.text
    assert len(dm.datasets["train"].skipped) == 3
    assert sum(len(y) for _, y in dm.train_dataloader()) == len(dm.datasets["train"])


def test_image_problem_reasons(tmp_path):
    assert image_problem(tmp_path / "missing.jpg").startswith("unreadable")
    (tmp_path / "e.jpg").write_bytes(b"")
    assert image_problem(tmp_path / "e.jpg") == "empty file"
    (tmp_path / "t.jpg").write_bytes(b"GIF89a....")
    assert image_problem(tmp_path / "t.jpg") == "not a JPEG or PNG"


def test_dihedral_augmentation_draws_all_eight_symmetries_of_the_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    symmetries = []
    for k in range(4):
        turned = torch.rot90(image, k, dims=(-2, -1))
        symmetries += [turned, turned.flip(-1)]
    normalise = eval_transform(8)

    def symmetry(out: torch.Tensor) -> int:
        match = [i for i, s in enumerate(symmetries) if torch.allclose(out, normalise(s))]
        assert len(match) == 1  # always one of the 8, never an interpolated in-between
        return match[0]

    dihedral = train_transform(8, dihedral=True)
    assert {symmetry(dihedral(image)) for _ in range(200)} == set(range(8))
    hflip = train_transform(8, hflip=True)  # the default: the image and its mirror only
    assert {symmetry(hflip(image)) for _ in range(50)} == {0, 1}


def test_folds_come_from_names_alone_and_a_held_out_fold_is_left_out_of_training(synthetic_dir):
    from src.data.split import fold_of

    names = [f"{c}/img_{i:04d}.jpg" for c in range(6) for i in range(300)]
    folds = [fold_of(n, 3) for n in names]
    assert folds == [fold_of(n, 3) for n in reversed(names)][::-1]  # order and company do not matter
    assert all(500 < folds.count(k) < 700 for k in range(3))  # 600 each, give or take
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        fold_of("0/a.jpg", 1)

    full = _dm(synthetic_dir)
    names = full.datasets["train"].names
    for k in range(3):
        dm = _dm(synthetic_dir, folds=3, held_out_fold=k)
        kept = {names[i] for i in dm.datasets["train"].indices}
        assert kept == {n for n in names if fold_of(n, 3) != k}
        assert sum(dm.class_counts) == len(kept) < len(names)
    with pytest.raises(ValueError, match=r"needs data.folds.*data.folds=3 data.held_out_fold=0"):
        _dm(synthetic_dir, held_out_fold=0)
    with pytest.raises(ValueError, match=r"held_out_fold must be one of 0..2"):
        _dm(synthetic_dir, folds=3, held_out_fold=3)
