"""bench.scenarios.idle — scenario 5: many idle connections, and a fresh client meanwhile.

DESCRIPTION
    The bench opens connections to the port-25 listener (postgate: 10,000; Postfix:
    as many as its process limit lets it serve at once, 200 by default here, since
    it needs one smtpd process per connection), each reading the banner, sending
    EHLO and waiting for the 250 reply, then sitting idle. Connections are opened
    at most 100 at a time so the listen backlog never overflows.

    Memory per connection = (after - before) / connections, where before is read
    after one warm-up connection and after once every connection has its 250:
      postgate  RSS (VmRSS) and PSS (smaps_rollup) of the server process and any
                children it has
      Postfix   RSS and PSS summed over its smtpd processes (RSS double-counts the
                pages they share, so PSS is the fair number for Postfix)

    While they sit, a fresh client measures connect -> banner -> EHLO -> 250,
    sequentially, ``idle_fresh_samples`` times; the median and max are reported
    (target for postgate: <= 100 ms). Then every connection is dropped.

    Postfix gets its own instance with default_process_limit = connections + 20, so
    the fresh client finds a free process. Both servers are restarted before each
    round, so "before" never includes processes or buffers left by the last one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.peers.names import HELO_NAME
from bench.peers.postfix import PostfixServer
from bench.peers.postgate import PostgateServer
from bench.procmem import sum_memory_kib, tree_memory_kib
from bench.results import Case, Measurement, ScenarioReport, Target
from bench.scenarios.common import Context, alternate, describe_error, run_async, start_postfix
from bench.scenarios.receive import postgate_settings
from bench.smtp_client import SmtpConnection
from bench.stats import median

TITLE = "idle connections (EHLO, then sit) and a fresh client meanwhile"
OPEN_AT_ONCE = 100
POSTFIX_SPARE_PROCESSES = 20


async def _open_idle(port: int) -> SmtpConnection:
    conn = await SmtpConnection.open("127.0.0.1", port, timeout=60.0)
    try:
        await conn.greeting()
        await conn.ehlo(HELO_NAME)
    except BaseException:
        conn.abort()
        raise
    return conn


async def _fresh_client_ms(port: int) -> float:
    started = time.perf_counter()
    conn = await SmtpConnection.open("127.0.0.1", port, timeout=10.0)
    try:
        await conn.greeting()
        await conn.ehlo(HELO_NAME)
        elapsed = (time.perf_counter() - started) * 1000.0
        await conn.quit()
    finally:
        conn.abort()
    return elapsed


async def idle_run(
    port: int,
    count: int,
    samples: int,
    settle: float,
    memory: Callable[[], tuple[int, int]],
) -> dict[str, float]:
    # Warm-up: the first connection's lazily built state is not per-connection cost.
    await _fresh_client_ms(port)
    await asyncio.sleep(settle)
    rss_before, pss_before = memory()
    connections: list[SmtpConnection] = []
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def open_one() -> None:
        async with gate:
            connections.append(await _open_idle(port))

    started = time.perf_counter()
    try:
        results = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RuntimeError(
                f"{len(failures)} of {count} idle connections failed, first: "
                f"{describe_error(failures[0])}"
            )
        open_seconds = time.perf_counter() - started
        await asyncio.sleep(settle)
        rss_after, pss_after = memory()
        latencies = [await _fresh_client_ms(port) for _ in range(samples)]
    finally:
        for conn in connections:
            conn.abort()
        await asyncio.sleep(0.5)
    fresh = median(latencies)
    assert fresh is not None
    return {
        "rss_per_conn_kib": (rss_after - rss_before) / count,
        "pss_per_conn_kib": (pss_after - pss_before) / count,
        "fresh_ehlo_ms": fresh,
        "fresh_ehlo_max_ms": max(latencies),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "pss_before_kib": pss_before,
        "pss_after_kib": pss_after,
        "open_seconds": open_seconds,
        "connections": count,
    }


def _measurement(values: dict[str, float]) -> Measurement:
    keys = ("rss_per_conn_kib", "pss_per_conn_kib", "fresh_ehlo_ms")
    return Measurement(
        {key: values[key] for key in keys},
        {key: round(value, 2) for key, value in values.items() if key not in keys},
    )


def run(ctx: Context) -> ScenarioReport:
    plan = ctx.plan
    n_postgate, n_postfix = plan.idle_postgate, plan.idle_postfix
    report = ScenarioReport(5, TITLE)
    counts = f"postgate {n_postgate:,}, Postfix {n_postfix:,} connections"
    memory_target = Target("postgate", "<=", 16.0)
    cases = [
        Case(
            5,
            f"RSS growth per idle connection; {counts}",
            "rss_per_conn_kib",
            "KiB/conn",
            False,
            memory_target,
        ),
        Case(
            5,
            "PSS growth per idle connection (Postfix: sum over smtpd)",
            "pss_per_conn_kib",
            "KiB/conn",
            False,
        ),
        Case(
            5,
            "fresh client connect->EHLO 250 while they sit, median",
            "fresh_ehlo_ms",
            "ms",
            False,
            Target("postgate", "<=", 100.0),
        ),
    ]
    report.cases.extend(cases)
    postgate = PostgateServer(ctx.folder("s5-postgate"), postgate_settings(ctx))
    postfix = PostfixServer(
        ctx.folder("s5-postfix"), process_limit=n_postfix + POSTFIX_SPARE_PROCESSES
    )
    report.settings = {
        "postgate_connections": n_postgate,
        "postfix_connections": n_postfix,
        "postfix_default_process_limit": postfix.process_limit,
        "postgate_limits": "max_connections = max_connections_per_client = 20000",
        "fresh_samples": plan.idle_fresh_samples,
    }
    postgate.setup()
    postfix_error = start_postfix(postfix)
    budget = 120.0 + n_postgate / 50.0

    def on_postgate(_round: int) -> Measurement:
        postgate.stop()
        postgate.wipe_queue()
        postgate.start()
        try:
            pid = postgate.pid
            values = run_async(
                idle_run(
                    postgate.ports["mx"],
                    n_postgate,
                    plan.idle_fresh_samples,
                    plan.idle_settle_seconds,
                    lambda: tree_memory_kib(pid),
                ),
                budget,
            )
        finally:
            postgate.stop()
        return _measurement(values)

    def on_postfix(_round: int) -> Measurement:
        # A fresh instance: smtpd processes left from the last round would otherwise be
        # reused and their memory counted in "before".
        postfix.stop()
        postfix.start()
        values = run_async(
            idle_run(
                postfix.port(),
                n_postfix,
                plan.idle_fresh_samples,
                plan.idle_settle_seconds,
                lambda: sum_memory_kib(postfix.smtpd_pids()),
            ),
            budget,
        )
        return _measurement(values)

    try:
        ctx.log(f"  [5] {counts}")
        alternate(ctx, cases, {"postgate": on_postgate, "postfix": postfix_error or on_postfix})
    finally:
        postgate.stop()
        postfix.stop()
    return report
