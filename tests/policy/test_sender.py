"""policy.sender: who may send as whom, table-driven, against a real Router."""

from __future__ import annotations

import smtplib
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postgate.policy.sender import (
    UNPARSEABLE_FROM,
    SenderPolicy,
    SenderRules,
    from_header_addresses,
    sender_rejected_verdict,
)
from postgate.policy.verdict import Action
from postgate.routing import Router, RoutingError, parse_aliases
from tests.conftest import ALICE, BOB
from tests.server_process import ServerProcess

MAILBOXES = {
    "alice@example.test",
    "bob@example.test",
    "carol@example.test",
    "dave@example.org",
}
ALIASES = """
sales@example.test    alice@example.test, bob@example.test
info@example.test     sales@example.test
outside@example.test  someone@elsewhere.test
@example.org          carol@example.test
"""


def make_router() -> Router:
    return Router(
        local_domains=["example.test", "example.org", "bücher.example"],
        aliases=parse_aliases(ALIASES),
        catch_all={},
        postmaster="alice@example.test",
        mailbox_exists=MAILBOXES.__contains__,
    )


@pytest.fixture(scope="module")
def policy() -> SenderPolicy:
    rules = SenderRules(
        owners={
            "Alice@Example.Test": ("@example.net", "@BÜCHER.example"),
            "bob@example.test": ("bob@partner.test", '"bob.smith"@Partner.Test'),
        }
    )
    return SenderPolicy(rules, make_router())


ENVELOPE_CASES = [
    # (user, MAIL FROM address, allowed, why)
    ("alice@example.test", "alice@example.test", True, "own address"),
    ("alice@example.test", "ALICE@EXAMPLE.TEST", True, "local part case folds at our domains"),
    ("alice@example.test", '"alice"@example.test', True, "quoted form of the same local part"),
    ("alice@example.test", "bob@example.test", False, "someone else's mailbox"),
    ("alice@example.test", "sales@example.test", True, "alias that delivers to her"),
    ("alice@example.test", "info@example.test", True, "nested alias"),
    ("bob@example.test", "sales@example.test", True, "same list, other member"),
    ("carol@example.test", "sales@example.test", False, "not on the list"),
    ("carol@example.test", "anyone@example.org", True, "catch-all lands with carol"),
    ("carol@example.test", "dave@example.org", False, "a mailbox wins over the catch-all"),
    ("alice@example.test", "outside@example.test", False, "alias to a foreign address"),
    ("alice@example.test", "postmaster@example.test", True, "postmaster goes to alice"),
    ("bob@example.test", "postmaster@example.test", False, "but not to bob"),
    ("alice@example.test", "x@example.net", True, "domain she owns"),
    ("alice@example.test", "X@EXAMPLE.NET", True, "domains compare case-insensitively"),
    ("alice@example.test", "x@sub.example.net", False, "subdomains are not included"),
    ("alice@example.test", "x@xn--bcher-kva.example", True, "IDNA A-label of owned domain"),
    ("alice@example.test", "x@BÜCHER.example", True, "U-label, other case"),
    ("bob@example.test", "bob@partner.test", True, "listed for him"),
    ("bob@example.test", "bob@PARTNER.test", True, "foreign domain case folds"),
    ("bob@example.test", "Bob@partner.test", False, "foreign local part compares exactly"),
    ("bob@example.test", "bob.smith@partner.test", True, "quoted in config, plain here"),
    ("alice@example.test", "bob@partner.test", False, "listed for bob, not alice"),
    ("alice@example.test", "", True, "null sender: MDNs and auto-replies (RFC 8098 2)"),
    ("alice@example.test", "alice", False, "no domain"),
    ("alice@example.test", "alice@example.test.evil.test", False, "lookalike domain"),
    ("alice@example.test", "alice%example.test@evil.test", False, "percent hack"),
    ("alice@example.test", '"alice@example.test"@evil.test', False, "quoted @ in local part"),
    ("alice@example.test", "@evil.test:alice@example.test", True, "source route is ignored"),
    ("dave@example.org", "dave@example.org", True, "user without rules"),
    ("nobody@example.test", "nobody@example.test", True, "own address even without mailbox"),
]


@pytest.mark.parametrize(("user", "sender", "allowed", "why"), ENVELOPE_CASES)
def test_envelope_sender(
    policy: SenderPolicy, user: str, sender: str, allowed: bool, why: str
) -> None:
    assert policy.envelope_sender_allowed(user, sender) is allowed, why


def message(*header_lines: str, body: str = "Hi.\r\n") -> bytes:
    return ("\r\n".join(header_lines) + "\r\n\r\n" + body).encode("utf-8")


