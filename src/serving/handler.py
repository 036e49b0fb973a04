"""The inference handler: request bytes -> images -> counts, for every serving path.

The SageMaker PyTorch inference container calls ``model_fn``, ``input_fn``, ``predict_fn`` and
``output_fn`` (re-exported by ``code/inference.py``); ``serve.py``'s HTTP app calls the same
functions, and evaluation uses the same ``CountPredictor``, so every path preprocesses with
``src.data.transforms.eval_transform`` and decides counts with ``src.models.counting``.

Requests:
- ``image/jpeg``, ``image/png``, ``application/x-image``: the body is one image; an expected
  quantity comes in the ``X-Expected-Quantity`` header or the ``?expected_quantity=`` query.
- ``application/json``: ``{"image": "<base64>"}``, ``{"images": [<base64 or object>, ...]}``, a bare
  base64 string or a list of them. An object may carry an ``"id"`` (echoed back) and an
  ``"expected_quantity"``. One bad image fails the whole request.
- ``application/jsonlines``: one such object (or bare string) per line, one image each: SageMaker
  batch transform with ``SplitType=Line``. A bad line gets its own error object, in its place.
URLs are refused, never fetched. ``input_fn`` checks the request against ``Limits`` from the image
headers alone; ``predict_fn`` decodes and resizes one image at a time, one batch at a time.
Responses: ``application/json`` ``{"predictions": [result, ...]}`` or ``application/jsonlines``
with one ``result`` (or ``{"id", "error", "status"}``) per input line; docs/serving_limits.md.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from src.data.images import to_rgb
from src.inference.predictor import MAX_BATCH, CountPredictor
from src.serving.contract import (  # noqa: F401 - re-exported: the handler's contract
    ACCEPT_TYPES,
    CUSTOM_ATTRIBUTES_HEADER,
    DEFAULT_ACCEPT_ENV,
    DEFAULT_MAX_BODY_BYTES,
    EXPECTED_HEADER,
    IMAGE_TYPES,
    JSON_TYPE,
    JSONLINES_TYPES,
)
from src.serving.limits import Limits

DEFAULT_MAX_PIXELS = Limits.max_pixels
IMAGE_FORMATS = ("JPEG", "PNG")
MAX_ID_CHARS = 256
# The largest expected quantity any request may carry (a bin never holds more; the model's own range,
# e.g. 0..5, is checked after this): it bounds the digits parsed, far below Python's 4,300-digit int().
MAX_EXPECTED_QUANTITY = 1000
# Where an expected quantity of a raw-image request came from: every error names its channel.
HEADER_CHANNEL = f"{EXPECTED_HEADER} header"
QUERY_CHANNEL = "?expected_quantity= query"
CUSTOM_ATTRIBUTES_CHANNEL = f"CustomAttributes expected_quantity ({CUSTOM_ATTRIBUTES_HEADER} header)"

try:  # inside the SageMaker container, its toolkit turns these into HTTP status codes
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - depends on the environment
    _ToolkitError = None


class RequestError(_ToolkitError or Exception):
    """A client error with its HTTP status; ``body`` is the JSON error response; ``headers``: extra
    response headers (``Retry-After``, ``Connection: close``)."""

    status_code = 400
    phrase = "Bad Request"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        self.detail = detail
        self.headers = dict(headers or {})
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


class RequestTimeout(RequestError):
    status_code, phrase = 408, "Request Timeout"


class PayloadTooLarge(RequestError):
    status_code, phrase = 413, "Payload Too Large"


class UnsupportedMediaType(RequestError):
    status_code, phrase = 415, "Unsupported Media Type"


class ServiceUnavailable(RequestError):
    status_code, phrase = 503, "Service Unavailable"


class ClientClosed(RequestError):
    """The client went away before its body arrived: nobody reads the answer (nginx's 499)."""

    status_code, phrase = 499, "Client Closed Request"


@dataclass
class Record:
    """One image of a request: its bytes (header checked, pixels not decoded yet) or its error."""

    data: bytes | None = None
    id: Any = None
    expected: int | None = None
    pixels: int = 0
    error: RequestError | None = None
    where: str = "body"  # the channel of ``expected``, named in its errors


@dataclass
class Batch:
    """A checked request: its records, and whether it arrived as JSON lines (per-record errors)."""

    records: list[Record] = field(default_factory=list)
    lines: bool = False

    @property
    def ids(self) -> list[Any]:
        return [r.id for r in self.records]


@dataclass
class Prediction:
    results: list[dict[str, Any]]
    lines: bool = False


def media_type(header: str | None) -> str:
    """``'Image/JPEG; q=1'`` -> ``'image/jpeg'``."""
    return (header or "").split(";")[0].strip().lower()


def error_object(err: RequestError, record_id: Any = None) -> dict[str, Any]:
    """The JSON error shape, for a whole response or for one JSON-lines record."""
    return {**({"id": record_id} if record_id is not None else {}), "error": err.detail, "status": err.status_code}


def _clean(err: Exception) -> str:
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(err))  # PIL names BytesIO objects by address


