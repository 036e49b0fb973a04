"""The serving contract's constants, in a module that imports nothing heavy: the handler uses them,
and so does the SageMaker launcher, which must not import the handler (and torch) to name a header.
"""

from __future__ import annotations

from src.serving.limits import Limits

DEFAULT_MAX_BODY_BYTES = Limits.max_body_bytes  # SageMaker's real-time payload limit
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
JSONLINES_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
ACCEPT_TYPES = (JSON_TYPE, *JSONLINES_TYPES)
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"  # the toolkit's default for a missing or */* Accept
EXPECTED_HEADER = "X-Expected-Quantity"
# InvokeEndpoint forwards no custom header but this one: CustomAttributes="expected_quantity=3".
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
