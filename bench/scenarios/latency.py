"""bench.scenarios.latency — scenario 6: latency of one transaction at half the peak rate.

DESCRIPTION
    A transaction is MAIL FROM, RCPT TO, DATA, a 2 KB body and the final dot, on a
    connection that is already open and past EHLO. Its latency is the time from
    writing MAIL FROM to reading the 250 after the dot (four round trips, lock-step
    like smtp-source); for postgate the last one includes the queue's fsync and the
    inbound checks, for Postfix cleanup's fsync into the hold queue.

    Load is open-loop: transaction i is started at t0 + i / rate whether or not
    earlier ones have finished, on the first free connection of a pool opened
    beforehand (20 connections, so one is nearly always free at half load). rate is
    half of the side's own peak from scenario 1 (2 KB, 10 sessions, connection
    reuse): both servers are measured at the same relative load. Without scenario 1
    in the run, the peak is measured here first with the same smtp-source run.

    Reported: p50, p90, p99 and max of the transaction latency (nearest-rank). The
    details also keep the p99 measured from each transaction's scheduled start
    (includes any wait for a free connection, so a server that falls behind cannot
    hide it), the rate asked and the rate achieved. The queue must hold every
    transaction afterwards.
"""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import smtp_source
from bench.peers.names import HELO_NAME, RECIPIENT, SENDER
from bench.peers.postfix import PostfixServer
from bench.peers.postgate import PostgateServer
from bench.peers.sink import SmtpSink
from bench.results import SIDES, Case, Measurement, ScenarioReport, Side, Target
from bench.scenarios.common import (
    Context,
    alternate,
    describe_error,
    run_async,
    settle,
    start_postfix,
)
from bench.scenarios.receive import postgate_settings
from bench.smtp_client import SmtpConnection, make_body
from bench.stats import percentile

TITLE = "latency of one transaction on an open connection, at half the peak rate"
MESSAGE_SIZE = 2048
PEAK_SESSIONS = 10


