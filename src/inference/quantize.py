"""Static int8 quantization of the ONNX model, and the accuracy gate that decides whether to ship it.

ONNX Runtime's recipe: ``quant_pre_process`` (shape inference + graph optimisation), then
``quantize_static`` in QDQ format with per-channel int8 weights and uint8 activations, calibrated on
real training images. On AVX-512 VNNI CPUs ONNX Runtime runs the int8 convolutions with VNNI
instructions (AVX2 without VNNI gains less); docs/serving_performance.md has the measured numbers.
The gate scores what the model answers (its decision rule, count cuts and overflow class), not a
bare argmax. ``method="auto"`` (the default) calibrates with each method and keeps the one with the
best validation accuracy (ties: the earliest of ``CALIBRATION_METHODS``, MinMax, the fastest).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from src.data.images import CountFolder
from src.data.transforms import Preprocessing, eval_transform

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
METHOD_CHOICES = ("auto", *CALIBRATION_METHODS)
DEFAULT_TOLERANCE = 0.5  # accuracy points the int8 model may lose on the validation split


class AccuracyDropError(RuntimeError):
    """The int8 model lost more accuracy than the tolerance allows."""


@dataclass
class Int8Report:
    method: str
    calibration_images: int
    val_images: int
    val_acc_fp32: float  # percent
    val_acc_int8: float  # percent
    agreement: float | None = None  # percent of validation images answered alike by fp32 and int8
    tried: dict[str, float] | None = None  # method -> val accuracy of its int8 model (auto)

    @property
    def drop(self) -> float:
        """Accuracy points lost (negative: int8 scored higher)."""
        return self.val_acc_fp32 - self.val_acc_int8


def folder_batches(folder: str | Path, image_size: int | Preprocessing, limit: int | None = None, batch_size: int = 32,
                   seed: int = 0, num_classes: int = 6, overflow: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images float32 NCHW, labels) batches of a count folder (``0/``..``5/``), preprocessed as served.

    With ``limit`` a seeded random subset of that many images (all classes mixed), else every image.
    """
    dataset = CountFolder(folder, num_classes=num_classes, transform=eval_transform(image_size), overflow=overflow)
    if len(dataset) == 0:
        raise FileNotFoundError(f"{folder} holds no images in its count folders 0..{num_classes - 1}")
    order = list(range(len(dataset)))
    if limit is not None and limit < len(order):
        order = sorted(random.Random(seed).sample(order, limit))
    for start in tqdm(range(0, len(order), batch_size), desc=f"int8: {Path(folder).name} images", unit="batch",
                      leave=False, disable=None):  # a bar on a terminal only
        items = [dataset[i] for i in order[start : start + batch_size]]
        yield torch.stack([x for x, _ in items]).numpy(), np.asarray([y for _, y in items])


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Callable[[], Iterator[np.ndarray]],
                  method: str = "minmax") -> Path:
    """Write the statically quantized copy of ``fp32_path`` to ``out_path``.

    ``calibration()`` yields float32 NCHW batches preprocessed exactly as at serving time.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"Unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")

    class Reader(CalibrationDataReader):
        """One image per call: the entropy and percentile collectors stack every call's activations
        and fail on a last, shorter batch (MinMax does not care)."""

        def __init__(self):
            self.images = (image[None] for batch in calibration() for image in batch)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"images": np.ascontiguousarray(image, dtype=np.float32)}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bincount-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, calibrate_method=methods[method],
            calibration_providers=["CPUExecutionProvider"],
        )
    return out_path


def answers(runner: Callable, batches: Iterator[tuple[np.ndarray, np.ndarray]],
            decide: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(answered class, label) per image of ``runner(images) -> outputs`` over labelled batches;
    ``decide(outputs) -> class`` (default: the largest output, a softmax head's argmax)."""
    predicted, labels = [], []
    for images, y in batches:
        outputs = torch.as_tensor(np.asarray(runner(images)))
        predicted.append((decide(outputs) if decide else outputs.argmax(-1)).numpy())
        labels.append(y)
    return np.concatenate(predicted), np.concatenate(labels)


def accuracy(runner: Callable, batches: Iterator[tuple[np.ndarray, np.ndarray]],
             decide: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int]:
    """(percent accuracy, images) of ``answers``."""
    predicted, labels = answers(runner, batches, decide)
    return 100.0 * float((predicted == labels).mean()) if len(labels) else 0.0, len(labels)


