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


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the src modules it imports anywhere (lazy imports inside functions too)."""
    modules = {".".join(p.relative_to(src.parent).with_suffix("").parts): p for p in src.rglob("*.py")
               if p.name != "__init__.py"}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_imports_itself_round_a_circle():
    """launcher <-> pipeline was the last circle: both now build jobs from src/cloud/jobs.py."""
    assert cycles(import_graph(SRC)) == []


def test_a_planted_circle_is_caught(tmp_path):
    pkg = tmp_path / "src" / "cloud"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from src.cloud.b import g\n")
    (pkg / "b.py").write_text("from src.cloud import a\n")
    assert cycles(import_graph(tmp_path / "src")) == [["src.cloud.a", "src.cloud.b", "src.cloud.a"]]