# -- images ----------------------------------------------------------------------------------------
def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open JPEG/PNG bytes and check the size from the header; no pixel is decoded yet."""
    if not data:
        raise BadRequest("Empty image: the request carried no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise BadRequest("Could not decode the image: it is not a JPEG or PNG") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadRequest(f"Could not decode the image as JPEG or PNG: {_clean(err)}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadRequest(
            f"Image of {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels; "
            "resize it (the model sees it at its training size anyway)"
        )
    return image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """JPEG/PNG bytes -> 8-bit RGB image (16-bit images scaled, not clipped); size checked first."""
    image = open_image(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise BadRequest(f"Could not decode the image as JPEG or PNG: {_clean(err)}") from None


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


def _shown(value: Any) -> str:
    """A client's value for an error message: short, and safe for ints past Python's digit limit."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def parse_expected(value: Any, where: str) -> int | None:
    """An integer in ``0..MAX_EXPECTED_QUANTITY`` (a JSON number, or ASCII digits from a header,
    query or JSON string), or None when absent; otherwise a 400 naming ``where`` and the range."""
    if value is None:
        return None
    parsed = value
    if isinstance(value, str):
        text = value.strip()
        # isascii: '²' passes isdigit but not int(); the length check keeps int() far from 4,300 digits
        parsed = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None
    if isinstance(parsed, bool) or not isinstance(parsed, int) or not 0 <= parsed <= MAX_EXPECTED_QUANTITY:
        raise BadRequest(f"{where}: expected_quantity must be an integer in 0..{MAX_EXPECTED_QUANTITY}, "
                         f"got {_shown(value)}")
    return parsed


@dataclass(frozen=True)
class Expected:
    """A raw-image request's expected quantity and the channel it came in."""

    value: int
    where: str


def _header_items(headers: Any) -> list[tuple[str, str]]:
    """Every (lower-case name, value), repeats kept: a Starlette ``Headers`` or any mapping."""
    items = headers.items() if headers is not None else []
    text = lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v)  # noqa: E731
    return [(text(k).lower(), text(v)) for k, v in items]


def expected_from_request(headers: Any, query: str | list[str] | None = None) -> Expected | None:
    """The expected quantity of a raw-image request, from every channel: the ``X-Expected-Quantity``
    header, ``?expected_quantity=`` (``query``: its value or all its values) and
    ``expected_quantity=N`` in SageMaker's CustomAttributes header. Each value is checked
    (``parse_expected``, naming its channel); values that disagree, across channels or repeated in
    one, are a 400: the server never picks a winner. ``headers``: any mapping, or Starlette's
    ``Headers`` (repeated headers count); names are matched case-insensitively."""
    found: list[tuple[str, str]] = []
    queries = [query] if isinstance(query, str) else list(query or [])
    for name, value in _header_items(headers):
        if name == EXPECTED_HEADER.lower():
            found.append((HEADER_CHANNEL, value))
        elif name == CUSTOM_ATTRIBUTES_HEADER.lower():
            for item in re.split(r"[;,]", value):
                key, _, raw = item.partition("=")
                if key.strip() == "expected_quantity":
                    found.append((CUSTOM_ATTRIBUTES_CHANNEL, raw))
    found += [(QUERY_CHANNEL, q) for q in queries]
    parsed = [Expected(parse_expected(raw, where), where) for where, raw in found]  # type: ignore[arg-type]
    if len({e.value for e in parsed}) > 1:
        given = ", ".join(f"{e.where} = {e.value}" for e in parsed)
        raise BadRequest(f"expected_quantity given more than once with different values ({given}); "
                         "send it once, in one channel")
    return parsed[0] if parsed else None


def _record_id(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):  # NaN / Infinity are not JSON: never echoed
        raise BadRequest(f"{where}.id: must be a string or a finite number, got {value!r}; send ids as strings")
    if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)
                         and len(str(value)) <= MAX_ID_CHARS):
        return value
    raise BadRequest(f"{where}.id: must be a string or number of at most {MAX_ID_CHARS} characters")


