"""JSON-lines shards of the test split (src/data/jsonl_shards.py, prepare's transform_shards) and the
batch transform report over both output layouts (src/cloud/report.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from src.cloud.report import confusion_from_outputs, label_from_key
from src.data.jsonl_shards import pack_split, split_images, write_shards
from src.data.prepare import prepare
from src.data.split import shard_of
from src.data.storage import LocalStore
from src.data.synthetic import make_bucket
from tests.helpers import BUCKET


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("abid_bucket")
    make_bucket(root, 80, image_size=40, seed=11, max_count=5, workers=1)
    return root


def run(raw: Path, output, **kw):
    return prepare(source=str(raw), output=str(output), progress=False, plot=False, workers=2,
                   transform_shards=True, transform_shard_lines=5, **kw)


def read_lines(folder: Path) -> dict[str, list[dict]]:
    """shard name -> its JSON lines."""
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted((folder / "test_jsonl").glob("*.jsonl"))}


def test_prepare_packs_every_test_image_once_with_its_label_and_bytes(raw, tmp_path):
    out = tmp_path / "prepared"
    report = run(raw, out)
    shards = read_lines(out)
    tests = sorted(p.relative_to(out / "test").as_posix() for p in (out / "test").rglob("*.jpg"))
    assert len(tests) >= 10
    assert list(shards) == [f"part-0-{i:05d}.jsonl" for i in range(len(shards))]
    assert [len(lines) for lines in shards.values()] == [5] * (len(shards) - 1) + [len(tests) - 5 * (len(shards) - 1)]
    ids = [line["id"] for lines in shards.values() for line in lines]
    assert ids == tests  # every test image exactly once, sorted
    for line in (line for lines in shards.values() for line in lines):
        name = line["id"].rsplit("/", 1)[1].removesuffix(".jpg")
        truth = json.loads((raw / "metadata" / f"{name}.json").read_text())["EXPECTED_QUANTITY"]
        assert label_from_key(line["id"]) == truth
        assert base64.b64decode(line["image"]) == (out / "test" / line["id"]).read_bytes()
    assert report.transform_shards.keys == [f"test_jsonl/{n}" for n in shards]
    # packing the finished output again finds the same images and changes nothing
    before = {p: p.stat().st_mtime_ns for p in (out / "test_jsonl").iterdir()}
    again = pack_split(LocalStore(out), lines_per_shard=5)
    assert (again.keys, again.written, again.removed) == (report.transform_shards.keys, 0, [])
    assert {p: p.stat().st_mtime_ns for p in (out / "test_jsonl").iterdir()} == before


def test_off_by_default_and_a_dry_run_writes_no_shard(raw, tmp_path):
    prepare(source=str(raw), output=str(tmp_path / "plain"), progress=False, plot=False, workers=2)
    assert (tmp_path / "plain" / "test").is_dir() and not (tmp_path / "plain" / "test_jsonl").exists()
    report = run(raw, tmp_path / "dry", dry_run=True)
    assert report.transform_shards is None and not (tmp_path / "dry").exists()


def test_two_instances_write_their_own_shards_of_what_each_copied(raw, tmp_path):
    out = tmp_path / "shared_output"
    for rank in (0, 1):
        run(raw, out, shard=f"{rank}/2")
    shards = read_lines(out)
    ranks = {name.split("-")[1] for name in shards}
    assert ranks == {"0", "1"}
    ids = [line["id"] for lines in shards.values() for line in lines]
    tests = sorted(p.relative_to(out / "test").as_posix() for p in (out / "test").rglob("*.jpg"))
    assert sorted(ids) == tests and len(ids) == len(set(ids))
    for name, lines in shards.items():  # each rank packed the images it owns
        rank = int(name.split("-")[1])
        assert all(shard_of(line["id"].rsplit("/", 1)[1].removesuffix(".jpg"), 2) == rank for line in lines)


def test_stale_shards_of_the_same_rank_go_and_other_ranks_stay(tmp_path):
    store = LocalStore(tmp_path)
    keys = sorted(f"test/{i % 3}/{i:05d}.jpg" for i in range(9))
    for key in keys:
        store.write(key, key.encode())
    assert write_shards(store, keys, rank=1, instances=2, lines_per_shard=2).written == 5
    write_shards(store, keys[:2], rank=0, instances=2, lines_per_shard=2)
    store.write("test_jsonl/notes.txt", b"not a shard")

    second = write_shards(store, keys[:3], rank=1, instances=2, lines_per_shard=2)  # fewer images: 2 shards
    assert second.keys == ["test_jsonl/part-1-00000.jsonl", "test_jsonl/part-1-00001.jsonl"]
    assert second.written == 1  # part-1-00000 holds the same two images: not rewritten
    assert second.removed == [f"test_jsonl/part-1-{i:05d}.jsonl" for i in (2, 3, 4)]
    assert sorted(store.list("test_jsonl/")) == ["test_jsonl/notes.txt", "test_jsonl/part-0-00000.jsonl",
                                                 *second.keys]
    # one instance now: rank 0 also removes the shards of rank 1, which no instance owns any more
    third = write_shards(store, keys, rank=0, instances=1, lines_per_shard=9)
    assert third.removed == ["test_jsonl/part-1-00000.jsonl", "test_jsonl/part-1-00001.jsonl"]
    assert sorted(store.list("test_jsonl/")) == ["test_jsonl/notes.txt", "test_jsonl/part-0-00000.jsonl"]
    with pytest.raises(ValueError, match="test/"):
        write_shards(store, ["val/1/x.jpg"])


def test_split_images_keeps_count_and_overflow_folders_only(tmp_path):
    store = LocalStore(tmp_path)
    for key in ("test/2/a.jpg", "test/6plus/b.png", "test/7plus/c.jpg", "test/x/d.jpg", "test/2/notes.txt",
                "test/e.jpg", "val/1/f.jpg"):
        store.write(key, b"x")
    assert split_images(store) == ["test/2/a.jpg", "test/6plus/b.png"]
    with pytest.raises(ValueError, match="split="):
        split_images(store, "tests")


def test_shards_on_s3(raw, aws):
    report = run(raw, f"s3://{BUCKET}/prepared")
    listed = [o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix="prepared/test_jsonl/")["Contents"]]
    assert listed == [f"prepared/{k}" for k in report.transform_shards.keys] and listed
    body = aws.get_object(Bucket=BUCKET, Key=listed[0])["Body"].read()
    first = json.loads(body.splitlines()[0])
    image = aws.get_object(Bucket=BUCKET, Key=f"prepared/test/{first['id']}")["Body"].read()
    assert base64.b64decode(first["image"]) == image


def test_shards_through_the_handler_into_the_report(raw, tmp_path, tiny_model_dir, one_torch_thread):
    """A shard as one MultiRecord request: the handler answers each line with its id, and the report
    scores the assembled output exactly as the labels in the ids say."""
    from src.serving.handler import input_fn, model_fn, output_fn, predict_fn

    out = tmp_path / "prepared"
    prepare(source=str(raw), output=str(out), progress=False, plot=False, workers=2, transform_shards=True)
    [shard] = sorted((out / "test_jsonl").iterdir())
    model = model_fn(str(tiny_model_dir))
    body, ctype = output_fn(predict_fn(input_fn(shard.read_bytes(), "application/jsonlines"), model),
                            "application/jsonlines")
    answers = [json.loads(line) for line in body.splitlines()]
    ids = [json.loads(line)["id"] for line in shard.read_text().splitlines()]
    assert ctype == "application/jsonlines" and [a["id"] for a in answers] == ids
    cm, skipped = confusion_from_outputs([(f"{shard.name}.out", body.encode())])
    assert skipped == [] and int(cm.sum()) == len(ids)
    for answer in answers:
        assert cm[label_from_key(answer["id"]), answer["count"]] >= 1
    assert cm.sum(1).tolist() == [sum(label_from_key(i) == c for i in ids) for c in range(6)]


# -- the report over both output layouts ----------------------------------------------------------
def test_report_reads_json_lines_outputs_by_id():
    lines = [{"id": "0/a.jpg", "count": 0}, {"id": "3/b.jpg", "count": 2, "label": "2"},
             {"id": "1/c.jpg", "error": "line 3.image: not valid base64", "status": 400},
             {"id": "6plus/d.jpg", "count": None, "label": ">5", "overflow": True}, {"id": "5/e.jpg", "count": 5}]
    body = "".join(json.dumps(line) + "\n" for line in lines) + "\n"  # a blank line between mini-batches
    second = json.dumps({"id": "2/f.jpg", "count": 2}) + "\nnot json\n"
    cm, skipped = confusion_from_outputs([("part-0-00000.jsonl.out", body.encode()),
                                          ("part-1-00000.jsonl.out", second.encode())])
    assert skipped == ["1/c.jpg", "6plus/d.jpg", "part-1-00000.jsonl.out:2"]
    assert int(cm.sum()) == 4
    assert (cm[0, 0], cm[3, 2], cm[5, 5], cm[2, 2]) == (1, 1, 1, 1)


def test_report_still_reads_one_answer_per_image_by_key():
    items = [("0/a.jpg.out", json.dumps({"count": 0}).encode()),
             ("4/b.jpg.out", json.dumps({"predictions": [{"count": 3, "label": "3"}]}).encode()),  # the handler's JSON
             ("2/c.jpg.out", json.dumps({"error": "bad", "status": 400}).encode()),
             ("x/d.jpg.out", json.dumps({"count": 1}).encode())]
    cm, skipped = confusion_from_outputs(items)
    assert skipped == ["2/c.jpg", "x/d.jpg"]
    assert int(cm.sum()) == 2 and cm[0, 0] == 1 and cm[4, 3] == 1
