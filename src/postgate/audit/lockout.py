"""audit.lockout — does the server stop password guessing?

SYNOPSIS
    check_lockout(target)      # "auth/lockout"; needs target.auth_user

DESCRIPTION
    Use an account made for the audit: the check locks it. Over TLS (STARTTLS when
    offered, as a client must), with ``AUTH PLAIN``:

      1. with --auth-password: log in once to prove the password is right (otherwise a
         refusal later would prove nothing);
      2. N+1 wrong passwords (N = --lockout-attempts, default 3), reconnecting when the
         server hangs up;
      3. one more wrong password: refused differently (4xx, 421, a closed or refused
         connection, another code than the first failures) or answered much later
         (at least 1 s and 5 times the first failure) is a sign of lockout;
      4. with --auth-password: the right password, which must now be refused.

    Verdicts: step 4 accepted at once FAIL (no lockout), accepted only after a delay
    WARN (throttling, not a ban), refused PASS. Without a password: a sign in step 3
    PASS, none FAIL. Without --auth-user: SKIP. The password never appears in the
    evidence.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from dataclasses import dataclass, field

from postgate.audit.model import AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.wire import Conversation, ProbeError, Reply

NAME = "auth/lockout"


@dataclass
class _Attempt:
    reply: Reply | None  # None: the connection was refused, closed or timed out
    seconds: float
    note: str = ""

    def describe(self) -> str:
        answer = self.reply.brief() if self.reply else self.note
        return f"{answer} after {self.seconds:.2f}s"


@dataclass
class _AuthSessions:
    """Reconnects on demand; every transcript is kept, with passwords masked."""

    target: AuditTarget
    evidence: list[str] = field(default_factory=list)
    talk: Conversation | None = None

    def attempt(self, password: str, shown: str) -> _Attempt:
        started = time.monotonic()
        try:
            talk = self._connected()
        except ProbeError as exc:
            return _Attempt(None, time.monotonic() - started, f"no session: {exc}")
        started = time.monotonic()  # time the AUTH exchange, not the TLS handshake
        secret = base64.b64encode(f"\0{self.target.auth_user}\0{password}".encode()).decode()
        try:
            talk.send_raw(f"AUTH PLAIN {secret}\r\n".encode(), shown=f"AUTH PLAIN <{shown}>")
            # Lockout may answer slowly on purpose; wait longer than for other replies.
            reply = talk.read_reply(timeout=self.target.timeout * 3)
            if reply.code == 334:
                talk.command("*")  # RFC 4954 4: cancel
        except ProbeError as exc:
            self._drop()
            return _Attempt(None, time.monotonic() - started, str(exc))
        seconds = time.monotonic() - started
        if reply.code == 235 or reply.code == 421:
            self._drop()  # authenticated sessions are not reused; 421 closes
        return _Attempt(reply, seconds)

    def _connected(self) -> Conversation:
        if self.talk is not None:
            return self.talk
        talk = Conversation.open(self.target)
        self.talk = talk
        try:
            talk.secure()
            if self.target.tls_mode is TlsMode.PLAIN and "STARTTLS" in talk.extensions:
                talk.starttls()  # RFC 4954 4: a client must not send passwords in clear
            if "AUTH" not in talk.extensions:
                raise ProbeError("AUTH not offered")
            if "PLAIN" not in talk.extensions["AUTH"].upper().split():
                raise ProbeError(f"AUTH PLAIN not offered ({talk.extensions['AUTH']})")
        except ProbeError:
            self._drop()
            raise
        return talk

    def _drop(self) -> None:
        if self.talk is not None:
            self.evidence.extend(self.talk.evidence)
            self.talk.close()
            self.talk = None

    def close(self) -> None:
        if self.talk is not None:
            with contextlib.suppress(ProbeError):
                self.talk.command("QUIT")
        self._drop()


def check_lockout(target: AuditTarget) -> CheckResult:
    if not target.auth_user:
        return CheckResult(
            NAME, Status.SKIP, "no --auth-user: give an account made for the audit (it gets locked)"
        )
    sessions = _AuthSessions(target)
    try:
        status, summary = _run(target, sessions)
    finally:
        sessions.close()
    return CheckResult(NAME, status, summary, tuple(sessions.evidence))


def _run(target: AuditTarget, sessions: _AuthSessions) -> tuple[Status, str]:
    right = target.auth_password
    if right is not None:
        baseline = sessions.attempt(right, "right password")
        if baseline.reply is None and baseline.note.startswith("no session"):
            return Status.SKIP, f"cannot test: {baseline.note}"
        if baseline.reply is None or baseline.reply.code != 235:
            return Status.SKIP, (
                f"the given password is refused before any wrong one ({baseline.describe()}): "
                "cannot test"
            )
    failures = []
    for number in range(1, target.lockout_attempts + 2):
        wrong = f"pgaudit-wrong-{secrets.token_hex(6)}"
        failures.append(sessions.attempt(wrong, f"wrong password #{number}"))
    first = failures[0]
    if first.reply is None and first.note.startswith("no session"):
        return Status.SKIP, f"cannot test: {first.note}"
    if first.reply is not None and first.reply.code == 235:
        return Status.FAIL, "a wrong password was accepted"
    later = sessions.attempt(f"pgaudit-wrong-{secrets.token_hex(6)}", "wrong password, later")
    sign = _lockout_sign(first, later)
    if right is None:
        if sign:
            return Status.PASS, f"after {len(failures)} failures: {sign}"
        return Status.FAIL, (
            f"no sign of lockout after {len(failures) + 1} wrong passwords "
            f"(last: {later.describe()}); give --auth-password to test the ban itself"
        )
    during_ban = sessions.attempt(right, "right password, during the ban")
    if during_ban.reply is not None and during_ban.reply.code == 235:
        if _slow(first, during_ban):
            return Status.WARN, (
                f"right password accepted after a delay ({during_ban.describe()}): throttled, "
                "not locked"
            )
        return Status.FAIL, (
            f"no lockout: the right password was accepted right after {len(failures) + 1} "
            f"wrong ones ({during_ban.describe()})"
        )
    return Status.PASS, (
        f"locked after {len(failures)} failures: right password refused ({during_ban.describe()})"
    )


def _slow(baseline: _Attempt, later: _Attempt) -> bool:
    return later.seconds >= max(1.0, 5 * baseline.seconds)


def _lockout_sign(first: _Attempt, later: _Attempt) -> str:
    """Why ``later`` looks like lockout compared to ``first``; "" when it does not."""
    if later.reply is None:
        return f"refused: {later.note}"
    if first.reply is not None and later.reply.code != first.reply.code:
        return f"answered differently: {later.reply.brief()}"
    if 400 <= later.reply.code < 500:
        return f"temporarily refused: {later.reply.brief()}"
    if _slow(first, later):
        return f"delayed: {later.describe()}"
    return ""
