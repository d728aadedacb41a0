"""bench.scenarios.submission — scenario 3: submission on 587 with STARTTLS and AUTH.

DESCRIPTION
    10 client sessions run in parallel, each repeating: connect, banner, EHLO,
    STARTTLS, EHLO, AUTH PLAIN, then one message (case a) or five (case b) of 2 KB
    (MAIL, RCPT, DATA), QUIT, until the run's connections are used up.
    messages/s = messages / wall time. The client is bench.smtp_client (smtp-source
    speaks neither TLS nor AUTH); TLS 1.3 without certificate checks on loopback.

    Both servers use the same certificate and key (postgate's self-signed ECDSA
    P-256) and the same argon2id hash for the user. postgate checks the password
    itself (argon2-cffi in a thread pool); Postfix asks a private Dovecot over its
    auth socket (libsodium, see bench.peers.dovecot), with Dovecot's auth cache on.
    Postfix's submission listener: smtpd_tls_security_level=encrypt,
    smtpd_tls_auth_only=yes, smtpd_sasl_auth_enable=yes, and only authenticated
    clients may send (smtpd_client_restrictions=permit_sasl_authenticated,reject).

    postgate remembers a verified password for a minute (``[auth]
    credential_cache_ttl``), so after the warm-up its logins skip argon2. Dovecot's
    auth cache does not do that: it keeps the passdb entry and verifies every login's
    password against the cached hash, argon2 again (src/auth/passdb-cache.c). Rows
    (a) and (b) compare the two as configured; row (a') turns postgate's cache off, so
    both sides run argon2 on every login (full run only).

    Each timed run starts on an empty queue after a warm-up of max(2, 4 x workers)
    connections (each postgate worker has its own credential cache); the queue must
    then hold exactly the warm-up and the run's messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from bench.peers.dovecot import DovecotAuth, dovecot_missing
from bench.peers.names import PASSWORD, RECIPIENT
from bench.peers.postfix import PostfixServer
from bench.peers.postgate import PostgateServer, PostgateSettings
from bench.results import Case, Measurement, ScenarioReport
from bench.scenarios.common import Context, alternate, describe_error, run_async
from bench.smtp_client import SmtpConnection, insecure_tls_context, make_body

TITLE = "submission, port 587, STARTTLS + AUTH PLAIN, 2 KB"
EHLO_NAME = "submitter.example.test"
MESSAGE_SIZE = 2048


async def submit(
    port: int, sessions: int, connections: int, per_connection: int, tls_versions: set[str]
) -> float:
    """Send ``connections`` x ``per_connection`` messages over ``sessions`` parallel loops."""
    context = insecure_tls_context()
    body = make_body(RECIPIENT, RECIPIENT, MESSAGE_SIZE)
    remaining = [connections]

    async def session() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            conn = await SmtpConnection.open("127.0.0.1", port)
            try:
                await conn.greeting()
                await conn.ehlo(EHLO_NAME)
                await conn.starttls(context)
                tls_versions.add(conn.tls_version() or "none")
                await conn.ehlo(EHLO_NAME)
                await conn.auth_plain(RECIPIENT, PASSWORD)
                for _ in range(per_connection):
                    await conn.send_message(RECIPIENT, [RECIPIENT], body)
                await conn.quit()
            finally:
                await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(sessions)))
    return time.perf_counter() - started


def _timed(
    port: int, sessions: int, connections: int, per_connection: int, warmup: int
) -> tuple[float, str]:
    """Untimed warm-up, then the timed run: (seconds, TLS versions negotiated)."""
    budget = 60.0 + connections * per_connection * 2.0
    versions: set[str] = set()
    run_async(submit(port, sessions, warmup, 1, versions), 60.0)
    seconds = run_async(submit(port, sessions, connections, per_connection, versions), budget)
    return seconds, ", ".join(sorted(versions))


def run(ctx: Context) -> ScenarioReport:
    plan = ctx.plan
    report = ScenarioReport(3, TITLE)
    with_cache = PostgateSettings(mailauth=False, workers=ctx.workers)
    without_cache = dataclasses.replace(with_cache, credential_cache_ttl="0")
    postgate = PostgateServer(ctx.folder("s3-postgate"), with_cache)
    postgate.setup()
    password_hash = postgate.password_hash()
    dovecot = DovecotAuth(ctx.folder("s3-dovecot"), {RECIPIENT: password_hash})
    postfix: PostfixServer | None = None
    postfix_error = dovecot_missing()
    report.settings = {
        "sessions": plan.submission_sessions,
        "tls_certificate": "same file on both sides: self-signed ECDSA P-256 (postgate's)",
        "password_hash": password_hash.rsplit("$", 2)[0] + "$<salt>$<hash>",
        "postgate_hash_check": "argon2-cffi PasswordHasher (library defaults), thread pool",
        "postgate_credential_cache_ttl": postgate.effective_setting("credential_cache_ttl"),
        "postfix_sasl": "Dovecot " + "; ".join(f"{k} = {v}" for k, v in dovecot.settings().items()),
    }
    try:
        if postfix_error is None:
            try:
                dovecot.start()
                postfix = PostfixServer(
                    ctx.folder("s3-postfix"),
                    process_limit=150,
                    listeners={"smtp": None, "submission": None},
                    listener_options={
                        "submission": {
                            "smtpd_tls_security_level": "encrypt",
                            "smtpd_tls_auth_only": "yes",
                            "smtpd_sasl_auth_enable": "yes",
                            "smtpd_sasl_type": "dovecot",
                            "smtpd_sasl_path": str(dovecot.socket_path),
                            "smtpd_client_restrictions": "permit_sasl_authenticated,reject",
                            "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
                        }
                    },
                    main_cf={
                        "smtpd_tls_chain_files": (
                            f"{postgate.root / 'tls' / 'privkey.pem'}, "
                            f"{postgate.root / 'tls' / 'fullchain.pem'}"
                        ),
                    },
                )
                postfix.start()
            except Exception as exc:
                postfix_error = f"Postfix with Dovecot SASL did not start: {describe_error(exc)}"
        if postfix_error is not None:
            report.errors.append(f"no Postfix numbers, so no ratio: {postfix_error}")
        variants = [
            ("a", plan.submission_single_connections, 1, with_cache),
            ("b", plan.submission_multi_connections, plan.submission_multi_messages, with_cache),
        ]
        if plan.submission_uncached_connections:
            variants.append(("a'", plan.submission_uncached_connections, 1, without_cache))
        # Each postgate worker keeps its own credential cache, and the kernel spreads
        # connections over the workers: warm them all, as a busy port would have.
        warmup_connections = max(plan.submission_warmup_connections, 4 * (ctx.workers or 1))
        for label, connections, per_connection, settings in variants:
            messages = connections * per_connection
            uncached = settings.credential_cache_ttl == "0"
            case = Case(
                scenario=3,
                name=f"({label}) {per_connection} message{'s' if per_connection > 1 else ''} "
                f"per connection, {plan.submission_sessions} sessions"
                + (", postgate credential cache off" if uncached else ""),
                key="rate",
                unit="msg/s",
                higher_is_better=True,
                settings={
                    "connections": connections,
                    "messages": messages,
                    "postgate_credential_cache_ttl": settings.credential_cache_ttl or "default",
                },
            )
            report.cases.append(case)
            ctx.log(f"  [3] {case.name}: {messages} messages per run")
            expected = warmup_connections + messages

            def on_postgate(
                _round: int,
                connections: int = connections,
                per_connection: int = per_connection,
                expected: int = expected,
                messages: int = messages,
                settings: PostgateSettings = settings,
            ) -> Measurement:
                postgate.stop()
                postgate.wipe_queue()
                postgate.reconfigure(settings)
                postgate.start()
                try:
                    seconds, tls = _timed(
                        postgate.ports["submission"],
                        plan.submission_sessions,
                        connections,
                        per_connection,
                        warmup_connections,
                    )
                    queued = postgate.queued_messages()
                finally:
                    postgate.stop()
                if queued != expected:
                    raise RuntimeError(f"postgate queued {queued}, expected {expected}")
                return Measurement(
                    {"rate": messages / seconds},
                    {"seconds": round(seconds, 3), "queued": queued, "tls": tls},
                )

            def on_postfix(
                _round: int,
                connections: int = connections,
                per_connection: int = per_connection,
                expected: int = expected,
                messages: int = messages,
            ) -> Measurement:
                assert postfix is not None
                server = postfix
                server.delete_held()
                seconds, tls = _timed(
                    server.port("submission"),
                    plan.submission_sessions,
                    connections,
                    per_connection,
                    warmup_connections,
                )
                held = server.wait_held(expected)
                if held != expected:
                    raise RuntimeError(f"Postfix held {held}, expected {expected}")
                return Measurement(
                    {"rate": messages / seconds},
                    {"seconds": round(seconds, 3), "held": held, "tls": tls},
                )

            alternate(
                ctx, [case], {"postgate": on_postgate, "postfix": postfix_error or on_postfix}
            )
    finally:
        postgate.stop()
        if postfix is not None:
            postfix.stop()
        dovecot.stop()
    return report
