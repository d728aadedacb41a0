"""dnsrecords.spf: the SPF syntax checker (RFC 7208 12)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.dnsrecords.spf import SpfSyntaxError, SpfTerm, parse_spf


def test_parses_every_kind_of_term() -> None:
    terms = parse_spf(
        "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx:example.test/24//64 "
        "include:_spf.example.net ?exists:%{i}.bl.example ptr -all redirect=_spf.example.test "
        "exp=explain.example.test foo=bar"
    )
    assert terms[0] == SpfTerm("ip4", "+", "192.0.2.0", "/24")
    assert terms[3] == SpfTerm("mx", "+", "example.test", "/24//64")
    assert terms[5] == SpfTerm("exists", "?", "%{i}.bl.example", "")
    assert terms[7] == SpfTerm("all", "-", "", "")
    assert [t.name for t in terms if t.is_modifier] == ["redirect", "exp", "foo"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("v=spf2 -all", "v=spf1"),
        ("v=spf1 ip4:300.1.1.1 -all", "bad network"),
        ("v=spf1 ip4:2001:db8::1 -all", "IPv6 network"),
        ("v=spf1 ip6:192.0.2.1 -all", "IPv4 network"),
        ("v=spf1 include -all", "needs a value"),
        ("v=spf1 all:example.test", "takes no value"),
        ("v=spf1 mx/33 -all", "out of range"),
        ("v=spf1 bogus:example.test -all", "unknown term"),
        ("v=spf1 redirect=a.test redirect=b.test", "more than once"),
        ("v=spf1 include:example.test/24", "no prefix length"),
    ],
)
def test_rejects_bad_records(record: str, message: str) -> None:
    with pytest.raises(SpfSyntaxError, match=message):
        parse_spf(record)


@given(st.text(max_size=200))
def test_parser_never_fails_other_than_with_syntax_error(text: str) -> None:
    try:
        terms = parse_spf("v=spf1 " + text)
    except SpfSyntaxError as exc:
        assert str(exc)  # a reason an operator can act on
        return
    assert len(terms) == len([word for word in text.split(" ") if word])
