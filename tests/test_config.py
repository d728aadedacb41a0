"""Tests for postgate.config: parsing, errors with key and line, rendering, docs drift."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from pathlib import Path
from types import MappingProxyType

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from postgate.config import (
    AuthConfig,
    Config,
    ConfigError,
    DeliveryConfig,
    DkimConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerRole,
    LogConfig,
    MailauthConfig,
    QueueConfig,
    RoutingConfig,
    TlsConfig,
    default_config_text,
    effective_config_lines,
    load_config,
    parse_config,
    validate_files,
)
from postgate.config import values as v
from postgate.config.model import SECTIONS, key_spec
from postgate.config.render import rendered_value

ROOT = Path(__file__).resolve().parent.parent
ENV = v.ValueEnv(base_dir=Path("/etc/postgate"), data_dir=Path("/srv/pg"))

# Sections in file order; values are raw TOML literals so each test can swap one in.
BASE: dict[str, dict[str, str]] = {
    "server": {"hostname": '"mail.example.com"', "data_dir": '"/srv/pg"'},
    "tls": {"cert_file": '"/c.pem"', "key_file": '"/k.pem"'},
    "routing": {"local_domains": '["example.com"]'},
}


def config_text(extra: dict[str, dict[str, str]] | None = None, tail: str = "") -> str:
    sections = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in (extra or {}).items():
        sections.setdefault(name, {}).update(keys)
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out += [f"{key} = {value}" for key, value in keys.items()]
        out.append("")
    return "\n".join(out) + tail


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line starting with ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    return hits[occurrence - 1]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="t.toml", base_dir=Path("/etc/postgate"))
    return str(caught.value).splitlines()


def parse(text: str) -> Config:
    return parse_config(text, source="t.toml", base_dir=Path("/etc/postgate"))


# --- good files -----------------------------------------------------------------


def test_minimal_file_gets_safe_defaults() -> None:
    config = parse(config_text())
    assert config.hostname == "mail.example.com"
    assert [(lc.name, lc.role, lc.address, lc.port) for lc in config.listeners] == [
        ("mx", ListenerRole.MX, "0.0.0.0", 25),
        ("submission", ListenerRole.SUBMISSION, "0.0.0.0", 587),
        ("submissions", ListenerRole.SUBMISSIONS, "0.0.0.0", 465),
    ]
    assert config.tls == TlsConfig(Path("/c.pem"), Path("/k.pem"), "1.2")
    assert config.routing.trusted_networks == ()  # no open relay
    assert "CRAM-MD5" not in config.auth.mechanisms
    assert config.limits == LimitsConfig()
    assert config.queue.path == Path("/srv/pg/queue.db")
    assert config.queue.retry_schedule == (300, 600, 1200, 2400, 4000)
    assert config.delivery.maildir_root == Path("/srv/pg/mail")
    assert config.auth.user_db == Path("/srv/pg/users.db")
    assert config.source is None


def test_default_config_text_parses_to_the_intended_values(tmp_path: Path) -> None:
    text = default_config_text(
        hostname="Mail.Example.COM",
        data_dir=Path("/var/lib/pg"),
        local_domains=["example.com", "Bücher.example"],
        ports=(2525, 2587, 2465),
        cert_file=Path("/etc/le/fullchain.pem"),
        key_file=Path("/etc/le/privkey.pem"),
    )
    (tmp_path / "postgate.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "postgate.toml")
    roles = (ListenerRole.MX, ListenerRole.SUBMISSION, ListenerRole.SUBMISSIONS)
    assert config == Config(
        hostname="mail.example.com",
        data_dir=Path("/var/lib/pg"),
        listeners=tuple(
            ListenerConfig(r.value, r, "0.0.0.0", p)
            for r, p in zip(roles, (2525, 2587, 2465), strict=True)
        ),
        tls=TlsConfig(Path("/etc/le/fullchain.pem"), Path("/etc/le/privkey.pem")),
        limits=LimitsConfig(),
        routing=RoutingConfig(local_domains=("example.com", "xn--bcher-kva.example")),
        queue=QueueConfig(path=Path("/var/lib/pg/queue.db")),
        delivery=DeliveryConfig(maildir_root=Path("/var/lib/pg/mail")),
        auth=AuthConfig(
            user_db=Path("/var/lib/pg/users.db"), lockout_db=Path("/var/lib/pg/counters.db")
        ),
        log=LogConfig(),
        source=tmp_path / "postgate.toml",
        dkim=DkimConfig(key_dir=Path("/var/lib/pg/dkim")),
        mailauth=MailauthConfig(),
    )
    # Every key is present in the starter file, set or commented out.
    for section in SECTIONS:
        for f in dataclasses.fields(section.keys):
            assert re.search(rf"^(# )?{f.name} = ", text, re.M), f"{section.name}.{f.name}"


def test_default_config_text_rejects_a_bad_hostname() -> None:
    with pytest.raises(ConfigError, match=r"server\.hostname"):
        default_config_text(
            hostname="not a host",
            data_dir=Path("/d"),
            local_domains=["example.com"],
            ports=(25, 587, 465),
            cert_file=Path("/c"),
            key_file=Path("/k"),
        )


EVERYTHING_SET = config_text(
    {
        "routing": {
            "alias_file": '"virtual"',
            "postmaster": '"admin@example.com"',
            "trusted_networks": '["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]',
            "catch_all": '{ "example.com" = "inbox@example.com" }',
        },
        "limits": {"max_message_size": '"10M"', "command_timeout": "2.5"},
        "queue": {"retry_schedule": '["1m", "1h30m"]', "delay_warning_after": "0"},
        "delivery": {"relay_host": '"[smtp.example.net]:587"', "dns_servers": '["::1"]'},
        "auth": {"mechanisms": '["scram-sha-256", "PLAIN"]'},
        "log": {"level": '"DEBUG"', "format": '"text"', "file": '"/var/log/pg.log"'},
    },
    tail='[[listener]]\nrole = "mx"\naddress = "::"\nport = 25\nproxy_protocol = true\n',
)


def test_every_kind_of_value_is_parsed() -> None:
    config = parse(EVERYTHING_SET)
    assert config.listeners == (ListenerConfig("mx", ListenerRole.MX, "::", 25, True),)
    assert config.tls is not None
    routing = config.routing
    assert routing.alias_file == Path("/etc/postgate/virtual")  # relative to the file
    assert routing.catch_all == MappingProxyType({"example.com": "inbox@example.com"})
    assert routing.trusted_networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("198.51.100.7/32"),
    )
    assert config.limits.max_message_size == 10 * 1024 * 1024
    assert config.limits.command_timeout == 2.5
    assert config.queue.retry_schedule == (60.0, 5400.0)
    assert config.queue.delay_warning_after == 0
    assert config.delivery.dns_servers == ("::1",)
    assert config.auth.mechanisms == ("SCRAM-SHA-256", "PLAIN")
    assert config.log == LogConfig("debug", "text", Path("/var/log/pg.log"))


@pytest.mark.parametrize("text", [config_text(), EVERYTHING_SET], ids=["defaults", "all-set"])
def test_effective_config_lines_parse_back_to_the_same_config(text: str) -> None:
    config = parse(text)
    lines = effective_config_lines(config)
    assert parse("\n".join(lines)) == config
    assert 'command_timeout = "5m"' in lines or "command_timeout = 2.5" in lines


def test_effective_config_lines_name_every_key() -> None:
    lines = effective_config_lines(parse(config_text()))
    for section in SECTIONS:
        for f in dataclasses.fields(section.keys):
            assert any(re.match(rf"(# )?{f.name} = ", line) for line in lines), f.name


def test_mx_only_server_needs_no_tls() -> None:
    text = config_text(tail='[[listener]]\nrole = "mx"\n').replace(
        '[tls]\ncert_file = "/c.pem"\nkey_file = "/k.pem"\n', ""
    )
    config = parse(text)
    assert config.tls is None
    assert "# [tls] is not set" in effective_config_lines(config)


def test_ipv4_and_ipv6_wildcards_may_share_a_port() -> None:
    tail = '[[listener]]\nrole = "mx"\n[[listener]]\nname = "mx6"\nrole = "mx"\naddress = "::"\n'
    assert [lc.address for lc in parse(config_text(tail=tail)).listeners] == ["0.0.0.0", "::"]


def test_hostname_defaults_to_the_fqdn(monkeypatch: pytest.MonkeyPatch) -> None:
    text = config_text().replace('hostname = "mail.example.com"\n', "")
    monkeypatch.setattr("socket.getfqdn", lambda: "MX1.Example.Net")
    assert parse(text).hostname == "mx1.example.net"
    monkeypatch.setattr("socket.getfqdn", lambda: "container_7")
    [message] = problems(text)
    assert message.startswith("t.toml:1: server.hostname: not set, and this machine's name")


def test_deploy_example_loads() -> None:
    config = load_config(ROOT / "deploy" / "postgate.toml")
    assert config.hostname == "mail.example.com"
    assert sorted({lc.port for lc in config.listeners}) == [25, 465, 587]
    assert config.tls == TlsConfig(
        Path("/etc/letsencrypt/live/mail.example.com/fullchain.pem"),
        Path("/etc/letsencrypt/live/mail.example.com/privkey.pem"),
    )
    assert config.data_dir == Path("/var/lib/postgate")
    assert config.routing.alias_file == Path("/etc/postgate/virtual")
    assert config.routing.trusted_networks == ()


def test_deploy_unit_runs_unprivileged_with_only_bind_capability() -> None:
    unit = (ROOT / "deploy" / "postgate.service").read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"[A-Za-z]+=", line)
    )
    assert settings["User"] == "postgate"
    assert settings["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert settings["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/postgate"
    assert settings["ExecStart"].endswith("serve --config /etc/postgate/postgate.toml")


# --- bad files: every problem names the key and its line -----------------------

BAD_VALUES = [
    ("limits", "max_recipients", "-3", "must be a positive integer, got -3"),
    ("limits", "max_recipients", "true", "must be a positive integer, got true"),
    ("limits", "max_bad_commands", '"20"', 'must be a positive integer, got "20"'),
    ("limits", "max_message_size", '"35MB"', "must be a positive size"),
    ("limits", "max_message_size", '"lots"', "must be a positive size"),
    ("limits", "max_message_size", "0", "must be a positive size"),
    ("limits", "command_timeout", '"5x"', "must be a positive duration"),
    ("limits", "command_timeout", '"5 minutes"', "must be a positive duration"),
    ("limits", "data_timeout", "0", "must be a positive duration"),
    ("limits", "data_timeout", "-1", "must be a positive duration"),
    ("queue", "delay_warning_after", '"-1h"', "must be a zero or more duration"),
    ("queue", "retry_schedule", "[]", "must be a non-empty list of durations"),
    ("queue", "retry_schedule", '["5m", "soon"]', "item 2: must be a positive duration"),
    ("queue", "delivery_concurrency", "2.5", "must be a positive integer, got 2.5"),
    ("routing", "trusted_networks", '["10.0.0.1/8"]', "item 1: must be a network"),
    ("routing", "trusted_networks", '["lan"]', "item 1: must be a network"),
    ("routing", "trusted_networks", '"10.0.0.0/8"', "must be a list of networks"),
    ("routing", "local_domains", "[]", "at least one domain is needed to receive mail"),
    ("routing", "local_domains", '["exa mple.com"]', "item 1: must be a valid domain name"),
    ("routing", "local_domains", '["example"]', "must be a fully qualified domain name"),
    ("routing", "postmaster", '"admin"', "must be an address like user@example.com"),
    ("routing", "alias_file", '""', "must be a non-empty path string"),
    ("server", "hostname", '"mail_server!"', "must be a valid domain name"),
    ("server", "data_dir", "5", "must be a non-empty path string, got 5"),
    ("tls", "min_version", "1.2", 'must be "1.2" or "1.3", got 1.2 (quote it'),
    ("tls", "min_version", '"1.1"', 'must be "1.2" or "1.3", got "1.1"'),
    ("delivery", "relay_host", '"[smtp.example.net"', "must be"),
    ("delivery", "relay_host", '"smtp.example.net:99999"', "bad port"),
    ("delivery", "dns_servers", '["dns.google"]', "item 1: must be an IP address"),
    ("auth", "mechanisms", '["NTLM"]', "item 1: must be one of PLAIN, LOGIN"),
    ("log", "level", '"verbose"', 'must be one of "debug", "info", "warning", "error"'),
    ("log", "format", '"xml"', 'must be one of "json", "text", got "xml"'),
]


@pytest.mark.parametrize(("section", "key", "value", "reason"), BAD_VALUES)
def test_bad_value_names_key_and_line(section: str, key: str, value: str, reason: str) -> None:
    text = config_text({section: {key: value}})
    [message] = problems(text)
    prefix = f"t.toml:{line_of(text, f'{key} = {value}')}: {section}.{key}: "
    assert message.startswith(prefix), message
    assert reason in message


LISTENER_PROBLEMS = [
    ('role = "relay"\n', "listener.role", 'must be one of "mx", "submission", "submissions"'),
    ('role = "mx"\nport = 0\n', "listener.port", "must be a port number 1..65535, got 0"),
    ('role = "mx"\nport = 70000\n', "listener.port", "must be a port number 1..65535"),
    ('role = "mx"\naddress = "localhost"\n', "listener.address", "must be an IP address"),
    ('role = "mx"\nproxy_protocol = "yes"\n', "listener.proxy_protocol", "must be true or false"),
    ('role = "mx"\nname = ""\n', "listener.name", "must be a non-empty string"),
    ('role = "mx"\nprot = 25\n', "listener.prot", "unknown key; did you mean port?"),
]


@pytest.mark.parametrize(("body", "key", "reason"), LISTENER_PROBLEMS)
def test_bad_listener_points_at_the_right_array_table(body: str, key: str, reason: str) -> None:
    # The bad value sits in the second [[listener]]; the first has the same keys'
    # names, so a line finder that ignored the index would point at the wrong one.
    tail = f'[[listener]]\nname = "first"\nrole = "mx"\nport = 2525\n\n[[listener]]\n{body}'
    text = config_text(tail=tail)
    [message] = problems(text)
    bad_line = body.splitlines()[-1]
    expected = line_of(text, bad_line, occurrence=text.count(f"\n{bad_line}\n"))
    assert message == f"t.toml:{expected}: {key}: {reason}" or message.startswith(
        f"t.toml:{expected}: {key}: {reason}"
    )


def test_duplicate_port_on_same_address_is_an_error() -> None:
    tail = '[[listener]]\nrole = "mx"\n\n[[listener]]\nname = "other"\nrole = "mx"\nport = 25\n'
    text = config_text(tail=tail)
    assert problems(text) == [
        f"t.toml:{line_of(text, 'port = 25')}: listener.port: port 25 on 0.0.0.0 is already "
        "used by listener 'mx' on 0.0.0.0"
    ]


def test_specific_address_collides_with_wildcard_of_its_family() -> None:
    tail = (
        '[[listener]]\nrole = "mx"\naddress = "127.0.0.1"\n\n'
        '[[listener]]\nname = "all"\nrole = "mx"\n'
    )
    text = config_text(tail=tail)
    [message] = problems(text)
    assert message.startswith(f"t.toml:{line_of(text, '[[listener]]', 2)}: listener.port: ")


def test_duplicate_listener_name_is_an_error() -> None:
    tail = '[[listener]]\nrole = "mx"\n\n[[listener]]\nname = "mx"\nrole = "mx"\nport = 2525\n'
    text = config_text(tail=tail)
    assert problems(text) == [
        f"t.toml:{line_of(text, 'name = ')}: listener.name: 'mx' is already the name of the "
        "listener on port 25"
    ]


def test_listener_written_as_a_plain_table_is_an_error() -> None:
    text = config_text(tail='[listener]\nrole = "mx"\n')
    assert problems(text) == [
        f"t.toml:{line_of(text, '[listener]')}: listener: must be tables written as [[listener]]"
    ]


def test_submission_without_tls_is_an_error() -> None:
    text = config_text(tail='[[listener]]\nrole = "submission"\n').replace(
        '[tls]\ncert_file = "/c.pem"\nkey_file = "/k.pem"\n', ""
    )
    [message] = problems(text)
    assert message.startswith(f"t.toml:{line_of(text, 'role = ')}: listener.role: ")
    assert "needs TLS" in message


def test_tls_section_needs_both_files() -> None:
    text = config_text().replace('key_file = "/k.pem"\n', "")
    assert problems(text) == [
        f"t.toml:{line_of(text, '[tls]')}: tls.key_file: required but not set"
    ]


def test_missing_local_domains_is_an_error_without_a_line() -> None:
    text = config_text().replace('[routing]\nlocal_domains = ["example.com"]\n', "")
    assert problems(text) == ["t.toml: routing.local_domains: required but not set"]


def test_unknown_key_and_section_are_errors_with_suggestions() -> None:
    text = config_text({"limits": {"max_recipent": "5"}}, tail="[limit]\nx = 1\n")
    assert problems(text) == [
        f"t.toml:{line_of(text, 'max_recipent')}: limits.max_recipent: unknown key; "
        "did you mean max_recipients?",
        f"t.toml:{line_of(text, '[limit]')}: limit: unknown section; did you mean limits?",
    ]


def test_key_outside_its_section_says_where_it_belongs() -> None:
    text = 'hostname = "mail.example.com"\n' + config_text()
    assert problems(text) == [
        "t.toml:1: hostname: unknown section; did you mean server.hostname (under [server])?"
    ]


def test_catch_all_entry_errors_point_at_the_entry() -> None:
    text = config_text(
        tail='[routing.catch_all]\n"example.com" = "ok@example.com"\n"other.org" = "x@other.org"\n'
    )
    line = line_of(text, '"other.org"')
    assert problems(text) == [
        f't.toml:{line}: routing.catch_all."other.org": other.org '
        "is not in routing.local_domains, so no mail for it arrives here"
    ]
    text = config_text({"routing": {'catch_all."example.com"': '"nobody"'}})
    [message] = problems(text)
    assert message.startswith(f"t.toml:{line_of(text, 'catch_all.')}: routing.catch_all.")


def test_auth_mechanisms_cannot_be_empty_with_submission() -> None:
    text = config_text({"auth": {"mechanisms": "[]"}})
    assert problems(text) == [
        f"t.toml:{line_of(text, 'mechanisms')}: auth.mechanisms: must not be empty while a "
        "submission listener requires AUTH"
    ]


def test_all_problems_are_reported_in_line_order() -> None:
    text = config_text({"log": {"level": '"loud"'}, "limits": {"max_recipients": "0"}})
    level, recipients = line_of(text, "level = "), line_of(text, "max_recipients = ")
    assert level < recipients  # [log] was written first
    assert [m.split(": ")[0:2] for m in problems(text)] == [
        [f"t.toml:{level}", "log.level"],
        [f"t.toml:{recipients}", "limits.max_recipients"],
    ]


def test_toml_syntax_error_reports_tomllib_message_and_line() -> None:
    text = config_text() + "\n[limits]\nmax_recipients = = 3\n"
    [message] = problems(text)
    assert message.startswith(f"t.toml:{line_of(text, 'max_recipients')}: invalid TOML: ")
    assert "(at line" in message


def test_load_config_names_the_file_and_resolves_relative_paths(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}: No such file"):
        load_config(missing)
    (tmp_path / "pg.toml").write_text(config_text({"server": {"data_dir": '"data"'}}))
    config = load_config(tmp_path / "pg.toml")
    assert config.data_dir == tmp_path / "data"
    assert config.queue.path == tmp_path / "data" / "queue.db"
    assert config.source == tmp_path / "pg.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text(config_text({"limits": {"max_recipients": "-3"}}))
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert str(caught.value).startswith(f"{bad}:")
    assert caught.value.problems[0].key == "limits.max_recipients"


def test_config_is_frozen() -> None:
    config = parse(config_text())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hostname = "other"  # type: ignore[misc]


# --- values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1000, 1000), ("35M", 36_700_160), ("35MiB", 36_700_160), ("512k", 524_288), ("1G", 2**30)],
)
def test_size_units(raw: object, expected: int) -> None:
    assert v.size(raw, ENV) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(300, 300.0), (2.5, 2.5), ("90", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("5d", 432000.0)],
)
def test_duration_units(raw: object, expected: float) -> None:
    assert v.duration(raw, ENV) == expected


@given(st.integers(min_value=1, max_value=10**9))
def test_formatted_durations_parse_back(seconds: int) -> None:
    assert v.duration(v.format_duration(float(seconds)), ENV) == seconds


@given(st.integers(min_value=1, max_value=2**40))
def test_formatted_sizes_parse_back(size: int) -> None:
    assert v.size(v.format_size(size), ENV) == size


def test_domains_are_idna_encoded_and_deduplicated() -> None:
    raw = ["Bücher.Example", "xn--bcher-kva.example.", "EXAMPLE.com"]
    assert v.domain_list(raw, ENV) == ("xn--bcher-kva.example", "example.com")


# --- files ---------------------------------------------------------------------------


def test_validate_files_reports_missing_files(tmp_path: Path) -> None:
    text = config_text({"server": {"data_dir": f'"{tmp_path / "nodir"}"'}})
    config = parse(text.replace('"/c.pem"', f'"{tmp_path}/c.pem"'))
    found = validate_files(config)
    assert f"tls.cert_file: {tmp_path}/c.pem: No such file or directory" in found
    assert "tls.key_file: /k.pem: No such file or directory" in found
    assert f"server.data_dir: {tmp_path}/nodir: No such file or directory" in found


def test_validate_files_accepts_a_working_setup_and_catches_a_wrong_key(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mail.example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "fullchain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    ca.issue_cert("other.example.com").private_key_pem.write_to_path(str(tmp_path / "other.pem"))
    (tmp_path / "virtual").write_text("postmaster@example.com admin@example.com\n")
    text = config_text(
        {
            "server": {"data_dir": '"data"'},
            "tls": {"cert_file": '"fullchain.pem"', "key_file": '"privkey.pem"'},
            "routing": {"alias_file": '"virtual"'},
        }
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "pg.toml").write_text(text)
    assert validate_files(load_config(tmp_path / "pg.toml")) == []
    (tmp_path / "pg.toml").write_text(text.replace('"privkey.pem"', '"other.pem"'))
    [problem] = validate_files(load_config(tmp_path / "pg.toml"))
    assert problem.startswith(f"tls.cert_file: {tmp_path}/fullchain.pem: cannot load with ")


# --- docs/configuration.md cannot drift from the definitions -----------------------

_DOC_SECTION = re.compile(r"^## \[\[?([a-z_]+)\]\]?\s*$")
_DOC_KEY = re.compile(r"^- `([a-z_]+)` \((.*)\) — ")


def documented_keys() -> dict[str, str]:
    """{"limits.max_recipients": "`100`", ...} from docs/configuration.md."""
    keys: dict[str, str] = {}
    section = None
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        if m := _DOC_SECTION.match(line):
            section = m.group(1)
        elif (m := _DOC_KEY.match(line)) and section is not None:
            keys[f"{section}.{m.group(1)}"] = m.group(2)
    return keys


def expected_doc_default(section_name: str, f: dataclasses.Field[object]) -> str:
    spec = key_spec(f)
    if spec.default_doc is not None:
        return str(spec.default_doc)
    default: object = f.default
    if default is dataclasses.MISSING:
        if f.default_factory is dataclasses.MISSING:
            return "required"
        default = f.default_factory()
    if default is None:
        return "not set"
    section = next(s for s in SECTIONS if s.name == section_name)
    return f"`{rendered_value(section, f.name, default)}`"


def test_docs_list_exactly_the_keys_with_their_defaults() -> None:
    documented = documented_keys()
    defined = {
        f"{s.name}.{f.name}": expected_doc_default(s.name, f)
        for s in SECTIONS
        for f in dataclasses.fields(s.keys)
    }
    assert sorted(documented) == sorted(defined)
    assert documented == defined


def test_every_config_field_is_a_section_or_a_server_key() -> None:
    section_names = {s.name for s in SECTIONS}
    server_keys = {f.name for f in dataclasses.fields(SECTIONS[0].keys)}
    for f in dataclasses.fields(Config):
        name = "listener" if f.name == "listeners" else f.name
        assert name in section_names | server_keys | {"source"}, f.name


def test_docs_examples_parse_in_a_full_file() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) == len(SECTIONS)
    for block in blocks:
        given_sections = set(tomllib.loads(block))
        rest = "\n".join(
            f"[{name}]\n" + "\n".join(f"{k} = {val}" for k, val in keys.items())
            for name, keys in BASE.items()
            if name not in given_sections
        )
        parse(block + "\n" + rest)


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0"])
def test_trusting_the_whole_internet_is_refused(tmp_path: Path, network: str) -> None:
    path = tmp_path / "postgate.toml"
    path.write_text(
        '[server]\nhostname = "mail.example.com"\n\n[routing]\nlocal_domains = ["example.com"]\n'
        f'trusted_networks = ["{network}"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as failure:
        load_config(path)
    assert "routing.trusted_networks" in str(failure.value)
    assert "open relay" in str(failure.value)
