"""ABID preparation on local folders: layout, splits, resumability, resize and every kind of bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from src.data.abid import parse_id_list, target_size
from src.data.prepare import NothingUsable, prepare
from src.data.split import SPLITS, assign_splits, hash_unit
from src.data.synthetic import make_bucket

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}


def run(source, output, **kw):
    return prepare(source=str(source), output=str(output), progress=False, workers=4, **kw)


def bucket(root: Path, n: int = 40, start_id: int = 1, size: int = 40) -> Path:
    make_bucket(root, n, image_size=size, seed=5, max_count=8, start_id=start_id, workers=1)
    return root


def true_count(source: Path, name: str) -> int:
    return json.loads((source / "metadata" / f"{name}.json").read_text())["EXPECTED_QUANTITY"]


def images(output: Path) -> dict[str, tuple[str, int]]:
    """name -> (split, count) of every image in the output layout."""
    found = {}
    for path in output.glob("*/*/*.jpg"):
        assert path.stem not in found, f"{path.stem} written twice"
        found[path.stem] = (path.parts[-3], int(path.parts[-2]))
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- splits ------------------------------------------------------------------------------------------
def test_split_is_exact_per_class_independent_of_order_and_stable_when_images_are_added():
    counts = {f"{i:05d}": i % 6 for i in range(1, 1201)}
    first = assign_splits(counts, FRACTIONS, seed=1)
    shuffled = dict(sorted(counts.items(), key=lambda kv: hash_unit(kv[0], 99)))
    assert assign_splits(shuffled, FRACTIONS, seed=1) == first
    for c in range(6):
        per_split = Counter(s for n, s in first.items() if counts[n] == c)
        assert per_split == {"train": 128, "val": 32, "test": 40}  # 200 per class, exact shares
    assert assign_splits(counts, FRACTIONS, seed=2) != first

    grown = {**counts, **{f"{i:05d}": i % 4 for i in range(1201, 1601)}}
    again = assign_splits(grown, FRACTIONS, seed=1, previous=first)
    assert {n: again[n] for n in first} == first
    for c in range(6):
        members = [n for n in grown if grown[n] == c]
        share = Counter(again[n] for n in members)
        for s in SPLITS:
            assert abs(share[s] / len(members) - FRACTIONS[s]) <= 1 / len(members) + 1e-9


def test_hash_depends_on_name_and_seed_only():
    assert hash_unit("00001", 3) == hash_unit("00001", 3)
    assert len({hash_unit("00001", s) for s in range(20)}) == 20
    assert 0 <= hash_unit("x", 0) < 1


def test_fractions_must_add_up():
    with pytest.raises(ValueError, match="add up to 1"):
        assign_splits({"a": 1}, {"train": 0.7, "val": 0.2, "test": 0.2}, seed=0)


# -- id lists ----------------------------------------------------------------------------------------
def test_id_lists_numeric_ids_and_exact_names():
    assert parse_id_list("4\n11\n\n1234\n4\n") == (["00004", "00011", "01234"], [])
    names, bad = parse_id_list("00121\n121\n")  # a leading zero: names, taken literally
    assert names == ["00121", "121"] and not bad
    assert parse_id_list("121\n", "names")[0] == ["121"]
    names, bad = parse_id_list("7\nx1\n0\n", "ids")
    assert names == ["00007"] and [(line, e.reason) for line, e in bad] == [("x1", "bad id"), ("0", "bad id")]
    names, bad = parse_id_list("00001\n../00002\nsub/00003\nsub\\00004\n.hidden\n")
    assert names == ["00001"]
    assert [e.reason for _, e in bad] == ["bad name"] * 4


def test_resize_targets():
    assert target_size((500, 400), None) is None
    assert target_size((500, 400), [224, 224]) == (224, 224)
    assert target_size((224, 224), [224, 224]) is None  # already there: bytes kept
    assert target_size((500, 400), 200) == (250, 200)
    assert target_size((300, 150), 200) is None  # never enlarged
    with pytest.raises(ValueError, match="height, width"):
        target_size((10, 10), [1, 2, 3])


# -- the job on a local bucket -----------------------------------------------------------------------
def test_prepare_writes_the_datamodule_layout_with_true_counts(tmp_path):
    source = bucket(tmp_path / "src", n=60)
    out = tmp_path / "out"
    report = run(source, out, max_count=5)

    found = images(out)
    assert found and max(c for _, c in found.values()) <= 5
    for name, (split, count) in found.items():
        assert count == true_count(source, name)
        assert (out / split / str(count) / f"{name}.jpg").read_bytes() == (
            source / "bin-images" / f"{name}.jpg"
        ).read_bytes()
    above = sum(true_count(source, f"{i:05d}") > 5 for i in range(1, 61))
    assert len(found) == 60 - above and report.above_max_count == above and report.written == len(found)

    rows = read_csv(out / "splits.csv")
    assert {r["name"]: (r["split"], int(r["count"])) for r in rows} == found
    manifest = json.loads((out / "manifest.json").read_text())
    assert {n: (s, int(c)) for s, by_count in manifest.items() for c, names in by_count.items() for n in names} == found
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == len(found) and stats["above_max_count"] == above and stats["rejects"] == {}
    assert sum(v["total"] for v in stats["per_class"].values()) == len(found)
    assert read_csv(out / "rejects.csv") == []
    assert (out / "class_distribution.png").read_bytes().startswith(b"\x89PNG")

    from src.data.datamodule import BinDataModule

    dm = BinDataModule(str(out), image_size=32, batch_size=8, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == sum(s == "train" for s, _ in found.values())
    image, label = dm.datasets["val"][0]
    assert image.shape == (3, 32, 32) and 0 <= label <= 5


def test_rerun_writes_nothing_and_a_killed_run_resumes(tmp_path):
    source, out = bucket(tmp_path / "src"), tmp_path / "out"
    run(source, out)
    before = snapshot(out)
    again = run(source, out)
    assert again.written == 0 and again.existing == len(again.dataset) > 0
    assert snapshot(out) == before  # not even the manifest or the plot is rewritten

    # A killed run: some images never written, one temp file left half-written.
    gone = sorted(out.glob("*/*/*.jpg"))[:5]
    for path in gone:
        path.unlink()
    (gone[0].parent / f".{gone[0].name}.tmp-123-456").write_bytes(b"\xff\xd8\xff half")
    resumed = run(source, out)
    assert resumed.written == 5
    assert all(p.exists() for p in gone)
    assert not list(out.rglob("*.tmp-*"))
    assert {k: v[1] for k, v in snapshot(out).items()} == {k: v[1] for k, v in before.items()}


def test_adding_images_keeps_every_existing_split(tmp_path):
    source, out = bucket(tmp_path / "src", n=40), tmp_path / "out"
    run(source, out)
    first = images(out)
    first_files = snapshot(out / "train")
    bucket(source, n=40, start_id=41)  # the source grows
    run(source, out)
    grown = images(out)
    assert len(grown) > len(first)
    assert {n: grown[n] for n in first} == first
    assert all(snapshot(out / "train").get(k) == v for k, v in first_files.items())  # untouched

    # A fresh output keeps them too when given the earlier splits.csv (e.g. a new Processing job).
    fresh = tmp_path / "fresh"
    run(source, fresh, previous_splits=str(out / "splits.csv"))
    assert images(fresh) == grown


def test_changed_count_moves_the_image_and_removes_the_stale_copy(tmp_path):
    source, out = bucket(tmp_path / "src"), tmp_path / "out"
    run(source, out)
    name, (split, count) = next(iter(sorted(images(out).items())))
    new_count = (count + 1) % 6
    (source / "metadata" / f"{name}.json").write_text(json.dumps({"EXPECTED_QUANTITY": new_count}))
    report = run(source, out)
    assert report.pruned == [f"{split}/{count}/{name}.jpg"]
    assert images(out)[name] == (split, new_count)  # same split, new count folder
    assert not (out / split / str(count) / f"{name}.jpg").exists()


def test_dry_run_reports_and_writes_nothing(tmp_path):
    source, out = bucket(tmp_path / "src"), tmp_path / "out"
    dry = run(source, out, dry_run=True)
    assert dry.dry_run and dry.written > 0
    assert not out.exists()
    real = run(source, out)
    assert real.written == dry.written and real.dataset == dry.dataset


def test_resize_squash_and_shorter_side_and_settings_lock(tmp_path):
    source = bucket(tmp_path / "src", n=20, size=96)
    squash, short = tmp_path / "squash", tmp_path / "short"
    run(source, squash, resize=[48, 64])
    run(source, short, resize=60)
    files = sorted(squash.glob("*/*/*.jpg"))
    assert files
    for path in files:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (64, 48)  # [height, width]
    for path in short.glob("*/*/*.jpg"):
        with Image.open(path) as img:
            assert img.size == (60, 60)  # square source: shorter side 60
    assert sum(p.stat().st_size for p in files) < sum(
        (source / "bin-images" / f"{p.stem}.jpg").stat().st_size for p in files
    )

    with pytest.raises(ValueError, match="resize: \\[48, 64\\] there, None now"):
        run(source, squash)  # mixing resized and original images in one output is refused


# -- bad input: each is skipped, listed in rejects.csv, and the job finishes ---------------------------
def _png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


BAD_INPUTS = {
    # case: (how to break name "00002", expected reason)
    "metadata missing": (lambda s: (s / "metadata/00002.json").unlink(), "metadata missing"),
    "metadata not JSON": (lambda s: (s / "metadata/00002.json").write_text("{not json"), "metadata not JSON"),
    "no EXPECTED_QUANTITY": (
        lambda s: (s / "metadata/00002.json").write_text('{"BIN_FCSKU_DATA": {}}'),
        "no EXPECTED_QUANTITY",
    ),
    "quantity a string": (
        lambda s: (s / "metadata/00002.json").write_text('{"EXPECTED_QUANTITY": "3"}'),
        "EXPECTED_QUANTITY not an integer",
    ),
    "quantity a fraction": (
        lambda s: (s / "metadata/00002.json").write_text('{"EXPECTED_QUANTITY": 2.5}'),
        "EXPECTED_QUANTITY not an integer",
    ),
    "quantity negative": (
        lambda s: (s / "metadata/00002.json").write_text('{"EXPECTED_QUANTITY": -1}'),
        "EXPECTED_QUANTITY negative",
    ),
    "image missing": (lambda s: (s / "bin-images/00002.jpg").unlink(), "image missing"),
    "image zero bytes": (lambda s: (s / "bin-images/00002.jpg").write_bytes(b""), "image zero bytes"),
    "image truncated": (
        lambda s: (s / "bin-images/00002.jpg").write_bytes((s / "bin-images/00002.jpg").read_bytes()[:-300]),
        "image truncated",
    ),
    "image not JPEG": (lambda s: (s / "bin-images/00002.jpg").write_bytes(_png()), "image not JPEG"),
    "image is text": (lambda s: (s / "bin-images/00002.jpg").write_text("<html>404</html>"), "image not JPEG"),
}


def _small_bucket(root: Path) -> Path:
    make_bucket(root, 4, image_size=32, seed=1, max_count=0, workers=1)  # all count 0: all usable
    return root


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_item_is_rejected_with_its_reason(tmp_path, case):
    source, out = _small_bucket(tmp_path / "src"), tmp_path / "out"
    breaks, reason = BAD_INPUTS[case]
    breaks(source)
    report = run(source, out, resize=[16, 16])  # resizing decodes: bad bytes must not crash it either
    assert [(r["name"], r["reason"]) for r in read_csv(out / "rejects.csv")] == [("00002", reason)]
    assert sorted(images(out)) == ["00001", "00003", "00004"]
    assert json.loads((out / "stats.json").read_text())["rejects"] == {reason: 1}
    assert report.written == 3


@pytest.mark.parametrize("bad", ["../00001", "sub/00001", "sub\\00001", ".."])
def test_bad_name_in_ids_file_is_rejected(tmp_path, bad):
    source, out = _small_bucket(tmp_path / "src"), tmp_path / "out"
    (source / "sub").mkdir()
    ids = tmp_path / "ids.txt"
    ids.write_text(f"00001\n{bad}\n00003\n")
    run(source, out, ids=str(ids))
    rejects = read_csv(out / "rejects.csv")
    assert [(r["name"], r["reason"]) for r in rejects] == [(bad, "bad name")]
    assert "path separator or '..'" in rejects[0]["detail"]
    assert sorted(images(out)) == ["00001", "00003"]
    assert not (tmp_path / "00001.jpg").exists() and not list((source / "sub").iterdir())


def test_nothing_usable_raises_a_clear_error(tmp_path):
    source, out = _small_bucket(tmp_path / "src"), tmp_path / "out"
    for path in (source / "bin-images").iterdir():
        path.write_bytes(b"")
    with pytest.raises(NothingUsable, match=r"nothing usable: none of the 4 .*image zero bytes \(4\)"):
        run(source, out)
    assert len(read_csv(out / "rejects.csv")) == 4  # the reasons are still on disk
    with pytest.raises(NothingUsable, match="no images under"):
        run(tmp_path / "empty", tmp_path / "out2")


# -- the command line -----------------------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "prepare_data.py"), *args, f"hydra.run.dir={cwd}/hydra", "progress=false"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_key_value_form_and_exit_codes(tmp_path):
    source = _small_bucket(tmp_path / "src")
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n3\n")
    done = _cli(
        f"source={source}", "output=out", f"ids={ids}", "max_count=5", "resize=[16,16]", "workers=2",
        "dry_run=false", "seed=7", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(images(tmp_path / "out")) == ["00001", "00003"]
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["resize"] == [16, 16]

    (source / "metadata" / "00001.json").write_text("[]")
    (source / "metadata" / "00003.json").write_text("[]")
    failed = _cli(f"source={source}", "output=out2", f"ids={ids}", cwd=tmp_path)
    assert failed.returncode != 0
    assert "nothing usable" in failed.stderr and "no EXPECTED_QUANTITY (2)" in failed.stderr
