"""One error-to-exit-code wrapper for every entry script (lightning-hydra-template's ``task_wrapper``).

A user's mistake (a missing folder, a typo in a setting, weights that cannot be had offline, a
broken model artifact) ends the script with exit status 1 and one line on stderr that names the
problem and the fix; anything else is a bug and keeps its traceback. ``BINCOUNT_TRACEBACK=1``
shows the traceback of a user error too.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Errors whose message is written for a person (each names the fix). Dotted names are imported
# only when an error happens, so an entry script pays for none of these modules up front.
USER_ERRORS = (
    "builtins.FileNotFoundError",
    "builtins.NotADirectoryError",
    "builtins.IsADirectoryError",
    "builtins.PermissionError",
    "builtins.ValueError",  # bad settings: label space, config values, artifacts (ArtifactError)
    "src.models.backbones.WeightsUnavailable",
    "src.data.prepare.NothingUsable",
    "src.inference.quantize.AccuracyDropError",
    "src.serving.startup.StartupError",
    "botocore.exceptions.BotoCoreError",
    "botocore.exceptions.ClientError",
)


def _is_user_error(err: BaseException) -> bool:
    for dotted in USER_ERRORS:
        module, _, name = dotted.rpartition(".")
        loaded = sys.modules.get(module) or (importlib.import_module(module) if module == "builtins" else None)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and isinstance(err, cls):
            return True  # a module never imported cannot have raised its error
    return False


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def task_wrapper(name: str, return_code: bool = False) -> Callable[[F], F]:
    """Decorate an entry's ``main``: user errors exit 1 with ``<name>: <message>`` on stderr.
    ``return_code``: print the line and return 1 instead (argparse scripts whose ``main`` returns
    the exit status, called in-process by tests and other scripts)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
                if not _is_user_error(err) or os.environ.get("BINCOUNT_TRACEBACK") == "1":
                    raise
                log.debug("%s failed", name, exc_info=True)
                if return_code:
                    print(f"{name}: {one_line(err)}", file=sys.stderr)
                    return 1
                sys.exit(f"{name}: {one_line(err)}")

        return wrapped  # type: ignore[return-value]

    return decorate