FROM_CASES = [
    # (message, addresses found, allowed for alice, why)
    (message("From: Alice <alice@example.test>"), ["alice@example.test"], True, "plain"),
    (
        message("From: alice@example.test, mallory@evil.test", "Sender: alice@example.test"),
        ["alice@example.test", "mallory@evil.test"],
        False,
        "every mailbox must be hers",
    ),
    (
        message('From: "bob@example.test" <alice@example.test>'),
        ["alice@example.test"],
        True,
        "display names are not checked",
    ),
    (
        message("From: =?utf-8?q?Al=C3=AFce?= <alice@example.test>"),
        ["alice@example.test"],
        True,
        "encoded-word display name",
    ),
    (
        message("From: Alice\r\n <alice@example.test>"),
        ["alice@example.test"],
        True,
        "folded field",
    ),
    (
        message("From: alice@example.test", "From: mallory@evil.test"),
        ["alice@example.test", "mallory@evil.test"],
        False,
        "a second From: field is checked too",
    ),
    (
        message("From: team: alice@example.test, sales@example.test;"),
        ["alice@example.test", "sales@example.test"],
        True,
        "group members are checked",
    ),
    (message("From: undisclosed-recipients:;"), [], True, "an empty group claims nothing"),
    (message("Subject: no from"), [], True, "no From: claims nothing"),
    (
        message("Subject: x", body="From: mallory@evil.test\r\n"),
        [],
        True,
        "From: in the body is not a header",
    ),
    (
        message("From: alice@example.test <mallory@evil.test>"),
        ["alice@example.test", UNPARSEABLE_FROM],
        False,
        "guessed parse fails closed",
    ),
    (message("From: garbage"), [UNPARSEABLE_FROM], False, "no domain"),
    (
        message("From: carol@example.test <ceo@example.org"),
        ["carol@example.test", UNPARSEABLE_FROM],
        False,
        "broken angle address",
    ),
    (message("From: a@b@example.test"), [UNPARSEABLE_FROM], False, "two @"),
    (message("FROM: ALICE@EXAMPLE.TEST"), ["ALICE@EXAMPLE.TEST"], True, "field name and case"),
    (
        message("From: Alice <alice@example.test> (work)"),
        ["alice@example.test"],
        True,
        "comment",
    ),
]


@pytest.mark.parametrize(("raw", "addresses", "allowed", "why"), FROM_CASES)
def test_header_from(
    policy: SenderPolicy, raw: bytes, addresses: list[str], allowed: bool, why: str
) -> None:
    found = from_header_addresses(raw)
    assert found == addresses, why
    assert policy.header_from_allowed("alice@example.test", found) is allowed, why


def test_header_section_with_bare_lf() -> None:
    raw = b"From: alice@example.test\nSubject: x\n\nFrom: mallory@evil.test\n"
    assert from_header_addresses(raw) == ["alice@example.test"]


def test_non_utf8_header_bytes_never_match(policy: SenderPolicy) -> None:
    raw = b"From: alic\xe9@example.test\r\n\r\nbody\r\n"
    found = from_header_addresses(raw)
    assert found and all("\ufffd" in address for address in found)
    assert not policy.header_from_allowed("alice@example.test", found)


def test_utf8_address_is_read(policy: SenderPolicy) -> None:
    raw = "From: Jörg <jörg@example.test>\r\n\r\n".encode()
    assert from_header_addresses(raw) == ["jörg@example.test"]
    assert policy.header_from_allowed("jörg@example.test", ["JÖRG@example.test"])


@pytest.mark.parametrize(
    "owners",
    [
        {"not-an-address": ("x@example.test",)},
        {"alice@example.test": ("no-domain",)},
        {"alice@example.test": ("@",)},
    ],
)
def test_bad_rules_are_refused(owners: dict[str, tuple[str, ...]]) -> None:
    with pytest.raises(RoutingError):
        SenderPolicy(SenderRules(owners=owners), make_router())


def test_refusal_reply() -> None:
    verdict = sender_rejected_verdict("alice@example.test")
    assert (verdict.action, verdict.code, verdict.enhanced) == (Action.REJECT, 553, "5.7.1")
    assert verdict.text == "Sender address rejected: not owned by user <alice@example.test>"
    assert sender_rejected_verdict("alice@example.test", code=550).code == 550


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_from_parser_never_raises(raw: bytes) -> None:
    for address in from_header_addresses(b"From: " + raw + b"\r\n\r\n"):
        assert address == UNPARSEABLE_FROM or "@" in address


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.slow
def test_server_refuses_foreign_senders(server: ServerProcess) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", server.ports["submissions"], context=_tls_context(), timeout=30
    ) as client:
        client.login(*ALICE)
        code, text = client.mail(BOB[0])
        assert (code, text) == (
            553,
            f"5.7.1 Sender address rejected: not owned by user <{ALICE[0]}>".encode(),
        )
        assert client.mail(ALICE[0])[0] == 250
        assert client.rcpt(BOB[0])[0] == 250
        forged = f"From: Bob <{BOB[0]}>\r\nSubject: hi\r\n\r\nHello.\r\n".encode()
        code, text = client.data(forged)
        assert (code, text[:5]) == (553, b"5.7.1")
        assert client.mail("")[0] == 250  # null sender: MDNs from a mail client
        assert client.rcpt(BOB[0])[0] == 250
        own = f"From: Alice <{ALICE[0]}>\r\nSubject: receipt\r\n\r\nRead.\r\n".encode()
        assert client.data(own)[0] == 250
    server.wait_for_log(event="rejected", stage="mail", sender=BOB[0], reply="553 5.7.1")
    server.wait_for_log(event="rejected", stage="data", reply="553 5.7.1")


def test_obsolete_blank_before_colon_still_counts_as_from() -> None:
    # RFC 5322 4.5.? obs-fields: "From :" is read as From by many mail readers.
    message = b"From : admin@localhost\r\nSubject: x\r\n\r\nbody\r\n"
    assert from_header_addresses(message) == ["admin@localhost"]


def test_huge_from_field_fails_closed_unparsed() -> None:
    # 100,000 authors: refused as a whole before the (super-linear) stdlib parser.
    addresses = ",\r\n ".join(f"a{i}@example.org" for i in range(100_000))
    message = f"From: {addresses}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    assert from_header_addresses(message) == [UNPARSEABLE_FROM]
    small = "From: " + ", ".join(f"a{i}@example.org" for i in range(50)) + "\r\n\r\nb\r\n"
    assert len(from_header_addresses(small.encode())) == 50
