"""policy.verdict — the answer of a policy check, as data.

DESCRIPTION
    A check returns a Verdict; only the session turns it into one SMTP reply and one
    log line with the reason (invariant 5 of the architecture). A check that crashes
    or times out becomes a tempfail (4xx), never an accept.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


class Action(enum.Enum):
    CONTINUE = "continue"  # no opinion: the next check decides
    ACCEPT = "accept"
    TEMPFAIL = "tempfail"  # 4xx
    REJECT = "reject"  # 5xx
    DISCONNECT = "disconnect"  # 421 and close


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    code: int = 250
    enhanced: str = "2.0.0"
    text: str = "Ok"
    reason: str = ""  # for the log: why, in the operator's words

    @classmethod
    def cont(cls) -> Verdict:
        return cls(Action.CONTINUE)

    @classmethod
    def accept(cls, code: int, enhanced: str, text: str) -> Verdict:
        return cls(Action.ACCEPT, code, enhanced, text)

    @classmethod
    def reject(cls, code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
        return cls(Action.REJECT, code, enhanced, text, reason or text)

    @classmethod
    def tempfail(cls, code: int, enhanced: str, text: str, reason: str = "") -> Verdict:
        return cls(Action.TEMPFAIL, code, enhanced, text, reason or text)


Check = Callable[[], Awaitable[Verdict]]


async def run_checks(checks: Sequence[tuple[str, Check]], *, timeout: float) -> Verdict:
    """Run checks in order; the first verdict that is not CONTINUE wins.

    Unlike Haraka, a check that raises is not skipped (fail-open): it becomes a 451, so a
    broken lookup can never let mail through that a working one would have refused.
    """
    for name, check in checks:
        try:
            verdict = await asyncio.wait_for(check(), timeout)
        except Exception as exc:  # includes TimeoutError
            return Verdict.tempfail(
                451,
                "4.3.0",
                "Temporary local problem, try again later",
                reason=f"check {name} failed: {type(exc).__name__}: {exc}",
            )
        if verdict.action is not Action.CONTINUE:
            return verdict
    return Verdict.cont()
