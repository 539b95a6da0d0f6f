"""Adaptive batching: concurrent requests for one model version merged into one `predict` call.

One `Batcher` per loaded model version, owned by the data plane. Requests wait in a bounded queue;
a batch leaves when a batch slot is free and either it holds `max_rows` rows, or `max_wait_s` has
passed since its *first* request arrived, or the model is idle and nothing else is waiting (so a
lone caller never waits). Rows are counted, not requests. Prediction runs in a thread pool, off the
event loop; each request gets back exactly its own rows, and a failing batch fails only its own
requests. Requests whose caller has gone (cancelled futures) are dropped before their batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from berth.errors import Overloaded
from berth.runtimes.base import Batch
from berth.settings import Settings
from berth.types import Outputs

__all__ = [
    "BatchObserver",
    "BatchPolicy",
    "BatchStats",
    "BatchTicket",
    "Batcher",
    "OutputsObserver",
    "batch_policy",
    "merge_batches",
    "split_outputs",
]

log = logging.getLogger("berth.batching")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one model version batches: rows per batch, wait, queue bound, concurrent batches."""

    max_rows: int = 1024
    max_wait_s: float = 0.002
    queue_rows: int = 4096
    max_concurrent: int = 1
    inline_max_s: float = 0.002


def batch_policy(settings: Settings, model: str) -> BatchPolicy | None:
    """The batching policy of `model` from the settings (global values, then its override), or
    None when batching is off for it."""
    override = settings.batch_models.get(model)
    enabled = settings.batching
    if override is not None and override.enabled is not None:
        enabled = override.enabled
    if not enabled:
        return None
    max_wait_ms = settings.batch_max_wait_ms
    if override is not None and override.max_wait_ms is not None:
        max_wait_ms = override.max_wait_ms
    return BatchPolicy(
        max_rows=(override and override.max_rows) or settings.batch_max_rows,
        max_wait_s=max_wait_ms / 1000,
        queue_rows=(override and override.queue_rows) or settings.batch_queue_rows,
        max_concurrent=(override and override.concurrency) or settings.batch_concurrency,
        inline_max_s=settings.batch_inline_max_ms / 1000,
    )


BatchObserver = Callable[[int, int, Sequence[float]], None]
"""Told about every batch that runs: (rows, requests, each request's queue wait in seconds), for
metrics such as batch-size and queue-wait histograms."""

OutputsObserver = Callable[[Batch, Outputs, float], None]
"""Told about every batch the model answered: (merged batch, its outputs, seconds the model took);
called in the thread that ran the model, so per-row monitoring happens once per batch."""


@dataclass(slots=True)
class BatchStats:
    """Running totals of one batcher, cheap enough to keep always."""

    batches: int = 0
    requests: int = 0
    rows: int = 0
    largest_rows: int = 0
    rejected: int = 0
    cancelled: int = 0
    failed_batches: int = 0
    total_wait_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        mean_rows = self.rows / self.batches if self.batches else 0.0
        mean_wait = self.total_wait_s / self.requests if self.requests else 0.0
        return {
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "largest_rows": self.largest_rows,
            "mean_rows": round(mean_rows, 2),
            "mean_wait_ms": round(mean_wait * 1000, 3),
            "rejected": self.rejected,
            "cancelled": self.cancelled,
            "failed_batches": self.failed_batches,
        }


@dataclass(slots=True)
class BatchTicket:
    """Filled in for a caller that asks (tracing): when its batch left the queue, and its size."""

    dispatched: float = 0.0
    """`time.perf_counter()` when the batch was handed to the model."""
    finished: float = 0.0
    """... when the model's outputs were back on the event loop."""
    rows: int = 0
    requests: int = 0


