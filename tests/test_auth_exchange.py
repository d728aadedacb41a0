"""AuthExchange with a real user store and real tokens: every mechanism to its end, the
authzid rule, RFC 4954 edge cases, and the wire bytes through the pure SMTP machine."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from scramp import ScramClient

from postgate.accounts import UserStore
from postgate.auth_exchange import AuthExchange, Failed, Outcome, SendChallenge, Succeeded
from postgate.sasl.tokens import TokenValidator
from tests.sasl.jwt_keys import (
    AUDIENCE,
    ISSUER,
    SigningKey,
    claims,
    hs256_forged_with_public_key,
    jwks,
    rsa_key,
)
from tests.sasl.smtp_harness import AuthHarness

ALL = ("PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2")
ANN = ("ann@example.org", "ann-secret")
BOSS = ("boss@example.org", "boss-secret")
DAVE = ("dave@example.org", "dave-secret")  # disabled
OLD = ("old@example.org", "old-secret")  # no SCRAM secret (from before SCRAM support)
KEY = rsa_key()


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


@pytest.fixture
def users(tmp_path: Path) -> Iterator[UserStore]:
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    with UserStore.open(tmp_path / "users.db", hasher=hasher) as store:
        store.add(*ANN, cram_md5=True)
        store.add(*BOSS)
        store.add(*DAVE, cram_md5=True)
        store.set_disabled(DAVE[0], True)
        store.add(*OLD)
        store._execute("UPDATE accounts SET scram_sha256 = NULL WHERE address = ?", (OLD[0],))
        yield store


@pytest.fixture
def tokens() -> TokenValidator:
    return TokenValidator(jwks(KEY), audience=AUDIENCE, issuer=ISSUER, scope="mail")


def exchange(
    users: UserStore,
    mechanism: str,
    tokens: TokenValidator | None = None,
    *,
    enabled: tuple[str, ...] = ALL,
    allow_impersonation: tuple[str, ...] = (),
) -> AuthExchange:
    return AuthExchange(
        mechanism,
        users=users,
        tokens=tokens,
        hostname="mx.example.org",
        enabled=enabled,
        allow_impersonation=allow_impersonation,
        clock=lambda: 1700000000.0,
    )


async def run(auth: AuthExchange, initial: str | None, *lines: str) -> list[Outcome]:
    """Start, then answer each challenge with the next line; every outcome, in order."""
    outcomes = [await auth.start(initial)]
    for line in lines:
        assert isinstance(outcomes[-1], SendChallenge), outcomes
        outcomes.append(await auth.respond(line))
    return outcomes


def assert_failed(outcome: Outcome, code: int, enhanced: str, reason_part: str) -> Failed:
    assert isinstance(outcome, Failed), outcome
    assert (outcome.code, outcome.enhanced) == (code, enhanced)
    assert reason_part.lower() in outcome.reason.lower(), outcome.reason
    return outcome


# --- PLAIN and LOGIN --------------------------------------------------------------------


async def test_plain_success_names_the_canonical_user(users: UserStore) -> None:
    auth = exchange(users, "plain")
    [outcome] = await run(auth, b64("\0Ann@Example.ORG\0ann-secret"))
    assert outcome == Succeeded("ann@example.org", "ann@example.org")
    assert auth.outcome == outcome and auth.attempted_user == "ann@example.org"


async def test_plain_wrong_password_unknown_and_disabled_are_535(users: UserStore) -> None:
    for message in ("\0ann@example.org\0wrong", "\0nobody@example.org\0x", "\0" + "\0".join(DAVE)):
        auth = exchange(users, "PLAIN")
        [outcome] = await run(auth, b64(message))
        failed = assert_failed(outcome, 535, "5.7.8", "bad credentials")
        assert failed.user == message.split("\0")[1]
        assert auth.outcome == failed


async def test_login_with_challenges(users: UserStore) -> None:
    outcomes = await run(exchange(users, "LOGIN"), None, b64(ANN[0]), b64(ANN[1]))
    assert outcomes == [
        SendChallenge(b"Username:"),
        SendChallenge(b"Password:"),
        Succeeded("ann@example.org", "ann@example.org"),
    ]


async def test_authzid_other_than_authcid_is_refused(users: UserStore) -> None:
    [outcome] = await run(
        exchange(users, "PLAIN"), b64("ann@example.org\0boss@example.org\0boss-secret")
    )
    failed = assert_failed(outcome, 535, "5.7.8", "not allowed to impersonate")
    assert failed.user == "boss@example.org"


async def test_authzid_equal_to_authcid_in_another_case_is_fine(users: UserStore) -> None:
    [outcome] = await run(
        exchange(users, "PLAIN"), b64("ANN@example.org\0ann@example.org\0ann-secret")
    )
    assert outcome == Succeeded("ann@example.org", "ann@example.org")


async def test_allowed_impersonation_makes_the_authzid_the_session_user(users: UserStore) -> None:
    auth = exchange(users, "PLAIN", allow_impersonation=("Boss@Example.org",))
    [outcome] = await run(auth, b64("Ann@example.org\0boss@example.org\0boss-secret"))
    assert isinstance(outcome, Succeeded)
    assert (outcome.user, outcome.authcid) == ("ann@example.org", "boss@example.org")
    assert outcome.reason == (
        "boss@example.org authenticated as ann@example.org (allowed impersonation)"
    )


async def test_impersonation_still_needs_the_right_password(users: UserStore) -> None:
    auth = exchange(users, "PLAIN", allow_impersonation=(BOSS[0],))
    [outcome] = await run(auth, b64("ann@example.org\0boss@example.org\0wrong"))
    assert_failed(outcome, 535, "5.7.8", "bad credentials")


# --- RFC 4954 edge cases ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "lines", "code", "enhanced"),
    [
        ("=", (), 501, "5.5.2"),  # "=" is an empty initial response: PLAIN needs NULs
        (None, ("*",), 501, "5.7.0"),  # cancel
        ("not base64!", (), 501, "5.5.2"),
        (None, ("AGFubgBwdw",), 501, "5.5.2"),  # unpadded base64
    ],
)
async def test_rfc4954_edge_cases(
    users: UserStore, initial: str | None, lines: tuple[str, ...], code: int, enhanced: str
) -> None:
    outcomes = await run(exchange(users, "PLAIN"), initial, *lines)
    assert_failed(outcomes[-1], code, enhanced, "")


async def test_long_responses_are_judged_not_refused(users: UserStore) -> None:
    # ~9000 base64 octets, well within the 12288 the SMTP machine allows for AUTH lines.
    [outcome] = await run(exchange(users, "PLAIN"), b64("\0ann@example.org\0" + "x" * 6700))
    assert len(b64("\0ann@example.org\0" + "x" * 6700)) > 8900
    assert_failed(outcome, 535, "5.7.8", "bad credentials")


@pytest.mark.parametrize(
    ("mechanism", "enabled", "reason"),
    [
        ("GSSAPI", ALL, "not enabled"),
        ("CRAM-MD5", ("PLAIN", "LOGIN"), "not enabled"),  # the default: CRAM-MD5 is off
        ("OAUTHBEARER", ALL, "no token issuer"),  # enabled, but tokens=None
    ],
)
async def test_unavailable_mechanisms_are_504(
    users: UserStore, mechanism: str, enabled: tuple[str, ...], reason: str
) -> None:
    [outcome] = await run(exchange(users, mechanism, enabled=enabled), None)
    assert_failed(outcome, 504, "5.5.4", reason)


async def test_database_trouble_is_a_temporary_failure(tmp_path: Path) -> None:
    store = UserStore.open(tmp_path / "users.db")
    store.close()
    for mechanism, initial in (
        ("PLAIN", b64("\0a@b.example\0pw")),
        ("SCRAM-SHA-256", b64("n,,n=a@b.example,r=x")),
    ):
        [outcome] = await run(exchange(store, mechanism), initial)
        assert_failed(outcome, 454, "4.7.0", "user database")


async def test_an_exchange_is_single_use(users: UserStore) -> None:
    auth = exchange(users, "PLAIN")
    await run(auth, b64("\0" + "\0".join(ANN)))
    with pytest.raises(RuntimeError):
        await auth.start(None)
    with pytest.raises(RuntimeError):
        await auth.respond("")


# --- SCRAM-SHA-256 ------------------------------------------------------------------------


async def scram_exchange(
    auth: AuthExchange, user: str, password: str, *, final_answer: str = ""
) -> tuple[ScramClient, list[Outcome]]:
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    outcomes: list[Outcome] = [await auth.start(b64(client.get_client_first()))]
    server_first = outcomes[-1]
    assert isinstance(server_first, SendChallenge), server_first
    client.set_server_first(server_first.data.decode())
    outcomes.append(await auth.respond(b64(client.get_client_final())))
    if isinstance(outcomes[-1], SendChallenge):
        outcomes.append(await auth.respond(final_answer))
    return client, outcomes


async def test_scram_full_exchange_with_server_final_as_a_challenge(users: UserStore) -> None:
    client, outcomes = await scram_exchange(exchange(users, "SCRAM-SHA-256"), *ANN)
    server_final = outcomes[1]
    assert isinstance(server_final, SendChallenge) and server_final.data.startswith(b"v=")
    client.set_server_final(server_final.data.decode())  # the server proved itself
    assert outcomes[2] == Succeeded("ann@example.org", "ann@example.org")


@pytest.mark.parametrize(
    ("answer", "code", "enhanced"), [("*", 501, "5.7.0"), ("eA==", 501, "5.5.2")]
)
async def test_scram_anything_but_empty_after_v_fails(
    users: UserStore, answer: str, code: int, enhanced: str
) -> None:
    _, outcomes = await scram_exchange(exchange(users, "SCRAM-SHA-256"), *ANN, final_answer=answer)
    assert_failed(outcomes[-1], code, enhanced, "")


async def test_scram_wrong_password(users: UserStore) -> None:
    _, outcomes = await scram_exchange(exchange(users, "SCRAM-SHA-256"), ANN[0], "wrong")
    assert outcomes[1] == SendChallenge(b"e=invalid-proof")
    failed = assert_failed(outcomes[2], 535, "5.7.8", "invalid proof")
    assert failed.user == "ann@example.org"


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("nobody@example.org", "no user nobody@example.org"),
        (DAVE[0], "is disabled"),
        (OLD[0], "set the password again"),
    ],
)
async def test_scram_users_without_a_secret_look_like_real_ones(
    users: UserStore, user: str, reason: str
) -> None:
    first_salts = set()
    for _ in range(2):
        _, outcomes = await scram_exchange(exchange(users, "SCRAM-SHA-256"), user, "guess")
        server_first = outcomes[0]
        assert isinstance(server_first, SendChallenge)
        first_salts.add(server_first.data.split(b",s=")[1].split(b",")[0])
        assert outcomes[1] == SendChallenge(b"e=invalid-proof")
        assert_failed(outcomes[2], 535, "5.7.8", reason)
    assert len(first_salts) == 1  # the decoy salt does not change between attempts


async def test_scram_authzid_follows_the_impersonation_rule(users: UserStore) -> None:
    def client_first(authzid: str) -> str:
        return b64(f"n,a={authzid},n=boss@example.org,r=clientnonce")

    [outcome] = await run(exchange(users, "SCRAM-SHA-256"), client_first("ann@example.org"))
    assert isinstance(outcome, SendChallenge)  # judged only once the proof is in
    secret = users.scram_secret(BOSS[0])
    assert secret is not None
    for allowed, expected_user in (((), None), ((BOSS[0],), "ann@example.org")):
        auth = exchange(users, "SCRAM-SHA-256", allow_impersonation=allowed)
        server_first = await auth.start(client_first("ann@example.org"))
        assert isinstance(server_first, SendChallenge)
        final = await auth.respond(
            scram_proof(secret, BOSS[1], "ann@example.org", server_first.data)
        )
        if expected_user is None:
            assert_failed(final, 535, "5.7.8", "not allowed to impersonate")
        else:
            assert isinstance(final, SendChallenge)
            assert await auth.respond("") == Succeeded(
                "ann@example.org",
                "boss@example.org",
                "boss@example.org authenticated as ann@example.org (allowed impersonation)",
            )


def scram_proof(secret: object, password: str, authzid: str, server_first: bytes) -> str:
    """A client-final by hand (scramp's client cannot send an authzid)."""
    from postgate.sasl.scram import derive_scram_secret

    fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert derive_scram_secret(password, salt=salt, iterations=iterations) == secret
    gs2 = f"n,a={authzid},"
    without_proof = f"c={b64(gs2)},r={fields['r']}"
    auth_message = f"n=boss@example.org,r=clientnonce,{server_first.decode()},{without_proof}"
    signature = hmac.new(
        hashlib.sha256(client_key).digest(), auth_message.encode(), hashlib.sha256
    ).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return b64(f"{without_proof},p={b64(proof)}")


# --- CRAM-MD5 -----------------------------------------------------------------------------


def cram_answer(challenge: bytes, user: str, password: str) -> str:
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return b64(f"{user} {digest}")


async def test_cram_md5_success_and_challenge_form(users: UserStore) -> None:
    auth = exchange(users, "CRAM-MD5")
    challenge = await auth.start(None)
    assert isinstance(challenge, SendChallenge)
    assert challenge.data.startswith(b"<") and challenge.data.endswith(
        b".1700000000@mx.example.org>"
    )
    outcome = await auth.respond(cram_answer(challenge.data, *ANN))
    assert outcome == Succeeded("ann@example.org", "ann@example.org")


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        (ANN[0], "wrong", "digest does not match"),
        (BOSS[0], BOSS[1], "no CRAM-MD5 secret"),  # added without cram_md5=True
        (DAVE[0], DAVE[1], "is disabled"),
    ],
)
async def test_cram_md5_failures(users: UserStore, user: str, password: str, reason: str) -> None:
    auth = exchange(users, "CRAM-MD5")
    challenge = await auth.start(None)
    assert isinstance(challenge, SendChallenge)
    assert_failed(
        await auth.respond(cram_answer(challenge.data, user, password)), 535, "5.7.8", reason
    )


