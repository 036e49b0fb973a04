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


# ---------------------------------------------------------------------------------------------
# Any expected quantity, the warehouse's check set, and promises with finite-sample guarantees.
# Plain python/torch (this module is vendored into the serving code: no scipy).
# ---------------------------------------------------------------------------------------------

CHECK_ERROR_RATE = 0.10  # share of wrong records in a check set
CHECK_SHARES = (0.4, 0.3, 0.3)  # among the wrong ones: off by one, off by two, drawn from the data's counts
PROMISE_DELTA = 0.05  # each promise holds with probability >= 1 - delta over the validation draw
PROMISE_COVERAGE = 0.80  # the count interval's promised coverage (Z)


def exact_counts(names: list[str], targets: torch.Tensor, max_count: int, tail: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, exact) per image of a labelled folder ``<count>/<image>``: the number its folder is
    named after (a ``12/`` folder read into a tail class still says 12); where the folder is no
    number (``6plus/``) the class target, ``exact`` False for a tail target (only a lower bound)."""
    counts, exact = [], []
    for name, target in zip(names, targets.tolist(), strict=True):
        parts = name.replace("\\", "/").split("/")
        if len(parts) > 1 and parts[0].isdigit():
            counts.append(int(parts[0]))
            exact.append(True)
        else:
            counts.append(int(target))
            exact.append(not (tail and int(target) > max_count))
    return torch.tensor(counts, dtype=torch.long), torch.tensor(exact, dtype=torch.bool)


def expected_class(quantity: torch.Tensor, max_count: int, tail: bool) -> torch.Tensor:
    """The class an expected quantity is checked against: itself up to ``max_count``, the tail class
    (``max_count + 1``) at or above the tail's first count; -1 where the model has no class for it."""
    q = quantity.long()
    above = q > max_count
    return torch.where(above, torch.full_like(q, max_count + 1 if tail else -1), q)


def p_expected_any(probs: torch.Tensor, quantity: torch.Tensor, max_count: int, tail: bool) -> torch.Tensor:
    """P(the bin holds ``quantity``) per row for any quantity: the class's probability; at or above
    the tail's first count the tail's whole mass (P(count > max_count)); 0 for a quantity a model
    without a tail cannot hold (it puts all its mass on 0..max_count)."""
    cls = expected_class(quantity, max_count, tail)
    p = probs.gather(1, cls.clamp_min(0)[:, None])[:, 0]
    return torch.where(cls < 0, torch.zeros_like(p), p)