def _record(item: Any, where: str, max_pixels: int) -> Record:
    """One image from a JSON value: a base64 string or ``{"image", "id", "expected_quantity"}``."""
    if isinstance(item, dict):
        if "image" not in item:
            raise BadRequest(f"{where}: expected {{\"image\": <base64>, \"id\": ..., \"expected_quantity\": n}}")
        record = Record(id=_record_id(item.get("id"), where),
                        expected=parse_expected(item.get("expected_quantity"), where), where=where)
        data = decode_base64(item["image"], f"{where}.image")
    else:
        record, data = Record(where=where), decode_base64(item, where)
    image = open_image(data, max_pixels)
    record.data, record.pixels = data, image.size[0] * image.size[1]
    return record


def _parse_json(text: str, where: str) -> Any:
    """Strict JSON: ``NaN``, ``Infinity`` and numbers that overflow a float (``1e400``) are refused,
    so nothing non-finite is ever echoed into a response."""

    def constant(name: str) -> Any:
        raise BadRequest(f"{where}: invalid JSON ({name} is not a JSON value); send ids as strings")

    def integer(digits: str) -> int:  # int() past 4,300 digits raises; long ones are slow before that
        if len(digits) > 64:
            raise BadRequest(f"{where}: invalid JSON (a number of {len(digits):,} digits; ids and "
                             f"expected quantities (0..{MAX_EXPECTED_QUANTITY}) are far shorter)")
        return int(digits)

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise BadRequest(f"{where}: invalid JSON (the number {_shown(number)} overflows); send ids as strings")
        return value

    try:
        return json.loads(text, parse_constant=constant, parse_float=finite, parse_int=integer)
    except RecursionError:  # the C parser recurses per level: a 1,000-deep body would be a 500
        raise BadRequest(f"{where}: JSON nested too deeply; send {{\"image\": <base64>}} objects") from None
    except ValueError as err:
        raise BadRequest(f"{where}: invalid JSON ({err})") from None


def _too_many(n: int, limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request carries {n:,} images; the limit is {limits.max_images} per request "
                           f"({limits.describe()}): split it into smaller requests")


def _json_items(doc: Any) -> list[Any]:
    if isinstance(doc, str) or (isinstance(doc, dict) and "image" in doc):
        return [doc]
    if isinstance(doc, dict) and isinstance(doc.get("images"), list):
        doc = doc["images"]
    if isinstance(doc, list):
        if not doc:
            raise BadRequest("body: empty list of images")
        return doc
    raise BadRequest(
        "body: expected {\"image\": <base64>}, {\"images\": [<base64>, ...]}, a base64 string or a list of them"
    )


def _json_records(text: str, limits: Limits) -> list[Record]:
    items = _json_items(_parse_json(text, "body"))
    if len(items) > limits.max_images:
        raise _too_many(len(items), limits)
    if len(items) == 1:
        return [_record(items[0], "body", limits.max_pixels)]
    return [_record(item, f"body.images[{i}]", limits.max_pixels) for i, item in enumerate(items)]


def _line_record(line: str, n: int, limits: Limits) -> Record:
    """One JSON line -> its record, or a record carrying its error (the other lines still count)."""
    record_id = None
    try:
        doc = _parse_json(line, f"line {n}")
        if isinstance(doc, dict):
            record_id = _record_id(doc.get("id"), f"line {n}")
        if isinstance(doc, list) or (isinstance(doc, dict) and "images" in doc):
            raise BadRequest(f"line {n}: JSON lines carry one image per line")
        return _record(doc, f"line {n}", limits.max_pixels)
    except RequestError as err:
        return Record(id=record_id, error=err)