async def latency_run(
    port: int, rate: float, count: int, pool: int, warmup: int
) -> dict[str, float]:
    # time.perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
    clock = time.perf_counter
    body = make_body(SENDER, RECIPIENT, MESSAGE_SIZE)
    connections: list[SmtpConnection] = []
    try:
        for _ in range(pool):
            conn = await SmtpConnection.open("127.0.0.1", port)
            connections.append(conn)
            await conn.greeting()
            await conn.ehlo(HELO_NAME)
        free: asyncio.Queue[SmtpConnection] = asyncio.Queue()
        for conn in connections:
            free.put_nowait(conn)
        for index in range(warmup):
            await connections[index % pool].send_message(SENDER, [RECIPIENT], body)

        service: list[float] = []
        response: list[float] = []

        async def transaction(scheduled: float) -> None:
            conn = await free.get()
            try:
                started = clock()
                await conn.send_message(SENDER, [RECIPIENT], body)
                finished = clock()
            finally:
                free.put_nowait(conn)
            service.append(finished - started)
            response.append(finished - scheduled)

        t0 = clock() + 0.05
        tasks = []
        for index in range(count):
            scheduled = t0 + index / rate
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(transaction(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = clock() - t0
    finally:
        for conn in connections:
            conn.abort()
    values = {f"p{p}_ms": percentile(service, p) for p in (50, 90, 99)}
    values["max_ms"] = max(service)
    result = {key: value * 1000.0 for key, value in values.items() if value is not None}
    response_p99 = percentile(response, 99)
    result["response_p99_ms"] = (response_p99 or 0.0) * 1000.0
    result["rate_asked"] = rate
    result["rate_achieved"] = count / elapsed
    return result


def _measurement(values: dict[str, float]) -> Measurement:
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    return Measurement(
        {key: values[key] for key in keys},
        {key: round(value, 3) for key, value in values.items() if key not in keys},
    )


def run(ctx: Context) -> ScenarioReport:
    plan = ctx.plan
    report = ScenarioReport(6, TITLE)
    cases = [
        Case(6, "p50 transaction latency", "p50_ms", "ms", False),
        Case(6, "p90 transaction latency", "p90_ms", "ms", False),
        Case(6, "p99 transaction latency", "p99_ms", "ms", False, Target("postgate", "<=", 5.0)),
        Case(6, "max transaction latency", "max_ms", "ms", False),
    ]
    report.cases.extend(cases)
    postgate = PostgateServer(ctx.folder("s6-postgate"), postgate_settings(ctx))
    postfix = PostfixServer(ctx.folder("s6-postfix"), process_limit=150)
    postgate.setup()
    postfix_error = start_postfix(postfix)

    peaks: dict[Side, float] = dict(ctx.peak_rates)
    peak_source = "scenario 1 (2 KB, 10 sessions, reuse), median"
    if any(side not in peaks for side in SIDES):
        peak_source = "measured here: one smtp-source run, 2 KB, 10 sessions, reuse"
        ctx.log("  [6] scenario 1 peaks not available: measuring them first")
        calibration = max(200, plan.small_messages.get(PEAK_SESSIONS, 500))
        for side in SIDES:
            if side in peaks or (side == "postfix" and postfix_error):
                continue
            try:
                peaks[side] = _calibrate(side, postgate, postfix, calibration)
            except Exception as exc:
                report.errors.append(f"{side}: peak rate not measured: {describe_error(exc)}")
    rates = {side: peaks[side] / 2.0 for side in peaks}
    report.settings = {
        "transactions": plan.latency_transactions,
        "pool_connections": plan.latency_pool,
        "warmup_transactions": plan.latency_warmup,
        "peak_source": peak_source,
        "peak_msg_per_s": {side: round(v, 1) for side, v in peaks.items()},
        "rate_msg_per_s": {side: round(v, 1) for side, v in rates.items()},
    }
    for case in cases:
        case.settings = {"rate_msg_per_s": report.settings["rate_msg_per_s"]}
    budget_for = {
        side: 60.0 + 3.0 * (plan.latency_transactions + plan.latency_warmup) / rate
        for side, rate in rates.items()
    }
    expected = plan.latency_transactions + plan.latency_warmup

    def on_postgate(_round: int) -> Measurement:
        postgate.stop()
        postgate.wipe_queue()
        postgate.start()
        settle()
        try:
            values = run_async(
                latency_run(
                    postgate.ports["mx"],
                    rates["postgate"],
                    plan.latency_transactions,
                    plan.latency_pool,
                    plan.latency_warmup,
                ),
                budget_for["postgate"],
            )
            queued = postgate.queued_messages()
        finally:
            postgate.stop()
        if queued != expected:
            raise RuntimeError(f"postgate queued {queued}, expected {expected}")
        return _measurement(values)

    def on_postfix(_round: int) -> Measurement:
        postfix.delete_held()
        settle()
        values = run_async(
            latency_run(
                postfix.port(),
                rates["postfix"],
                plan.latency_transactions,
                plan.latency_pool,
                plan.latency_warmup,
            ),
            budget_for["postfix"],
        )
        held = postfix.wait_held(expected)
        if held != expected:
            raise RuntimeError(f"Postfix held {held}, expected {expected}")
        return _measurement(values)

    floors: list[dict[str, float]] = []

    def on_sink(rate: float) -> None:
        """The same load against smtp-sink (C, no disk, no checks): what the client,
        the kernel and the shared cores add by themselves."""
        with SmtpSink() as sink:
            floors.append(
                run_async(
                    latency_run(
                        sink.port,
                        rate,
                        plan.latency_transactions,
                        plan.latency_pool,
                        plan.latency_warmup,
                    ),
                    budget_for["postgate"],
                )
            )

    try:
        ctx.log(
            f"  [6] {plan.latency_transactions} transactions at "
            + ", ".join(f"{side} {rate:.0f}/s" for side, rate in rates.items())
        )
        alternate(
            ctx,
            cases,
            {
                "postgate": on_postgate if "postgate" in rates else "no peak rate for postgate",
                "postfix": postfix_error
                or (on_postfix if "postfix" in rates else "no peak rate for Postfix"),
            },
        )
        if "postgate" in rates:
            for _ in range(plan.rounds):
                try:
                    on_sink(rates["postgate"])
                except Exception as exc:
                    report.errors.append(f"smtp-sink floor not measured: {describe_error(exc)}")
                    break
    finally:
        postgate.stop()
        postfix.stop()
    if floors:
        floor = {
            key: round(sorted(f[key] for f in floors)[len(floors) // 2], 2)
            for key in ("p50_ms", "p99_ms", "max_ms")
        }
        report.settings["smtp_sink_floor_at_postgate_rate"] = floor
        cases[2].notes.append(
            f"the client's floor: the same load against Postfix's smtp-sink (C, no disk) "
            f"gives p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms "
            f"(median of {len(floors)} runs)"
        )
    return report


def _calibrate(side: Side, postgate: PostgateServer, postfix: PostfixServer, count: int) -> float:
    warmup = 2 * PEAK_SESSIONS
    if side == "postfix":
        postfix.delete_held()
        port = postfix.port()
        smtp_source(port, sessions=PEAK_SESSIONS, messages=warmup, size=MESSAGE_SIZE)
        return count / smtp_source(port, sessions=PEAK_SESSIONS, messages=count, size=MESSAGE_SIZE)
    postgate.stop()
    postgate.wipe_queue()
    postgate.start()
    try:
        port = postgate.ports["mx"]
        smtp_source(port, sessions=PEAK_SESSIONS, messages=warmup, size=MESSAGE_SIZE)
        return count / smtp_source(port, sessions=PEAK_SESSIONS, messages=count, size=MESSAGE_SIZE)
    finally:
        postgate.stop()
