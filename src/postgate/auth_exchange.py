"""auth_exchange — one SMTP AUTH exchange, from the command to 235 or a refusal.

SYNOPSIS
    exchange = AuthExchange("SCRAM-SHA-256", users=users, tokens=validator,
                            hostname="mx.example.org", enabled=("PLAIN", "SCRAM-SHA-256"))
    outcome = await exchange.start(event.initial_response)     # None, "=" or base64
    while isinstance(outcome, SendChallenge):
        send 334 base64(outcome.data); outcome = await exchange.respond(next AUTH line)
    Succeeded(user=...)  -> conn.authenticated(user); 235 2.7.0
    Failed(code, enhanced, text, reason, user) -> that reply; log the reason

DESCRIPTION
    The async façade between the session and the pure mechanisms in sasl/: it makes
    the mechanism, looks up what it needs (SCRAM and CRAM-MD5 secrets from the user
    store, indexed reads), verifies PLAIN/LOGIN passwords off the event loop (argon2
    via UserStore.verify_async), validates bearer tokens, and applies the authzid
    rule. The session only moves lines and replies.

    SCRAM's server-final ``v=`` comes back as a SendChallenge; the client's empty
    answer completes the exchange (RFC 4954 4: SMTP has no additional data in 235).

AUTHORIZATION
    An authzid different from the authcid (compared in canonical form) is refused
    with 535 5.7.8, unless the authcid is in ``allow_impersonation``: then the session
    user is the authzid and the Succeeded reason says who acted for whom. A bearer
    token's user (the issuer's ``email`` or ``sub`` claim) must equal the user named
    in the SASL message when one is given; a mismatch is an invalid token. A token
    for a local account that is disabled is refused as well.

LOCKOUT
    Every end of an exchange passes through ``_conclude`` and is kept in ``outcome``;
    ``attempted_user`` is the authcid as soon as the client has named one. A lockout
    check wraps the exchange in the session: refuse before ``start``, count a
    Failed (its ``user`` and ``reason``) after it.

DIAGNOSTICS
    Never raises for client behaviour. A user database or token validator error
    becomes 454 4.7.0 (RFC 4954 6: temporary authentication failure).

SEE ALSO
    sasl (mechanisms), accounts.UserStore, sasl.tokens.TokenValidator, RFC 4954
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from postgate.accounts import AccountError, UserStore, canonical_account_address
from postgate.sasl import (
    AUTH_FAILED,
    TOKEN_MECHANISMS,
    UNKNOWN_MECHANISM,
    Challenge,
    Credentials,
    Failure,
    Mechanism,
    NeedCredentials,
    NeedToken,
    SaslError,
    SaslStep,
    Success,
    TokenOutcome,
    make_mechanism,
)
from postgate.sasl.model import ScramSecret, StoredSecret
from postgate.sasl.tokens import TokenValidator


@dataclass(frozen=True)
class SendChallenge:
    """Send ``334 base64(data)`` and pass the client's next line to ``respond``."""

    data: bytes


@dataclass(frozen=True)
class Succeeded:
    """Authenticated: ``user`` is the canonical session user (the authzid when an
    allowed impersonation took place, else the authcid)."""

    user: str
    authcid: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Failed:
    """Send ``code enhanced text``; log ``reason``. ``user`` is the authcid the client
    tried, when it got that far."""

    code: int
    enhanced: str
    text: str
    reason: str
    user: str | None


Outcome = SendChallenge | Succeeded | Failed
_Ending = TypeVar("_Ending", Succeeded, Failed)

_INVALID = (AUTH_FAILED.code, AUTH_FAILED.enhanced, AUTH_FAILED.text)
_TEMPORARY = (454, "4.7.0", "Temporary authentication failure")


def _canonical(name: str) -> str:
    try:
        return canonical_account_address(name)
    except AccountError:
        return name.lower()


