"""Pure parts of the audit: leak patterns, refusal classification, output formats."""

from __future__ import annotations

import argparse
import json

import pytest

from postgate.audit import AuditReport, AuditTarget, CheckResult, Status, TlsMode
from postgate.audit.leaks import find_leaks
from postgate.audit.relay import PROBES, classify_refusal
from postgate.audit.report import format_table, report_json
from postgate.audit.smuggling import SMUGGLING_VARIANTS, probe_message
from postgate.audit.tls_versions import parse_s_client
from postgate.audit.wire import Reply, visible
from postgate.cli import audit_cmd
from postgate.cli.common import CliError


@pytest.mark.parametrize(
    ("text", "status", "what"),
    [
        ("mx.example.org ESMTP Postfix 3.7.11", Status.FAIL, "Postfix version"),
        ("mx ESMTP Exim 4.96 Mon, 01 Dec 2026 10:00:00 +0000", Status.FAIL, "Exim version"),
        ("mx ESMTP Sendmail 8.15.2/8.15.2; Mon, 1 Dec 2026", Status.FAIL, "Sendmail version"),
        ("mx.example.org ESMTP postgate 0.1.0 ready", Status.FAIL, "postgate version"),
        ("Microsoft ESMTP MAIL Service, Version: 10.0.17763.1", Status.FAIL, "Microsoft version"),
        ("mx ESMTP OpenSMTPD/7.4", Status.FAIL, "software version"),
        ("mx ESMTP MyMailer 2.3.4", Status.FAIL, "version number"),
        ("mx ESMTP Postfix (Debian/GNU)", Status.WARN, "software name"),
        ("mx ESMTP Haraka", Status.WARN, "software name"),
    ],
)
def test_leaks_found(text: str, status: Status, what: str) -> None:
    leaks = find_leaks(text)
    assert leaks, text
    assert leaks[0].status is status
    assert leaks[0].what == what


@pytest.mark.parametrize(
    "text",
    [
        "mx.example.test ESMTP ready",
        "mx.example.test Hello client.example [192.0.2.10]",  # an IPv4 address is no version
        "SIZE 36700160",
        "See RFC 5321",
        "mx1.example.org Hello [IPv6:2001:db8::1]",
    ],
)
def test_no_leak_in_clean_text(text: str) -> None:
    assert find_leaks(text) == ()


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(554, ("5.7.1 <u@x.example>: Relay access denied",)), Status.PASS),
        (Reply(454, ("4.7.1 <u@x.example>: Relay access denied",)), Status.PASS),
        (Reply(550, ("5.1.1 <u@relay-test.example>: User unknown",)), Status.PASS),
        (Reply(501, ("5.1.3 Bad address syntax",)), Status.PASS),
        (Reply(450, ("4.1.2 <u@x.example>: Host or domain name not found",)), Status.WARN),
        (Reply(550, ("5.4.4 <u@x.example>: no route",)), Status.WARN),
        (Reply(451, ("4.7.1 greylisted, try later",)), Status.WARN),
        (Reply(550, ("5.7.0 policy says no",)), Status.PASS),
        (Reply(451, ("4.3.0 try again later",)), Status.WARN),
    ],
)
def test_refusal_classification(reply: Reply, status: Status) -> None:
    assert classify_refusal(reply)[0] is status


def test_probe_names_are_unique_and_use_reserved_domains() -> None:
    target = AuditTarget("h", 25, local_domain="local.test")
    names = [probe.name for probe in PROBES]
    assert len(names) == len(set(names))
    for probe in PROBES:
        recipient = probe.render(probe.recipient, target, "u")
        assert "relay-test.example" in recipient or "[" in recipient or "local.test" in recipient


def test_smuggling_message_has_one_real_end_of_data() -> None:
    target = AuditTarget("h", 25, local_domain="local.test")
    for variant, sequence in SMUGGLING_VARIANTS:
        payload = probe_message(target, variant, sequence)
        assert payload.replace(sequence, b" ", 1).count(b"\r\n.\r\n") == 1
        assert payload.endswith(b"\r\n.\r\n")
        assert sequence in payload
        assert b"To: <postmaster@local.test>" in payload


