"""The pre-commit configuration is valid and runs only tools this venv has (nothing downloaded), and
CI runs the linter."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import ROOT


def test_pre_commit_config_is_valid_and_local():
    venv_bin = Path(sys.executable).parent
    done = subprocess.run([str(venv_bin / "pre-commit"), "validate-config", str(ROOT / ".pre-commit-config.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for repo in config["repos"] for h in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"])
    assert {"ruff", "ruff-format", "check-yaml", "end-of-file-fixer", "trailing-whitespace"} <= {h["id"] for h in hooks}
    for hook in hooks:
        tool = shlex.split(hook["entry"])[0]
        assert tool.startswith(".venv/bin/") and (venv_bin / Path(tool).name).is_file(), hook["id"]


def test_ci_runs_the_linter_before_the_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines.index("make lint") < lines.index("make test")
    make_lint = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "-m ruff check ." in make_lint
