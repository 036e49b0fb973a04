"""The PEP 517 build backend of bincount: it refuses, on purpose, with the reason and what to do.

bincount runs from its checkout: the configs/, the entry scripts (train.py, serve.py, ...) and the
importable package ``src`` sit side by side, Hydra finds configs/ relative to the repository, and the
SageMaker jobs upload this very folder as their source. A wheel of it would install a top-level
package named ``src`` without the configs and could not run; so ``pip install .``, ``pip wheel .``
and ``python -m build`` stop here instead of producing something broken.
"""

from __future__ import annotations

MESSAGE = (
    "bincount is not built as a wheel: it runs from its checkout (configs/, the entry scripts and the "
    "package src/ side by side). Set it up with `make train` (or `python3 -m venv .venv && "
    ".venv/bin/pip install -r requirements.txt`) and run the scripts from the repository root; "
    "see README.md, 'Installing'."
)


class RefusedBuild(RuntimeError):
    pass


def _refuse(*_args, **_kwargs):
    raise RefusedBuild(MESSAGE)


# Every hook a frontend may call first (pip asks for requirements, then metadata, then the wheel).
get_requires_for_build_wheel = get_requires_for_build_sdist = get_requires_for_build_editable = _refuse
prepare_metadata_for_build_wheel = prepare_metadata_for_build_editable = _refuse
build_wheel = build_sdist = build_editable = _refuse
