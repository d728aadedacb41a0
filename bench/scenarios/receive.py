"""bench.scenarios.receive — scenarios 1 and 2: receiving on the port-25 path.

DESCRIPTION
    smtp-source sends COUNT messages of 2 KB (scenario 1) or 100 KB (scenario 2)
    payload over 1, 10 and 50 parallel sessions, each session keeping its
    connection for its next message (``-d``); scenario 1 also runs 10 sessions with
    a new connection per message, the connection set-up cost made visible.
    messages/s = COUNT / smtp-source's wall time.

    Both servers do the same work per message: SMTP, then the message is queued
    durably (fsync before 250) and held. postgate also runs its inbound checks
    (SPF for MAIL FROM and HELO, DMARC; DKIM and ARC find no signature) against the
    bench's NSD; Postfix runs none.

    Before each timed run the side gets an empty queue (postgate: stopped, queue.db
    removed, started; Postfix: ``postsuper -d ALL hold``) and a short warm-up with
    the same session count (opens processes, fills postgate's DNS cache). After it,
    the queue must hold exactly warm-up + COUNT messages (postgate: rows in
    ``messages``; Postfix: files in the hold queue), or the run is an error.
"""

from __future__ import annotations

from bench.loadgen import smtp_source, smtp_source_argv
from bench.peers.postfix import PostfixServer
from bench.peers.postgate import PostgateServer, PostgateSettings, postgate_config_text
from bench.results import SIDES, Case, Measurement, ScenarioReport, Target
from bench.scenarios.common import Context, alternate, settle, start_postfix

SIZES = {1: 2048, 2: 102_400}
TITLES = {
    1: "receive, port 25, 2 KB messages",
    2: "receive, port 25, 100 KB messages",
}
TARGET = Target("ratio", ">=", 1.5)
TARGET_SESSIONS = (10, 50)


def postgate_settings(ctx: Context) -> PostgateSettings:
    if ctx.dns_server is None:
        return PostgateSettings(mailauth=False, workers=ctx.workers)
    return PostgateSettings(dns_server=ctx.dns_server, mailauth=True, workers=ctx.workers)


def run(ctx: Context, number: int) -> ScenarioReport:
    size = SIZES[number]
    counts = ctx.plan.small_messages if number == 1 else ctx.plan.large_messages
    report = ScenarioReport(number, TITLES[number])
    settings = postgate_settings(ctx)
    postgate = PostgateServer(ctx.folder(f"s{number}-postgate"), settings)
    postfix = PostfixServer(ctx.folder(f"s{number}-postfix"), process_limit=150)
    report.settings = {
        "payload_bytes": size,
        "load_generator": " ".join(smtp_source_argv(0, sessions=0, messages=0, size=size)).replace(
            "127.0.0.1:0", "127.0.0.1:PORT"
        ),
        "warmup_messages": f"max({ctx.plan.warmup_messages}, 2 x sessions), not timed",
        "postgate_config": postgate_config_text(settings, postgate.ports),
        "postgate_mailauth": settings.mailauth,
        "postfix_main_cf": postfix.main_cf,
    }
    if not settings.mailauth:
        report.errors.append(f"postgate ran WITHOUT inbound checks: {ctx.dns_error}")
    postgate.setup()
    postfix_error = start_postfix(postfix)
    try:
        cases = [(sessions, count, True) for sessions, count in counts.items()]
        if number == 1 and ctx.plan.small_no_reuse_messages:
            cases.append((10, ctx.plan.small_no_reuse_messages, False))
        for sessions, count, reuse in cases:
            case = Case(
                scenario=number,
                name=f"{size // 1024} KB, {sessions} session{'s' if sessions > 1 else ''}"
                + ("" if reuse else ", new connection per message"),
                key="rate",
                unit="msg/s",
                higher_is_better=True,
                target=TARGET if reuse and sessions in TARGET_SESSIONS else None,
                settings={"sessions": sessions, "messages": count, "reuse_connection": reuse},
            )
            report.cases.append(case)
            ctx.log(f"  [{number}] {case.name}: {count} messages per run")
            warmup = max(ctx.plan.warmup_messages, 2 * sessions)

            def on_postgate(
                _round: int,
                sessions: int = sessions,
                count: int = count,
                reuse: bool = reuse,
                warmup: int = warmup,
            ) -> Measurement:
                postgate.stop()
                postgate.wipe_queue()
                postgate.start()
                settle()
                try:
                    port = postgate.ports["mx"]
                    smtp_source(port, sessions=sessions, messages=warmup, size=size, reuse=reuse)
                    seconds = smtp_source(
                        port, sessions=sessions, messages=count, size=size, reuse=reuse
                    )
                    expected = warmup + count
                    queued = postgate.queued_messages()
                    if queued != expected:
                        raise RuntimeError(
                            f"postgate queued {queued} messages, expected {expected}; "
                            f"log: {postgate.log_problems()}"
                        )
                finally:
                    postgate.stop()
                return Measurement(
                    {"rate": count / seconds},
                    {"seconds": round(seconds, 3), "messages": count, "queued": queued},
                )

            def on_postfix(
                _round: int,
                sessions: int = sessions,
                count: int = count,
                reuse: bool = reuse,
                warmup: int = warmup,
            ) -> Measurement:
                postfix.delete_held()
                settle()
                port = postfix.port()
                smtp_source(port, sessions=sessions, messages=warmup, size=size, reuse=reuse)
                seconds = smtp_source(
                    port, sessions=sessions, messages=count, size=size, reuse=reuse
                )
                expected = warmup + count
                held = postfix.wait_held(expected)
                if held != expected:
                    raise RuntimeError(
                        f"Postfix held {held} messages, expected {expected}; "
                        f"log: {postfix.log_problems()}"
                    )
                return Measurement(
                    {"rate": count / seconds},
                    {"seconds": round(seconds, 3), "messages": count, "held": held},
                )

            alternate(
                ctx,
                [case],
                {"postgate": on_postgate, "postfix": postfix_error or on_postfix},
            )
            if number == 1 and reuse and sessions == 10:
                for side in SIDES:
                    peak = case.side(side).median
                    if peak is not None:
                        ctx.peak_rates[side] = peak
    finally:
        postgate.stop()
        postfix.stop()
    return report
