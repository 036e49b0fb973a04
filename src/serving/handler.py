"""The inference handler: request bytes -> images -> counts, for every serving path.

The SageMaker PyTorch inference container calls ``model_fn``, ``input_fn``, ``predict_fn`` and
``output_fn`` (re-exported by ``code/inference.py``); ``serve.py``'s HTTP app calls the same
functions, and evaluation uses the same ``CountPredictor``, so every path preprocesses with
``src.data.transforms.eval_transform`` and decides counts with ``src.models.counting``.

Requests:
- ``image/jpeg``, ``image/png``, ``application/x-image``: the body is one image.
- ``application/json``: ``{"image": "<base64>"}``, ``{"images": ["<base64>", ...]}``, a bare base64
  string or a list of them. An object may carry an ``"id"`` that is echoed back.
- ``application/jsonlines``: one such object (or bare string) per line, one image each: SageMaker
  batch transform with ``SplitType=Line``.
URLs are refused, never fetched. Responses: ``application/json`` ``{"predictions": [result, ...]}``
or ``application/jsonlines`` with one ``result`` per input line (the default for jsonlines input),
where ``result = {"count": int, "confidence": p(count), "probabilities": [p0, ..., p5]}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from src.inference.predictor import CountPredictor

DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time payload limit
DEFAULT_MAX_PIXELS = 25_000_000  # ABID photos are ~0.2 MP; this refuses decompression bombs early
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
JSONLINES_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
ACCEPT_TYPES = (JSON_TYPE, *JSONLINES_TYPES)
IMAGE_FORMATS = ("JPEG", "PNG")

try:  # inside the SageMaker container, its toolkit turns these into HTTP status codes
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - depends on the environment
    _ToolkitError = None


class RequestError(_ToolkitError or Exception):
    """A client error with its HTTP status; ``body`` is the JSON error response."""

    status_code = 400
    phrase = "Bad Request"

    def __init__(self, detail: str):
        self.detail = detail
        self.body = json.dumps({"error": detail, "status": self.status_code})
        if _ToolkitError is not None:
            super().__init__(self.status_code, self.body, self.phrase)
        else:
            super().__init__(detail)

    def __str__(self) -> str:
        return self.detail


class BadRequest(RequestError):
    status_code, phrase = 400, "Bad Request"


class NotAcceptable(RequestError):
    status_code, phrase = 406, "Not Acceptable"


class PayloadTooLarge(RequestError):
    status_code, phrase = 413, "Payload Too Large"


class UnsupportedMediaType(RequestError):
    status_code, phrase = 415, "Unsupported Media Type"


@dataclass
class Batch:
    """Decoded request: RGB images, optional client ids, and whether it arrived as JSON lines."""

    images: list[Image.Image]
    ids: list[Any] = field(default_factory=list)
    lines: bool = False


@dataclass
class Prediction:
    results: list[dict[str, Any]]
    lines: bool = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def media_type(header: str | None) -> str:
    """``'Image/JPEG; q=1'`` -> ``'image/jpeg'``."""
    return (header or "").split(";")[0].strip().lower()


# -- decoding -----------------------------------------------------------------------------------
def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """JPEG/PNG bytes -> RGB image; the size is checked from the header before any decoding."""
    if not data:
        raise BadRequest("Empty image: the request carried no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise BadRequest(
                    f"Image of {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels; "
                    "resize it (the model sees it at its training size anyway)"
                )
            return image.convert("RGB")
    except RequestError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadRequest(f"Could not decode the image as JPEG or PNG: {err}") from None


def decode_base64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected a base64 string, got {type(text).__name__}")
    if text.lstrip()[:8].lower().startswith(("http://", "https:/", "s3://", "file:/")):
        raise BadRequest(f"{where}: URLs are not fetched; send the image bytes base64-encoded")
    if text.startswith("data:") and "," in text:  # data URI: data:image/jpeg;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None


def _json_images(doc: Any, where: str, max_pixels: int) -> tuple[list[Image.Image], list[Any]]:
    """Images (and ids) from one parsed JSON document."""
    if isinstance(doc, str):
        return [decode_image(decode_base64(doc, where), max_pixels)], [None]
    if isinstance(doc, list):
        if not doc:
            raise BadRequest(f"{where}: empty list of images")
        return [decode_image(decode_base64(s, f"{where}[{i}]"), max_pixels) for i, s in enumerate(doc)], [None] * len(doc)
    if isinstance(doc, dict):
        if "image" in doc:
            return [decode_image(decode_base64(doc["image"], f"{where}.image"), max_pixels)], [doc.get("id")]
        if "images" in doc and isinstance(doc["images"], list):
            return _json_images(doc["images"], f"{where}.images", max_pixels)
    raise BadRequest(
        f"{where}: expected {{\"image\": <base64>}}, {{\"images\": [<base64>, ...]}}, a base64 string or a list of them"
    )


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise BadRequest(f"{where}: invalid JSON ({err})") from None


def decode_request(
    body: bytes | bytearray | str,
    content_type: str | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Batch:
    """Request body + content type -> ``Batch``; raises a ``RequestError`` with the HTTP status."""
    ctype = media_type(content_type)
    if isinstance(body, str):
        body = body.encode()
    if len(body) > max_body_bytes:
        raise PayloadTooLarge(f"Request body of {len(body):,} bytes exceeds the limit of {max_body_bytes:,} bytes")
    if ctype in IMAGE_TYPES:
        return Batch([decode_image(bytes(body), max_pixels)], [None])
    if ctype == JSON_TYPE or ctype in JSONLINES_TYPES:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{ctype} body is not UTF-8 text") from None
        if ctype == JSON_TYPE:
            images, ids = _json_images(_parse_json(text, "body"), "body", max_pixels)
            return Batch(images, ids)
        images, ids = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            doc = _parse_json(line, f"line {n}")
            if isinstance(doc, list) or (isinstance(doc, dict) and "images" in doc):
                raise BadRequest(f"line {n}: JSON lines carry one image per line")
            more, more_ids = _json_images(doc, f"line {n}", max_pixels)
            images += more
            ids += more_ids
        if not images:
            raise BadRequest("No JSON lines in the request body")
        return Batch(images, ids, lines=True)
    raise UnsupportedMediaType(
        f"Unsupported content type {content_type!r}; use one of: {', '.join(IMAGE_TYPES + (JSON_TYPE,) + JSONLINES_TYPES)}"
    )


def choose_accept(accept: str | None, lines: bool) -> str:
    """The response type: the first supported type in ``Accept``; */* follows the request's shape."""
    default = JSONLINES_TYPES[0] if lines else JSON_TYPE
    if not accept:
        return default
    for part in accept.split(","):
        kind = media_type(part)
        if kind in ACCEPT_TYPES:
            return kind
        if kind in ("*/*", "application/*", ""):
            return default
    raise NotAcceptable(f"Cannot answer with {accept!r}; accepted: {', '.join(ACCEPT_TYPES)}")


def encode_response(prediction: Prediction, accept: str | None) -> tuple[str, str]:
    """(body, content type)."""
    kind = choose_accept(accept, prediction.lines)
    if kind in JSONLINES_TYPES:
        return "".join(json.dumps(r) + "\n" for r in prediction.results), kind
    return json.dumps({"predictions": prediction.results}), kind


# -- SageMaker inference toolkit entry points ---------------------------------------------------
def model_fn(model_dir: str, context: Any = None) -> CountPredictor:
    """Load once per worker. ``BINCOUNT_BACKEND=onnx`` uses ``model.onnx`` with ONNX Runtime,
    ``BINCOUNT_BACKEND=onnx-int8`` its int8 copy ``model_int8.onnx`` (export.py --int8);
    the torch backend runs on the GPU when the instance has one (``BINCOUNT_DEVICE`` overrides)."""
    device = os.environ.get("BINCOUNT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return CountPredictor.from_model_dir(model_dir, backend=os.environ.get("BINCOUNT_BACKEND", "torch"), device=device)


def input_fn(request_body: bytes, request_content_type: str, context: Any = None) -> Batch:
    """Limits come from ``BINCOUNT_MAX_PIXELS`` / ``BINCOUNT_MAX_BODY_BYTES`` when set."""
    return decode_request(
        request_body,
        request_content_type,
        max_pixels=_env_int("BINCOUNT_MAX_PIXELS", DEFAULT_MAX_PIXELS),
        max_body_bytes=_env_int("BINCOUNT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
    )


def predict_fn(input_data: Batch, model: CountPredictor, context: Any = None) -> Prediction:
    return Prediction(model.predict(input_data.images, input_data.ids), lines=input_data.lines)


def output_fn(prediction: Prediction, accept: str | None, context: Any = None) -> tuple[str, str]:
    return encode_response(prediction, accept)
