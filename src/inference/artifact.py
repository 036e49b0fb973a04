"""The model artifact: one folder (and its ``model.tar.gz``) that every serving path loads.

Layout (the SageMaker PyTorch model layout)::

    <model_dir>/model.pt            CountNet state_dict (tensors only: loads with weights_only=True)
    <model_dir>/model_config.json   the network spec (backbone, head, label space, preprocessing: it
                                rebuilds the net as ``CountNet(**net)``), image size, decision rule,
                                classes, the preprocessing served with, the answer settings
                                (ANSWER_KEYS: max_count, overflow, temperature, review_threshold,
                                match/mismatch_threshold, count_cuts; absent in older artifacts),
                                provenance (data, code version, date, test metrics) and the sha256 of
                                every model file a backend loads (``weights_sha256``, ``files_sha256``)
    <model_dir>/model.onnx          optional, for the ONNX Runtime backend
    <model_dir>/model_int8.onnx     optional, its int8 copy (backend onnx-int8), described under "int8"
    <model_dir>/code/inference.py   SageMaker handler (model_fn, input_fn, predict_fn, output_fn)
    <model_dir>/code/requirements.txt
    <model_dir>/code/src/...        vendored copy of the modules the handler imports

``code/`` is self-contained: with only it on ``sys.path`` the handler imports, so the SageMaker
inference container needs neither this repository nor Hydra/Lightning.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any

import torch

from src.data.labels import MAX_COUNT_LIMIT, LabelSpace
from src.data.transforms import Preprocessing
from src.inference.novelty import NOVELTY_KEY, check_novelty
from src.models.backbones import RUNTIME_REQUIREMENTS, CountNet
from src.models.counting import DECISION_RULES

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "model_config.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"  # statically quantized copy of model.onnx (export.py --int8)
TARBALL = "model.tar.gz"

SRC_ROOT = Path(__file__).resolve().parents[1]  # the `src` package
# The SageMaker entry script (code/inference.py). A path, not an import: serving sits above this layer.
CONTAINER_ENTRY = SRC_ROOT / "serving" / "container.py"
# The SageMaker PyTorch inference container already has torch, torchvision and Pillow;
# transforms.v2.RGB needs torchvision >= 0.19 (container >= 2.4).
REQUIREMENTS = "# torch, torchvision (>= 0.19) and pillow come with the SageMaker PyTorch inference container.\n"
ONNX_REQUIREMENT = "onnxruntime>=1.18"
MAX_CONFIG_BYTES = 4 << 20  # a real one is a few KB, up to ~1 MB with a novelty score; refuse a huge one unparsed


# How answers are made and routed (src.inference.calibration). ``overflow``: the last class means
# "more than max_count"; ``temperature`` divides the logits; answers below ``review_threshold``
# are flagged for review; ``match_threshold``/``mismatch_threshold`` turn p_expected into a verdict.
# ``promises``: rates with finite-sample guarantees fitted on validation (calibration.fit_promises;
# evaluate.py checks them); absent in older artifacts, which answer exactly as before.
ANSWER_KEYS = (
    "max_count", "overflow", "temperature", "review_threshold", "match_threshold", "mismatch_threshold", "count_cuts",
    "promises",
)
# Provenance of the fitted values (validation split, target accuracy, ECE): informative only.
CALIBRATION_KEY = "calibration"
# Where the model came from (src.training.provenance): data, code version, date, test metrics.
PROVENANCE_KEY = "provenance"


def model_config(
    net: CountNet,
    image_size: int | None,
    decision_rule: str,
    answers: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``model_config.json`` of ``net``. ``image_size`` (None: the net's own) is the size the net was
    trained at; the net's preprocessing otherwise. ``answers``: ANSWER_KEYS settings (a legacy
    ``overflow=True`` on a net built without a tail reads its last class as the tail)."""
    answers = dict(answers or {})
    for key in answers:
        if key not in (*ANSWER_KEYS, CALIBRATION_KEY, NOVELTY_KEY):
            raise ValueError(f"Unknown answer setting {key!r}; valid: "
                             f"{', '.join((*ANSWER_KEYS, CALIBRATION_KEY, NOVELTY_KEY))}")
    spec = net.spec
    if answers.get("overflow") and not spec["tail"] and answers.get("max_count", spec["num_classes"] - 2) >= 1:
        labels = LabelSpace(answers.get("max_count", spec["num_classes"] - 2), True)
        spec.update(labels.to_dict())
    prep = net.preprocessing if image_size is None else Preprocessing.from_dict(spec["preprocessing"], int(image_size))
    spec["preprocessing"] = prep.to_dict()
    num_classes = spec["num_classes"]
    config = {
        "net": spec,
        "image_size": prep.size,
        "decision_rule": decision_rule,
        "classes": list(range(num_classes)),
        "preprocessing": prep.to_dict(),
        # The label space, explicit in every artifact (older ones: 0..num_classes - 1, no tail).
        "max_count": spec["max_count"],
        **({"overflow": True} if spec["tail"] else {}),
    }
    config.update({k: v for k, v in answers.items() if v is not None})
    if provenance:
        config[PROVENANCE_KEY] = provenance
    check_answers(config)
    return config


