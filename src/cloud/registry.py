"""Model registry: the model package group, approving a version, and finding the one to deploy."""

from __future__ import annotations

import re
from typing import Any

from src.cloud.settings import LaunchConfigError

# CreateModelPackageGroup: ModelPackageGroupName, 1-63 characters, this pattern.
_GROUP = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_PACKAGE_ARN = re.compile(r"^arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]+:\d{12}:model-package/[\S]{1,2048}$")
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
LATEST = "latest"


def check_group_name(name: Any) -> str:
    name = str(name or "")
    if not _GROUP.match(name):
        raise LaunchConfigError(
            f"sagemaker.registry.group={name!r} is not a valid model package group name: 1-63 letters, "
            "digits and single hyphens, starting and ending with a letter or digit, e.g. bincount-abid"
        )
    return name


def check_approval_status(status: Any) -> str:
    if str(status) not in APPROVAL_STATUSES:
        raise LaunchConfigError(
            f"sagemaker.registry.approval_status={status!r}: choose one of {', '.join(APPROVAL_STATUSES)}"
        )
    return str(status)


def check_package_ref(ref: Any, setting: str = "sagemaker.registry.package") -> str:
    """A model package version ARN or ``latest``."""
    ref = str(ref or "")
    if ref != LATEST and not _PACKAGE_ARN.match(ref):
        raise LaunchConfigError(
            f"{setting}={ref!r}: give a model package version ARN "
            "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>) or 'latest'"
        )
    return ref


def ensure_group(client, group: str, description: str, tags: list[dict[str, str]] | None = None) -> str:
    """Create the model package group unless it exists; returns its ARN."""
    from botocore.exceptions import ClientError

    try:
        return client.describe_model_package_group(ModelPackageGroupName=group)["ModelPackageGroupArn"]
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("ValidationException", "ResourceNotFound"):
            raise
    kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "ModelPackageGroupDescription": description}
    if tags:
        kwargs["Tags"] = tags
    return client.create_model_package_group(**kwargs)["ModelPackageGroupArn"]


def latest_package(client, group: str, status: str | None = None) -> str:
    """ARN of the newest version in ``group`` (with approval ``status`` when given)."""
    kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Descending"}
    if status:
        kwargs["ModelApprovalStatus"] = status
    found = client.list_model_packages(**kwargs).get("ModelPackageSummaryList", [])
    if not found:
        what = f"{status} version" if status else "version"
        hint = (" Approve one with `python launch_sagemaker.py action=approve sagemaker.registry.package=<ARN>`."
                if status == "Approved" else " Run `python launch_sagemaker.py action=pipeline` first.")
        raise LaunchConfigError(f"Model package group {group} has no {what}.{hint}")
    return found[0]["ModelPackageArn"]


def resolve_package(client, ref: str, group: str, status: str | None = None) -> str:
    return latest_package(client, group, status) if ref == LATEST else ref


def approve(client, ref: str, group: str, status: str = "Approved", note: str | None = None) -> dict[str, str]:
    """Set a version's approval status (``latest``: the newest version of the group)."""
    arn = resolve_package(client, ref, group)
    kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if note:
        kwargs["ApprovalDescription"] = note
    client.update_model_package(**kwargs)
    return {"model_package": arn, "approval_status": status}


def approved_package(client, ref: str, group: str) -> dict[str, Any]:
    """The package to deploy; refuses one that is not Approved, naming the command that approves it."""
    arn = resolve_package(client, ref, group, status="Approved")
    described = client.describe_model_package(ModelPackageName=arn)
    status = described.get("ModelApprovalStatus")
    if status != "Approved":
        raise LaunchConfigError(
            f"Model package {arn} is {status}, not Approved: review its metrics, then approve it with "
            f"`python launch_sagemaker.py action=approve sagemaker.registry.package={arn}` and deploy again."
        )
    return described
