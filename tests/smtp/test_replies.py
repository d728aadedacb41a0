from __future__ import annotations

import pytest

from postgate.smtp import LocalProtocolError, Reply, build_ehlo_reply


def test_single_line_reply() -> None:
    assert Reply(250, "2.1.0", "Ok").to_bytes() == b"250 2.1.0 Ok\r\n"


def test_multi_line_reply_repeats_enhanced_code_on_every_line() -> None:
    reply = Reply(550, "5.7.1", ("Rejected", "see https://example.test"))
    assert reply.to_bytes() == b"550-5.7.1 Rejected\r\n550 5.7.1 see https://example.test\r\n"


def test_reply_without_enhanced_code() -> None:
    assert Reply(354, "", "Go ahead").to_bytes() == b"354 Go ahead\r\n"


def test_empty_auth_challenge_keeps_its_space() -> None:
    # RFC 4954 4: continue-req = "334" SP [base64] CRLF
    assert Reply(334, "", "").to_bytes() == b"334 \r\n"


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (199, "", "x"),
        (600, "", "x"),
        (250, "5.0.0", "class mismatch"),
        (250, "2.0", "short"),
        (250, "2.0.0", "line\r\nbreak"),
        (250, "2.0.0", ("ok", "bare\nLF")),
    ],
)
def test_invalid_replies_fail_at_construction(code: int, enhanced: str, text: str) -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code, enhanced, text)


def test_ehlo_reply_with_everything() -> None:
    reply = build_ehlo_reply(
        "mx.example.test",
        "ESMTP",
        max_size=36_700_160,
        starttls=True,
        auth_mechanisms=["plain", "LOGIN"],
    )
    assert reply.to_bytes() == (
        b"250-mx.example.test ESMTP\r\n"
        b"250-PIPELINING\r\n"
        b"250-SIZE 36700160\r\n"
        b"250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n"
        b"250-CHUNKING\r\n"
        b"250-DSN\r\n"
        b"250-STARTTLS\r\n"
        b"250 AUTH PLAIN LOGIN\r\n"
    )


def test_ehlo_reply_minimal() -> None:
    reply = build_ehlo_reply(
        "mx", "", max_size=0, starttls=False, auth_mechanisms=[], chunking=False
    )
    assert reply.to_bytes() == (
        b"250-mx\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n"
    )
