"""A new user's first hour: the README's first 40 lines, the make targets they name, the helper that
finds the latest run, and the next steps `make train` prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from src.utils.runs import data_options, latest_model_dir, main, next_steps
from tests.helpers import ROOT, compose_cfg


def readme_head_commands(lines: int = 40) -> list[str]:
    """The commands in the code blocks of the README's first ``lines`` lines (comments cut)."""
    head = (ROOT / "README.md").read_text().splitlines()[:lines]
    commands, inside = [], False
    for line in head:
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and line.strip():
            commands.append(line.split("  #")[0].strip())
    return commands


def test_readme_head_goes_from_a_clone_to_the_served_page_with_plain_shell_commands():
    commands = readme_head_commands()
    assert commands[:3] == ["make train", "make evaluate", "make serve"]
    assert "source .venv/bin/activate" in commands
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "http://127.0.0.1:8080/" in head and "make help" in head
    python_lines = [c for c in commands if c.startswith("python ")]
    assert python_lines and commands.index("source .venv/bin/activate") < commands.index(python_lines[0])
    for command in commands:
        words = shlex.split(command)
        if words[0] == "make":
            # Every target exists: `make -n` prints what it would run without running it.
            done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (command, done.stderr)
        elif words[0] == "python":
            assert (ROOT / words[1]).is_file() or words[1] == "-m", command


def test_readme_python_commands_compose_their_configs():
    """The overrides of the README's python lines are valid for their script's config."""
    for command in readme_head_commands():
        words = shlex.split(command.replace("$(python -m src.utils.runs)", "/tmp/model"))
        if words[0] == "python" and words[1] in ("evaluate.py", "serve.py"):
            cfg = compose_cfg(words[1].removesuffix(".py"), words[2:])
            assert cfg.model_dir == "/tmp/model"


def test_make_help_lists_the_quickstart_targets():
    done = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for target in ("train", "evaluate", "serve", "predict", "test", "lint"):
        assert re.search(rf"^  make {target} ", done.stdout, re.M), target


def _run(root: Path, name: str, choice: str | None = "synthetic") -> Path:
    model = root / name / "model"
    model.mkdir(parents=True)
    (model / "model_config.json").write_text("{}")
    if choice:
        (root / name / ".hydra").mkdir()
        (root / name / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      data: {choice}\n")
    return model


def test_latest_run_is_found_and_its_absence_says_make_train(tmp_path, capsys):
    runs = tmp_path / "runs"
    with pytest.raises(FileNotFoundError, match="make train"):
        latest_model_dir(runs)
    assert main(["--runs", str(runs)]) == 1
    assert "train one first with `make train`" in capsys.readouterr().err
    _run(runs, "2026-12-06_01-00-00")
    newest = _run(runs, "2026-12-06_02-00-00")
    (runs / "2026-12-06_03-00-00" / "model").mkdir(parents=True)  # a run still training: no artifact yet
    assert latest_model_dir(runs) == newest
    assert main(["--runs", str(runs)]) == 0 and capsys.readouterr().out.strip() == str(newest)
    assert data_options(newest) == ["data=synthetic"]
    assert main(["--data-option", str(newest)]) == 0 and capsys.readouterr().out.strip() == "data=synthetic"


def test_make_evaluate_without_a_run_fails_with_the_fix(tmp_path):
    """A fresh clone: `make evaluate` before `make train` exits 1 and says to train first."""
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}  # no logs/ there
    stamp = tmp_path / "installed"  # newer than the requirements files: make installs nothing
    stamp.touch()
    done = subprocess.run(["make", "evaluate", f"PY={sys.executable}", f"STAMP={stamp}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "make train" in done.stderr


def test_train_prints_the_next_commands(tmp_path):
    model = _run(tmp_path / "runs", "2026-12-06_02-00-00")
    text = next_steps(model)
    for line in ("make evaluate", "make serve", "make predict", "source .venv/bin/activate",
                 f"python evaluate.py model_dir={model} data=synthetic", f"python serve.py model_dir={model}"):
        assert line in text, line
    make_train = subprocess.run(["make", "-n", "train"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "train.py experiment=quickstart" in make_train and "src.utils.runs --next" in make_train


def test_data_options_follow_the_runs_own_folder(tmp_path, monkeypatch):
    """experiment=abid_sample reads data/abid_sample (set in the experiment, not on the command line):
    the run's resolved data_dir gives eval_dir; provenance's kind 'prepared' is no config name."""
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path))
    model = _run(tmp_path / "runs", "2026-12-06_02-00-00", choice="abid")
    (model.parent / ".hydra" / "config.yaml").write_text("data:\n  data_dir: ${paths.data_dir}/abid_sample\n")
    (model / "model_config.json").write_text('{"provenance": {"data": {"kind": "prepared", "source": "../shared/abid"}}}')
    assert data_options(model) == [f"eval_dir={tmp_path}/data/abid_sample/test"]
    (model.parent / ".hydra" / "config.yaml").unlink()  # unknown folder: the data config is the best guess
    assert data_options(model) == []  # 'prepared' names no config and ../shared/abid has no test split
    (model / "model_config.json").write_text("{}")
    assert data_options(model) == ["data=abid"]
