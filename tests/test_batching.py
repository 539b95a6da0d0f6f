"""The adaptive batcher with a fake model: deadlines, row counting, bounds, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pytest

from berth.batching import Batcher, BatchPolicy, batch_policy, merge_batches, split_outputs
from berth.errors import Overloaded
from berth.settings import BatchOverride, Settings
from berth.types import Outputs

T = TypeVar("T")


class GatedSum:
    """Sums each row; records every batch (size, start time); can hold batches behind a gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.sizes: list[int] = []
        self.started: list[float] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, batch: Any) -> Outputs:
        with self._lock:
            self.sizes.append(len(batch))
            self.started.append(time.perf_counter())
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.gate.wait(10)
            rows = np.asarray(batch, dtype=np.float64)
            if (rows < 0).any():
                raise RuntimeError("negative input")
            return Outputs(values=rows.sum(axis=1))
        finally:
            with self._lock:
                self.running -= 1


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(body())


def rows(n: int, value: float = 1.0) -> np.ndarray[Any, Any]:
    return np.full((n, 2), value)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(8) as pool:
        yield pool


def test_lone_request_runs_at_once_without_waiting(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=100, max_wait_s=30.0))

    async def body() -> Outputs:
        return await asyncio.wait_for(batcher.submit(rows(1, 2.0)), timeout=10)

    out = run(body)
    assert out.values is not None
    assert out.values.tolist() == [4.0]
    assert model.sizes == [1]


def test_deadline_counts_from_the_first_arrival(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    wait = 0.4
    batcher = Batcher(model, executor, BatchPolicy(max_rows=100, max_wait_s=wait, max_concurrent=2))

    async def body() -> float:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(1)))  # runs at once, keeps a slot busy
        await until(lambda: model.sizes == [1])
        first_arrival = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(wait / 2)
        second = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: len(model.sizes) == 2)
        model.gate.set()
        await asyncio.gather(busy, first, second)
        return model.started[1] - first_arrival

    waited = run(body)
    assert model.sizes == [1, 2]
    # A deadline restarted by the second arrival would fire at 1.5 x wait.
    assert wait * 0.9 <= waited < wait * 1.4


def test_rows_not_requests_count_toward_the_batch_limit(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=5, max_wait_s=30.0))

    async def body() -> list[Outputs]:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: model.sizes == [1])
        queued = [asyncio.ensure_future(batcher.submit(rows(n, float(n)))) for n in (3, 3, 2)]
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 8
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(busy, *queued), timeout=10)

    results = run(body)
    assert model.sizes == [1, 3, 5]  # 3 + 3 would exceed 5 rows; 3 + 2 fits exactly
    assert [r.values.tolist() for r in results if r.values is not None] == [
        [2.0],
        [6.0, 6.0, 6.0],
        [6.0, 6.0, 6.0],
        [4.0, 4.0],
    ]
    assert batcher.stats.as_dict()["batches"] == 3
    assert batcher.stats.rows == 9
    assert batcher.stats.largest_rows == 5


def test_a_full_queue_refuses_with_overloaded(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=100, max_wait_s=0.05, queue_rows=4))

    async def body() -> None:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: model.sizes == [1])
        waiting = asyncio.ensure_future(batcher.submit(rows(3)))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(rows(2))
        assert refused.value.status_code == 503
        assert refused.value.retry_after_s >= 1
        assert "queue is full (3 rows waiting)" in refused.value.message
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, waiting), timeout=10)

    run(body)
    assert model.sizes == [1, 3]
    assert batcher.stats.rejected == 1


def test_a_failing_batch_fails_only_its_own_requests(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=2, max_wait_s=0.05))

    async def body() -> list[Any]:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: model.sizes == [1])
        bad = batcher.submit(rows(1, -1.0))
        bad_neighbour = batcher.submit(rows(1, 5.0))
        good = batcher.submit(rows(1, 7.0))
        tasks = [asyncio.ensure_future(c) for c in (bad, bad_neighbour, good)]
        await asyncio.sleep(0.01)
        model.gate.set()
        return await asyncio.gather(busy, *tasks, return_exceptions=True)

    busy, bad, bad_neighbour, good = run(body)
    assert model.sizes == [1, 2, 1]
    assert isinstance(bad, RuntimeError)
    assert isinstance(bad_neighbour, RuntimeError)
    assert good.values.tolist() == [14.0]
    assert busy.values.tolist() == [2.0]
    assert batcher.stats.failed_batches == 1
    assert batcher.in_flight == 0


def test_cancelled_requests_are_skipped(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=100, max_wait_s=0.05))

    async def body() -> Outputs:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(1)))
        await until(lambda: model.sizes == [1])
        gone = asyncio.ensure_future(batcher.submit(rows(4)))
        kept = asyncio.ensure_future(batcher.submit(rows(1, 3.0)))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        model.gate.set()
        await busy
        return await asyncio.wait_for(kept, timeout=10)

    kept = run(body)
    assert kept.values is not None
    assert kept.values.tolist() == [6.0]
    assert model.sizes == [1, 1]  # the cancelled request's 4 rows never reached the model
    assert batcher.stats.cancelled == 1
    assert batcher.queued_rows == 0


def test_concurrent_batches_are_capped(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=1, max_wait_s=0.0, max_concurrent=2))

    async def body() -> None:
        model.gate.clear()
        tasks = [asyncio.ensure_future(batcher.submit(rows(1))) for _ in range(6)]
        await until(lambda: len(model.sizes) == 2)
        await asyncio.sleep(0.05)
        assert len(model.sizes) == 2
        assert batcher.in_flight == 2
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    run(body)
    assert model.sizes == [1] * 6
    assert model.most_running == 2