def answer_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The answer settings of a config, to carry them into a re-exported artifact."""
    return {k: config[k] for k in (*ANSWER_KEYS, CALIBRATION_KEY, NOVELTY_KEY) if k in config}


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: an error message stays one short line whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def check_answers(config: dict[str, Any], where: str = CONFIG_FILE) -> None:
    """Refuse answer settings that contradict the network or each other."""
    num_classes = len(config["classes"])
    overflow = bool(config.get("overflow", False))
    max_count = config.get("max_count", num_classes - 1 - overflow)
    if max_count != num_classes - 1 - overflow:
        raise ValueError(
            f"{where}: max_count={_short(max_count)} with overflow={overflow} needs "
            f"{max_count + 1 + overflow if isinstance(max_count, int) else '?'} classes, the network has {num_classes}"
        )
    net = config.get("net") or {}
    if "tail" in net and (bool(net["tail"]) != overflow or net.get("max_count", max_count) != max_count):
        raise ValueError(f"{where}: overflow={overflow}, max_count={max_count} contradict the network's label space "
                         f"(tail={net['tail']}, max_count={net.get('max_count')})")
    t = config.get("temperature")
    if t is not None and not (isinstance(t, (int, float)) and t > 0):
        raise ValueError(f"{where}: temperature must be a positive number, got {t!r}")
    for key in ("review_threshold", "match_threshold", "mismatch_threshold"):
        v = config.get(key)
        if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0 + 1e-9):
            raise ValueError(f"{where}: {key} must be a probability in [0, 1], got {v!r}")
    if ("match_threshold" in config) != ("mismatch_threshold" in config):
        raise ValueError(f"{where}: give both match_threshold and mismatch_threshold, or neither")
    if "match_threshold" in config and config["mismatch_threshold"] > config["match_threshold"]:
        raise ValueError(f"{where}: mismatch_threshold must not exceed match_threshold")
    if config.get("promises") is not None:
        check_promises(config["promises"], where)
    cuts = config.get("count_cuts")
    if cuts is not None:
        if config.get("decision_rule") != "expected":
            raise ValueError(f"{where}: count_cuts go with decision_rule 'expected', not {config.get('decision_rule')!r}")
        ok = isinstance(cuts, list) and all(isinstance(c, (int, float)) for c in cuts)
        if not ok or len(cuts) != max_count or cuts != sorted(cuts):
            raise ValueError(f"{where}: count_cuts must be {max_count} ascending numbers (one per count "
                             f"1..{max_count}), got {cuts!r}")


def check_promises(promises: Any, where: str = CONFIG_FILE) -> None:
    """Refuse a ``promises`` entry that is not what ``calibration.fit_promises`` writes."""
    def number(v: Any, lo: float, hi: float) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi

    if not isinstance(promises, dict):
        raise ValueError(f"{where}: promises must be an object, got {_short(promises)}")
    if "delta" in promises and not number(promises["delta"], 1e-9, 0.5):
        raise ValueError(f"{where}: promises.delta must be in (0, 0.5], got {_short(promises['delta'])}")
    fields = {"interval": ("set_threshold",), "accepted": ("threshold",), "verdicts": ("match_threshold",)}
    for name, keys in fields.items():
        entry = promises.get(name)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not number(entry.get("target"), 1e-9, 1.0 - 1e-9):
            raise ValueError(f"{where}: promises.{name} needs a target rate in (0, 1), got {_short(entry)}")
        for key in keys + (("mismatch_threshold",) if name == "verdicts" else ()):
            v = entry.get(key)
            if not (v is None and key == "mismatch_threshold") and not number(v, 0.0, 1.0 + 1e-6):
                raise ValueError(f"{where}: promises.{name}.{key} must be a probability in [0, 1], got {_short(v)}")


def export_artifact(
    net: CountNet,
    image_size: int,
    decision_rule: str,
    out_dir: str | Path,
    *,
    onnx: bool = False,
    tarball: bool = True,
    answers: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact into ``out_dir`` (and ``model.tar.gz`` beside it). Returns ``out_dir``.
    ``answers``: the ANSWER_KEYS settings (and ``calibration`` provenance) to record;
    ``provenance``: where the model came from (``src.training.provenance``)."""
    if decision_rule not in DECISION_RULES:
        raise ValueError(f"Unknown decision rule {decision_rule!r}; valid: {', '.join(DECISION_RULES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model_config(net, image_size, decision_rule, answers, provenance)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    torch.save(state, out / WEIGHTS_FILE)
    config["weights_sha256"] = file_sha256(out / WEIGHTS_FILE)
    for stale in (ONNX_FILE, INT8_FILE):  # files of an earlier export would not match these weights
        if (out / stale).is_file() and not (onnx and stale == ONNX_FILE):
            (out / stale).unlink()
    if onnx:
        from src.inference.backends import export_onnx

        export_onnx(net, out / ONNX_FILE, config["image_size"], features=bool(config.get(NOVELTY_KEY)))
        config["files_sha256"] = {ONNX_FILE: file_sha256(out / ONNX_FILE)}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    write_code(out, with_onnx=(out / ONNX_FILE).is_file())
    if tarball:
        write_tarball(out)
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_code(model_dir: Path, with_onnx: bool = False) -> Path:
    """``code/inference.py``, ``code/requirements.txt`` and the vendored ``code/src``."""
    code = model_dir / "code"
    if (code / "src").exists():
        shutil.rmtree(code / "src")
    for rel in vendored_files():
        dest = code / "src" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SRC_ROOT / rel, dest)
    shutil.copyfile(CONTAINER_ENTRY, code / "inference.py")
    lines = [*RUNTIME_REQUIREMENTS, *([ONNX_REQUIREMENT] if with_onnx else [])]
    (code / "requirements.txt").write_text(REQUIREMENTS + "".join(f"{line}\n" for line in lines))
    return code