async def test_cram_md5_refuses_an_initial_response(users: UserStore) -> None:
    [outcome] = await run(exchange(users, "CRAM-MD5"), "=")
    assert_failed(outcome, 501, "5.5.2", "no initial response")


# --- OAUTHBEARER and XOAUTH2 ---------------------------------------------------------------


def oauthbearer(token: str, user: str = "") -> str:
    header = f"n,a={user}," if user else "n,,"
    return b64(f"{header}\x01host=mx.example.org\x01port=587\x01auth=Bearer {token}\x01\x01")


def xoauth2(token: str, user: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


async def test_oauthbearer_valid_token(users: UserStore, tokens: TokenValidator) -> None:
    token = KEY.sign(claims("Ann@Example.org"))
    for initial in (oauthbearer(token), oauthbearer(token, "ann@example.org")):
        [outcome] = await run(exchange(users, "OAUTHBEARER", tokens), initial)
        assert outcome == Succeeded("ann@example.org", "ann@example.org")


async def test_xoauth2_valid_token(users: UserStore, tokens: TokenValidator) -> None:
    token = KEY.sign(claims("ann@example.org"))
    [outcome] = await run(exchange(users, "XOAUTH2", tokens), xoauth2(token, "ann@example.org"))
    assert outcome == Succeeded("ann@example.org", "ann@example.org")


def bad_tokens(key: SigningKey) -> list[tuple[str, str]]:
    return [
        (key.sign(claims(exp=int(time.time()) - 60)), "expired"),
        (key.sign(claims(aud="other")), "audience"),
        (key.sign(claims(iss="https://evil.example")), "issuer"),
        (hs256_forged_with_public_key(key, claims()), "not allowed"),
        (rsa_key(key.kid).sign(claims()), "signature"),
    ]


@pytest.mark.parametrize("case", range(5))
async def test_oauthbearer_bad_token_error_exchange(
    users: UserStore, tokens: TokenValidator, case: int
) -> None:
    token, reason = bad_tokens(KEY)[case]
    outcomes = await run(exchange(users, "OAUTHBEARER", tokens), oauthbearer(token, ANN[0]), "AQ==")
    assert outcomes[0] == SendChallenge(
        b'{"status":"invalid_token","schemes":"bearer","scope":"mail"}'
    )
    failed = assert_failed(outcomes[1], 535, "5.7.8", reason)
    assert failed.user == "ann@example.org"


async def test_xoauth2_bad_token_answers_like_gmail(
    users: UserStore, tokens: TokenValidator
) -> None:
    token = KEY.sign(claims(exp=int(time.time()) - 60))
    outcomes = await run(exchange(users, "XOAUTH2", tokens), xoauth2(token, ANN[0]), "")
    assert outcomes[0] == SendChallenge(b'{"status":"401","schemes":"bearer","scope":"mail"}')
    assert_failed(outcomes[1], 535, "5.7.8", "expired")


async def test_token_user_must_match_the_sasl_user(
    users: UserStore, tokens: TokenValidator
) -> None:
    token = KEY.sign(claims("boss@example.org"))
    for mechanism, initial in (
        ("OAUTHBEARER", oauthbearer(token, "ann@example.org")),
        ("XOAUTH2", xoauth2(token, "ann@example.org")),
    ):
        outcomes = await run(exchange(users, mechanism, tokens), initial, "AQ==")
        assert isinstance(outcomes[0], SendChallenge)
        assert_failed(outcomes[1], 535, "5.7.8", "token is for 'boss@example.org'")


async def test_token_for_a_disabled_local_account_fails(
    users: UserStore, tokens: TokenValidator
) -> None:
    outcomes = await run(
        exchange(users, "OAUTHBEARER", tokens), oauthbearer(KEY.sign(claims(DAVE[0]))), "AQ=="
    )
    assert_failed(outcomes[1], 535, "5.7.8", "is disabled")


# --- on the wire, through the sans-I/O SMTP machine -----------------------------------


def harness(users: UserStore, tokens: TokenValidator | None = None) -> AuthHarness:
    return AuthHarness(lambda name: exchange(users, name, tokens), ALL)


async def test_wire_plain_then_auth_again_is_503(users: UserStore) -> None:
    smtp = harness(users)
    await smtp.feed(b"EHLO client.example\r\n")
    assert await smtp.feed(b"AUTH PLAIN " + b64("\0" + "\0".join(ANN)).encode() + b"\r\n") == (
        b"235 2.7.0 Authentication successful\r\n"
    )
    again = await smtp.feed(b"AUTH PLAIN " + b64("\0" + "\0".join(ANN)).encode() + b"\r\n")
    assert again.startswith(b"503 5.5.1")


async def test_wire_scram_exchange_bytes(users: UserStore) -> None:
    smtp = harness(users)
    ehlo = await smtp.feed(b"EHLO client.example\r\n")
    assert b"250 AUTH PLAIN LOGIN SCRAM-SHA-256 CRAM-MD5 OAUTHBEARER XOAUTH2\r\n" in ehlo
    client = ScramClient(["SCRAM-SHA-256"], *ANN)
    assert await smtp.feed(b"AUTH SCRAM-SHA-256\r\n") == b"334 \r\n"
    server_first = await smtp.feed(b64(client.get_client_first()).encode() + b"\r\n")
    assert server_first.startswith(b"334 ") and server_first.endswith(b"\r\n")
    client.set_server_first(base64.b64decode(server_first[4:-2]).decode())
    server_final = await smtp.feed(b64(client.get_client_final()).encode() + b"\r\n")
    client.set_server_final(base64.b64decode(server_final[4:-2]).decode())
    assert await smtp.feed(b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    assert smtp.outcomes == [Succeeded("ann@example.org", "ann@example.org")]


async def test_wire_oauthbearer_failure_bytes(users: UserStore, tokens: TokenValidator) -> None:
    smtp = harness(users, tokens)
    await smtp.feed(b"EHLO client.example\r\n")
    token = KEY.sign(claims(aud="other"))
    error = await smtp.feed(b"AUTH OAUTHBEARER " + oauthbearer(token).encode() + b"\r\n")
    assert (
        error
        == b"334 "
        + b64(b'{"status":"invalid_token","schemes":"bearer","scope":"mail"}').encode()
        + b"\r\n"
    )
    assert await smtp.feed(b"AQ==\r\n") == b"535 5.7.8 Authentication credentials invalid\r\n"
    # A failed exchange leaves AUTH available again (RFC 4954 4).
    again = await smtp.feed(
        b"AUTH OAUTHBEARER " + oauthbearer(KEY.sign(claims())).encode() + b"\r\n"
    )
    assert again == b"235 2.7.0 Authentication successful\r\n"


async def test_wire_cancel_and_bad_base64(users: UserStore) -> None:
    smtp = harness(users)
    await smtp.feed(b"EHLO client.example\r\n")
    assert await smtp.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert await smtp.feed(b"*\r\n") == b"501 5.7.0 authentication cancelled\r\n"
    # Unpadded: the SMTP machine passes it on, the strict decoder refuses it.
    assert await smtp.feed(b"AUTH PLAIN AGFubgBwdw\r\n") == (
        b"501 5.5.2 cannot decode base64 response\r\n"
    )
    assert await smtp.feed(b"AUTH PLAIN =\r\n") == b"501 5.5.2 malformed PLAIN message\r\n"


async def test_wire_auth_before_tls_and_inside_a_transaction(users: UserStore) -> None:
    smtp = AuthHarness(lambda name: exchange(users, name), ALL, require_tls_for_auth=True)
    await smtp.feed(b"EHLO client.example\r\n")
    assert (await smtp.feed(b"AUTH PLAIN =\r\n")).startswith(b"538 5.7.11")
    plain = harness(users)
    await plain.feed(b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n")
    assert (await plain.feed(b"AUTH PLAIN =\r\n")).startswith(b"503 5.5.1")
    assert smtp.outcomes == plain.outcomes == []


async def test_wire_long_auth_line_is_accepted(users: UserStore) -> None:
    smtp = harness(users)
    await smtp.feed(b"EHLO client.example\r\n")
    line = b"AUTH PLAIN " + b64("\0ann@example.org\0" + "y" * 8000).encode() + b"\r\n"
    assert 10000 < len(line) < 12288
    assert await smtp.feed(line) == b"535 5.7.8 Authentication credentials invalid\r\n"


async def test_invalid_token_without_a_named_user_reports_no_user(
    users: UserStore, tokens: TokenValidator
) -> None:
    auth = exchange(users, "OAUTHBEARER", tokens)
    outcomes = await run(auth, oauthbearer("not-a-jwt"), "AQ==")
    failed = assert_failed(outcomes[1], 535, "5.7.8", "not a JWT")
    assert failed.user is None and auth.attempted_user is None
