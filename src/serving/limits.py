"""What one request may cost: bytes, images, pixels. Checked before any pixel is decoded.

Defaults fit an ``ml.m5.large`` endpoint (2 vCPU, 8 GiB): a full request decodes in about a second
and runs in well under SageMaker's 60 s, and since images are decoded and resized one at a time,
peak memory grows with the largest single image (``max_pixels``), not with the request.
docs/serving_limits.md explains each one; ``BINCOUNT_<NAME>`` environment variables override them
inside the SageMaker container, ``serve.py`` settings do for the HTTP app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 6 * MB  # SageMaker's real-time payload limit
    max_pixels: int = 25_000_000  # per image: refuses decompression bombs from the header
    max_images: int = 128  # per request: ~6 MB of base64 ABID photos (~45 kB each)
    max_request_pixels: int = 64_000_000  # per request, summed over images: ~1 s of decoding

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limit {f.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_env(cls, **overrides: int | None) -> Limits:
        """Defaults, then ``BINCOUNT_MAX_BODY_BYTES`` etc., then non-None ``overrides``."""
        values = {}
        for f in fields(cls):
            env = os.environ.get(f"BINCOUNT_{f.name.upper()}")
            if env:
                try:
                    values[f.name] = int(env)
                except ValueError:
                    raise ValueError(f"BINCOUNT_{f.name.upper()}={env!r} is not an integer") from None
        limits = cls(**values)
        return replace(limits, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self) -> str:
        return (f"at most {self.max_images} images and {self.max_request_pixels:,} pixels per request, "
                f"{self.max_pixels:,} pixels per image, {self.max_body_bytes:,} bytes per body")
