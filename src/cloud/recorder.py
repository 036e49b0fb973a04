"""Record the exact API requests boto3 sends (dry runs print them; tests assert on them)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from typing import Any

# Events fire after the SDK has built the parameters and before botocore serialises them.
_EVENTS = (
    "before-parameter-build.sagemaker",
    "before-parameter-build.sagemaker-runtime",
    "before-parameter-build.s3.PutObject",
    "before-parameter-build.s3.CreateMultipartUpload",
)


class RequestRecorder:
    """Attach to a ``boto3.Session`` before any client exists; every request lands in ``calls``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def attach(self, boto_session) -> RequestRecorder:
        for event in _EVENTS:
            boto_session.events.register(event, self._record)
        return self

    def _record(self, params: dict, model, **_: Any) -> None:
        service = model.service_model.service_name
        if service == "s3":  # keys only: what landed where, never the bytes
            self.calls.append({"service": "s3", "operation": model.name,
                               "params": {"Bucket": params.get("Bucket"), "Key": params.get("Key")}})
            return
        self.calls.append({"service": service, "operation": model.name, "params": copy.deepcopy(params)})

    def requests(self, operation: str | None = None, service: str | None = None) -> list[dict]:
        return [c["params"] for c in self.calls
                if (operation is None or c["operation"] == operation) and (service is None or c["service"] == service)]

    def api_calls(self) -> list[dict]:
        """SageMaker calls other than the SDK's own polling (Describe*/List*)."""
        return [c for c in self.calls
                if c["service"] != "s3" and not c["operation"].startswith(("Describe", "List"))]

    def uploads(self) -> list[str]:
        return [f"s3://{c['params']['Bucket']}/{c['params']['Key']}" for c in self.calls if c["service"] == "s3"]

    def upload_summary(self) -> dict[str, int]:
        """Files uploaded per input channel folder (``.../input/code/`` -> 57)."""
        summary: dict[str, int] = {}
        for uri in self.uploads():
            head, sep, rest = uri.partition("/input/")
            folder = f"{head}{sep}{rest.split('/', 1)[0]}/" if sep and "/" in rest else uri
            summary[folder] = summary.get(folder, 0) + 1
        return summary


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value), "base64_head": base64.b64encode(bytes(value[:24])).decode()}
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_default, sort_keys=False)
