"""Authentication-Results building (RFC 8601) and removal of forged fields (RFC 8601 5)."""

from __future__ import annotations

import authres
from hypothesis import given
from hypothesis import strategies as st

from postgate.mailauth.authres import build_authentication_results
from postgate.mailauth.headers import (
    authserv_id_of,
    from_domains,
    header_mentions,
    remove_forged_authentication_results,
    split_header_fields,
)
from postgate.mailauth.results import (
    ArcResult,
    ArcStatus,
    DkimSignatureResult,
    DmarcPolicy,
    DmarcResult,
    DmarcStatus,
    SpfResult,
    SpfScope,
    SpfStatus,
)

SPF_PASS = SpfResult(SpfStatus.PASS, SpfScope.MAILFROM, "bob@example.com", "example.com")
DMARC_FAIL = DmarcResult(
    DmarcStatus.FAIL,
    "example.com",
    policy=DmarcPolicy.REJECT,
    published_policy=DmarcPolicy.REJECT,
    reason="no aligned pass",
)


def parse(header: bytes) -> authres.AuthenticationResultsHeader:
    """An independent RFC 8601 parser (authres) must accept what we write."""
    unfolded = header.decode("ascii").replace("\r\n\t", " ").strip()
    return authres.AuthenticationResultsHeader.parse(unfolded)


def test_full_header_parses_and_carries_each_result() -> None:
    header = build_authentication_results(
        "mx.example.org",
        SPF_PASS,
        [
            DkimSignatureResult("example.com", "s1", "rsa-sha256", "pass"),
            DkimSignatureResult("esp.test", "k2", "ed25519-sha256", "fail", "body hash mismatch"),
        ],
        DMARC_FAIL,
        ArcResult(ArcStatus.NONE),
        helo_spf=SpfResult(SpfStatus.NONE, SpfScope.HELO, "postmaster@mail.test", "mail.test"),
    )
    assert header.startswith(b"Authentication-Results: mx.example.org;\r\n\t")
    assert header.endswith(b"\r\n") and b"\n\n" not in header
    parsed = parse(header)
    assert parsed.authserv_id == "mx.example.org"
    summary = [(r.method, r.result) for r in parsed.results]
    assert summary == [
        ("spf", "pass"),
        ("spf", "none"),
        ("dkim", "pass"),
        ("dkim", "fail"),
        ("dmarc", "fail"),
        ("arc", "none"),
    ]
    assert b"smtp.mailfrom=bob@example.com" in header
    assert b"smtp.helo=mail.test" in header
    assert b"header.d=example.com header.s=s1 header.a=rsa-sha256" in header
    assert b"header.d=esp.test header.s=k2 header.a=ed25519-sha256" in header
    assert b"header.from=example.com policy.dmarc=reject" in header


def test_unsigned_mail_is_dkim_none_never_fail() -> None:
    header = build_authentication_results("mx.example.org", SPF_PASS, [], None, None)
    assert b"dkim=none" in header
    assert b"dkim=fail" not in header


def test_no_checks_is_none() -> None:
    header = build_authentication_results("mx.example.org", None, None, None, None)
    assert header == b"Authentication-Results: mx.example.org; none\r\n"


def test_hostile_reason_and_address_are_escaped() -> None:
    spf = SpfResult(
        SpfStatus.FAIL,
        SpfScope.MAILFROM,
        'we ird"@example.com',
        "example.com",
        reason="evil) ; dkim=pass (\r\nX-Injected: yes \u00e9",
    )
    header = build_authentication_results("mx.example.org", spf, [], None, None)
    assert header.isascii()
    assert header.count(b"\r\n") == 3  # two folds and the end: no injected line
    parsed = parse(header)
    assert [(r.method, r.result) for r in parsed.results] == [("spf", "fail"), ("dkim", "none")]


# -- removal of forged fields ------------------------------------------------------

MESSAGE = (
    b"Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    b"Authentication-Results: MX.Example.ORG; spf=pass\r\n"
    b"  smtp.mailfrom=evil@example.com\r\n"
    b"Authentication-Results: other.example.net; dkim=pass header.d=x.test\r\n"
    b"authentication-results: (comment) mx.example.org;\r\n"
    b"\tdmarc=pass\r\n"
    b'Authentication-Results: "mx.example.org"; arc=pass\r\n'
    b"ARC-Authentication-Results: i=1; mx.example.org; spf=pass\r\n"
    b"Authentication-Results: mx.example.org.evil.test; spf=pass\r\n"
    b"Subject: Authentication-Results: mx.example.org\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.org; body line stays\r\n"
)


def test_removes_only_fields_claiming_our_id() -> None:
    cleaned = remove_forged_authentication_results(MESSAGE, "mx.example.org")
    assert cleaned == (
        b"Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n"
        b"Authentication-Results: other.example.net; dkim=pass header.d=x.test\r\n"
        b"ARC-Authentication-Results: i=1; mx.example.org; spf=pass\r\n"
        b"Authentication-Results: mx.example.org.evil.test; spf=pass\r\n"
        b"Subject: Authentication-Results: mx.example.org\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; body line stays\r\n"
    )


def test_message_without_forgeries_is_returned_unchanged() -> None:
    message = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert remove_forged_authentication_results(message, "mx.example.org") is message


def test_lf_only_message_and_no_body() -> None:
    message = b"Authentication-Results: mx.example.org; spf=pass\nFrom: a@b.test\n"
    assert remove_forged_authentication_results(message, "mx.example.org") == b"From: a@b.test\n"


def test_authserv_id_of_version_and_comment() -> None:
    assert authserv_id_of(b"Authentication-Results: (c (nested)) mx.test 1; none") == "mx.test"


header_line = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(lambda s: s.encode())


@given(st.lists(header_line, max_size=8), st.binary(max_size=60))
def test_split_then_join_is_identity(lines: list[bytes], body: bytes) -> None:
    message = b"".join(line + b"\r\n" for line in lines if line.strip()) + b"\r\n" + body
    fields, offset = split_header_fields(message)
    assert b"".join(raw for _, raw in fields) + b"\r\n" + message[offset:] == message


def test_header_mentions_looks_at_the_header_section_only() -> None:
    signed = b"Subject: s\r\nDKIM-Signature: v=1; d=example.com\r\n\r\nbody\r\n"
    quoted = b"Subject: s\r\n\r\nDKIM-Signature: in the body does not count\r\n"
    folded = b"Subject: s\r\nX-Note: see\r\n  ARC-Seal here\r\n\r\nbody\r\n"
    assert header_mentions(signed, b"dkim-signature")
    assert not header_mentions(quoted, b"dkim-signature")
    assert header_mentions(folded, b"arc-")  # conservative: anywhere in the header
    assert not header_mentions(b"Subject: s\n\nARC-Seal: i=1\n", b"arc-")


def test_from_domains() -> None:
    message = (
        b'From: "Bob (x) <bob@fake.test>" <bob@Example.COM>, carol@sub.example.org\r\n'
        b"From: (comment) dave@second.test\r\n\r\n"
    )
    assert from_domains(message) == [["example.com", "sub.example.org"], ["second.test"]]


def test_forged_results_with_an_absolute_name_are_removed_too() -> None:
    message = (
        b"Authentication-Results: mx.example.org.; dkim=pass (forged)\r\nSubject: s\r\n\r\nbody\r\n"
    )
    assert remove_forged_authentication_results(message, "mx.example.org") == (
        b"Subject: s\r\n\r\nbody\r\n"
    )
