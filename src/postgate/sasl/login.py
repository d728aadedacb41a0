"""sasl.login — the LOGIN mechanism, server side (draft-murchison-sasl-login-00).

SYNOPSIS
    mechanism = LoginMechanism()
    mechanism.start(None)          # Challenge(b"Username:")  -> "334 VXNlcm5hbWU6"
    mechanism.step("Ym9i")         # Challenge(b"Password:")  -> "334 UGFzc3dvcmQ6"
    mechanism.step("c2VjcmV0")     # Credentials(authzid="", authcid="bob", ...)

DESCRIPTION
    Obsolete but still sent by many clients (Outlook, old phones). The draft allows
    the user name as initial response, then only the password is asked for. LOGIN
    has no authorization identity. Names and passwords must be non-empty UTF-8
    without NUL (a NUL could truncate them in some downstream lookup).
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

USERNAME_CHALLENGE = Challenge(b"Username:")
PASSWORD_CHALLENGE = Challenge(b"Password:")
MALFORMED_USERNAME = Failure(501, "5.5.2", "malformed LOGIN user name")
MALFORMED_PASSWORD = Failure(501, "5.5.2", "malformed LOGIN password")


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text and "\0" not in text else None


class LoginMechanism:
    name: Final = "LOGIN"

    def __init__(self) -> None:
        self._state = "new"  # new -> username -> password -> done
        self._username = ""

    def start(self, initial_response: str | None) -> SaslStep:
        if self._state != "new":
            raise wrong_state(self.name, "start")
        if initial_response is None:
            self._state = "username"
            return USERNAME_CHALLENGE
        return self._username_received(initial_response, initial=True)

    def step(self, line: str) -> SaslStep:
        if self._state == "username":
            return self._username_received(line, initial=False)
        if self._state == "password":
            return self._password_received(line)
        raise wrong_state(self.name, "step")

    def resume(self, secret: Resumption | None) -> SaslStep:
        raise wrong_state(self.name, "resume")

    def _username_received(self, line: str, *, initial: bool) -> SaslStep:
        decoded = decode_response(line, initial=initial)
        if isinstance(decoded, Failure):
            self._state = "done"
            return decoded
        username = _text(decoded)
        if username is None:
            self._state = "done"
            return MALFORMED_USERNAME
        self._username = username
        self._state = "password"
        return PASSWORD_CHALLENGE

    def _password_received(self, line: str) -> SaslStep:
        self._state = "done"
        decoded = decode_response(line, initial=False)
        if isinstance(decoded, Failure):
            return decoded
        password = _text(decoded)
        if password is None:
            return MALFORMED_PASSWORD
        return Credentials(authzid="", authcid=self._username, password=password)
