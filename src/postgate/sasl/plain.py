"""sasl.plain — the PLAIN mechanism, server side (RFC 4616).

SYNOPSIS
    mechanism = PlainMechanism()
    mechanism.start("AGJvYgBzZWNyZXQ=")   # Credentials(authzid="", authcid="bob", ...)
    mechanism.start(None)                 # Challenge(b""): "334 " and wait for the message

DESCRIPTION
    The client message is ``[authzid] NUL authcid NUL passwd`` in UTF-8 (RFC 4616 2):
    exactly two NULs, non-empty authcid and password. The mechanism only parses; the
    caller verifies the password and decides whether a differing authzid is allowed.

BUGS
    SASLprep (RFC 4013) is not applied: the password is compared as the UTF-8 the
    client sent, the same way it was set.
"""

from __future__ import annotations

from typing import Final

from postgate.sasl.codec import decode_response, wrong_state
from postgate.sasl.model import (
    Challenge,
    Credentials,
    Failure,
    Resumption,
    SaslStep,
)

MALFORMED = Failure(501, "5.5.2", "malformed PLAIN message")


def parse_plain_message(message: bytes) -> Credentials | Failure:
    """RFC 4616 2: ``message = [authzid] UTF8NUL authcid UTF8NUL passwd``."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        return MALFORMED
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        return MALFORMED
    if not authcid or not password:
        return MALFORMED
    return Credentials(authzid=authzid, authcid=authcid, password=password)


class PlainMechanism:
    name: Final = "PLAIN"

    def __init__(self) -> None:
        self._state = "new"  # new -> waiting (challenge sent) -> done

    def start(self, initial_response: str | None) -> SaslStep:
        if self._state != "new":
            raise wrong_state(self.name, "start")
        if initial_response is None:
            # RFC 4616 2 with RFC 4954 4: an empty challenge asks for the message.
            self._state = "waiting"
            return Challenge(b"")
        return self._finish(initial_response, initial=True)

    def step(self, line: str) -> SaslStep:
        if self._state != "waiting":
            raise wrong_state(self.name, "step")
        return self._finish(line, initial=False)

    def resume(self, secret: Resumption | None) -> SaslStep:
        raise wrong_state(self.name, "resume")

    def _finish(self, text: str, *, initial: bool) -> SaslStep:
        self._state = "done"
        decoded = decode_response(text, initial=initial)
        if isinstance(decoded, Failure):
            return decoded
        return parse_plain_message(decoded)
