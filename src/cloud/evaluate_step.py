"""The pipeline's evaluate step, inside its Processing container.

``python pipeline_evaluate.py model=/opt/ml/processing/model [evaluate.py overrides ...]``: the
training job's ``model.tar.gz`` arrives as a Processing input; this unpacks it and runs
``evaluate.py model_dir=<unpacked> ...``, which writes ``evaluation.json`` (the gate's property
file) beside metrics.json. The staged source holds this file at its root as ``pipeline_evaluate.py``
(``src/cloud/staging.py``), where the Processing container's runproc.sh can start it.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

MODEL_TARBALL = "model.tar.gz"


def repository_root() -> Path:
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "evaluate.py").is_file():
            return folder
    raise FileNotFoundError(f"evaluate.py not found above {here}")


def unpack_model(model: str | Path, dest: str | Path) -> Path:
    """``model``: a model.tar.gz or a folder holding one (or an unpacked artifact folder)."""
    model, dest = Path(model), Path(dest)
    tarball = model / MODEL_TARBALL if model.is_dir() else model
    if model.is_dir() and not tarball.is_file():
        return model  # already unpacked
    if not tarball.is_file():
        raise FileNotFoundError(f"{tarball}: no model.tar.gz; the evaluate step's model input is missing")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuses absolute paths and links out of dest
            tar.extractall(dest, filter="data")
        else:
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts or member.issym() or member.islnk():
                    raise ValueError(f"{tarball}: unsafe member {member.name!r}")
            tar.extractall(dest)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    models = [a for a in args if a.startswith("model=")]
    if len(models) != 1:
        raise SystemExit("pipeline_evaluate.py: give model=<folder with model.tar.gz> once")
    rest = [a for a in args if not a.startswith("model=")]
    with tempfile.TemporaryDirectory(prefix="bincount-model-") as tmp:
        model_dir = unpack_model(models[0].split("=", 1)[1], tmp)
        cmd = [sys.executable, str(repository_root() / "evaluate.py"), f"model_dir={model_dir}", *rest]
        print("+", " ".join(cmd), flush=True)
        return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
