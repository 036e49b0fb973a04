"""Post-hoc answers a warehouse can act on: temperature scaling, calibration error, the review
threshold and the expected-quantity verdict. Plain torch; fitted on validation logits.

- Temperature scaling (Guo et al., 2017): one scalar T > 0 dividing the head's outputs (for the
  softmax head, probabilities ``softmax(logits / T)``), fitted by minimising the negative
  log-likelihood. It never changes the argmax of a softmax head.
- ECE: expected calibration error over 15 equal-width confidence bins (the standard measure).
- Review threshold (selective prediction): the lowest confidence whose auto-accepted answers
  (confidence >= threshold) reach a target accuracy; answers below it go to a person.
- Verdict: ``p_expected`` = P(bin holds the expected quantity). ``match`` when it is at least
  ``match_threshold``, ``mismatch`` when at most ``mismatch_threshold``, ``review`` in between.
- Count cuts: where the ``expected`` rule's sum k * p_k turns into count k, instead of k - 0.5
  (a model that hedges between 4 and 5 never reaches 4.5, so rounding starves the highest count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from src.models.heads import CountHead, SoftmaxHead

ECE_BINS = 15
VERDICTS = ("match", "mismatch", "review")


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100,
                    head: type[CountHead] = SoftmaxHead) -> float:
    """The temperature minimising the NLL of ``head.probabilities(outputs, T)`` on (outputs, targets)."""
    logits = logits.detach().double()
    targets = targets.long()
    if logits.shape[0] == 0:
        raise ValueError("fit_temperature needs at least one example")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(head.log_probabilities(logits / log_t.exp()), targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 0.05), 20.0) if math.isfinite(t) else 1.0  # a degenerate fit stays sane


def apply_temperature(logits: torch.Tensor, temperature: float | None,
                      head: type[CountHead] = SoftmaxHead) -> torch.Tensor:
    return head.probabilities(logits, temperature)


def ece(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over equal-width bins of share * |accuracy - mean confidence|."""
    confidence = confidence.double()
    correct = correct.double()
    n = confidence.numel()
    if n == 0:
        return float("nan")
    idx = (confidence * bins).long().clamp(0, bins - 1)  # confidence 1.0 falls in the last bin
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum().item() / n * abs(correct[mask].mean().item() - confidence[mask].mean().item())
    return total


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per bin: its range, the number of answers, their mean confidence and accuracy (for the diagram)."""
    idx = (confidence.double() * bins).long().clamp(0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        out.append({
            "lo": b / bins, "hi": (b + 1) / bins, "n": n,
            "confidence": float(confidence[mask].double().mean()) if n else None,
            "accuracy": float(correct[mask].double().mean()) if n else None,
        })  # fmt: skip
    return out


def risk_coverage(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coverage, accuracy of the kept answers) when keeping the k most confident, k = 1..N."""
    order = confidence.argsort(descending=True, stable=True)
    hits = correct.double()[order].cumsum(0)
    k = torch.arange(1, len(order) + 1, dtype=torch.float64)
    return k / len(order), hits / k


def accuracy_at_coverage(confidence: torch.Tensor, correct: torch.Tensor, coverage: float) -> float:
    """Accuracy of the ``coverage`` share of answers with the highest confidence."""
    n = max(1, math.ceil(coverage * confidence.numel()))
    _, acc = risk_coverage(confidence, correct)
    return float(acc[n - 1])


def review_threshold(confidence: torch.Tensor, correct: torch.Tensor, target_accuracy: float) -> float:
    """The lowest confidence threshold whose accepted answers (confidence >= it) reach
    ``target_accuracy``: the largest coverage meeting the target. 1.0 (+) when none does."""
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target accuracy must be in (0, 1], got {target_accuracy}")
    order = confidence.argsort(descending=True, stable=True)
    conf = confidence.double()[order]
    acc = correct.double()[order].cumsum(0) / torch.arange(1, len(order) + 1, dtype=torch.float64)
    # A cut may only fall between different confidences (ties are accepted or refused together).
    cut_ok = torch.ones_like(conf, dtype=torch.bool)
    cut_ok[:-1] = conf[:-1] > conf[1:]
    good = (acc >= target_accuracy - 1e-12) & cut_ok
    if not good.any():
        return math.nextafter(1.0, 2.0)  # above any probability: everything goes to review
    last = int(good.nonzero().max())
    return float(conf[last])


def needs_review(confidence: float, threshold: float | None) -> bool:
    return threshold is not None and confidence < threshold


@dataclass(frozen=True)
class VerdictRule:
    match_threshold: float
    mismatch_threshold: float

    def __post_init__(self):
        # a threshold just above 1 (an unreachable target) means "never match"
        if not 0.0 <= self.mismatch_threshold <= self.match_threshold <= 1.0 + 1e-9:
            raise ValueError(
                f"verdict thresholds need 0 <= mismatch ({self.mismatch_threshold}) <= match "
                f"({self.match_threshold}) <= 1"
            )

    def __call__(self, p_expected: float) -> str:
        if p_expected >= self.match_threshold:
            return "match"
        if p_expected <= self.mismatch_threshold:
            return "mismatch"
        return "review"


