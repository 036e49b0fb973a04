"""``CountPredictor``: a loaded model that turns images into counts, confidences and probabilities.

Every serving path (the SageMaker handler, the HTTP app, predict.py) and evaluation use it, so all
preprocess with ``src.data.transforms.eval_transform`` and the artifact's recorded preprocessing,
turn outputs into probabilities with the artifact's head (``src.models.heads``), decide counts with
``src.models.counting`` and apply the artifact's temperature, count cuts, review threshold and
verdict rule (``src.inference.calibration``).

One result per image (docs/warehouse.md)::

    {"id": ..., "count": 3 | null, "label": "3" | ">5", "overflow": false, "confidence": 0.81,
     "probabilities": [p0, ..., p5(, p_overflow)], "review": false,
     "expected_quantity": 3, "p_expected": 0.81, "verdict": "match" | "mismatch" | "review"}

``count`` is null for an overflow answer (more than ``max_count``); ``overflow`` only appears for
models with that class, ``review`` only when the artifact has a review threshold, the last three
only when the request carried an expected quantity.

Answers for any count (``all_counts``): a model whose label space reaches beyond 0..5
(``max_count`` > 5) or whose head is not the softmax head (an ordinal head) adds::

    "p_more_than_5": 0.12,        # P(count > 5), with max_count >= 5 (the tail included)
    "interval": [lo, hi],         # with promises fitted (train.py does): the span of the split-conformal
                                  # set, covering the true count >= "interval_coverage" of the time on
                                  # photos like validation's; else the shortest run of consecutive counts
                                  # holding >= 80 % of the probability; hi null: "lo or more" (the tail)
    "checked_against": "7" | ">15"  # with an expected quantity: the class it was checked against;
                                  # ">15": at or above the tail's first count, P(count > 15)

0..5 and 7-class overflow softmax models (every artifact before this) answer exactly as before,
without these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from src.data.labels import LabelSpace
from src.data.transforms import eval_transform
from src.inference.backends import BACKENDS, OnnxRunner, TorchRunner
from src.inference.calibration import VerdictRule, conformal_interval, needs_review
from src.inference.novelty import NOVELTY_KEY, NoveltyScore
from src.models.counting import INTERVAL_MASS, count_interval, p_more_than, predict_counts
from src.models.heads import head_class

MAX_BATCH = 32  # images per forward pass; longer lists are split into chunks of this size


class CountPredictor:
    """``backend='torch'`` runs the CountNet (channels_last, faster on CPU); ``backend='onnx'`` runs
    ``model.onnx`` with ONNX Runtime, ``backend='onnx-int8'`` its int8 copy ``model_int8.onnx``."""

    def __init__(
        self,
        net: torch.nn.Module | None,
        config: dict[str, Any],
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        channels_last: bool = True,
        device: str = "cpu",
    ):
        from src.inference.artifact import serving_preprocessing

        self.config = config
        self.preprocessing = serving_preprocessing(config)
        self.image_size = self.preprocessing.size
        self.decision_rule = config.get("decision_rule", "argmax")
        self.head = head_class(config["net"].get("head"))  # outputs -> probabilities
        # Absent in artifacts written before answers were calibrated: they answer exactly as before.
        self.overflow = bool(config.get("overflow", False))
        self.max_count = int(config.get("max_count", len(config["classes"]) - 1 - self.overflow))
        self.labels = LabelSpace(self.max_count, self.overflow)
        # Counts beyond 0..5 or an ordinal head: each answer also carries P(count > 5), an 80 %
        # interval and what an expected quantity was checked against (module docstring).
        self.all_counts = self.max_count > 5 or self.head.name != "softmax"
        # With a conformal interval fitted on validation (promises.interval), that is the interval served:
        # the span of {k: p_k >= set_threshold} on the probabilities before the temperature.
        interval = (config.get("promises") or {}).get("interval") or {}
        self.interval_threshold = interval.get("set_threshold") if self.all_counts else None
        self.interval_coverage = interval.get("target")
        self.temperature = config.get("temperature")
        self.review_threshold = config.get("review_threshold")
        self.count_cuts = config.get("count_cuts")
        thresholds = (config.get("match_threshold"), config.get("mismatch_threshold"))
        self.verdict_rule = VerdictRule(*thresholds) if None not in thresholds else None
        self.transform = eval_transform(self.preprocessing)
        # Is a photo like the training data? (src.inference.novelty; absent in older artifacts)
        self.novelty = NoveltyScore.from_config(config[NOVELTY_KEY]) if config.get(NOVELTY_KEY) else None
        self.backend = backend
        if backend == "torch":
            if net is None:
                raise ValueError("backend='torch' needs the network")
            self.runner = TorchRunner(net, device=device, channels_last=channels_last)
        elif backend in ("onnx", "onnx-int8"):
            if onnx_path is None or not Path(onnx_path).is_file():
                flag = "--int8 --calib-data <prepared data folder>" if backend == "onnx-int8" else "--onnx"
                raise FileNotFoundError(
                    f"ONNX model {onnx_path} not found; export it with `python export.py --model-dir <dir> {flag}`"
                )
            self.runner = OnnxRunner(onnx_path)
            if config.get(NOVELTY_KEY) and not self.runner.has_features:
                raise ValueError(f"{onnx_path} has no 'features' output but the artifact scores novelty: re-export "
                                 "it with `python export.py --model-dir <dir> --onnx`")
        else:
            raise ValueError(f"Unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, backend: str = "torch", channels_last: bool = True, device: str = "cpu"
    ) -> CountPredictor:
        from src.inference.artifact import INT8_FILE, ONNX_FILE, load_artifact, read_config, verify_model_file

        if backend in ("onnx", "onnx-int8"):
            config = read_config(model_dir)
            file = verify_model_file(model_dir, INT8_FILE if backend == "onnx-int8" else ONNX_FILE, config)
            return cls(None, config, backend, file)
        net, config = load_artifact(model_dir)
        return cls(net, config, backend, channels_last=channels_last, device=device)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised image batch (N, 3, S, S) -> the head's raw outputs (N, W), float32 on CPU."""
        return self.runner(batch)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C), calibrated with the artifact's temperature when it has one."""
        return self.calibrate(self.logits(batch))

    def calibrate(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's probabilities of raw outputs, with the artifact's temperature."""
        return self.head.probabilities(logits, self.temperature)

    def raw_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's probabilities without the temperature: what counts are decided on."""
        return self.head.probabilities(logits)

    def decide_outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index per row of raw outputs (``max_count + 1``: the overflow class), decided on the
        uncalibrated probabilities, so a temperature never changes a count (it would move the
        ``expected`` rule's sum k * p_k)."""
        return predict_counts(self.raw_probabilities(logits), self.decision_rule, self.overflow, self.count_cuts)

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Class index per row of *calibrated* ``probs``: for a softmax head the temperature is
        undone exactly (softmax(T * log p) = softmax(logits)); other heads: use ``decide_outputs``."""
        if self.temperature and self.temperature != 1.0:
            if self.head.name != "softmax":
                raise ValueError(f"decide() cannot undo the temperature of a {self.head.name!r} head; "
                                 "use decide_outputs(logits)")
            probs = self.head.probabilities(self.temperature * probs.double().clamp_min(1e-300).log())
        return predict_counts(probs, self.decision_rule, self.overflow, self.count_cuts)

    def label(self, index: int) -> str:
        return self.labels.label(index)

    @property
    def num_classes(self) -> int:
        return len(self.config["classes"])

    def check_expected(self, quantity: int) -> int:
        """The class that ``quantity`` is checked against; ``ValueError`` (with the fix) when this
        model cannot check it. Above ``max_count`` only the overflow class can answer: the verdict
        then says whether the bin holds *more than* max_count, not that exact number (an
        ``all_counts`` answer says so: ``checked_against`` ">15")."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            raise ValueError(f"expected quantity must be a non-negative integer, got {quantity!r}")
        if quantity <= self.max_count:
            return quantity
        if self.overflow:
            return self.max_count + 1
        raise ValueError(
            f"expected quantity {quantity} is above what this model can check: it counts 0..{self.max_count} "
            f"and has no 'more than {self.max_count}' class; send 0..{self.max_count} or use a model "
            "trained with data.overflow=true"
        )

    def results(
        self,
        probs: torch.Tensor,
        ids: list[Any] | None = None,
        expected: list[int | None] | None = None,
        counts: torch.Tensor | None = None,
        intervals: list[list[int | None]] | None = None,
    ) -> list[dict[str, Any]]:
        """One result dict per row of calibrated ``probs`` (``probabilities()``; see the module
        docstring); ``counts``: the class per row (default ``decide(probs)``); ``expected`` (per row,
        or None) adds ``expected_quantity``, ``p_expected`` and ``verdict``; ``intervals``: each row's
        served interval (``intervals()``; default: the shortest run holding ``INTERVAL_MASS`` of ``probs``)."""
        expected = expected or [None] * len(probs)
        checked = [None if q is None else self.check_expected(q) for q in expected]
        if counts is None:
            counts = self.decide(probs)
        if self.all_counts:
            more_than_5 = p_more_than(probs, 5).tolist() if self.max_count >= 5 else None
            if intervals is None:
                intervals = self._served(count_interval(probs, INTERVAL_MASS))
        out = []
        for i, (index, row) in enumerate(zip(counts.tolist(), probs.tolist(), strict=True)):
            is_over = self.overflow and index > self.max_count
            result: dict[str, Any] = {"count": None if is_over else int(index), "label": self.label(index)}
            if self.overflow:
                result["overflow"] = is_over
            result.update(confidence=row[index], probabilities=row)
            if self.all_counts:
                if more_than_5 is not None:
                    result["p_more_than_5"] = more_than_5[i]
                result["interval"] = intervals[i]
            if self.review_threshold is not None:
                result["review"] = needs_review(row[index], self.review_threshold)
            if ids and ids[i] is not None:
                result = {"id": ids[i], **result}
            if checked[i] is not None:
                p = row[checked[i]]
                result.update(expected_quantity=expected[i], p_expected=p, verdict=self.verdict(p, index, checked[i]))
                if self.all_counts:
                    result["checked_against"] = self.label(checked[i])
            out.append(result)
        return out

    def intervals(self, logits: torch.Tensor, calibrated: torch.Tensor | None = None) -> list[list[int | None]]:
        """Each image's served count interval ``[lo, hi]`` (``hi`` None: "lo or more", the tail): the span
        of the split-conformal set when the artifact has one fitted, else the shortest run of counts
        holding ``INTERVAL_MASS`` of the calibrated probability (``calibrated``: ``calibrate(logits)``,
        when the caller has it)."""
        if self.interval_threshold is not None:
            return self._served(conformal_interval(self.raw_probabilities(logits), self.interval_threshold))
        return self._served(count_interval(self.calibrate(logits) if calibrated is None else calibrated, INTERVAL_MASS))

    def _served(self, spans: torch.Tensor) -> list[list[int | None]]:
        """(lo, hi) class indices -> ``[lo, hi]`` as answered: the tail's index becomes None ("or more")."""
        return [[lo, None if self.labels.is_tail(hi) else hi] for lo, hi in spans.tolist()]

    def verdict(self, p_expected: float, answer: int, expected_class: int) -> str:
        """The artifact's thresholds on ``p_expected``; without them, whether the answer is the expected class."""
        if self.verdict_rule is not None:
            return self.verdict_rule(p_expected)
        return "match" if answer == expected_class else "mismatch"

    def logits_and_novelty(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw outputs and, for an artifact with a novelty score, each image's score (one forward pass)."""
        if self.novelty is None:
            return self.logits(batch), None
        logits, features = self.runner.with_features(batch)
        return logits, self.novelty.score(features)

    def predict_batch(
        self, batch: torch.Tensor, ids: list[Any] | None = None, expected: list[int | None] | None = None
    ) -> list[dict[str, Any]]:
        """One result per image of a preprocessed batch (N, 3, S, S)."""
        logits, novelty = self.logits_and_novelty(batch)
        probs = self.calibrate(logits)
        results = self.results(probs, ids, expected, counts=self.decide_outputs(logits),
                               intervals=self.intervals(logits, probs) if self.all_counts else None)
        if self.interval_threshold is not None:
            for result in results:
                result["interval_coverage"] = self.interval_coverage  # promised, split conformal
        if novelty is not None:
            for result, score in zip(results, novelty.tolist(), strict=True):
                self.mark_novelty(result, score)
        return results

    def mark_novelty(self, result: dict[str, Any], score: float) -> dict[str, Any]:
        """``novelty_score`` and ``unlike_training`` on a result; a photo unlike the training data goes
        to review whatever the model's confidence (a confident answer on such a photo proves nothing)."""
        unlike = score > self.novelty.threshold
        result.update(novelty_score=round(score, 4), unlike_training=unlike)
        result["review"] = bool(result.get("review", False) or unlike)
        return result

    def predict(
        self, images: list[Image.Image], ids: list[Any] | None = None, expected: list[int | None] | None = None
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for start in range(0, len(images), MAX_BATCH):
            chunk = slice(start, start + MAX_BATCH)
            results += self.predict_batch(self.preprocess(images[chunk]), ids[chunk] if ids else None,
                                          expected[chunk] if expected else None)
        return results
