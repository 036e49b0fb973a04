"""Validated view of the ``sagemaker`` config group: required fields, S3 layout, names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from omegaconf import DictConfig

from src.data.storage import parse_s3

_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


class LaunchConfigError(ValueError):
    """The launch config is incomplete or wrong; raised before any AWS call."""


@dataclass(frozen=True)
class S3Layout:
    bucket: str
    prefix: str

    def uri(self, *parts: str) -> str:
        key = "/".join(p.strip("/") for p in (self.prefix, *parts) if p)
        return f"s3://{self.bucket}/{key}"


def check_settings(sm: DictConfig) -> S3Layout:
    """Fail fast, naming the missing setting and how to give it."""
    missing = [k for k in ("role", "bucket", "region") if not sm.get(k)]
    if missing:
        raise LaunchConfigError(
            f"Missing sagemaker.{', sagemaker.'.join(missing)}: pass e.g. "
            "sagemaker.role=arn:aws:iam::<account>:role/<SageMakerExecutionRole> "
            "sagemaker.bucket=<your-bucket> (see README, 'SageMaker')."
        )
    if not _ROLE.match(str(sm.role)):
        raise LaunchConfigError(
            f"sagemaker.role={sm.role!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
        )
    bucket = str(sm.bucket)
    if bucket.startswith("s3://") or "/" in bucket:
        raise LaunchConfigError(f"sagemaker.bucket={bucket!r}: give the bucket name only; use sagemaker.prefix for the path")
    return S3Layout(bucket, str(sm.get("prefix") or ""))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``("bucket", "key")`` (the key as given: a trailing ``/`` is kept)."""
    if not uri.startswith("s3://"):
        raise LaunchConfigError(f"{uri!r} is not an s3:// URI")
    bucket, _ = parse_s3(uri)
    return bucket, uri[len("s3://") + len(bucket) + 1:]