def decode_request(
    body: bytes | bytearray | str,
    content_type: str | None,
    max_pixels: int | None = None,
    max_body_bytes: int | None = None,
    *,
    limits: Limits | None = None,
    expected_quantity: Expected | str | int | None = None,
    expected_where: str = HEADER_CHANNEL,
) -> Batch:
    """Request body + content type -> a checked ``Batch``; raises a ``RequestError`` with the status.

    Sizes, image counts and pixel budgets are checked from the image headers, before any decoding.
    ``expected_quantity`` is the header/query value that goes with a raw image body (an int, a raw
    string, or an ``Expected`` from ``expected_from_request``), ``expected_where`` its channel.
    """
    overrides = {k: v for k, v in (("max_pixels", max_pixels), ("max_body_bytes", max_body_bytes)) if v is not None}
    limits = replace(limits or Limits(), **overrides)
    ctype = media_type(content_type)
    if isinstance(body, str):
        body = body.encode()
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(f"Request body of {len(body):,} bytes exceeds the limit of {limits.max_body_bytes:,} bytes")
    if isinstance(expected_quantity, Expected):
        expected_quantity, expected_where = expected_quantity.value, expected_quantity.where
    if ctype in IMAGE_TYPES:
        expected = parse_expected(expected_quantity, expected_where)
        image = open_image(bytes(body), limits.max_pixels)
        return Batch([Record(bytes(body), expected=expected, pixels=image.size[0] * image.size[1],
                             where=expected_where)])
    if ctype != JSON_TYPE and ctype not in JSONLINES_TYPES:
        raise UnsupportedMediaType(
            f"Unsupported content type {content_type!r}; use one of: {', '.join(IMAGE_TYPES + ACCEPT_TYPES)}"
        )
    if expected_quantity is not None:
        raise BadRequest(f"{expected_where}: an expected quantity outside the body (the {EXPECTED_HEADER} "
                         "header, ?expected_quantity=, CustomAttributes) goes with a raw image body; in JSON, "
                         "put \"expected_quantity\" in each image object")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{ctype} body is not UTF-8 text") from None
    if ctype == JSON_TYPE:
        batch = Batch(_json_records(text, limits))
    else:
        # Only \n (and \r\n) end a line: str.splitlines() would also split on U+2028/U+2029 and
        # others, which are legal inside JSON strings, and break one answer per line.
        lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1)
                 if line.strip(" \t\r")]  # JSON's own whitespace only
        if not lines:
            raise BadRequest("No JSON lines in the request body")
        if len(lines) > limits.max_images:
            raise _too_many(len(lines), limits)
        batch = Batch([_line_record(line, n, limits) for n, line in lines], lines=True)
    pixels = sum(r.pixels for r in batch.records)
    if pixels > limits.max_request_pixels:
        raise PayloadTooLarge(f"Request images hold {pixels:,} pixels in all; the limit is "
                              f"{limits.max_request_pixels:,} per request ({limits.describe()}): "
                              "send fewer or smaller images per request")
    return batch


# -- responses ---------------------------------------------------------------------------------------
def _accept_ranges(accept: str) -> list[tuple[str, float]]:
    """``Accept`` -> [(media type, q)], most preferred first (stable for equal q)."""
    ranges = []
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((kind.lower(), q))
    return sorted(ranges, key=lambda r: -r[1])


def choose_accept(accept: str | None, lines: bool) -> str:
    """The response type: the most preferred supported type in ``Accept`` (``q=0`` means "not this");
    ``*/*`` follows the request's shape. Decide it before inference: a 406 costs nothing then.

    A missing or ``*/*`` Accept first becomes ``$SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` when that is set,
    which is what SageMaker's inference toolkit does before ``output_fn``: serve.py and the container
    answer alike. The launcher sets it to ``*/*`` (answer in the request's shape)."""
    if (not accept or accept.strip() == "*/*") and os.environ.get(DEFAULT_ACCEPT_ENV):
        accept = os.environ[DEFAULT_ACCEPT_ENV]
    default = JSONLINES_TYPES[0] if lines else JSON_TYPE
    if not accept or not accept.strip():
        return default
    ranges = _accept_ranges(accept)
    refused = {kind for kind, q in ranges if q <= 0}
    for kind, q in ranges:
        if q <= 0:
            continue
        if kind in ACCEPT_TYPES:
            return kind
        if kind in ("*/*", "application/*", ""):
            for candidate in (default, *ACCEPT_TYPES):
                if candidate not in refused:
                    return candidate
    raise NotAcceptable(f"Cannot answer with {accept[:200]!r}; accepted: {', '.join(ACCEPT_TYPES)}")


