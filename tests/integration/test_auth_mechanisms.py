"""End to end: every SASL mechanism against a real postgate process, over TLS.

Config keys used: [auth] mechanisms, allow_impersonation, scram_iterations and
oauth_jwks, oauth_audience, oauth_issuer, oauth_user_claim, oauth_scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient

from postgate.accounts import UserStore
from tests.conftest import ALICE, BOB, make_server
from tests.sasl.jwt_keys import AUDIENCE, ISSUER, claims, jwks, rsa_key
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

KEY = rsa_key()
ALL_MECHANISMS = ["SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2"]


def client_context() -> ssl.SSLContext:
    # The test server's certificate is self-signed: the point here is the SASL side.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def submission(server: ServerProcess) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10)
    client.ehlo("client.example")
    client.starttls(context=client_context())
    client.ehlo("client.example")
    return client


# --- sequencing: passes today ---------------------------------------------------------------


def test_auth_before_tls_is_538_on_every_port(server: ServerProcess) -> None:
    for port in (server.ports["mx"], server.ports["submission"]):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example")
            assert not client.has_extn("auth")
            code, text = client.docmd("AUTH", "PLAIN " + b64("\0" + "\0".join(ALICE)))
            assert (code, text[:6]) == (538, b"5.7.11"), (code, text)


def test_auth_twice_and_inside_a_transaction_are_503(server: ServerProcess) -> None:
    with submission(server) as client:
        code, _ = client.docmd("AUTH", "PLAIN " + b64("\0" + "\0".join(ALICE)))
        assert code == 235
        code, text = client.docmd("AUTH", "PLAIN " + b64("\0" + "\0".join(ALICE)))
        assert (code, text[:5]) == (503, b"5.5.1"), (code, text)
    with submission(server) as client:
        client.docmd("MAIL", f"FROM:<{ALICE[0]}>")  # refused (530): no transaction yet
        code, _ = client.docmd("AUTH", "PLAIN " + b64("\0" + "\0".join(ALICE)))
        assert code == 235
        assert client.docmd("MAIL", f"FROM:<{ALICE[0]}>")[0] == 250
        code, text = client.docmd("AUTH", "LOGIN")
        assert (code, text[:5]) == (503, b"5.5.1"), (code, text)


def test_cram_md5_is_off_by_default(server: ServerProcess) -> None:
    with submission(server) as client:
        assert "CRAM-MD5" not in client.esmtp_features["auth"].upper()
        code, text = client.docmd("AUTH", "CRAM-MD5")
        assert (code, text[:5]) == (504, b"5.5.4"), (code, text)


# --- every mechanism: needs the wiring --------------------------------------------------------


@pytest.fixture(scope="module")
def wired_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("auth") / "postgate"
    root.mkdir(parents=True)
    keys = root / "jwks.json"
    keys.write_text(json.dumps(jwks(KEY)), encoding="utf-8")
    mechanisms = ", ".join(f'"{name}"' for name in ALL_MECHANISMS)
    server = make_server(
        root,
        extra_config=f"""