def test_s_client_output_parsed() -> None:
    done = parse_s_client("New, TLSv1, Cipher is ECDHE-RSA-AES256-SHA\n    Protocol  : TLSv1\n")
    assert done.completed and done.version == "TLSv1"
    refused = parse_s_client("error:0A00042E:SSL routines::tlsv1 alert protocol version")
    assert not refused.completed and refused.hello_sent
    unusable = parse_s_client("error:0A0000BF:SSL routines::no protocols available")
    assert not unusable.hello_sent


def test_visible_shows_line_ends() -> None:
    assert visible(b"a\r\n.\n\x00") == "a\\r\\n.\\n\x00"


def report() -> AuditReport:
    target = AuditTarget("127.0.0.1", 2525, TlsMode.STARTTLS, local_domain="example.test")
    return AuditReport(
        target,
        (
            CheckResult(
                "relay/plain", Status.FAIL, "OPEN RELAY", ("C: RCPT TO:<u@x>", "S: 250 Ok")
            ),
            CheckResult("leak/banner", Status.WARN, "software name"),
            CheckResult("tls/modern", Status.PASS, "TLSv1.3"),
            CheckResult("auth/lockout", Status.SKIP, "no --auth-user"),
        ),
    )


def test_table_lists_every_check_with_evidence_and_totals() -> None:
    table = format_table(report())
    lines = table.splitlines()
    assert lines[0] == "postgate audit 127.0.0.1:2525 (starttls)"
    assert any(line.startswith("FAIL  relay/plain") and "OPEN RELAY" in line for line in lines)
    assert "      C: RCPT TO:<u@x>" in lines
    assert "4 checks: 1 fail, 1 warn, 1 pass, 1 skip" in lines
    assert lines[-1] == "audit FAILED"
    assert "C: RCPT" not in format_table(report(), evidence=False)


def test_json_report_and_exit_codes() -> None:
    data = report_json(report())
    assert json.loads(json.dumps(data)) == data
    assert data["exit_code"] == 1
    assert data["counts"] == {"fail": 1, "warn": 1, "pass": 1, "skip": 1}
    results = data["results"]
    assert isinstance(results, list)
    assert results[0] == {
        "name": "relay/plain",
        "status": "fail",
        "summary": "OPEN RELAY",
        "evidence": ["C: RCPT TO:<u@x>", "S: 250 Ok"],
    }
    warn_only = AuditReport(report().target, report().results[1:])
    assert warn_only.exit_code == 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    audit_cmd.register(parser.add_subparsers())
    return parser.parse_args(["audit", *argv])


def test_cli_builds_the_target() -> None:
    args = parse(
        ["[::1]:587", "--starttls", "--local-user", "pm@ex.test", "--auth-user", "a@ex.test",
         "--auth-password", "pw", "--timeout", "2"]
    )  # fmt: skip
    target = audit_cmd.build_target(args)
    assert (target.host, target.port, target.tls_mode) == ("::1", 587, TlsMode.STARTTLS)
    assert target.effective_local_domain == "ex.test"
    assert target.auth_password == "pw" and target.timeout == 2.0
    assert target.address == "[::1]:587"


@pytest.mark.parametrize("bad", ["mx.example.org", "mx:0", "mx:http", ":25", "[::1]"])
def test_cli_refuses_a_bad_target_with_exit_code_2(bad: str) -> None:
    with pytest.raises(CliError) as caught:
        audit_cmd.build_target(parse([bad]))
    assert caught.value.exit_code == 2


def test_cli_tls_modes_exclusive() -> None:
    with pytest.raises(SystemExit):
        parse(["h:25", "--tls", "--starttls"])
    assert audit_cmd.build_target(parse(["h:465", "--tls"])).tls_mode is TlsMode.IMPLICIT
