"""Real SMTP clients over loopback against AuthExchange on the pure SMTP machine: the
mechanisms as aiosmtplib (PLAIN, LOGIN, CRAM-MD5, XOAUTH2) and a raw socket (SCRAM,
OAUTHBEARER) speak them. The server-level tests come once the session is wired (see
tests/integration/test_auth_mechanisms.py)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest
from argon2 import PasswordHasher
from scramp import ScramClient

from postgate.accounts import UserStore
from postgate.auth_exchange import AuthExchange, Succeeded
from postgate.sasl.tokens import TokenValidator
from tests.sasl.jwt_keys import AUDIENCE, claims, jwks, rsa_key
from tests.sasl.smtp_harness import AuthHarness, serve_harness

ALL = ("PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2")
ANN = ("ann@example.org", "ann-secret")
KEY = rsa_key()
TIMEOUT = 10.0


@pytest.fixture
def users(tmp_path: Path) -> Iterator[UserStore]:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with UserStore.open(tmp_path / "users.db", hasher=hasher) as store:
        store.add(*ANN, cram_md5=True)
        yield store


def make_harness(users: UserStore) -> AuthHarness:
    tokens = TokenValidator(jwks(KEY), audience=AUDIENCE)

    def make_exchange(name: str) -> AuthExchange:
        return AuthExchange(
            name, users=users, tokens=tokens, hostname="mx.example.test", enabled=ALL
        )

    return AuthHarness(make_exchange, ALL)


@pytest.mark.parametrize("method", ["auth_plain", "auth_login", "auth_crammd5"])
async def test_aiosmtplib_password_mechanisms(users: UserStore, method: str) -> None:
    async with serve_harness(lambda: make_harness(users)) as (port, harnesses):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=TIMEOUT, start_tls=False)
        await client.connect()
        await client.ehlo()
        response = await getattr(client, method)(*ANN)
        assert (response.code, response.message) == (235, "2.7.0 Authentication successful")
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as raised:
            await getattr(client, method)(*ANN)  # RFC 4954 4: AUTH once per session
        assert raised.value.code == 503
        await client.quit()
    assert harnesses[0].outcomes == [Succeeded("ann@example.org", "ann@example.org")]


@pytest.mark.parametrize("method", ["auth_plain", "auth_login", "auth_crammd5"])
async def test_aiosmtplib_wrong_password_is_535(users: UserStore, method: str) -> None:
    async with serve_harness(lambda: make_harness(users)) as (port, _):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=TIMEOUT, start_tls=False)
        await client.connect()
        await client.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as raised:
            await getattr(client, method)(ANN[0], "wrong")
        assert raised.value.code == 535
        await client.quit()


async def test_aiosmtplib_xoauth2(users: UserStore) -> None:
    async with serve_harness(lambda: make_harness(users)) as (port, _):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=TIMEOUT, start_tls=False)
        await client.connect()
        await client.ehlo()
        response = await client.auth_xoauth2(ANN[0], KEY.sign(claims(ANN[0])))
        assert response.code == 235
        await client.quit()


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def command(self, line: str) -> str:
        self.writer.write(line.encode("ascii") + b"\r\n")
        await self.writer.drain()
        while True:
            reply = (await asyncio.wait_for(self.reader.readline(), TIMEOUT)).decode()
            if reply[3:4] != "-":
                return reply.rstrip("\r\n")


async def test_raw_scram_and_oauthbearer_over_a_socket(users: UserStore) -> None:
    async with serve_harness(lambda: make_harness(users)) as (port, harnesses):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = RawClient(reader, writer)
        await asyncio.wait_for(reader.readline(), TIMEOUT)  # banner
        assert (await client.command("EHLO raw.example")).startswith("250 AUTH")
        scram = ScramClient(["SCRAM-SHA-256"], *ANN)
        first = base64.b64encode(scram.get_client_first().encode()).decode()
        server_first = await client.command(f"AUTH SCRAM-SHA-256 {first}")
        scram.set_server_first(base64.b64decode(server_first[4:]).decode())
        final = base64.b64encode(scram.get_client_final().encode()).decode()
        server_final = await client.command(final)
        scram.set_server_final(base64.b64decode(server_final[4:]).decode())
        assert await client.command("") == "235 2.7.0 Authentication successful"
        assert await client.command("QUIT") == "221 2.0.0 Bye"
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = RawClient(reader, writer)
        await asyncio.wait_for(reader.readline(), TIMEOUT)
        await client.command("EHLO raw.example")
        message = f"n,,\x01auth=Bearer {KEY.sign(claims(ANN[0], exp=1))}\x01\x01"
        error = await client.command(
            "AUTH OAUTHBEARER " + base64.b64encode(message.encode()).decode()
        )
        assert error.startswith("334 ")
        assert b'"invalid_token"' in base64.b64decode(error[4:])
        assert await client.command("AQ==") == "535 5.7.8 Authentication credentials invalid"
        writer.close()
    assert [type(h.outcomes[0]).__name__ for h in harnesses] == ["Succeeded", "Failed"]