[auth]
mechanisms = [{mechanisms}]
allow_impersonation = ["{BOB[0]}"]
scram_iterations = 4096
oauth_jwks = "{keys}"
oauth_audience = "{AUDIENCE}"
oauth_issuer = "{ISSUER}"
oauth_user_claim = "email"
oauth_scope = "mail"
""",
    )
    # CRAM-MD5 is enabled here, so the operator would have set passwords with it.
    users = UserStore.open(Path(server.data_dir) / "users.db")
    try:
        users.set_password(*ALICE, cram_md5=True)
    finally:
        users.close()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_every_enabled_mechanism_is_advertised_after_tls(wired_server: ServerProcess) -> None:
    with submission(wired_server) as client:
        assert client.esmtp_features["auth"].split() == ALL_MECHANISMS


def test_scram_sha256_with_server_final_as_334(wired_server: ServerProcess) -> None:
    scram = ScramClient(["SCRAM-SHA-256"], *ALICE)
    with submission(wired_server) as client:
        code, server_first = client.docmd("AUTH", "SCRAM-SHA-256 " + b64(scram.get_client_first()))
        assert code == 334
        scram.set_server_first(base64.b64decode(server_first).decode())
        code, server_final = client.docmd(b64(scram.get_client_final()))
        assert code == 334
        scram.set_server_final(base64.b64decode(server_final).decode())  # server proved itself
        assert client.docmd("")[0] == 235
    wired_server.wait_for_log(event="authenticated", user=ALICE[0], mechanism="SCRAM-SHA-256")


def test_scram_wrong_password_and_unknown_user(wired_server: ServerProcess) -> None:
    for user, password in ((ALICE[0], "wrong"), ("nobody@example.test", "x")):
        scram = ScramClient(["SCRAM-SHA-256"], user, password)
        with submission(wired_server) as client:
            code, server_first = client.docmd(
                "AUTH", "SCRAM-SHA-256 " + b64(scram.get_client_first())
            )
            assert code == 334  # unknown users get a decoy salt, not an early refusal
            scram.set_server_first(base64.b64decode(server_first).decode())
            code, error = client.docmd(b64(scram.get_client_final()))
            assert (code, base64.b64decode(error)) == (334, b"e=invalid-proof")
            code, text = client.docmd("")
            assert (code, text[:5]) == (535, b"5.7.8")


def test_cram_md5_when_enabled(wired_server: ServerProcess) -> None:
    with submission(wired_server) as client:
        client.user, client.password = ALICE
        code, _ = client.auth("CRAM-MD5", client.auth_cram_md5)
        assert code == 235
    with submission(wired_server) as client:
        code, challenge = client.docmd("AUTH", "CRAM-MD5")
        assert code == 334
        digest = hmac.new(BOB[1].encode(), base64.b64decode(challenge), hashlib.md5).hexdigest()
        code, _ = client.docmd(b64(f"{BOB[0]} {digest}"))
        assert code == 535  # bob's password was set without cram_md5=True


def test_oauthbearer_and_xoauth2(wired_server: ServerProcess) -> None:
    token = KEY.sign(claims(ALICE[0]))
    with submission(wired_server) as client:
        message = f"n,a={ALICE[0]},\x01auth=Bearer {token}\x01\x01"
        assert client.docmd("AUTH", "OAUTHBEARER " + b64(message))[0] == 235
    with submission(wired_server) as client:
        message = f"user={ALICE[0]}\x01auth=Bearer {token}\x01\x01"
        assert client.docmd("AUTH", "XOAUTH2 " + b64(message))[0] == 235
    expired = KEY.sign(claims(ALICE[0], exp=1))
    with submission(wired_server) as client:
        code, error = client.docmd(
            "AUTH", "OAUTHBEARER " + b64(f"n,,\x01auth=Bearer {expired}\x01\x01")
        )
        assert code == 334
        assert json.loads(base64.b64decode(error)) == {
            "status": "invalid_token",
            "schemes": "bearer",
            "scope": "mail",
        }
        code, text = client.docmd("AQ==")
        assert (code, text[:5]) == (535, b"5.7.8")
    wired_server.wait_for_log(event="rejected", stage="auth", reply="535 5.7.8")


def test_impersonation_only_for_allowed_users(wired_server: ServerProcess) -> None:
    with submission(wired_server) as client:
        # bob is in auth.allow_impersonation: he may act as alice.
        code, _ = client.docmd("AUTH", "PLAIN " + b64(f"{ALICE[0]}\0{BOB[0]}\0{BOB[1]}"))
        assert code == 235
    wired_server.wait_for_log(event="authenticated", user=ALICE[0])
    with submission(wired_server) as client:
        code, text = client.docmd("AUTH", "PLAIN " + b64(f"{BOB[0]}\0{ALICE[0]}\0{ALICE[1]}"))
        assert (code, text[:5]) == (535, b"5.7.8")


def test_scram_guesses_count_for_lockout_even_when_abandoned(tmp_path: Path) -> None:
    # A client that cancels ("*") after SCRAM's e=invalid-proof, instead of finishing
    # the exchange, must still be counted: else guessing would be unlimited.
    server = make_server(
        tmp_path / "postgate",
        extra_config='\n[auth]\nmechanisms = ["PLAIN", "SCRAM-SHA-256"]\n'
        'lockout_penalty_delay = "0s"\n',
    )
    server.start()
    try:
        for _ in range(3):
            scram = ScramClient(["SCRAM-SHA-256"], ALICE[0], "wrong guess")
            with submission(server) as client:
                code, first = client.docmd("AUTH", "SCRAM-SHA-256 " + b64(scram.get_client_first()))
                assert code == 334
                scram.set_server_first(base64.b64decode(first).decode())
                code, error = client.docmd(b64(scram.get_client_final()))
                assert (code, base64.b64decode(error)) == (334, b"e=invalid-proof")
                assert client.docmd("*")[0] == 501
        with submission(server) as client:
            code, text = client.docmd("AUTH", "PLAIN " + b64("\0" + "\0".join(ALICE)))
        assert (code, text[:5]) == (454, b"4.7.0"), (code, text)
    finally:
        server.stop()
