"""Packaging: one version everywhere, a build that is refused with its reason, the licence, the changelog."""

from __future__ import annotations

import re
import subprocess
import sys

import src
from tests.helpers import ROOT


def pyproject_value(key: str) -> str:
    """A top-level key of pyproject.toml's [project] table (tomllib is Python 3.11+; we support 3.10)."""
    table = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
    value = re.search(rf"^{key} = (.+)$", table, re.M).group(1).strip()
    return value[1:-1] if value.startswith('"') else value


def test_version_is_one_value_everywhere():
    assert re.fullmatch(r"\d+\.\d+\.\d+", src.__version__)
    assert pyproject_value("version") == src.__version__
    first_entry = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert first_entry == src.__version__


def test_licence_is_the_full_apache_text():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    assert pyproject_value("license") == '{ text = "Apache-2.0" }'


def test_the_build_backend_refuses_every_hook_with_the_reason():
    sys.path.insert(0, str(ROOT / "_build"))
    try:
        import bincount_build
    finally:
        sys.path.remove(str(ROOT / "_build"))
    for hook in ("build_wheel", "build_sdist", "build_editable", "prepare_metadata_for_build_wheel",
                 "get_requires_for_build_wheel"):
        try:
            getattr(bincount_build, hook)("/tmp/nowhere")
        except bincount_build.RefusedBuild as err:
            assert "runs from its checkout" in str(err) and "make train" in str(err)
        else:
            raise AssertionError(f"{hook} did not refuse")


def test_pip_wheel_is_refused_and_builds_nothing(tmp_path):
    """What a user who types `pip wheel .` (or `pip install .`) sees: the reason, and no wheel."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "runs from its checkout" in done.stdout + done.stderr
    assert not list(tmp_path.iterdir())
