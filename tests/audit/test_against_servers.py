"""`postgate audit` against real servers on loopback: our own on its default
configuration (everything passes), and a private Postfix configured as an open relay
(relay checks fail, exit code 1) and correctly (relay checks pass)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgate.audit import AuditReport, AuditTarget, Status, TlsMode, run_audit
from postgate.cli import audit_cmd
from postgate.cli.common import CliError
from tests.conftest import ALICE, make_server
from tests.fixtures.postfix import PostfixInstance, free_port, postfix_binary_or_skip
from tests.server_process import ServerProcess

LOCAL = "local.test"


@pytest.fixture(scope="module")
def postgate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = make_server(tmp_path_factory.mktemp("audit") / "postgate")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    audit_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["audit", *argv])
    code = args.handler(args)
    return code, capsys.readouterr().out


def by_name(report: AuditReport) -> dict[str, Status]:
    return {result.name: result.status for result in report.results}


@pytest.mark.slow
def test_postgate_default_config_passes_everything(postgate: ServerProcess) -> None:
    target = AuditTarget(
        "127.0.0.1",
        postgate.ports["mx"],
        TlsMode.STARTTLS,
        local_domain="example.test",
        auth_user=ALICE[0],
        auth_password=ALICE[1],
        timeout=5.0,
    )
    report = run_audit(target)
    statuses = by_name(report)
    assert len(statuses) >= 45
    lockout = next(r for r in report.results if r.name == "auth/lockout")
    others = [r for r in report.results if r.name != "auth/lockout"]
    not_passed = [
        (r.name, r.status.value, r.summary) for r in others if r.status is not Status.PASS
    ]
    assert not_passed == []
    assert any(r.name.startswith("relay/percent") for r in others)
    # Every smuggling probe met a refusal of the whole message (bare LF/CR/NUL), so no
    # probe message reached the postmaster.
    smuggling = [r for r in others if r.name.startswith("smuggling/")]
    assert len(smuggling) == 7
    assert all(r.summary.startswith("message refused as a whole: 554") for r in smuggling)
    assert lockout.status is Status.PASS, lockout


@pytest.mark.slow
def test_postgate_implicit_tls_and_submission_via_cli(
    postgate: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    port = postgate.ports["submissions"]
    code, out = cli(
        [
            f"127.0.0.1:{port}",
            "--tls",
            "--local-domain",
            "example.test",
            "--json",
            "--timeout",
            "5",
        ],
        capsys,
    )
    data = json.loads(out)
    assert code == 0 == data["exit_code"]
    assert data["counts"]["fail"] == 0
    statuses = {r["name"]: r["status"] for r in data["results"]}
    assert statuses["tls/1.0"] == statuses["tls/1.1"] == statuses["tls/modern"] == "pass"
    assert statuses["tls/starttls-injection"] == "skip"  # no STARTTLS on an implicit port
    assert statuses["relay/plain"] == "pass"


def test_unreachable_server_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CliError) as caught:
        cli([f"127.0.0.1:{free_port()}", "--timeout", "2"], capsys)
    assert caught.value.exit_code == 2
    assert "cannot connect" in str(caught.value)


@pytest.fixture
def postfix_open_relay(tmp_path: Path) -> Iterator[PostfixInstance]:
    postfix_binary_or_skip()
    # The classic mistake: every client counts as "my network". Mail for unrouted
    # domains is discarded, so nothing could leave even if a probe sent DATA.
    extra = {"mynetworks": "0.0.0.0/0", "default_transport": "discard"}
    with PostfixInstance(tmp_path, main_cf_extra=extra, mailboxes=[f"postmaster@{LOCAL}"]) as pf:
        yield pf


@pytest.fixture
def postfix_closed(tmp_path: Path) -> Iterator[PostfixInstance]:
    postfix_binary_or_skip()
    # Loopback is NOT trusted, so the audit meets the relay check a stranger meets.
    extra = {"mynetworks": "127.0.0.2/32"}
    with PostfixInstance(tmp_path, main_cf_extra=extra, mailboxes=[f"postmaster@{LOCAL}"]) as pf:
        yield pf


@pytest.mark.postfix
def test_postfix_open_relay_fails(
    postfix_open_relay: PostfixInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    port = postfix_open_relay.port()
    code, out = cli(
        [f"127.0.0.1:{port}", "--starttls", "--local-domain", LOCAL, "--only", "relay/", "--json"],
        capsys,
    )
    assert code == 1
    statuses = {r["name"]: r["status"] for r in json.loads(out)["results"]}
    for name in ("relay/plain", "relay/upper-case", "relay/sender-null", "relay/helo-localhost",
                 "relay/literal-ipv4-foreign", "relay/source-route"):  # fmt: skip
        assert statuses[name] == "fail", name
    evidence = next(r for r in json.loads(out)["results"] if r["name"] == "relay/plain")["evidence"]
    assert any(line.startswith("S: 250") for line in evidence)
    assert not any(line.startswith("C: DATA") for line in evidence)  # never relays itself
    assert "C: RSET" in evidence


@pytest.mark.postfix
def test_postfix_correctly_configured_passes_relay_checks(postfix_closed: PostfixInstance) -> None:
    target = AuditTarget(
        "127.0.0.1", postfix_closed.port(), TlsMode.STARTTLS, local_domain=LOCAL, timeout=5.0
    )
    report = run_audit(target, only=("relay/",))
    not_passed = [(r.name, r.summary) for r in report.results if r.status is not Status.PASS]
    assert not_passed == []
    assert len(report.results) >= 30
    assert report.exit_code == 0


@pytest.mark.postfix
def test_postfix_default_smuggling_and_old_tls_are_reported(
    postfix_closed: PostfixInstance,
) -> None:
    """Postfix 3.7 without smtpd_forbid_bare_newline ends DATA at <LF>.<LF>
    (CVE-2023-51764), and Debian's defaults still accept TLS 1.0: both must show."""
    target = AuditTarget(
        "127.0.0.1", postfix_closed.port(), TlsMode.STARTTLS, local_domain=LOCAL, timeout=5.0
    )
    report = run_audit(target, only=("smuggling/lf-dot-lf", "tls/1.0", "leak/"))
    statuses = by_name(report)
    assert statuses["smuggling/lf-dot-lf"] is Status.FAIL
    assert statuses["tls/1.0"] in (Status.FAIL, Status.SKIP)  # SKIP: client cannot offer 1.0
    assert statuses["leak/banner"] is Status.WARN  # "ESMTP Postfix", no version
    assert statuses["leak/vrfy-expn"] is Status.WARN  # VRFY 252 vs 550 enumerates users
