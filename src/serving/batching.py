"""Micro-batching: the images of requests that arrive within ``max_wait_ms`` of each other run as one
forward pass of up to ``max_batch`` images.

``MicroBatcher`` wraps a backend runner (``runner(images) -> logits``) with the same call signature,
so ``with_micro_batching(predictor)`` returns a predictor whose every caller (the HTTP app's
request threads, through the unchanged handler) shares one batching worker thread. One forward
runs at a time; while it runs, new requests queue and go together into the next one, so under
load batches fill by themselves and ``max_wait_ms`` only matters when traffic is light.

Isolation: requests are decoded and validated before they reach the batcher, so a bad or slowly
uploaded request never enters (or holds) a batch; if a combined forward still fails, each request
of that batch is retried on its own and only the one that fails gets the error.
docs/serving_performance.md has the measurements behind the defaults.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass
class _Item:
    images: torch.Tensor
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """``batcher(images) -> logits``, thread-safe; blocks the calling thread until its batch has run."""

    def __init__(self, runner: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"micro-batching needs max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.runner = runner
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000
        self.batch_sizes: Counter[int] = Counter()  # images per forward pass -> passes (for tests and benchmarks)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._worker.start()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self._worker.is_alive():
            raise RuntimeError("the micro-batcher was closed")
        item = _Item(images)
        self._queue.put(item)
        return item.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _loop(self) -> None:
        carried: _Item | None = None
        closing = False
        while not closing:
            first = carried or self._queue.get()
            carried = None
            if first is None:
                return
            items, size = [first], len(first.images)
            deadline = first.arrived + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # close: finish this batch, then stop
                    closing = True
                    break
                if size + len(item.images) > self.max_batch:
                    carried = item  # would overflow this batch: it starts the next one
                    break
                items.append(item)
                size += len(item.images)
            self._run(items)

    def _run(self, items: list[_Item]) -> None:
        live = [item for item in items if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            logits = self.runner(torch.cat([item.images for item in live]) if len(live) > 1 else live[0].images)
        except Exception as err:
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            log.warning("Batched forward of %d requests failed (%s); running them one by one", len(live), err)
            for item in live:
                self._run_alone(item)
            return
        self.batch_sizes[len(logits)] += 1
        for item, part in zip(live, logits.split([len(item.images) for item in live]), strict=True):
            item.future.set_result(part)

    def _run_alone(self, item: _Item) -> None:
        try:
            item.future.set_result(self.runner(item.images))
            self.batch_sizes[len(item.images)] += 1
        except Exception as err:
            item.future.set_exception(err)


def with_micro_batching(predictor, max_batch: int = 32, max_wait_ms: float = 5.0):
    """A copy of ``predictor`` whose forward passes go through a ``MicroBatcher`` (the original is untouched).

    The copy's ``batcher`` attribute is the ``MicroBatcher`` (``.close()`` it when done).
    """
    batched = copy.copy(predictor)
    batched.batcher = MicroBatcher(predictor.runner, max_batch=max_batch, max_wait_ms=max_wait_ms)
    batched.runner = batched.batcher
    return batched
