"""The address resolver: alias files, RCPT checks, expansion and destinations."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postgate.routing import (
    AliasTable,
    LocalMailbox,
    RecipientCheck,
    RemoteAddress,
    Router,
    RoutingError,
    load_alias_file,
    parse_aliases,
)

ALIASES = """\
# Postfix virtual(5) syntax
sales@example.org    ann@example.org, Carl@Partner.TEST

team@example.org     sales@example.org
   ann@example.org,bob@example.org
loop-a@example.org   loop-b@example.org
loop-b@example.org   loop-a@example.org
self@example.org     self@example.org carl@partner.test
@second.test         ann@example.org
Info@Bücher.example  bob@example.org
    # a comment inside an entry does not end it
    dora@example.org
"""

MAILBOXES = frozenset(
    {"ann@example.org", "bob@example.org", "dora@example.org", "odd%local@example.org"}
)


def make_router(
    *,
    aliases: str = ALIASES,
    catch_all: Mapping[str, str] | None = None,
    postmaster: str | None = None,
    local_domains: tuple[str, ...] = ("example.org", "Second.TEST", "bücher.example"),
    max_depth: int = 20,
    max_expansion: int = 1000,
) -> Router:
    return Router(
        local_domains=local_domains,
        aliases=parse_aliases(aliases, "aliases"),
        catch_all=catch_all or {},
        postmaster=postmaster,
        mailbox_exists=MAILBOXES.__contains__,
        max_depth=max_depth,
        max_expansion=max_expansion,
    )


# --- alias files -------------------------------------------------------------------------------


def test_alias_file_syntax() -> None:
    table = parse_aliases(ALIASES)
    assert table.entries["sales@example.org"] == ("ann@example.org", "Carl@partner.test")
    assert table.entries["team@example.org"] == (
        "sales@example.org",
        "ann@example.org",
        "bob@example.org",
    )
    assert table.entries["@second.test"] == ("ann@example.org",)
    assert table.entries["info@xn--bcher-kva.example"] == ("bob@example.org", "dora@example.org")
    assert len(table.entries) == 7


def test_hash_inside_a_line_is_data() -> None:
    table = parse_aliases("a#b@example.org  x@example.org#1\n")
    assert table.entries == {"a#b@example.org": ("x@example.org#1",)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  x@example.org\n", "aliases:1: continuation line without an entry"),
        ("# c\n\nx@example.org\n", "aliases:3: 'x@example.org' has no targets"),
        ("x@example.org a@example.org\nX@Example.org b@example.org\n", "duplicate key"),
        ("nodomain a@example.org\n", "aliases:1: bad key 'nodomain'"),
        ("x@ a@example.org\n", "aliases:1: bad key 'x@'"),
        ("x@example.org a@example.org, b@\n", "aliases:1: bad target 'b@'"),
        ("x@example.org plainlocal\n", "aliases:1: bad target 'plainlocal'"),
        ("x@ex..ä a@example.org\n", "aliases:1: bad key"),
        ("a@example.org b@example.org\n\n\n  c@\n", "aliases:1: bad target 'c@'"),
    ],
)
def test_bad_alias_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RoutingError, match=message.replace("(", r"\(")):
        parse_aliases(text, "aliases")


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(RoutingError) as raised:
        parse_aliases("x@example.org a@example.org\n#\nX@Example.org b@example.org\n", "f")
    assert str(raised.value) == "f:3: duplicate key 'X@Example.org' (first at line 1)"


def test_load_alias_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "virtual"
    path.write_text("ok@example.org a@example.org\nbroken@example.org\n", encoding="utf-8")
    with pytest.raises(RoutingError, match=f"^{path}:2: "):
        load_alias_file(path)
    path.write_text("ok@example.org a@example.org\n", encoding="utf-8")
    assert load_alias_file(path).entries == {"ok@example.org": ("a@example.org",)}
    with pytest.raises(RoutingError, match="cannot read alias file"):
        load_alias_file(tmp_path / "missing")


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aliases", "catch_all", "postmaster", "message"),
    [
        ("x@remote.test a@example.org\n", {}, None, "not at a local domain"),
        ("@remote.test a@example.org\n", {}, None, "not at a local domain"),
        ("", {"remote.test": "a@example.org"}, None, "not a local domain"),
        ("", {"example.org": "nodomain"}, None, "invalid address"),
        ("", {}, "postmaster", "invalid address"),
        ("", {}, "admin@", "invalid address"),
    ],
)
def test_bad_configuration_is_refused(
    aliases: str, catch_all: dict[str, str], postmaster: str | None, message: str
) -> None:
    with pytest.raises(RoutingError, match=message):
        make_router(aliases=aliases, catch_all=catch_all, postmaster=postmaster)


def test_alias_table_built_by_hand_is_validated() -> None:
    with pytest.raises(RoutingError, match="invalid address"):
        Router(
            local_domains=["example.org"],
            aliases=AliasTable({"x@example.org": ("bare",)}),
            catch_all={},
            postmaster=None,
            mailbox_exists=lambda _address: False,
        )


# --- RCPT checks -------------------------------------------------------------------------------

A, U, R, B = (
    RecipientCheck.ACCEPT,
    RecipientCheck.UNKNOWN_USER,
    RecipientCheck.RELAY_DENIED,
    RecipientCheck.BAD_ADDRESS,
)


@pytest.mark.parametrize(
    ("address", "without_relay", "with_relay"),
    [
        ("ann@example.org", A, A),
        ("ANN@EXAMPLE.ORG", A, A),  # local parts at our domains are case-insensitive
        ('"ann"@example.org', A, A),  # RFC 5321 4.1.2: quoted form is the same local part
        ("nobody@example.org", U, U),  # authenticated clients do not make users exist
        ("sales@example.org", A, A),  # alias key
        ("loop-a@example.org", A, A),
        ("anyone@second.test", A, A),  # "@second.test" catch-all alias
        ("anyone@SECOND.test", A, A),
        ("info@BÜCHER.example", A, A),  # IDNA + case
        ("info@xn--bcher-kva.example", A, A),
        ("Postmaster@example.org", A, A),  # RFC 5321 4.5.1
        ("postmaster@bücher.example", A, A),
        ("POSTMASTER", A, A),  # RCPT TO:<Postmaster>
        ("postmaster", A, A),
        ("someone@remote.test", R, A),
        ("ann@example.org.remote.test", R, A),
        ("ann@example.org.", R, A),
        # Address tricks: literal local parts, never routes.
        ("user%remote.test@example.org", U, U),
        ("remote.test!user@example.org", U, U),
        ('"user@remote.test"@example.org', U, U),
        ('"user\\@remote.test"@example.org', U, U),
        ("odd%local@example.org", A, A),  # ... unless such a mailbox exists
        ("user@[192.0.2.1]", R, A),  # address literals are never local
        ("user@[IPv6:2001:db8::1]", R, A),
        ("user%example.org@remote.test", R, A),
        ("@relay.test:ann@example.org", A, A),  # source route ignored (RFC 5321 4.1.1.3)
        ("@example.org:someone@remote.test", R, A),
        # Malformed.
        ("nodomain", B, B),
        ("ann@", B, B),
        ("@example.org", B, B),
        ('""@example.org', B, B),
        ("a@ex..ä", B, B),
        ("a@[192.0.2.1", B, B),
    ],
)
def test_check_recipient(
    address: str, without_relay: RecipientCheck, with_relay: RecipientCheck
) -> None:
    router = make_router()
    assert router.check_recipient(address, relay_allowed=False) is without_relay
    assert router.check_recipient(address, relay_allowed=True) is with_relay


def test_config_catch_all_accepts_any_local_part() -> None:
    router = make_router(catch_all={"Example.ORG": "dora@example.org"})
    assert router.check_recipient("whoever@example.org", relay_allowed=False) is A
    assert router.check_recipient("user%remote.test@example.org", relay_allowed=False) is A
    assert router.expand("user%remote.test@example.org") == ("dora@example.org",)
    assert router.expand("whoever@example.org") == ("dora@example.org",)


def test_bare_postmaster_without_local_domains() -> None:
    relay_only = make_router(aliases="", local_domains=(), postmaster="admin@corp.test")
    assert relay_only.check_recipient("Postmaster", relay_allowed=False) is R
    assert relay_only.expand("postmaster") == ("admin@corp.test",)
    nothing = make_router(aliases="", local_domains=())
    assert nothing.check_recipient("postmaster", relay_allowed=True) is B


def test_verdicts_carry_replies() -> None:
    assert (U.code, U.enhanced, U.reason) == (550, "5.1.1", "no such user here")
    assert (R.code, R.enhanced) == (550, "5.7.1")
    assert (A.code, A.enhanced) == (250, "2.1.5")
    assert (B.code, B.enhanced) == (501, "5.1.3")


def test_is_local_domain() -> None:
    router = make_router()
    assert router.is_local_domain("EXAMPLE.org")
    assert router.is_local_domain("bücher.example")
    assert router.is_local_domain("xn--bcher-kva.example")
    assert not router.is_local_domain("[127.0.0.1]")
    assert not router.is_local_domain("remote.test")
    assert not router.is_local_domain("")
    assert not router.is_local_domain("ex..ä")


# --- expansion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expanded"),
    [
        ("ann@example.org", ("ann@example.org",)),
        ("Ann@Example.org", ("ann@example.org",)),
        ("nobody@example.org", ("nobody@example.org",)),  # unknown stays as is
        ("Sales@Example.org", ("ann@example.org", "Carl@partner.test")),
        # Recursive and de-duplicated: sales -> ann, Carl; then ann again; then bob.
        ("team@example.org", ("ann@example.org", "Carl@partner.test", "bob@example.org")),
        ("loop-a@example.org", ("loop-a@example.org",)),  # a -> b -> a ends at a
        ("loop-b@example.org", ("loop-b@example.org",)),
        ("self@example.org", ("self@example.org", "carl@partner.test")),  # keeps a copy
        ("x@second.test", ("ann@example.org",)),
        ("info@bücher.example", ("bob@example.org", "dora@example.org")),
        ("Carl@Partner.TEST", ("Carl@partner.test",)),  # remote local part kept as given
        ("postmaster@example.org", ("postmaster@example.org",)),
        ("postmaster@second.test", ("postmaster@example.org",)),  # postmaster before catch-all
        ("postmaster", ("postmaster@example.org",)),
    ],
)
def test_expand(address: str, expanded: tuple[str, ...]) -> None:
    assert make_router().expand(address) == expanded


def test_postmaster_routing_order() -> None:
    aliases = ALIASES + "postmaster@bücher.example dora@example.org\n"
    router = make_router(aliases=aliases, postmaster="Bob@Example.org")
    assert router.expand("POSTMASTER@bücher.example") == ("dora@example.org",)  # own alias
    assert router.expand("postmaster@example.org") == ("bob@example.org",)  # config
    assert router.expand("Postmaster") == ("bob@example.org",)
    remote_admin = make_router(postmaster="admin@corp.test")
    assert remote_admin.expand("postmaster@second.test") == ("admin@corp.test",)


def test_depth_limit() -> None:
    chain = "".join(f"hop{i}@example.org hop{i + 1}@example.org\n" for i in range(30))
    router = make_router(aliases=chain, max_depth=20)
    assert router.expand("hop15@example.org") == ("hop30@example.org",)
    with pytest.raises(RoutingError, match="exceeds depth 20"):
        router.expand("hop0@example.org")


def test_expansion_limit() -> None:
    wide = "list@example.org " + ", ".join(f"m{i}@remote.test" for i in range(5)) + "\n"
    router = make_router(aliases=wide, max_expansion=4)
    with pytest.raises(RoutingError, match="exceeds 4 addresses"):
        router.expand("list@example.org")
    assert len(make_router(aliases=wide).expand("list@example.org")) == 5


def test_expand_rejects_malformed() -> None:
    with pytest.raises(RoutingError):
        make_router().expand("nodomain")


# --- destinations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "destination"),
    [
        ("ann@example.org", LocalMailbox("ann@example.org")),
        ("ANN@Example.ORG", LocalMailbox("ann@example.org")),
        ("x@bücher.example", LocalMailbox("x@xn--bcher-kva.example")),
        ("Carl@Partner.TEST", RemoteAddress("Carl@partner.test", "partner.test")),
        ("jürgen@Bücher.TEST", RemoteAddress("jürgen@xn--bcher-kva.test", "xn--bcher-kva.test")),
        ("user%remote.test@example.org", LocalMailbox("user%remote.test@example.org")),
        ('"a@remote.test"@example.org', LocalMailbox("a@remote.test@example.org")),
        ('"A B"@remote.test', RemoteAddress('"A B"@remote.test', "remote.test")),
        ("x@[192.0.2.1]", RemoteAddress("x@[192.0.2.1]", "[192.0.2.1]")),
    ],
)
def test_destination(address: str, destination: LocalMailbox | RemoteAddress) -> None:
    assert make_router().destination(address) == destination


def test_destination_of_an_expanded_literal_stays_local() -> None:
    router = make_router()
    (expanded,) = router.expand('"a@remote.test"@example.org')
    assert router.destination(expanded) == LocalMailbox("a@remote.test@example.org")


def test_destination_rejects_malformed() -> None:
    with pytest.raises(RoutingError):
        make_router().destination("ann@")


# --- properties: no trick turns into relay -----------------------------------------------------


@given(st.text(max_size=40))
def test_nothing_at_a_local_domain_is_routed_remote(local: str) -> None:
    router = make_router(catch_all={"example.org": "dora@example.org"})
    address = f"{local}@example.org"
    try:
        destination = router.destination(address)
    except RoutingError:
        return
    assert isinstance(destination, LocalMailbox)
    assert all(
        isinstance(router.destination(final), LocalMailbox) for final in router.expand(address)
    )


@given(st.text(max_size=40))
def test_nothing_at_a_remote_domain_is_accepted_without_relay(local: str) -> None:
    router = make_router()
    verdict = router.check_recipient(f"{local}@remote.test", relay_allowed=False)
    assert verdict is not RecipientCheck.ACCEPT