def _src_imports(path: Path) -> set[str]:
    """Dotted ``src.*`` modules that ``path`` imports anywhere (lazy imports inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from src.x import module`
    return {n for n in names if n == "src" or n.startswith("src.")}


def vendored_files() -> list[str]:
    """Paths under ``src/`` that ``code/`` needs: the whole inference package, plus every module the
    container entry imports, transitively, with each package's ``__init__.py``."""
    todo = [CONTAINER_ENTRY, *sorted((SRC_ROOT / "inference").glob("*.py"))]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _src_imports(path):
            parts = module.split(".")[1:]
            for i in range(len(parts) + 1):  # every enclosing package's __init__.py
                init = SRC_ROOT.joinpath(*parts[:i], "__init__.py")
                if init.is_file():
                    todo.append(init)
            file = SRC_ROOT.joinpath(*parts).with_suffix(".py") if parts else None
            if file is not None and file.is_file():
                todo.append(file)
    seen.discard(CONTAINER_ENTRY)
    return sorted(p.relative_to(SRC_ROOT).as_posix() for p in seen)


def tarball_path(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    return model_dir.parent / TARBALL if model_dir.name == "model" else model_dir.parent / f"{model_dir.name}.tar.gz"


def write_tarball(model_dir: str | Path) -> Path:
    """``model.tar.gz`` with the folder's *contents* at the archive root (as SageMaker expects)."""
    model_dir = Path(model_dir)
    path = tarball_path(model_dir)
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # weights barely compress
        for item in sorted(model_dir.rglob("*")):
            if "__pycache__" in item.parts:
                continue
            tar.add(item, arcname=str(item.relative_to(model_dir)), recursive=False)
    tmp.replace(path)
    return path


def record_int8(model_dir: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Add ``"int8": {"file": ..., **info}`` (calibration, images used, val accuracy fp32 vs int8) to
    ``model_config.json``, and refresh ``code/`` and the tarball so they carry the int8 model too."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_FILE
    config = json.loads(path.read_text())
    config["int8"] = {"file": INT8_FILE, **info}
    config.setdefault("files_sha256", {})[INT8_FILE] = file_sha256(model_dir / INT8_FILE)
    if (model_dir / ONNX_FILE).is_file():
        config["files_sha256"].setdefault(ONNX_FILE, file_sha256(model_dir / ONNX_FILE))
    path.write_text(json.dumps(config, indent=2) + "\n")
    write_code(model_dir, with_onnx=True)
    if tarball_path(model_dir).is_file():
        write_tarball(model_dir)
    return config


class ArtifactError(ValueError):
    """A model artifact that cannot serve: the message is one line naming the problem and the fix."""


REEXPORT = "re-export the artifact (python export.py <checkpoint> --out <dir>)"


def validate_config(config: Any, path: str | Path) -> dict[str, Any]:
    """Check everything serving relies on in ``model_config.json``; raise ``ArtifactError`` otherwise.

    Sizes are checked before anything is built from them. The preprocessing served with (top-level
    ``preprocessing``) must be the one the network was trained with (``net.preprocessing``).
    """
    from src.models.backbones import backbone_spec
    from src.models.heads import head_class
    from src.models.pooling import pooling_class

    def bad(detail: str) -> ArtifactError:
        return ArtifactError(f"{path}: {detail}; {REEXPORT}")

    if not isinstance(config, dict):
        raise bad(f"expected a JSON object, got {type(config).__name__}")
    net = config.get("net")
    if not isinstance(net, dict):
        raise bad('no "net" (the network spec, e.g. {"name": "torchvision/resnet50", "num_classes": 6})')
    try:
        backbone_spec(str(net.get("name")))
        head_class(net.get("head"))
        pooling_class(net.get("pooling"))
    except ValueError as err:
        raise bad(f"net: {_short(str(err), 300)}") from None
    num_classes = net.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_COUNT_LIMIT + 2:
        raise bad(f"net.num_classes={_short(num_classes)} must be an integer in 2..{MAX_COUNT_LIMIT + 2}")
    classes = config.get("classes")
    if not isinstance(classes, list) or len(classes) != num_classes:
        shown = f" (a list of {len(classes):,})" if isinstance(classes, list) and len(classes) > 20 else f"={_short(classes)}"
        raise bad(f"classes{shown} must list the network's {num_classes} classes")
    size = config.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise bad(f"image_size={_short(size)} must be an integer in 16..4096")
    rule = config.get("decision_rule", "argmax")
    if rule not in DECISION_RULES:
        raise bad(f"decision_rule={_short(rule)} is unknown; valid: {', '.join(DECISION_RULES)}")
    prep = config.get("preprocessing", {})
    if not isinstance(prep, dict):
        raise bad(f"preprocessing={_short(prep)} must be an object")
    try:
        served = Preprocessing.from_dict(prep, size)
        trained = Preprocessing.from_dict(net["preprocessing"]) if "preprocessing" in net else served
        if "resize" in prep and [int(v) for v in prep["resize"]] != [size, size]:
            raise ValueError(f"preprocessing.resize={_short(prep['resize'])} differs from image_size {size}")
    except (TypeError, ValueError, IndexError) as err:
        raise bad(f"preprocessing: {_short(str(err), 300)}") from None
    if not served.same_as(trained):
        differ = [k for k, v in served.to_dict().items() if v != trained.to_dict()[k]] or ["mean"]
        key = differ[0]
        raise bad(f"preprocessing.{key}={served.to_dict()[key]} is not what the network was trained with "
                  f"({trained.to_dict()[key]}): serving must resize and normalise as training did")
    try:
        check_answers(config, str(path))  # overflow, temperature, review and verdict settings
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{_short(str(err), 400)}; {REEXPORT}") from None
    if NOVELTY_KEY in config and (why := check_novelty(config[NOVELTY_KEY])):
        raise bad(f"{NOVELTY_KEY}: {why}")
    return config


def serving_preprocessing(config: dict[str, Any]) -> Preprocessing:
    """What every backend applies to an image for this (validated) config."""
    return Preprocessing.from_dict(config.get("preprocessing"), int(config["image_size"]))


def read_config(model_dir: str | Path) -> dict[str, Any]:
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a model artifact. Train with train.py (writes "
            "<run>/model) or export a checkpoint with `python export.py <ckpt> --out <dir>`."
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ArtifactError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_CONFIG_BYTES:,} a model config "
                            f"can be; {REEXPORT}")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ArtifactError(f"{path} is not valid JSON ({_short(str(err), 200)}); {REEXPORT}") from None
    return validate_config(config, path)


def net_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The ``CountNet(**spec)`` arguments of a validated config; older artifacts' spec lacks the label
    space's tail and the preprocessing, which the config's top level records."""
    spec = dict(config["net"])
    spec.setdefault("tail", bool(config.get("overflow", False)))
    spec.setdefault("preprocessing", serving_preprocessing(config).to_dict())
    return spec


def verify_model_file(model_dir: str | Path, name: str, config: dict[str, Any]) -> Path:
    """``<model_dir>/<name>``, checked against the sha256 the artifact recorded for it. A file whose hash
    differs (swapped, corrupt, from another export) is refused; artifacts written before files were
    pinned have no hash to check (re-export to pin them)."""
    path = Path(model_dir) / name
    expected = (config.get("files_sha256") or {}).get(name) if name != WEIGHTS_FILE else config.get("weights_sha256")
    if expected and path.is_file() and file_sha256(path) != expected:
        raise ArtifactError(f"{path} does not match its sha256 in {CONFIG_FILE}: the file was replaced or is corrupt; "
                            f"{REEXPORT}")
    return path


def load_artifact(model_dir: str | Path) -> tuple[CountNet, dict[str, Any]]:
    """Rebuild the network from ``model_config.json`` and load ``model.pt``; eval mode, on CPU."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    spec = net_spec(config)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file() or weights.stat().st_size == 0:
        raise ArtifactError(f"{weights} is {'empty' if weights.is_file() else 'missing'}; {REEXPORT}")
    expected = config.get("weights_sha256")  # absent in artifacts written before it was recorded
    if expected and file_sha256(weights) != expected:
        raise ValueError(f"{weights} does not match the weights_sha256 in {CONFIG_FILE}: the file is corrupt "
                         "or from another model; re-export the artifact (python export.py)")
    try:
        net = CountNet(weights=None, **spec)
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{model_dir / CONFIG_FILE}: net {_short(spec, 200)} does not build ({_short(str(err), 200)})"
                            f"; {REEXPORT}") from None
    novelty = config.get(NOVELTY_KEY)
    # The novelty score reads the vector the head reads: a learned pooling's width, not the backbone's.
    if novelty and len(novelty["mean"]) != net.pool.out_features:
        raise ArtifactError(f"{model_dir / CONFIG_FILE}: {NOVELTY_KEY} has {len(novelty['mean'])} features, the network "
                            f"{net.pool.out_features}; {REEXPORT}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"{weights} does not load into {spec['name']} ({first[:300]}); {REEXPORT}") from None
    return net.eval(), config