def check_set(
    counts: torch.Tensor, seed: int = 0, error_rate: float = CHECK_ERROR_RATE, shares=CHECK_SHARES
) -> tuple[torch.Tensor, torch.Tensor]:
    """A warehouse's records for bins of true ``counts``: (expected quantity, kind) per bin; kind 0:
    right, 1: off by one, 2: off by two, 3: another count drawn from ``counts`` themselves (the data's
    own distribution). ``round(error_rate * n)`` records are wrong, split by ``shares`` (seeded).
    Off by k goes up or down by a coin flip, up where down would fall below 0. Bins of one count only
    leave nothing else to draw: those records are off by one instead."""
    if not 0.0 <= error_rate <= 1.0 or len(shares) != 3 or abs(sum(shares) - 1.0) > 1e-6 or min(shares) < 0:
        raise ValueError(f"check set needs 0 <= error_rate <= 1 and three shares adding up to 1, got {error_rate}, {shares}")
    g = torch.Generator().manual_seed(seed)
    counts = counts.long()
    n = len(counts)
    n_wrong = round(error_rate * n)
    n1 = round(shares[0] * n_wrong)
    n2 = min(round(shares[1] * n_wrong), n_wrong - n1)
    kind = torch.zeros(n, dtype=torch.long)
    wrong = torch.randperm(n, generator=g)[:n_wrong]
    kind[wrong[:n1]], kind[wrong[n1:n1 + n2]], kind[wrong[n1 + n2:]] = 1, 2, 3
    expected = counts.clone()
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1, 1)
    for k in (1, 2):
        step = counts + sign * k
        step = torch.where(step < 0, counts + k, step)
        expected = torch.where(kind == k, step, expected)
    drawn = kind == 3
    if drawn.any() and counts.unique().numel() < 2:  # one count only: nothing else to draw, off by one instead
        kind[drawn] = 1
        expected = torch.where(drawn, torch.where(counts + sign < 0, counts + 1, counts + sign), expected)
    elif drawn.any():
        idx = drawn.nonzero()[:, 0]
        pick = counts[torch.randint(n, (len(idx),), generator=g)]
        while (same := pick == counts[idx]).any():  # another count than the true one
            pick[same] = counts[torch.randint(n, (int(same.sum()),), generator=g)]
        expected[idx] = pick
    return expected, kind


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact enough for n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    upper = k > n // 2  # sum the shorter side: P(X <= k) = 1 - P(X >= k + 1)
    terms = range(k + 1, n + 1) if upper else range(k + 1)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in terms]
    top = max(logs)
    mass = min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))
    return max(0.0, 1.0 - mass) if upper else mass


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a rate of k successes in n (bisection on the
    binomial CDF; each side holds (1 - confidence) / 2)."""
    if n == 0:
        return 0.0, 1.0
    a = (1.0 - confidence) / 2

    def solve(f, lo=0.0, hi=1.0) -> float:  # f increasing in p; the p where f crosses 0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(lambda p: 1.0 - binomial_cdf(k - 1, n, p) - a)  # P(X >= k | p) = a
    upper = 1.0 if k == n else solve(lambda p: a - binomial_cdf(k, n, p))  # P(X <= k | p) = a
    return lower, upper


def conformal_set_threshold(probs: torch.Tensor, targets: torch.Tensor, coverage: float = PROMISE_COVERAGE) -> float:
    """Split conformal prediction, LAC score (Angelopoulos and Bates 2021, "A Gentle Introduction
    to Conformal Prediction", section 1): with s_i = 1 - p(true class) on n held-out images and
    q = the ceil((n + 1) * coverage)-th smallest s_i, the set {k: p_k >= 1 - q} of a new exchangeable
    image holds its true class with probability >= ``coverage``. Returns 1 - q (0: every class)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    n = len(targets)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return 0.0  # too few images for the promise: the set must be every class
    scores = 1.0 - probs.double().gather(1, targets.long()[:, None])[:, 0]
    q = float(scores.sort().values[rank - 1])
    return max(0.0, 1.0 - q - 1e-12)  # p_k >= 1 - q, robust to rounding


def conformal_interval(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(lo, hi) class indices per row: the span of the conformal set {k: p_k >= threshold} (a superset
    of it, so it covers at least as often); the argmax class when the set is empty."""
    inside = probs >= threshold
    inside[torch.arange(len(probs)), probs.argmax(1)] |= ~inside.any(1)
    ks = torch.arange(probs.shape[1]).expand_as(inside)
    lo = torch.where(inside, ks, probs.shape[1]).min(1).values
    hi = torch.where(inside, ks, -1).max(1).values
    return torch.stack([lo, hi], 1)


def _binomial_p_value(errors: int, n: int, max_error: float) -> float:
    """p-value of the null "the error rate is above max_error" after ``errors`` in ``n``: P(X <= errors)
    for X ~ Binomial(n, max_error) (0 when nothing is decided: no decision, no error)."""
    return 0.0 if n == 0 else binomial_cdf(errors, n, max_error)


PROMISE_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50)) + (0.995, 0.999, 0.9999)  # 53 thresholds


def ltt_threshold(score: torch.Tensor, right: torch.Tensor, target: float, delta: float = PROMISE_DELTA,
                  grid=None) -> float:
    """Learn then Test (Angelopoulos, Bates, Candes, Jordan and Lei 2021, arXiv 2110.01052) for
    selective answers: the lowest threshold t of a fixed grid for which "the answers with
    score >= t are wrong more than 1 - ``target`` of the time" is rejected by an exact binomial test
    at level delta / len(grid) (Bonferroni: all rejections hold together with probability >= 1 - delta).
    Given n accepted held-out answers, they are i.i.d. draws of the accepted kind, so the binomial
    test is exact. Returns just above 1 (accept nothing) when no threshold passes."""
    grid = tuple(sorted(grid or (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45) + PROMISE_GRID))
    level = delta / len(grid)
    score, right = score.double(), right.bool()
    best = math.nextafter(1.0, 2.0)
    for t in grid:
        kept = score >= t
        n = int(kept.sum())
        if n and _binomial_p_value(int((kept & ~right).sum()), n, 1.0 - target) <= level:
            best = min(best, t)
    return best


def ltt_verdict_thresholds(p: torch.Tensor, is_right: torch.Tensor, target: float,
                           delta: float = PROMISE_DELTA) -> dict[str, float | None]:
    """Verdict thresholds with a promise: ``match`` when p_expected >= match_threshold (calls right
    when the record is), ``mismatch`` when p_expected <= mismatch_threshold (right when it is not),
    each the loosest of a fixed grid passing ``ltt_threshold`` for ``target`` at delta / 2, so both
    hold together with probability >= 1 - delta, and then so does any mix of the two calls.
    No threshold passes: match_threshold just above 1, mismatch_threshold None (no such call).
    The check set makes exactly 10 % of its records wrong, so its records are exchangeable rather than
    independent draws: the binomial test is then a close approximation, not exact."""
    p, is_right = p.double(), is_right.bool()
    match_t = ltt_threshold(p, is_right, target, delta / 2)
    mismatch_s = ltt_threshold(1.0 - p, ~is_right, target, delta / 2)  # calls where 1 - p >= s
    return {"match_threshold": match_t, "mismatch_threshold": None if mismatch_s > 1.0 else 1.0 - mismatch_s + 1e-12}


def fit_promises(
    raw_probs: torch.Tensor,
    targets: torch.Tensor,
    answers: torch.Tensor,
    counts: torch.Tensor,
    exact: torch.Tensor,
    max_count: int,
    tail: bool,
    target_accuracy: float,
    verdict_accuracy: float,
    coverage: float = PROMISE_COVERAGE,
    delta: float = PROMISE_DELTA,
    seed: int = 1,
) -> dict:
    """The artifact's ``promises``, fitted on held-out (validation) images, on the head's probabilities
    *without* the temperature (a fixed function of the trained net, so nothing fitted on these
    images enters the scores and the guarantees are exact for new exchangeable images):

    - ``interval``: the span of the LAC conformal set {k: p_k >= set_threshold} covers the true
      count with probability >= ``coverage`` (marginal, split conformal);
    - ``accepted``: answers whose probability is >= threshold are right >= ``target_accuracy`` of the
      time, with probability >= 1 - delta over the validation draw (Learn then Test);
    - ``verdicts``: on records wrong at ``CHECK_ERROR_RATE`` (``check_set``; images of exact count),
      ``match`` / ``mismatch`` calls are right >= ``verdict_accuracy``, same confidence (Learn then Test).

    ``targets``/``answers``: class indices (an answer is right when it is the true class: a tail answer
    on a bin above the range is right, as in the accuracy over classes); ``counts``/``exact``: true
    counts (``exact_counts``), for the check set."""
    right = answers.long() == targets.long()
    confidence = raw_probs.gather(1, answers.long()[:, None])[:, 0]
    expected, _ = check_set(counts[exact], seed)
    p_exp = p_expected_any(raw_probs[exact], expected, max_count, tail)
    record_right = expected == counts[exact]  # a record of 7 for a bin of 12 is wrong, whatever the tail says
    return {
        "method": "split conformal (LAC) and Learn then Test, exact binomial tests, Bonferroni over a fixed grid",
        "scores": "raw",  # the head's probabilities without the temperature
        "split": "val",
        "n": int(len(targets)),
        "delta": delta,
        "interval": {"target": coverage, "set_threshold": conformal_set_threshold(raw_probs, targets, coverage)},
        "accepted": {"target": target_accuracy, "threshold": ltt_threshold(confidence, right, target_accuracy, delta)},
        "verdicts": {"target": verdict_accuracy, **ltt_verdict_thresholds(p_exp, record_right, verdict_accuracy, delta),
                     "error_rate": CHECK_ERROR_RATE, "shares": list(CHECK_SHARES), "seed": seed,
                     "n_check": int(exact.sum())},
    }
