"""ABID preparation on the real sample in ../shared/abid (skipped where that folder is absent)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from src.data.prepare import prepare
from src.data.split import SPLITS

FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}


def quantity(abid: Path, name: str) -> int:
    return json.loads((abid / "metadata" / f"{name}.json").read_text())["EXPECTED_QUANTITY"]


def layout(output: Path) -> dict[str, tuple[str, int]]:
    return {p.stem: (p.parts[-3], int(p.parts[-2])) for p in output.glob("*/*/*.jpg")}


def check_dataset(abid: Path, output: Path, expected_names: set[str], max_count: int = 5) -> dict:
    """Every image in its EXPECTED_QUANTITY folder, nothing above max_count, split shares on target."""
    found = layout(output)
    assert set(found) == expected_names
    for name, (_, count) in found.items():
        assert count == quantity(abid, name) <= max_count
    per_class = Counter(count for _, count in found.values())
    for c, n in per_class.items():
        if n >= 50:
            share = Counter(split for split, count in found.values() if count == c)
            for s in SPLITS:
                assert abs(share[s] / n - FRACTIONS[s]) <= 0.02, (c, s, share[s], n)
    assert sum(n >= 50 for n in per_class.values()) >= 4  # the check above really ran
    return found


def test_random_val_list_selects_exactly_the_listed_images_present(shared_abid, tmp_path):
    listed = {f"{int(line):05d}" for line in (shared_abid / "lists" / "random_val.txt").read_text().split()}
    present = {p.stem for p in (shared_abid / "bin-images").glob("*.jpg")}
    chosen = listed & present
    assert len(chosen) == 743  # as the sample's README says
    small = {n for n in chosen if quantity(shared_abid, n) <= 5}

    out = tmp_path / "val"
    report = prepare(
        source=str(shared_abid), output=str(out), ids=str(shared_abid / "lists" / "random_val.txt"),
        workers=4, progress=False,
    )  # fmt: skip
    check_dataset(shared_abid, out, small)
    assert report.above_max_count == len(chosen - small) > 0
    with open(out / "rejects.csv", newline="") as f:
        rejects = list(csv.DictReader(f))
    assert {r["name"] for r in rejects} == listed - present  # listed but not in this sample
    assert {r["reason"] for r in rejects} == {"metadata missing"}


def test_real_images_resize(shared_abid, tmp_path):
    with open(shared_abid / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["expected_quantity"]) <= 5]
    originals = [r for r in rows if r["resized_224"] == "0"][:8]
    copies = [r for r in rows if r["resized_224"] == "1"][:4]
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{r['name']}\n" for r in originals + copies))

    squash, short = tmp_path / "squash", tmp_path / "short"
    prepare(source=str(shared_abid), output=str(squash), ids=str(ids), resize=[224, 224], progress=False)
    prepare(source=str(shared_abid), output=str(short), ids=str(ids), resize=256, progress=False)
    for r in originals:
        name, w, h = r["name"], int(r["width"]), int(r["height"])
        (path,) = squash.glob(f"*/*/{name}.jpg")
        with Image.open(path) as img:
            assert img.size == (224, 224)
            img.load()
        (path,) = short.glob(f"*/*/{name}.jpg")
        with Image.open(path) as img:
            expected = (w, h) if min(w, h) <= 256 else (round(w * 256 / min(w, h)), round(h * 256 / min(w, h)))
            assert img.size == expected
    for r in copies:  # already 224x224: the original bytes are kept, not re-encoded
        (path,) = squash.glob(f"*/*/{r['name']}.jpg")
        assert path.read_bytes() == (shared_abid / "bin-images" / f"{r['name']}.jpg").read_bytes()


@pytest.mark.slow
def test_full_sample_prepares_resumes_and_keeps_splits_when_grown(shared_abid, tmp_path):
    names = sorted(p.stem for p in (shared_abid / "bin-images").glob("*.jpg"))
    small = {n for n in names if quantity(shared_abid, n) <= 5}
    out = tmp_path / "abid"

    half = tmp_path / "half.txt"  # first prepare half of the sample, then all of it
    half.write_text("\n".join(names[::2]) + "\n")
    prepare(source=str(shared_abid), output=str(out), ids=str(half), progress=False)
    before = layout(out)
    report = prepare(source=str(shared_abid), output=str(out), progress=False)
    found = check_dataset(shared_abid, out, small)
    assert {n: found[n] for n in before} == before
    assert report.written == len(small) - len(before) and not report.rejects

    again = prepare(source=str(shared_abid), output=str(out), progress=False)
    assert again.written == 0 and again.existing == len(small)


def test_killed_run_leaves_only_whole_images_and_resumes(shared_abid, tmp_path):
    """SIGKILL the CLI mid-run: every image already in place is complete; a rerun finishes the rest."""
    with open(shared_abid / "index.csv", newline="") as f:
        originals = [r["name"] for r in csv.DictReader(f) if r["resized_224"] == "0"]  # the big files
    ids = tmp_path / "originals.txt"
    ids.write_text("\n".join(originals) + "\n")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable, str(root / "prepare_data.py"), f"source={shared_abid}", f"output={out}", f"ids={ids}",
        "max_count=1000", "workers=2", "progress=false", f"hydra.run.dir={tmp_path}/hydra",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*/*/*.jpg"))) < 30 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    done_before = {p.stem: p.read_bytes() for p in out.glob("*/*/*.jpg")}
    assert 30 <= len(done_before) < len(originals), "the run was not interrupted midway"
    for name, data in done_before.items():
        assert data == (shared_abid / "bin-images" / f"{name}.jpg").read_bytes()

    report = prepare(source=str(shared_abid), output=str(out), ids=str(ids), max_count=1000, progress=False)
    assert report.written == len(originals) - len(done_before) and report.existing == len(done_before)
    assert not list(out.rglob("*.tmp-*"))
    assert {p.stem for p in out.glob("*/*/*.jpg")} == set(originals)
