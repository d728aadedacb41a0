"""dkim.txt: splitting TXT values, tag lists, key-record comparison."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.dkim.txt import TxtRecord, key_record_matches, parse_tags, split_txt


@given(st.text(max_size=2000))
def test_split_txt_pieces_fit_and_join_back(value: str) -> None:
    pieces = split_txt(value)
    assert "".join(pieces) == value
    assert all(len(p.encode("utf-8")) <= 255 for p in pieces)


def test_zone_line_of_a_long_record_is_parenthesised_strings() -> None:
    record = TxtRecord("s1._domainkey.example.test", "v=DKIM1; k=rsa; p=" + "A" * 392)
    line = record.zone_line()
    assert line.startswith('s1._domainkey.example.test. IN TXT ( "v=DKIM1; k=rsa; p=AAA')
    assert line.endswith('" )')
    assert line.count('"') == 4  # two strings


def test_zone_line_escapes_quotes() -> None:
    assert TxtRecord("x.test", 'a"b').zone_line() == 'x.test. IN TXT "a\\"b"'


def test_parse_tags() -> None:
    assert parse_tags(" v=DKIM1; K=rsa ; p=AB CD;") == {"v": "DKIM1", "k": "rsa", "p": "AB CD"}
    with pytest.raises(ValueError, match="duplicate"):
        parse_tags("p=a; p=b")
    with pytest.raises(ValueError, match="malformed"):
        parse_tags("v=DKIM1; garbage")


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("v=DKIM1; k=ed25519; p=AAAA", True),
        ("k=ed25519; p=AA AA", True),  # white space inside p= is folding
        ("v=DKIM1; k=rsa; p=AAAA", False),  # wrong key type
        ("v=DKIM1; p=AAAA", False),  # k= defaults to rsa
        ("v=DKIM1; k=ed25519; p=", False),  # revoked
        ("v=DKIM1; k=ed25519; p=BBBB", False),
        ("v=DKIM2; k=ed25519; p=AAAA", False),
        ("not a tag list", False),
    ],
)
def test_key_record_matches(published: str, expected: bool) -> None:
    assert key_record_matches(published, "ed25519", "AAAA") is expected