def check_drop(report: Int8Report, tolerance: float = DEFAULT_TOLERANCE) -> None:
    """Raise ``AccuracyDropError`` naming the numbers and the fix when int8 lost more than ``tolerance``."""
    if report.drop > tolerance:
        tried = f" (tried {', '.join(f'{m} {a:.2f} %' for m, a in report.tried.items())})" if report.tried else ""
        raise AccuracyDropError(
            f"int8 model refused: validation accuracy {report.val_acc_int8:.2f} % vs fp32 {report.val_acc_fp32:.2f} % "
            f"({report.drop:.2f} points lost on {report.val_images} images, tolerance {tolerance:g}){tried}. "
            "Try another --calib-method (auto tries them all), more --calib-images, or raise --int8-tolerance."
        )


def build_int8(model_dir: str | Path, data_dir: str | Path, calib_images: int = 300, method: str = "auto",
               tolerance: float = DEFAULT_TOLERANCE, val_images: int | None = None) -> Int8Report:
    """Quantize ``<model_dir>/model.onnx`` on ``calib_images`` images of ``<data_dir>/train``, compare the
    fp32 and int8 answers on ``<data_dir>/val`` and, when the drop is within ``tolerance``, write
    ``model_int8.onnx`` and record it in ``model_config.json``. Raises ``AccuracyDropError`` (and writes
    nothing) otherwise. ``method="auto"``: every calibration method, the most accurate kept."""
    from src.inference.artifact import INT8_FILE, ONNX_FILE, read_config, record_int8, serving_preprocessing
    from src.inference.backends import OnnxRunner
    from src.models.counting import predict_counts
    from src.models.heads import head_class

    if method not in METHOD_CHOICES:
        raise ValueError(f"Unknown calibration method {method!r}; valid: {', '.join(METHOD_CHOICES)}")
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    config = read_config(model_dir)
    size, classes = serving_preprocessing(config), len(config["classes"])
    overflow = bool(config.get("overflow"))  # the last class is read from <split>/6plus/
    rule, cuts, head = config.get("decision_rule", "argmax"), config.get("count_cuts"), head_class(config["net"].get("head"))
    decide = lambda outputs: predict_counts(head.probabilities(outputs), rule, overflow, cuts)  # noqa: E731 - what the model answers
    for split in ("train", "val"):
        if not (data_dir / split).is_dir():
            raise FileNotFoundError(f"{data_dir / split} not found: --calib-data must be a prepared data folder "
                                    "with train/ (calibration) and val/ (the accuracy check) count folders")
    if not (model_dir / ONNX_FILE).is_file():
        raise FileNotFoundError(f"{model_dir / ONNX_FILE} not found; export it first (export.py --onnx)")
    used = min(calib_images, len(CountFolder(data_dir / "train", num_classes=classes, overflow=overflow)))
    val = lambda: folder_batches(data_dir / "val", size, val_images, num_classes=classes, overflow=overflow)  # noqa: E731
    fp32, labels = answers(OnnxRunner(model_dir / ONNX_FILE).run, val(), decide)
    acc_fp32 = 100.0 * float((fp32 == labels).mean())
    candidates = {m: model_dir / f".{INT8_FILE}.{m}.candidate" for m in (CALIBRATION_METHODS if method == "auto" else (method,))}
    try:
        scored = {}
        for m, path in candidates.items():
            quantize_int8(model_dir / ONNX_FILE, path, method=m, calibration=lambda: (
                x for x, _ in folder_batches(data_dir / "train", size, calib_images, num_classes=classes, overflow=overflow)))
            int8, _ = answers(OnnxRunner(path).run, val(), decide)
            scored[m] = (100.0 * float((int8 == labels).mean()), 100.0 * float((int8 == fp32).mean()))
        best = max(scored, key=lambda m: scored[m][0])  # max keeps the first of equals: MinMax
        report = Int8Report(best, used, len(labels), round(acc_fp32, 3), round(scored[best][0], 3),
                            agreement=round(scored[best][1], 3),
                            tried={m: round(a, 3) for m, (a, _) in scored.items()} if len(scored) > 1 else None)
        check_drop(report, tolerance)
        candidates[best].replace(model_dir / INT8_FILE)
    finally:
        for path in candidates.values():
            path.unlink(missing_ok=True)
    record_int8(model_dir, {"calibration_method": best, "calibration_images": used, "val_images": report.val_images,
                            "val_acc_fp32": report.val_acc_fp32, "val_acc_int8": report.val_acc_int8,
                            "val_agreement": report.agreement, "decision_rule": rule,
                            **({"methods_tried": report.tried} if report.tried else {}),
                            "tolerance_points": tolerance})
    return report
