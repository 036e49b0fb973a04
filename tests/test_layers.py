"""Imports flow one way: data <- models <- inference <- (training, evaluation) <- serving <- cloud."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# Higher numbers may import lower ones (and their own package), never the reverse.
LAYERS = {"utils": 0, "data": 0, "models": 1, "inference": 2, "training": 3, "evaluation": 3, "serving": 4, "cloud": 5}
# Modules the serving container runs: they must never need Hydra or Lightning.
LIGHT = ("inference", "serving")
HEAVY = ("hydra", "omegaconf", "pytorch_lightning", "lightning")


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_src_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), "add the new package to LAYERS (and the README's layout)"


def upward_imports(src: Path) -> list[str]:
    upward = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if len(rel.parts) < 2:
            continue
        own = rel.parts[0]
        for name in imports(path):
            parts = name.split(".")
            # Above is forbidden, and so is a sibling on the same layer (training <-> evaluation).
            if parts[0] == "src" and len(parts) > 1 and parts[1] in LAYERS and parts[1] != own \
                    and LAYERS[parts[1]] >= LAYERS[own] and not (LAYERS[own] == 0 and LAYERS[parts[1]] == 0):
                upward.append(f"{rel}: imports {name}")
    return upward


def test_no_package_imports_a_package_above_it():
    upward = upward_imports(SRC)
    assert not upward, "\n".join(upward)


def test_serving_path_needs_neither_hydra_nor_lightning():
    heavy = [
        f"{path.relative_to(SRC)}: imports {name}"
        for package in LIGHT
        for path in sorted((SRC / package).rglob("*.py"))
        for name in imports(path)
        if name.split(".")[0] in HEAVY
    ]
    assert not heavy, "\n".join(heavy)


def test_a_planted_upward_import_is_caught(tmp_path):
    bad = tmp_path / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from src.serving.handler import decode_request\n")
    (tmp_path / "serving").mkdir()
    (tmp_path / "serving" / "ok.py").write_text("import src.data.images\n")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "sibling.py").write_text("from src.evaluation.runner import evaluate\n")
    assert upward_imports(tmp_path) == ["data/bad.py: imports src.serving.handler",
                                        "training/sibling.py: imports src.evaluation.runner"]