@dataclass(slots=True)
class _Pending:
    batch: Batch
    rows: int
    future: asyncio.Future[Outputs]
    ticket: BatchTicket | None = None
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merges concurrent `submit` calls for one model into batches run by `predict` in `executor`."""

    def __init__(
        self,
        predict: Callable[[Batch], Outputs],
        executor: Executor,
        policy: BatchPolicy,
        observer: BatchObserver | None = None,
        on_outputs: OutputsObserver | None = None,
    ) -> None:
        self.predict = predict
        self.executor = executor
        self.policy = policy
        self.observer = observer
        self.on_outputs = on_outputs
        self.stats = BatchStats()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._one_row_s: float | None = None  # running estimate of a 1-row predict

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, batch: Batch, ticket: BatchTicket | None = None) -> Outputs:
        """Queue `batch` (one request's rows) and return the outputs of exactly those rows;
        `ticket`, when given, is filled in when the batch leaves the queue."""
        rows = len(batch)
        if self._queued_rows + rows > self.policy.queue_rows and self._queue:
            self.stats.rejected += 1
            raise Overloaded(
                f"the batch queue is full ({self._queued_rows} rows waiting): retry shortly"
            )
        loop = asyncio.get_running_loop()
        item = _Pending(batch, rows, loop.create_future(), ticket)
        lone = not self._queue and self._in_flight == 0
        self._queue.append(item)
        self._queued_rows += rows
        if lone:  # after the requests already parsed in this loop turn have queued too
            loop.call_soon(self._schedule, True)
        else:
            self._schedule()
        return await item.future

    # -- dispatch ---------------------------------------------------------------------------

    def _schedule(self, now: bool = False) -> None:
        """Send out as many batches as the policy allows now; set a timer for the rest."""
        self._drop_cancelled_head()
        while self._queue and self._in_flight < self.policy.max_concurrent:
            first = self._queue[0]
            waited = time.perf_counter() - first.arrived
            if not (now or self._queued_rows >= self.policy.max_rows) and (
                waited < self.policy.max_wait_s
            ):
                self._arm_timer(self.policy.max_wait_s - waited)
                return
            now = False
            self._dispatch(self._take())
            self._drop_cancelled_head()

    def _arm_timer(self, delay: float) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _drop_cancelled_head(self) -> None:
        while self._queue and self._queue[0].future.done():
            gone = self._queue.popleft()
            self._queued_rows -= gone.rows
            self.stats.cancelled += 1

    def _take(self) -> list[_Pending]:
        """The next batch: requests in arrival order while they fit in `max_rows` (at least one)."""
        taken: list[_Pending] = []
        rows = 0
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # the caller went away: skip it
                self._queue.popleft()
                self._queued_rows -= item.rows
                self.stats.cancelled += 1
                continue
            if taken and rows + item.rows > self.policy.max_rows:
                break
            self._queue.popleft()
            self._queued_rows -= item.rows
            taken.append(item)
            rows += item.rows
        return taken

    def _dispatch(self, items: list[_Pending]) -> None:
        started = time.perf_counter()
        waits = [started - item.arrived for item in items]
        rows = sum(item.rows for item in items)
        stats = self.stats
        stats.batches += 1
        stats.requests += len(items)
        stats.rows += rows
        stats.largest_rows = max(stats.largest_rows, rows)
        stats.total_wait_s += sum(waits)
        if self.observer is not None:
            self.observer(rows, len(items), waits)
        for item in items:
            if item.ticket is not None:
                item.ticket.dispatched, item.ticket.rows = started, rows
                item.ticket.requests = len(items)
        merged = items[0].batch if len(items) == 1 else merge_batches([i.batch for i in items])
        if self._runs_inline(rows):
            try:
                outputs = self._timed_predict(merged)
            except Exception as error:
                self._finish(items, None, error)
            else:
                self._finish(items, outputs, None)
            return
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self.executor, self._timed_predict, merged)
        task.add_done_callback(lambda done: self._finished_in_thread(items, done))

    def _runs_inline(self, rows: int) -> bool:
        """A lone one-row request for a model faster than a thread hand-off costs runs right here
        (the hand-off is most of its latency); everything else runs in the thread pool."""
        return (
            rows == 1
            and self._in_flight == 0
            and not self._queue
            and self._one_row_s is not None
            and self._one_row_s <= self.policy.inline_max_s
        )

    def _timed_predict(self, batch: Batch) -> Outputs:
        started = time.perf_counter()
        outputs = self.predict(batch)
        took = time.perf_counter() - started
        if len(batch) == 1:
            last = self._one_row_s
            self._one_row_s = took if last is None else 0.8 * last + 0.2 * took
        if self.on_outputs is not None and len(outputs) == len(batch):
            try:
                self.on_outputs(batch, outputs, took)
            except Exception:  # monitoring must never fail the requests it watches
                log.exception("batch monitoring failed")
        return outputs

    def _finished_in_thread(self, items: list[_Pending], done: asyncio.Future[Outputs]) -> None:
        self._in_flight -= 1
        error = done.exception()
        self._finish(items, None if error else done.result(), error)
        self._schedule()

    def _finish(
        self, items: list[_Pending], outputs: Outputs | None, error: BaseException | None
    ) -> None:
        finished = 0.0
        for item in items:
            if item.ticket is not None:
                finished = finished or time.perf_counter()
                item.ticket.finished = finished
        if outputs is not None:
            try:
                sizes = [i.rows for i in items]
                parts = [outputs] if len(items) == 1 else split_outputs(outputs, sizes)
            except Exception as exc:
                error = exc
        if error is not None or outputs is None:
            self.stats.failed_batches += 1
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error or RuntimeError("no outputs"))
            return
        for item, part in zip(items, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)


def merge_batches(batches: Sequence[Batch]) -> Batch:
    """Concatenate several requests' rows: lists of strings, or 2-D float arrays."""
    if isinstance(batches[0], list):
        merged: list[str] = []
        for batch in batches:
            merged.extend(batch)
        return merged
    return np.concatenate(batches, axis=0)


def split_outputs(outputs: Outputs, sizes: Sequence[int]) -> list[Outputs]:
    """Cut a batch's outputs back into consecutive parts of `sizes` rows."""
    if len(outputs) != sum(sizes):
        raise RuntimeError(f"the model returned {len(outputs)} rows for a batch of {sum(sizes)}")
    parts: list[Outputs] = []
    start = 0
    for size in sizes:
        end = start + size
        parts.append(
            Outputs(
                labels=_cut(outputs.labels, start, end),
                probabilities=_cut(outputs.probabilities, start, end),
                values=_cut(outputs.values, start, end),
            )
        )
        start = end
    return parts


def _cut(part: Any, start: int, end: int) -> Any:
    return None if part is None else part[start:end]
