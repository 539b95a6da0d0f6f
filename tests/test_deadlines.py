"""Request deadlines that share timers (server/guard.py `Deadlines`) behave like `asyncio.timeout`."""

from __future__ import annotations

import asyncio
import time

import pytest

from berth.server.guard import Deadlines


async def _request(deadlines: Deadlines, delay: float) -> str:
    """A request that takes `delay` seconds under its deadline: "ok" or "timeout"."""
    try:
        async with deadlines.timeout():
            await asyncio.sleep(delay)
        return "ok"
    except TimeoutError:
        return "timeout"


def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    async def main() -> tuple[bool, float]:
        deadlines = Deadlines(0.1, resolution=0.01)
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with deadlines.timeout() as deadline:
                await asyncio.sleep(5)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.01)  # the task is not left cancelled
        return deadline.expired(), elapsed

    expired, elapsed = asyncio.run(main())
    assert expired
    assert 0.1 <= elapsed < 1.0


def test_a_block_within_its_deadline_is_untouched_afterwards() -> None:
    async def main() -> bool:
        deadlines = Deadlines(0.05, resolution=0.005)
        async with deadlines.timeout() as deadline:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)  # past the deadline: nothing cancels the task now
        return deadline.expired()

    assert asyncio.run(main()) is False


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        deadlines = Deadlines(5)

        async def request() -> None:
            async with deadlines.timeout():
                await asyncio.sleep(5)

        task = asyncio.create_task(request())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_concurrent_requests_share_timers_and_each_gets_its_answer() -> None:
    async def main() -> tuple[list[str], int]:
        deadlines = Deadlines(0.2, resolution=0.05)

        tasks = [asyncio.create_task(_request(deadlines, 0.01 if i % 2 else 5)) for i in range(200)]
        await asyncio.sleep(0)
        windows = len(deadlines._windows)
        return await asyncio.gather(*tasks), windows

    answers, windows = asyncio.run(main())
    assert answers == ["timeout", "ok"] * 100
    assert windows <= 2  # 200 requests started together: one or two timers, not 200


def test_a_new_event_loop_gets_its_own_timers() -> None:
    deadlines = Deadlines(0.1, resolution=0.05)

    async def leave_a_window_open() -> None:
        task = asyncio.create_task(_request(deadlines, 5))
        await asyncio.sleep(0)
        task.cancel()  # its window stays behind, with its timer on this loop, which ends now

    asyncio.run(leave_a_window_open())
    assert (
        asyncio.run(_request(deadlines, 5)) == "timeout"
    )  # same window, next loop: still times out
