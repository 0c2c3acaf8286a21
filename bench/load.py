"""The load generator: closed-loop virtual users (each starts its next operation when the
last one ends) or an open loop at a fixed arrival rate, with a live progress line."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

import grpc

from bench.stats import Summary, summarize


class Exhausted(Exception):
    """The phase ran out of prepared work (e.g. pre-reserved orders); the user stops."""


@dataclass
class PhaseResult:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful operations
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock (time.time), to match database timestamps
    ended_at: float = 0.0
    exhausted: bool = False

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> Summary:
        return summarize(self.latencies, self.error_count, self.seconds)

    def record_error(self, error: BaseException) -> None:
        if isinstance(error, grpc.aio.AioRpcError):
            key = f"{error.code().name}: {error.details()}"
        else:
            key = f"{type(error).__name__}: {error}"
        self.errors[key[:200]] += 1


Operation = Callable[[int], Awaitable[None]]


class Progress:
    """One status line, rewritten in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self._last_line = 0.0

    def update(self, result: PhaseResult, elapsed: float, seconds: float) -> None:
        if self.quiet:
            return
        done = len(result.latencies)
        rate = done / elapsed if elapsed > 0 else 0.0
        filled = int(20 * min(elapsed / seconds, 1.0)) if seconds > 0 else 20
        bar = "#" * filled + "." * (20 - filled)
        line = (
            f"  {result.name:<10} [{bar}] {elapsed:5.1f}/{seconds:.0f}s"
            f" {done:>7} done {result.error_count:>4} errors {rate:9.1f}/s"
        )
        if self.tty:
            self.stream.write("\r" + line)
            self.stream.flush()
        elif time.monotonic() - self._last_line >= 2.0:
            self._last_line = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()

    def say(self, message: str) -> None:
        if not self.quiet:
            self.stream.write(f"==> {message}\n")
            self.stream.flush()


async def _report(progress: Progress, result: PhaseResult, start: float, seconds: float) -> None:
    while True:
        progress.update(result, time.monotonic() - start, seconds)
        await asyncio.sleep(0.5)


async def closed_loop(
    name: str, users: int, seconds: float, operation: Operation, progress: Progress
) -> PhaseResult:
    """`users` concurrent loops of `operation(user)` for `seconds`; operations still running
    at the end are finished and counted, and the phase lasts until the last one ends."""
    result = PhaseResult(name)
    start = time.monotonic()
    end = start + seconds
    result.started_at = time.time()

    async def user(index: int) -> None:
        while time.monotonic() < end:
            began = time.monotonic()
            try:
                await operation(index)
            except Exhausted:
                result.exhausted = True
                return
            except Exception as error:
                result.record_error(error)
                continue
            result.latencies.append(time.monotonic() - began)

    reporter = asyncio.create_task(_report(progress, result, start, seconds))
    try:
        await asyncio.gather(*(user(i) for i in range(users)))
    finally:
        reporter.cancel()
    result.seconds = time.monotonic() - start
    result.ended_at = time.time()
    progress.update(result, result.seconds, seconds)
    progress.finish()
    return result


async def open_loop(
    name: str,
    rate: float,
    seconds: float,
    operation: Operation,
    progress: Progress,
    max_in_flight: int = 256,
) -> PhaseResult:
    """Start `operation(n)` at `rate` per second, evenly spaced, for `seconds`, whatever the
    previous ones are doing; latency counts from each operation's scheduled start."""
    result = PhaseResult(name)
    start = time.monotonic()
    result.started_at = time.time()
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(max_in_flight)

    async def one(n: int, scheduled: float) -> None:
        try:
            await operation(n)
        except Exception as error:
            result.record_error(error)
        else:
            result.latencies.append(time.monotonic() - scheduled)
        finally:
            gate.release()

    reporter = asyncio.create_task(_report(progress, result, start, seconds))
    try:
        n = 0
        while (scheduled := start + n * interval) < start + seconds:
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()  # never more than max_in_flight: a saturated mesh shows up
            task = asyncio.create_task(one(n, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        reporter.cancel()
    result.seconds = time.monotonic() - start
    result.ended_at = time.time()
    progress.update(result, result.seconds, seconds)
    progress.finish()
    return result