def test_observer_sees_batch_sizes_and_waits(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    seen: list[tuple[int, int, int]] = []
    batcher = Batcher(
        model,
        executor,
        BatchPolicy(max_rows=100, max_wait_s=0.0),
        observer=lambda r, n, waits: seen.append((r, n, len(waits))),
    )

    async def body() -> None:
        model.gate.clear()
        busy = asyncio.ensure_future(batcher.submit(rows(2)))
        await until(lambda: model.sizes == [2])
        more = [asyncio.ensure_future(batcher.submit(rows(3))) for _ in range(2)]
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, *more), timeout=10)

    run(body)
    assert seen == [(2, 1, 1), (6, 2, 2)]


def test_text_batches_merge_and_outputs_split_back() -> None:
    assert merge_batches([["a"], ["b", "c"]]) == ["a", "b", "c"]
    merged = merge_batches([np.ones((1, 2)), np.zeros((2, 2))])
    assert isinstance(merged, np.ndarray)
    assert merged.shape == (3, 2)
    outputs = Outputs(
        labels=["x", "y", "z"], probabilities=np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]])
    )
    first, second = split_outputs(outputs, [1, 2])
    assert first.labels == ["x"]
    assert second.labels == ["y", "z"]
    assert second.probabilities is not None
    assert second.probabilities.tolist() == [[0.8, 0.2], [0.5, 0.5]]
    with pytest.raises(RuntimeError, match="returned 3 rows for a batch of 4"):
        split_outputs(outputs, [2, 2])


def test_policy_from_settings_with_per_model_overrides() -> None:
    settings = Settings(
        batch_max_rows=64,
        batch_max_wait_ms=3,
        batch_models={
            "tabular": BatchOverride(max_rows=16, max_wait_ms=0),
            "intent": BatchOverride(enabled=False),
        },
    )
    assert batch_policy(settings, "regression") == BatchPolicy(
        max_rows=64, max_wait_s=0.003, queue_rows=4096, max_concurrent=1
    )
    assert batch_policy(settings, "tabular") == BatchPolicy(
        max_rows=16, max_wait_s=0.0, queue_rows=4096, max_concurrent=1
    )
    assert batch_policy(settings, "intent") is None
    assert batch_policy(Settings(batching=False), "tabular") is None


def test_overrides_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERTH_BATCH_MODELS", '{"tabular": {"max_rows": 8, "enabled": true}}')
    monkeypatch.setenv("BERTH_BATCHING", "false")
    settings = Settings()
    assert batch_policy(settings, "tabular") == BatchPolicy(
        max_rows=8, max_wait_s=0.002, queue_rows=4096, max_concurrent=1
    )
    assert batch_policy(settings, "other") is None


def test_a_burst_arriving_together_goes_out_as_one_batch(executor: ThreadPoolExecutor) -> None:
    model = GatedSum()
    batcher = Batcher(model, executor, BatchPolicy(max_rows=100, max_wait_s=30.0))

    async def body() -> list[Outputs]:
        return await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(rows(1, float(i))) for i in range(5))), timeout=10
        )

    results = run(body)
    assert model.sizes == [5]  # nobody waited for the 30 s deadline
    assert [r.values.tolist() for r in results if r.values is not None] == [
        [0.0],
        [2.0],
        [4.0],
        [6.0],
        [8.0],
    ]


@pytest.mark.parametrize(("inline_max_s", "inline"), [(1.0, True), (0.0, False)])
def test_lone_rows_of_a_fast_model_skip_the_thread_pool(
    executor: ThreadPoolExecutor, inline_max_s: float, inline: bool
) -> None:
    threads: list[str] = []

    def predict(batch: Any) -> Outputs:
        threads.append(threading.current_thread().name)
        return Outputs(values=np.asarray(batch, dtype=np.float64).sum(axis=1))

    batcher = Batcher(predict, executor, BatchPolicy(inline_max_s=inline_max_s))

    async def body() -> list[float]:
        values = []
        for i in range(3):
            out = await asyncio.wait_for(batcher.submit(rows(1, float(i))), timeout=10)
            assert out.values is not None
            values.extend(out.values.tolist())
        return values

    assert run(body) == [0.0, 2.0, 4.0]
    main = threading.main_thread().name
    # The first call measures the model in the pool; later lone calls may stay on the loop.
    assert threads[0] != main
    assert all((name == main) == inline for name in threads[1:])


def test_outputs_are_observed_once_per_batch_and_a_failing_observer_fails_nothing(
    executor: ThreadPoolExecutor,
) -> None:
    model = GatedSum()
    model.gate.clear()
    seen: list[tuple[int, list[float], float, str]] = []

    def observe(batch: Any, outputs: Outputs, seconds: float) -> None:
        assert outputs.values is not None
        seen.append((len(batch), outputs.values.tolist(), seconds, threading.current_thread().name))
        raise RuntimeError("a broken monitor")

    batcher = Batcher(
        model, executor, BatchPolicy(max_rows=100, max_wait_s=0.0), on_outputs=observe
    )

    async def body() -> list[Outputs]:
        first = asyncio.ensure_future(batcher.submit(rows(1, 1.0)))
        await until(lambda: model.running == 1)  # the first batch holds the model
        rest = [asyncio.ensure_future(batcher.submit(rows(2, v))) for v in (2.0, 3.0)]
        await asyncio.sleep(0.01)
        model.gate.set()
        return await asyncio.gather(first, *rest)

    outputs = run(body)
    assert [o.values.tolist() for o in outputs if o.values is not None] == [
        [2.0],
        [4.0, 4.0],
        [6.0, 6.0],
    ]
    assert [(n, values) for n, values, _, _ in seen] == [(1, [2.0]), (4, [4.0, 4.0, 6.0, 6.0])]
    assert all(seconds > 0 and thread != "MainThread" for _, _, seconds, thread in seen)
