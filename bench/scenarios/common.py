"""bench.scenarios.common — what every scenario shares: the context and the A/B loop.

SYNOPSIS
    alternate(ctx, cases, {"postgate": run_postgate, "postfix": run_postfix})

DESCRIPTION
    ``alternate`` runs postgate, then Postfix, then postgate again... for
    ``ctx.plan.rounds`` rounds, so a slow drift of the machine (page cache, thermal,
    another process) hits both sides alike. Each call returns a Measurement whose
    values feed every case that names them; a call that raises is recorded as that
    side's error for that round and the loop goes on. A side whose set-up failed is
    given as a reason string instead of a callable and is recorded as failed.

    ``RECOVERABLE`` includes pytest's skip/fail outcomes because the fixtures the
    bench reuses (tests.fixtures) signal a missing program that way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.peers.postfix import PostfixServer
from bench.plan import Plan
from bench.results import SIDES, Case, Measurement, Side

RECOVERABLE: tuple[type[BaseException], ...] = (
    Exception,
    pytest.skip.Exception,
    pytest.fail.Exception,
)

Runner = Callable[[int], Measurement]
T = TypeVar("T")


@dataclass
class Context:
    workdir: Path
    plan: Plan
    dns_server: str | None
    dns_error: str | None = None
    log: Callable[[str], None] = print
    workers: int | None = None  # postgate's [server] workers (--workers); None: its default
    # Filled by scenario 1 (10 sessions, 2 KB, reuse): each side's median msg/s,
    # which scenario 6 runs at half of.
    peak_rates: dict[Side, float] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path


SETTLE_SECONDS = 0.5


def settle() -> None:
    """Before a timed run: write back what is dirty and pause, so that the last run's
    deletions (a whole queue, and on a disk mounted with ``discard`` their TRIMs) are
    not paid for by this run. Called at the same point on both sides."""
    os.sync()
    time.sleep(SETTLE_SECONDS)


def start_postfix(postfix: PostfixServer) -> str | None:
    """Start the scenario's Postfix; the reason it did not start, or None."""
    try:
        postfix.start()
    except RECOVERABLE as exc:
        return f"Postfix did not start: {describe_error(exc)}"
    return None


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:1200]


def alternate(ctx: Context, cases: list[Case], runners: Mapping[Side, Runner | str]) -> None:
    for round_no in range(1, ctx.plan.rounds + 1):
        for side in SIDES:
            runner = runners[side]
            if isinstance(runner, str):
                for case in cases:
                    if round_no == 1:
                        case.side(side).fail(round_no, runner)
                continue
            started = time.perf_counter()
            try:
                measurement = runner(round_no)
            except RECOVERABLE as exc:
                reason = describe_error(exc)
                ctx.log(f"    {side:8} round {round_no}: ERROR {reason[:300]}")
                for case in cases:
                    case.side(side).fail(round_no, reason)
                continue
            shown = ", ".join(
                f"{case.key}={measurement.values[case.key]:.4g}"
                for case in cases
                if case.key in measurement.values
            )
            ctx.log(
                f"    {side:8} round {round_no}: {shown}  ({time.perf_counter() - started:.1f} s)"
            )
            for case in cases:
                if case.key in measurement.values:
                    case.side(side).add(round_no, measurement.values[case.key], measurement.details)
                else:
                    case.side(side).fail(round_no, f"run produced no {case.key}")


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Poll until ``condition()``; the time.time() at which it was seen true."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_async(main: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``main`` on a fresh event loop (uvloop when installed), bounded by ``timeout``."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(asyncio.wait_for(main, timeout))
