"""The process's event loop for provider exchanges (notifiers.loop): a send thread hands it a
coroutine and gets its result or its error; a forked child gets a loop of its own."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from notifiers import loop
from tests.conftest import in_forked_child


async def answer(value: int, after: float = 0.0) -> tuple[int, str]:
    await asyncio.sleep(after)
    return value, threading.current_thread().name


async def refuse() -> None:
    raise ValueError("the provider said no")


def test_a_coroutine_runs_on_the_loop_thread_and_its_result_comes_back() -> None:
    value, thread = loop.run(answer(7))
    assert value == 7
    assert thread == "notifiers-loop" and thread != threading.current_thread().name


def test_many_threads_wait_on_one_loop_at_the_same_time() -> None:
    # Given 32 threads each waiting 0.2 s on the loop, When they run together,
    # Then each gets its own answer, and all of it on the one loop thread
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda n: loop.run(answer(n, 0.2)), range(32)))
    assert [value for value, _ in got] == list(range(32))
    assert {thread for _, thread in got} == {"notifiers-loop"}


def test_the_coroutines_error_is_raised_in_the_calling_thread() -> None:
    with pytest.raises(ValueError, match="the provider said no"):
        loop.run(refuse())


def test_past_its_timeout_a_coroutine_is_cancelled() -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        loop.run(slow(), timeout=0.1)
    assert cancelled.wait(5), "the coroutine went on after its caller stopped waiting"


def test_run_on_the_loops_own_thread_is_refused_rather_than_deadlocked() -> None:
    async def nested() -> str:
        inner = answer(1)
        try:
            loop.run(inner)
        except RuntimeError as exc:
            return str(exc)
        return "ran"

    assert "loop's own thread" in loop.run(nested(), timeout=5)


def test_a_forked_child_runs_on_a_loop_of_its_own() -> None:
    # Given the parent's loop running
    loop.run(answer(0))
    parent_loop = loop.running()

    def child() -> str:  # the parent's loop thread did not come through fork
        inherited = loop.running() is not None
        value, _ = loop.run(answer(41, 0.01), timeout=5)
        return f"{inherited} {value + 1}"

    # When a forked child runs a coroutine
    said = in_forked_child(child)
    # Then the child started a loop of its own and ran on it; the parent's is untouched
    assert said == "False 42"
    assert loop.running() is parent_loop
    assert loop.run(answer(3))[0] == 3
