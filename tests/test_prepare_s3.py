"""ABID preparation with S3 in and out, against moto's S3 server on 127.0.0.1 (no network beyond loopback)."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
from pathlib import Path

import pytest

from src.data import storage
from src.data.prepare import prepare
from src.data.synthetic import make_bucket

SHARED_ABID = Path(__file__).resolve().parents[2] / "shared" / "abid"
# A handful of real files (name: EXPECTED_QUANTITY): original resolution, 224x224 copies, one above 5.
REAL_SAMPLES = {"00101": 0, "00148": 1, "00102": 3, "01004": 2, "01000": 5, "00106": 6}


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path):
    """Fake credentials and every S3 client routed to moto by the standard AWS environment."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    import boto3

    return boto3.client("s3")


def upload(s3, folder: Path, bucket: str, prefix: str = "", acl: str = "private") -> None:
    s3.create_bucket(Bucket=bucket, ACL=acl)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = path.relative_to(folder).as_posix()
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=path.read_bytes(), ACL=acl)


def objects(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :].lstrip("/")] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def raw_bucket(root: Path) -> Path:
    make_bucket(root, 24, image_size=40, seed=9, max_count=6, workers=1)
    if (SHARED_ABID / "metadata").is_dir():
        for name in REAL_SAMPLES:
            shutil.copy(SHARED_ABID / "bin-images" / f"{name}.jpg", root / "bin-images")
            shutil.copy(SHARED_ABID / "metadata" / f"{name}.json", root / "metadata")
    (root / "bin-images" / "00003.jpg").write_bytes(b"")  # a zero-byte image
    (root / "metadata" / "00005.json").unlink()  # an image without metadata
    return root


def test_s3_in_and_out_resumes_and_matches_a_local_run(aws, tmp_path, monkeypatch):
    raw = raw_bucket(tmp_path / "raw")
    upload(aws, raw, "abid-src", "abid")
    aws.create_bucket(Bucket="abid-out")

    report = prepare(source="s3://abid-src/abid", output="s3://abid-out/prepared/v1", workers=4, progress=False)
    out = objects(aws, "abid-out", "prepared/v1")
    images = {k: v for k, v in out.items() if k.endswith(".jpg")}
    assert len(images) == len(report.dataset) == report.written > 0
    for key, body in images.items():
        split, count, file = key.split("/")
        name = file[: -len(".jpg")]
        assert json.loads((raw / "metadata" / f"{name}.json").read_text())["EXPECTED_QUANTITY"] == int(count) <= 5
        assert body == (raw / "bin-images" / file).read_bytes()
    if (SHARED_ABID / "metadata").is_dir():
        real = {
            k.rsplit("/", 1)[1][:-4]: int(k.split("/")[1]) for k in images if k.rsplit("/", 1)[1][:-4] in REAL_SAMPLES
        }
        assert real == {n: c for n, c in REAL_SAMPLES.items() if c <= 5}
    assert set(out) >= {"manifest.json", "splits.csv", "stats.json", "rejects.csv", "class_distribution.png"}
    rejects = {r["name"]: r["reason"] for r in csv.DictReader(io.StringIO(out["rejects.csv"].decode()))}
    assert rejects == {"00003": "image zero bytes", "00005": "metadata missing"}

    # Rerun: nothing is written, not even the manifest.
    writes = []
    real_write = storage.S3Store.write
    monkeypatch.setattr(storage.S3Store, "write", lambda self, k, d: (writes.append(k), real_write(self, k, d)))
    again = prepare(source="s3://abid-src/abid", output="s3://abid-out/prepared/v1", workers=4, progress=False)
    assert writes == [] and again.existing == len(images)

    # The same job from the local copy gives the same dataset, byte for byte.
    local = tmp_path / "local"
    prepare(source=str(raw), output=str(local), workers=2, progress=False)
    assert {p.relative_to(local).as_posix(): p.read_bytes() for p in local.glob("*/*/*.jpg")} == images
    assert (local / "splits.csv").read_bytes() == out["splits.csv"]


def test_s3_ids_file_and_dry_run(aws, tmp_path):
    raw = raw_bucket(tmp_path / "raw")
    upload(aws, raw, "abid-ids")
    aws.put_object(Bucket="abid-ids", Key="lists/val.txt", Body=b"1\n2\n6\n99999\n")
    aws.create_bucket(Bucket="abid-ids-out")
    dry = prepare(
        source="s3://abid-ids", output="s3://abid-ids-out/p", ids="s3://abid-ids/lists/val.txt",
        max_count=6, dry_run=True, progress=False,
    )  # fmt: skip
    assert sorted(dry.dataset) == ["00001", "00002", "00006"]
    assert [(n, r) for n, r, _ in dry.rejects] == [("99999", "metadata missing")]
    assert objects(aws, "abid-ids-out") == {}  # a dry run writes nothing


def test_public_bucket_client_is_unsigned(monkeypatch, tmp_path):
    """Offline: the default source's client signs nothing; own buckets with credentials are signed."""
    from botocore import UNSIGNED

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    from tests.helpers import compose_cfg

    cfg = compose_cfg("prepare")
    assert (cfg.source, cfg.unsigned) == ("s3://aft-vbi-pds", "auto")
    public = storage.S3Store("s3://aft-vbi-pds")
    assert public.client.meta.config.signature_version is UNSIGNED
    assert public.bucket == "aft-vbi-pds" and public.prefix == ""
    assert storage.S3Store("s3://someone-else/x").client.meta.config.signature_version is UNSIGNED  # no credentials

    # The request that would go out carries no Authorization header (stopped before it is sent).
    sent = {}

    class Stop(Exception):
        pass

    def capture(request, **_):
        sent.update(url=request.url, headers=dict(request.headers))
        raise Stop

    public.client.meta.events.register("before-send.s3", capture)
    with pytest.raises(Stop):
        public.read("metadata/00001.json")
    assert sent["url"].startswith("https://aft-vbi-pds.s3") and sent["url"].endswith("/metadata/00001.json")
    assert "Authorization" not in sent["headers"]

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example")
    assert storage.S3Store("s3://aft-vbi-pds").client.meta.config.signature_version is UNSIGNED
    own = storage.S3Store("s3://my-bucket/abid")
    assert own.client.meta.config.signature_version is not UNSIGNED
    own.client.meta.events.register("before-send.s3", capture)
    with pytest.raises(Stop):
        own.read("metadata/00001.json")
    auth = sent["headers"]["Authorization"]
    assert (auth.decode() if isinstance(auth, bytes) else auth).startswith("AWS4-HMAC-SHA256")
    assert storage.S3Store("s3://aft-vbi-pds", unsigned=False).client.meta.config.signature_version is not UNSIGNED


def test_default_public_source_works_without_credentials(aws, tmp_path, monkeypatch):
    """The default source, read unsigned, from a stand-in of the public bucket on moto."""
    raw = tmp_path / "raw"
    make_bucket(raw, 12, image_size=32, seed=2, max_count=5, workers=1)
    upload(aws, raw, "aft-vbi-pds", acl="public-read")  # like the real one: anyone may read
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    headers = []
    make_client = storage.s3_client

    def recording_client(*args, **kwargs):
        client = make_client(*args, **kwargs)
        client.meta.events.register("before-send.s3", lambda request, **_: headers.append(dict(request.headers)))
        return client

    monkeypatch.setattr(storage, "s3_client", recording_client)
    report = prepare(output=str(tmp_path / "out"), workers=2, progress=False)  # source left at its default
    assert len(report.dataset) == 12 and report.written == 12
    assert headers and not any("Authorization" in h for h in headers)