class AuthExchange:
    """One per AUTH command; single use."""

    def __init__(
        self,
        mechanism: str,
        *,
        users: UserStore,
        tokens: TokenValidator | None,
        hostname: str,
        allow_impersonation: Collection[str] = (),
        enabled: Collection[str],
        clock: Callable[[], float] = time.time,
        nonce: str | None = None,
    ) -> None:
        self.mechanism_name = mechanism.upper()
        self._users = users
        self._tokens = tokens
        self._hostname = hostname
        self._impersonators = frozenset(_canonical(name) for name in allow_impersonation)
        self._enabled = frozenset(name.upper() for name in enabled)
        self._clock = clock
        self._nonce = nonce
        self._mechanism: Mechanism | None = None
        self._after_server_final: Succeeded | None = None
        self._detail = ""  # what our side found out, for the failure reason
        self.attempted_user: str | None = None
        self.outcome: Succeeded | Failed | None = None

    @property
    def credentials_rejected(self) -> bool:
        """Whether the client's secret was judged wrong: at the end (535), or mid-way
        when a mechanism says so before the client finishes (SCRAM's e=invalid-proof)."""
        if isinstance(self.outcome, Failed) and self.outcome.code == 535:
            return True
        return bool(getattr(self._mechanism, "credentials_rejected", False))

    async def start(self, initial_response: str | None) -> Outcome:
        if self._mechanism is not None or self.outcome is not None:
            raise RuntimeError("AuthExchange.start called twice")
        name = self.mechanism_name
        if name not in self._enabled:
            return self._refuse(UNKNOWN_MECHANISM, f"mechanism {name} not enabled")
        if name in TOKEN_MECHANISMS and self._tokens is None:
            return self._refuse(UNKNOWN_MECHANISM, f"mechanism {name} has no token issuer")
        try:
            self._mechanism = make_mechanism(
                name, hostname=self._hostname, nonce=self._nonce, timestamp=int(self._clock())
            )
        except SaslError as exc:
            return self._refuse(exc.failure, f"mechanism {name} unknown")
        return await self._advance(self._mechanism.start(initial_response))

    async def respond(self, line: str) -> Outcome:
        if self.outcome is not None or self._mechanism is None:
            raise RuntimeError("AuthExchange.respond outside an exchange")
        if self._after_server_final is not None:
            # RFC 4954 4: the client answers the server's final data with an empty line.
            if line == "":
                return self._conclude(self._after_server_final)
            if line == "*":
                return self._fail(501, "5.7.0", "Authentication cancelled", "cancelled")
            return self._fail(501, "5.5.2", "Expected an empty response", "data after v=")
        return await self._advance(self._mechanism.step(line))

    # -- driving the mechanism ---------------------------------------------------------

    async def _advance(self, step: SaslStep) -> Outcome:
        assert self._mechanism is not None
        # Bounded: each mechanism asks for a secret or a token verdict at most once.
        for _ in range(4):
            match step:
                case Challenge(data=data):
                    return SendChallenge(data)
                case Failure():
                    reason = step.log_reason + (f": {self._detail}" if self._detail else "")
                    return self._fail(step.code, step.enhanced, step.text, reason)
                case Credentials():
                    return await self._check_password(step)
                case NeedCredentials(authcid=authcid):
                    self.attempted_user = _canonical(authcid)
                    try:
                        secret = self._stored_secret(authcid)
                    except AccountError as exc:
                        return self._fail(*_TEMPORARY, f"user database: {exc}")
                    step = self._mechanism.resume(secret)
                case NeedToken():
                    outcome = self._check_token(step)
                    if isinstance(outcome, Failed):
                        return outcome
                    step = self._mechanism.resume(outcome)
                case Success():
                    return self._succeed(step)
        raise AssertionError(f"{self.mechanism_name} did not finish")

    def _stored_secret(self, authcid: str) -> StoredSecret | None:
        if self.mechanism_name == "SCRAM-SHA-256":
            scram: ScramSecret | None = self._users.scram_secret(authcid)
            if scram is not None:
                return scram
            self._detail = self._users.missing_secret_reason(authcid, self.mechanism_name)
            # Same shape as a real user: a salt stable per name, and a proof that fails.
            return self._users.scram_decoy(authcid)
        secret = self._users.cram_md5_secret(authcid)
        if secret is None:
            self._detail = self._users.missing_secret_reason(authcid, self.mechanism_name)
        return secret

    async def _check_password(self, credentials: Credentials) -> Outcome:
        self.attempted_user = _canonical(credentials.authcid)
        try:
            valid = await self._users.verify_async(credentials.authcid, credentials.password)
        except AccountError as exc:
            return self._fail(*_TEMPORARY, f"user database: {exc}")
        if not valid:
            return self._fail(*_INVALID, "bad credentials (unknown user, disabled or wrong)")
        outcome = self._authorize(credentials.authzid, credentials.authcid)
        return self._conclude(outcome) if isinstance(outcome, Succeeded) else outcome

    def _check_token(self, step: NeedToken) -> TokenOutcome | Failed:
        assert self._tokens is not None
        if step.authzid:
            self.attempted_user = _canonical(step.authzid)
        try:
            check = self._tokens.validate(step.token)
            disabled = check.user is not None and self._users.is_disabled(check.user)
        except AccountError as exc:
            return self._fail(*_TEMPORARY, f"user database: {exc}")
        user = check.user
        if user is not None:
            self.attempted_user = self.attempted_user or _canonical(user)
            if disabled:
                self._detail, user = f"user {_canonical(user)} is disabled", None
            elif step.authzid and _canonical(step.authzid) != _canonical(user):
                self._detail = f"token is for {user!r}, SASL user is {step.authzid!r}"
                user = None
        else:
            self._detail = f"invalid token: {check.reason}"
        return TokenOutcome(user=user, scope=self._tokens.scope)

    def _succeed(self, success: Success) -> Outcome:
        outcome = self._authorize(success.authzid, success.authcid)
        if isinstance(outcome, Failed):
            return outcome
        if success.additional_data is not None:
            self._after_server_final = outcome
            return SendChallenge(success.additional_data)
        return self._conclude(outcome)

    def _authorize(self, authzid: str, authcid: str) -> Succeeded | Failed:
        """The authzid rule. A Failed is final; a Succeeded is concluded by the caller,
        since SCRAM still has its server-final to deliver."""
        authcid_canonical = _canonical(authcid)
        self.attempted_user = authcid_canonical
        if not authzid or _canonical(authzid) == authcid_canonical:
            return Succeeded(authcid_canonical, authcid_canonical)
        if authcid_canonical not in self._impersonators:
            return self._fail(
                *_INVALID,
                f"authzid {authzid!r} differs from authcid {authcid_canonical} "
                "(not allowed to impersonate)",
            )
        try:
            acting_for = canonical_account_address(authzid)
        except AccountError as exc:
            return self._fail(*_INVALID, f"authzid is not an address: {exc}")
        return Succeeded(
            acting_for,
            authcid_canonical,
            f"{authcid_canonical} authenticated as {acting_for} (allowed impersonation)",
        )

    # -- the end -----------------------------------------------------------------------

    def _refuse(self, failure: Failure, reason: str) -> Failed:
        return self._fail(failure.code, failure.enhanced, failure.text, reason)

    def _fail(self, code: int, enhanced: str, text: str, reason: str) -> Failed:
        return self._conclude(Failed(code, enhanced, text, reason, self.attempted_user))

    def _conclude(self, outcome: _Ending) -> _Ending:
        """Every exchange ends here, exactly once: the place to count outcomes."""
        self.outcome = outcome
        return outcome
