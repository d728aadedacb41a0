"""bench.scenarios.outbound — scenario 4: deliver queued mail to smtp-sink.

DESCRIPTION
    N messages (2 KB, one recipient each, at the remote domain sink.test) are
    received on hold first, untimed. Then the operator's release starts the clock:

      postgate  the server is restarted with hold_incoming off and
                ``[delivery] relay_host = "[127.0.0.1]:SINK"``, then
                ``postgate queue release --all`` (a CLI process) runs
      Postfix   ``postsuper -H ALL`` (hold -> deferred) and ``postqueue -f`` (flush),
                with ``sink.test`` routed to ``smtp:[127.0.0.1]:SINK`` by transport_maps

    and it stops when the last recipient is delivered: postgate's queue has no
    unfinished recipient, Postfix's queue folders are empty (both polled every
    10 ms; the first poll that sees fewer than N left marks the first delivery). The status log
    (postgate) and the maillog's ``status=sent`` lines (Postfix) must then count N
    deliveries, else the run is an error. messages/s = N / (done - release).

    Concurrency is set alike: at most 10 connections to the one destination on both
    sides (postgate's default max_connections_per_destination; Postfix's
    smtp_destination_concurrency_limit, lowered from its default 20), both reuse
    connections and pipeline (smtp-sink offers PIPELINING).

    Two more rows split the main number: release -> first delivery, and the rate
    from the first to the last delivery. They matter because a CLI release does not
    wake a running postgate, which notices released mail at its next queue poll (up
    to 5 s, ``idle_poll`` in src/postgate/server/app.py), while ``postqueue -f``
    wakes Postfix's qmgr at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from bench.loadgen import smtp_source
from bench.peers.names import REMOTE_DOMAIN, REMOTE_RECIPIENT
from bench.peers.postfix import PostfixServer
from bench.peers.postgate import PostgateServer
from bench.peers.sink import SmtpSink
from bench.results import Case, Measurement, ScenarioReport, Target
from bench.scenarios.common import (
    Context,
    alternate,
    settle,
    start_postfix,
    wait_until,
)
from bench.scenarios.receive import postgate_settings

TITLE = "outbound: release N held messages, deliver to smtp-sink"
FILL_SESSIONS = 10
POLL_SECONDS = 0.01
MESSAGE_SIZE = 2048
POSTFIX_CONCURRENCY = {
    "smtp_destination_concurrency_limit": "10",
}


def _deadline(messages: int) -> float:
    return 60.0 + messages / 10.0


def watch_drain(
    remaining: Callable[[], int], total: int, timeout: float, what: str
) -> tuple[float, float]:
    """Poll the queue until it is empty: (first time fewer than ``total`` were left,
    time it was seen empty), both time.time(). The same 10 ms polling on both sides."""
    deadline = time.monotonic() + timeout
    first_at: float | None = None
    for _ in range(int(timeout / POLL_SECONDS) + 100):
        left = remaining()
        now = time.time()
        if left < total and first_at is None:
            first_at = now
        if left == 0:
            return (first_at if first_at is not None else now), now
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _measurement(
    n: int,
    released_at: float,
    first_at: float,
    done_at: float,
    details: Mapping[str, object],
    logged_span: float | None = None,
) -> Measurement:
    """``logged_span``: first to last delivery by the server's own log, used when the
    whole drain fell between two polls (10 ms) and polling saw no span at all."""
    draining = done_at - first_at
    if draining <= 0 and logged_span is not None:
        draining = logged_span
    values = {
        "rate": n / (done_at - released_at),
        "first_delivery_s": first_at - released_at,
    }
    if draining > 0:
        values["drain_rate"] = (n - 1) / draining
    return Measurement(values, dict(details))


def run(ctx: Context) -> ScenarioReport:
    n = ctx.plan.outbound_messages
    report = ScenarioReport(4, TITLE)
    sink = SmtpSink()
    sink.start()
    relay = f"[127.0.0.1]:{sink.port}"
    fill = dataclasses.replace(
        postgate_settings(ctx), hold_incoming=True, trusted_networks=("127.0.0.0/8",)
    )
    deliver = dataclasses.replace(fill, hold_incoming=False, relay_host=relay)
    postgate = PostgateServer(ctx.folder("s4-postgate"), fill)
    postfix = PostfixServer(
        ctx.folder("s4-postfix"),
        process_limit=150,
        relay_routes={REMOTE_DOMAIN: sink.port},
        main_cf=POSTFIX_CONCURRENCY,
    )
    report.settings = {
        "messages": n,
        "sink": " ".join(sink.argv()),
        "postgate_delivery": {
            "max_connections_per_destination": deliver.max_connections_per_destination,
            "delivery_concurrency": deliver.delivery_concurrency,
            "relay_host": "[127.0.0.1]:SINK",
            "tls_policy": "may (smtp-sink offers no STARTTLS)",
            "connection_reuse_time": "5s (default)",
        },
        "postfix_delivery": {
            **POSTFIX_CONCURRENCY,
            "initial_destination_concurrency": "5 (default; slow start)",
            "smtp_connection_cache_on_demand": "yes (default)",
            "default_process_limit": str(postfix.process_limit),
            "transport_maps": f"{REMOTE_DOMAIN} smtp:[127.0.0.1]:SINK",
            "smtp_tls_security_level": "may",
        },
    }
    case = Case(
        scenario=4,
        name=f"{n} messages, release to last delivery",
        key="rate",
        unit="msg/s",
        higher_is_better=True,
        target=Target("ratio", ">=", 1.0),
        settings={"messages": n},
    )
    cases = [
        case,
        Case(
            scenario=4,
            name="release to first delivery",
            key="first_delivery_s",
            unit="s",
            higher_is_better=False,
        ),
        Case(
            scenario=4,
            name="delivery rate, first to last delivery",
            key="drain_rate",
            unit="msg/s",
            higher_is_better=True,
        ),
    ]
    report.cases.extend(cases)
    postgate.setup()
    postfix_error = start_postfix(postfix)

    def on_postgate(_round: int) -> Measurement:
        postgate.stop()
        postgate.wipe_queue()
        postgate.reconfigure(fill)
        postgate.start()
        try:
            smtp_source(
                postgate.ports["mx"],
                sessions=FILL_SESSIONS,
                messages=n,
                size=MESSAGE_SIZE,
                recipient=REMOTE_RECIPIENT,
            )
        finally:
            postgate.stop()
        if postgate.queued_messages() != n:
            raise RuntimeError(f"fill: postgate queued {postgate.queued_messages()} of {n}")
        postgate.reconfigure(deliver)
        postgate.start()
        try:
            if postgate.status_counts().get("delivered"):
                raise RuntimeError("mail was delivered before the release")
            settle()
            released_at = time.time()
            postgate.cli("queue", "release", "--all")
            cli_seconds = time.time() - released_at
            first_at, done_at = watch_drain(
                postgate.unfinished_recipients, n, _deadline(n), "postgate delivery"
            )
        finally:
            postgate.stop()
        statuses = postgate.status_counts()
        if statuses.get("delivered", 0) != n:
            raise RuntimeError(f"postgate status log: {statuses}, expected {n} delivered")
        times = postgate.delivery_times()
        details: dict[str, object] = {
            "seconds": round(done_at - released_at, 3),
            "release_cli_seconds": round(cli_seconds, 3),
        }
        span = None
        if times is not None:  # the status log's own times, as a cross-check of the polling
            first, last = times
            span = last - first
            details["status_log_first_delivery_after_release_s"] = round(first - released_at, 3)
            details["status_log_first_to_last_s"] = round(span, 3)
        return _measurement(n, released_at, first_at, done_at, details, span)

    def on_postfix(_round: int) -> Measurement:
        postfix.delete_all()
        smtp_source(
            postfix.port(),
            sessions=FILL_SESSIONS,
            messages=n,
            size=MESSAGE_SIZE,
            recipient=REMOTE_RECIPIENT,
        )
        held = postfix.wait_held(n)
        if held != n:
            raise RuntimeError(f"fill: Postfix held {held} of {n}")
        sent_before = postfix.log_count("status=sent")
        settle()
        released_at = time.time()
        postfix.release_held()
        cli_seconds = time.time() - released_at
        first_at, done_at = watch_drain(
            postfix.queued_messages, n, _deadline(n), "Postfix delivery"
        )
        wait_until(
            lambda: postfix.log_count("status=sent") - sent_before >= n, 10.0, "maillog lines"
        )
        sent = postfix.log_count("status=sent") - sent_before
        if sent != n:
            raise RuntimeError(f"Postfix logged {sent} status=sent, expected {n}")
        details = {
            "seconds": round(done_at - released_at, 3),
            "release_cli_seconds": round(cli_seconds, 3),
        }
        return _measurement(n, released_at, first_at, done_at, details)

    try:
        ctx.log(f"  [4] {case.name}")
        alternate(ctx, cases, {"postgate": on_postgate, "postfix": postfix_error or on_postfix})
    finally:
        postgate.stop()
        postfix.stop()
        sink.stop()
    return report
