"""Sharded preparation: N instances of one Processing job share the image copying."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from src.data.prepare import prepare, resolve_shard
from src.data.split import shard_of
from src.data.synthetic import make_bucket

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("abid_bucket")
    make_bucket(root, 60, image_size=40, seed=5, max_count=8, start_id=1, workers=1)
    return root


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_two_instances_write_together_exactly_what_one_writes(bucket, tmp_path):
    single = tmp_path / "single"
    prepare(source=str(bucket), output=str(single), progress=False, workers=2)
    expected = files(single)
    images = [k for k in expected if k.endswith(".jpg")]
    assert len(images) > 20

    parts = []
    for rank in (0, 1):
        out = tmp_path / f"rank{rank}"
        report = prepare(source=str(bucket), output=str(out), progress=False, workers=2, shard=f"{rank}/2")
        parts.append(files(out))
        assert report.written == sum(shard_of(Path(k).stem, 2) == rank for k in images)
    assert parts[0].keys().isdisjoint(parts[1].keys())  # no object written twice
    assert {**parts[0], **parts[1]} == expected  # same images in the same splits, same summary files
    per_rank = Counter(shard_of(Path(k).stem, 2) for k in images)
    assert min(per_rank.values()) >= len(images) // 4  # both really worked


def test_instances_find_their_rank_in_the_processing_resource_config(bucket, tmp_path):
    """prepare_data.py shard=auto, as the Processing container runs it, with resourceconfig.json per 'host'."""
    outs = []
    for host in ("algo-1", "algo-2", "algo-3"):
        config = tmp_path / host / "resourceconfig.json"
        config.parent.mkdir()
        config.write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2", "algo-3"]}))
        out = tmp_path / host / "output"
        env = {**os.environ, "BINCOUNT_RESOURCE_CONFIG": str(config), "PROJECT_ROOT": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "prepare_data.py", f"source={bucket}", f"output={out}", "shard=auto", "progress=false",
             "plot=false", "workers=2", f"hydra.run.dir={tmp_path / host / 'hydra'}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(out)
    written = [p.name for out in outs for p in out.rglob("*.jpg")]
    assert len(written) == len(set(written)) > 20
    assert (outs[0] / "splits.csv").is_file() and not (outs[1] / "splits.csv").exists()
    listed = [line.split(",")[0] for line in (outs[0] / "splits.csv").read_text().splitlines()[1:]]
    assert sorted(f"{n}.jpg" for n in listed) == sorted(written)


def test_shard_values():
    assert resolve_shard(None) == (0, 1) and resolve_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard="):
            resolve_shard(bad)


def test_auto_without_a_resource_config_is_one_instance(monkeypatch, tmp_path):
    monkeypatch.setenv("BINCOUNT_RESOURCE_CONFIG", str(tmp_path / "absent.json"))
    assert resolve_shard("auto") == (0, 1)


def test_ids_may_be_a_folder_holding_one_file(bucket, tmp_path):
    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "list.txt").write_text("1\n2\n3\n4\n5\n6\n7\n8\n")
    report = prepare(source=str(bucket), output=str(tmp_path / "out"), ids=str(ids), progress=False, workers=2)
    assert set(report.dataset) <= {f"{i:05d}" for i in range(1, 9)}
    (ids / "other.txt").write_text("9\n")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        prepare(source=str(bucket), output=str(tmp_path / "out2"), ids=str(ids), progress=False)