def wrong_quantities(targets: torch.Tensor, offset: int, num_counts: int, seed: int = 0) -> torch.Tensor:
    """A wrong expected quantity per image, ``offset`` away from the truth: up or down at random
    (seeded), the other way when that would leave 0..num_counts-1 (so every row gets one)."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(targets.shape, generator=g) < 0.5, -1, 1)
    wrong = targets + sign * offset
    outside = (wrong < 0) | (wrong >= num_counts)
    wrong = torch.where(outside, targets - sign * offset, wrong)
    if ((wrong < 0) | (wrong >= num_counts)).any():
        raise ValueError(f"offset {offset} leaves the range 0..{num_counts - 1} both ways")
    return wrong


def fit_verdict_thresholds(
    probs: torch.Tensor, targets: torch.Tensor, target_precision: float, offsets=(1, 2), seed: int = 0
) -> dict[str, float]:
    """Thresholds on ``p_expected`` chosen on validation: each image checked against its true count
    (a match) and against a wrong count per offset (mismatches). ``match_threshold``: the lowest
    p whose ``match`` calls reach ``target_precision``; ``mismatch_threshold``: the highest p whose
    ``mismatch`` calls do. Between them the verdict is ``review``."""
    p, is_match = reconciliation_pairs(probs, targets, offsets, seed)
    # match: rank by p descending, like confidence; mismatch: rank by 1 - p descending.
    match_t = review_threshold(p, is_match, target_precision)
    mismatch_t = 1.0 - review_threshold(1.0 - p, ~is_match, target_precision)
    # Unreachable targets: match_t stays just above 1 (no match call), mismatch_t falls to 0.
    mismatch_t = max(min(mismatch_t, match_t), 0.0)
    return {"match_threshold": float(match_t), "mismatch_threshold": float(mismatch_t)}


def reconciliation_pairs(
    probs: torch.Tensor, targets: torch.Tensor, offsets=(1, 2), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """p_expected and the truth (True: the quantity is right) for each image's true count and one
    wrong count per offset."""
    ps, truth = [probs.gather(1, targets.long()[:, None])[:, 0]], [torch.ones(len(targets), dtype=torch.bool)]
    for offset in offsets:
        wrong = wrong_quantities(targets.long(), offset, probs.shape[1], seed + offset)
        ps.append(probs.gather(1, wrong[:, None])[:, 0])
        truth.append(torch.zeros(len(targets), dtype=torch.bool))
    return torch.cat(ps), torch.cat(truth)


def fit_count_cuts(mean: torch.Tensor, targets: torch.Tensor, num_counts: int, max_rmse: float | None = None,
                   weights: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0)) -> list[float]:
    """Ascending cuts (one per count 1..num_counts-1) on the expected count ``mean``: the most
    accurate monotone rule on (mean, targets) whose RMSE is at most ``max_rmse`` (default: that of
    rounding). Exact for each trade-off weight w of loss = error + w * squared error (dynamic
    programming over the sorted means); the smallest w meeting the RMSE bound wins."""
    mean, targets = mean.double(), targets.long()
    if max_rmse is None:
        max_rmse = _rmse(mean.round().clamp(0, num_counts - 1).long(), targets)
    for w in weights:
        cuts = _best_cuts(mean, targets, num_counts, w)
        if _rmse((mean[:, None] > torch.tensor(cuts, dtype=mean.dtype)).sum(1), targets) <= max_rmse + 1e-12:
            return cuts
    return [k - 0.5 for k in range(1, num_counts)]  # no weight met the bound: plain rounding


def _rmse(pred: torch.Tensor, targets: torch.Tensor) -> float:
    return float(((pred - targets).double() ** 2).mean().sqrt())


def _best_cuts(mean: torch.Tensor, targets: torch.Tensor, num_counts: int, weight: float) -> list[float]:
    """Monotone labelling of the sorted means minimising sum(1[k != y] + weight * (k - y)^2), as cuts."""
    order = mean.argsort(stable=True)
    values, ys = mean[order], targets[order]
    ks = torch.arange(num_counts, dtype=torch.float64)
    loss = (ks[None, :] != ys[:, None]).double() + weight * (ks[None, :] - ys[:, None]) ** 2  # (N, K)
    n = len(values)
    best = torch.zeros(num_counts, dtype=torch.float64)  # best[k]: examples so far, the last labelled k
    choice = torch.zeros(n, num_counts, dtype=torch.long)  # label of the previous example on that path
    for i in range(n):
        if i > 0 and values[i] == values[i - 1]:  # equal means cannot be split: same label as before
            prefix, arg = best, torch.arange(num_counts)
        else:  # the best path whose previous label is <= k
            prefix, arg = torch.cummin(best, 0)
        best, choice[i] = prefix + loss[i], arg
    labels = torch.empty(n, dtype=torch.long)
    k = int(best.argmin())
    for i in range(n - 1, -1, -1):
        labels[i] = k
        k = int(choice[i, k])
    cuts = []
    for k in range(1, num_counts):
        below, above = values[labels < k], values[labels >= k]
        if len(below) and len(above):
            cuts.append(float((below.max() + above.min()) / 2))
        else:  # one side empty: a cut no mean can pass (count k never answered) or every mean passes
            cuts.append(num_counts - 0.5 if len(below) else -0.5)
    return [max(cuts[: i + 1]) for i in range(len(cuts))]  # ascending
