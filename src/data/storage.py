"""One small interface over a local folder and an S3 prefix: list, read, write atomically, delete.

Keys are ``/``-separated paths relative to the store's root (``bin-images/00001.jpg``). S3 clients
take their endpoint, region and credentials from the standard AWS environment and config files,
so the same code talks to AWS, to a SageMaker container's role, or to a local moto server
(``AWS_ENDPOINT_URL``). ABID's public bucket is read with unsigned requests, as its documentation
describes (``aws s3 ls --no-sign-request s3://aft-vbi-pds/``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from src.data.files import walk_files

log = logging.getLogger(__name__)

PUBLIC_BUCKETS = frozenset({"aft-vbi-pds"})
TMP_MARK = ".tmp-"


class Missing(FileNotFoundError):
    """The key does not exist in the store."""


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def parse_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket; write s3://<bucket>[/<prefix>]")
    return bucket, prefix.strip("/")


def s3_client(bucket: str, unsigned: bool | str = "auto", max_pool_connections: int = 10):
    """A thread-safe S3 client; ``unsigned="auto"`` signs nothing for public buckets or without credentials."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    if unsigned == "auto":
        unsigned = bucket in PUBLIC_BUCKETS or session.get_credentials() is None
    elif not isinstance(unsigned, bool):
        raise ValueError(f"unsigned must be true, false or auto, got {unsigned!r}")
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"max_attempts": 8, "mode": "adaptive"},
        **({"signature_version": UNSIGNED} if unsigned else {}),
    )
    return session.client("s3", config=config)


class LocalStore:
    """A folder. Writes go to a hidden temp file first and are renamed into place."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(self.root)
        self.skipped: list[tuple[str, str]] = []  # (key, reason) of entries the last list() left out

    def path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
            raise Missing(f"{self.path(key)} not found") from err

    def list(self, prefix: str = "") -> dict[str, int]:
        """Every regular file under ``prefix`` (recursively) -> size in bytes; temp files left by a
        killed run excluded. Symlinks are followed only inside the root and never into a loop; what
        is left out (special files, dangling or escaping links) is logged and kept in ``skipped``."""
        out: dict[str, int] = {}
        start = self.path(prefix)
        if not start.is_dir():
            return out
        walk = walk_files(start, root=self.root)
        self.skipped = [(p.relative_to(self.root).as_posix(), why) for p, why in walk.skipped]
        for key, why in self.skipped:
            log.warning("Skipping %s in %s: %s", key, self.root, why)
        for path in walk.files:
            if TMP_MARK in path.name:
                continue
            try:
                out[path.relative_to(self.root).as_posix()] = path.stat().st_size
            except FileNotFoundError:  # removed while listing
                continue
        return out

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def remove_temp_files(self, prefix: str = "") -> int:
        """Delete temp files a killed run left behind; returns how many."""
        removed = 0
        for folder, _, files in os.walk(self.path(prefix)):
            for name in files:
                if name.startswith(".") and TMP_MARK in name:
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"


class S3Store:
    """An S3 prefix. A PUT is atomic: readers see the old object or the whole new one."""

    def __init__(self, uri: str, unsigned: bool | str = "auto", max_pool_connections: int = 10, client=None):
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3(uri)
        self.client = client or s3_client(self.bucket, unsigned, max_pool_connections)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise Missing(f"{self.uri}/{key} not found") from err
            raise

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        out: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                out[obj["Key"][cut:]] = obj["Size"]
        return out

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def remove_temp_files(self, prefix: str = "") -> int:
        return 0  # S3 has no partial objects

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"


def open_store(uri: str | os.PathLike, unsigned: bool | str = "auto", max_pool_connections: int = 10):
    """A LocalStore or an S3Store for ``uri``."""
    if is_s3(uri):
        return S3Store(str(uri), unsigned, max_pool_connections)
    return LocalStore(uri)


def write_if_changed(store, key: str, data: bytes) -> bool:
    """Write ``data`` unless ``key`` already holds exactly it; True when written."""
    try:
        if store.read(key) == data:
            return False
    except Missing:
        pass
    store.write(key, data)
    return True


def check_writable(uri: str | os.PathLike, setting: str = "output") -> None:
    """Create local folder ``uri`` if needed and write a probe file in it; one-line ``PermissionError``
    naming the setting otherwise (an S3 prefix is checked by its first write)."""
    if is_s3(uri):
        return
    folder = Path(uri)
    probe = folder / f".write-probe{TMP_MARK}{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write to {setting}={uri} ({err.strerror or err}); pass {setting}=<a writable folder or "
            "s3://bucket/prefix>, or fix the folder's permissions"
        ) from None


def read_uri(uri: str | os.PathLike, unsigned: bool | str = "auto") -> bytes:
    """The bytes of one local file or S3 object (e.g. an ids list)."""
    if is_s3(uri):
        parent, _, name = str(uri).rpartition("/")
        if parent == "s3:/":
            raise ValueError(f"{uri!r} names a bucket, not an object")
        return S3Store(parent, unsigned).read(name)
    return Path(uri).read_bytes()