def strict_json(obj: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity`` (invalid JSON for strict parsers): a
    non-finite number raises ``ValueError`` (a 500: ids are refused at parsing, probabilities are
    checked at start-up). ASCII output: no U+2028/U+2029 inside a line."""
    return json.dumps(obj, allow_nan=False)


def encode_response(prediction: Prediction, accept: str | None) -> tuple[str, str]:
    """(body, content type)."""
    kind = choose_accept(accept, prediction.lines)
    if kind in JSONLINES_TYPES:
        return "".join(strict_json(r) + "\n" for r in prediction.results), kind
    return strict_json({"predictions": prediction.results}), kind


# -- prediction ----------------------------------------------------------------------------------------
def predict_batch(
    batch: Batch, model: CountPredictor, batch_size: int = MAX_BATCH, decode_gate: AbstractContextManager | None = None
) -> Prediction:
    """Decode, resize and count ``batch_size`` images at a time: peak memory is one full-size image
    plus one batch of model-sized tensors, whatever the request holds. In a JSON-lines batch a
    record that fails gets its error object in its place; otherwise the first failure is raised.
    ``decode_gate`` (a semaphore shared by request threads) is held while decoding, not during the
    forward pass: a micro-batched server keeps many requests waiting for one forward, few decoding."""
    records = batch.records

    def fail(i: int, err: RequestError) -> None:
        if not batch.lines:
            raise err
        records[i].error, records[i].data = err, None

    for i, record in enumerate(records):
        if record.error is None and record.expected is not None:
            try:
                model.check_expected(record.expected)
            except ValueError as err:
                fail(i, BadRequest(f"{record.where}: {err}"))
    results: list[dict[str, Any] | None] = [None] * len(records)
    todo = [i for i, r in enumerate(records) if r.error is None]
    for start in range(0, len(todo), batch_size):
        tensors, rows = [], []
        with decode_gate or nullcontext():
            for i in todo[start:start + batch_size]:
                try:  # the full-size image lives only until it is resized: one at a time
                    tensors.append(model.transform(decode_image(records[i].data)))
                except RequestError as err:
                    fail(i, err)
                    continue
                records[i].data = None  # the bytes are no longer needed
                rows.append(i)
        if rows:
            ids = [records[i].id for i in rows]
            expected = [records[i].expected for i in rows]
            answers = model.predict_batch(torch.stack(tensors), ids, expected)
            for i, result in zip(rows, answers, strict=True):
                results[i] = result
    for i, record in enumerate(records):
        if record.error is not None:
            results[i] = error_object(record.error, record.id)
    return Prediction(results, lines=batch.lines)  # type: ignore[arg-type]


# -- SageMaker inference toolkit entry points ---------------------------------------------------
def model_fn(model_dir: str, context: Any = None) -> CountPredictor:
    """Load once per worker, validated (one forward pass on a blank image): a broken artifact fails
    here, so the container never reports healthy. ``BINCOUNT_BACKEND=onnx`` uses ``model.onnx`` with
    ONNX Runtime, ``onnx-int8`` its int8 copy ``model_int8.onnx`` (export.py --int8); the torch backend runs on the GPU when the instance has one (``BINCOUNT_DEVICE``)."""
    from src.serving.startup import load_checked

    device = os.environ.get("BINCOUNT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_checked(model_dir, backend=os.environ.get("BINCOUNT_BACKEND", "torch"), device=device)


def _toolkit_headers(context: Any) -> dict:
    """The request's headers as the SageMaker inference toolkit's context holds them, if any."""
    try:
        props = dict(context.request_processor[0].get_request_properties())
    except (AttributeError, IndexError, KeyError, TypeError):
        return {}
    text = lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v)  # noqa: E731
    return {text(k): text(v) for k, v in props.items()}


def input_fn(request_body: bytes, request_content_type: str, context: Any = None) -> Batch:
    """Limits come from ``BINCOUNT_MAX_PIXELS``, ``BINCOUNT_MAX_BODY_BYTES``, ``BINCOUNT_MAX_IMAGES``,
    ``BINCOUNT_MAX_REQUEST_PIXELS`` when set; an expected quantity for a raw image from the
    request's CustomAttributes (``expected_quantity=3``) or ``X-Expected-Quantity``."""
    headers = {k.lower(): v for k, v in _toolkit_headers(context).items()}  # HTTP names ignore case
    if headers.get("accept"):  # a 406 before any decoding, as in the HTTP app
        choose_accept(headers["accept"], media_type(request_content_type) in JSONLINES_TYPES)
    expected = expected_from_request(headers) if media_type(request_content_type) in IMAGE_TYPES else None
    return decode_request(request_body, request_content_type, limits=Limits.from_env(), expected_quantity=expected)


def predict_fn(input_data: Batch, model: CountPredictor, context: Any = None) -> Prediction:
    return predict_batch(input_data, model)


def output_fn(prediction: Prediction, accept: str | None, context: Any = None) -> tuple[str, str]:
    return encode_response(prediction, accept)
