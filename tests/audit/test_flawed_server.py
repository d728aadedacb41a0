"""The FAIL paths, against a deliberately flawed server on loopback (tests/audit/fake_server)."""

from __future__ import annotations

from postgate.audit import AuditTarget, Status, TlsMode
from postgate.audit.leaks import check_banner_leaks
from postgate.audit.lockout import check_lockout
from postgate.audit.relay import PROBES, run_relay_probe
from postgate.audit.starttls import check_auth_before_tls, check_starttls_injection
from tests.audit.fake_server import PASSWORD, USER, Flaws, fake_smtp


def target(port: int, **options: object) -> AuditTarget:
    return AuditTarget(
        "127.0.0.1",
        port,
        local_domain="local.test",
        timeout=3.0,
        **options,  # type: ignore[arg-type]
    )


def probe(name: str) -> object:
    return next(p for p in PROBES if p.name == name)


def test_starttls_injection_is_detected() -> None:
    with fake_smtp(Flaws(inject=True)) as port:
        result = check_starttls_injection(target(port))
    assert result.status is Status.FAIL, result
    assert "C: STARTTLS\\r\\nNOOP\\r\\n" in result.evidence
    assert "CVE-2011-0411" in result.summary


def test_starttls_injection_passes_when_discarded() -> None:
    with fake_smtp(Flaws()) as port:
        result = check_starttls_injection(target(port))
    assert result.status is Status.PASS, result


def test_auth_in_clear_fails_and_never_sends_the_real_password() -> None:
    with fake_smtp(Flaws(auth_in_clear=True)) as port:
        result = check_auth_before_tls(target(port, auth_user=USER, auth_password=PASSWORD))
    assert result.status is Status.FAIL
    assert "processed" in result.summary and "535" in result.summary
    assert not any(PASSWORD in line for line in result.evidence)


def test_percent_hack_relayed_by_a_recipient_checking_server_fails() -> None:
    with fake_smtp(Flaws(routes_percent=True)) as port:
        result = run_relay_probe(target(port), probe("percent-hack"), "pgaudit-test")  # type: ignore[arg-type]
    assert result.status is Status.FAIL, result
    assert "parsed the route" in result.summary
    # The follow-up is in the evidence: the control address was refused.
    assert "C: RCPT TO:<pgaudit-test@local.test>" in result.evidence
    assert not any(line.startswith("C: DATA") for line in result.evidence)


def test_version_in_banner_fails() -> None:
    with fake_smtp(Flaws(banner="220 fake.test ESMTP Exim 4.96 Mon, 1 Dec 2026")) as port:
        result = check_banner_leaks(target(port))
    assert result.status is Status.FAIL
    assert "Exim version" in result.summary


def test_lockout_detected_with_password() -> None:
    with fake_smtp(Flaws(lockout_after=3)) as port:
        result = check_lockout(target(port, auth_user=USER, auth_password=PASSWORD))
    assert result.status is Status.PASS, result
    assert "right password refused" in result.summary
    assert not any(PASSWORD in line for line in result.evidence)
    assert sum("wrong password #" in line for line in result.evidence) == 4


def test_lockout_detected_without_password() -> None:
    with fake_smtp(Flaws(lockout_after=3)) as port:
        result = check_lockout(target(port, auth_user=USER))
    assert result.status is Status.PASS, result
    assert "454" in result.summary


def test_no_lockout_fails() -> None:
    with fake_smtp(Flaws()) as port:
        result = check_lockout(target(port, auth_user=USER, auth_password=PASSWORD))
    assert result.status is Status.FAIL
    assert result.summary.startswith("no lockout")


def test_lockout_skipped_without_user_and_with_a_wrong_given_password() -> None:
    assert check_lockout(target(1)).status is Status.SKIP
    with fake_smtp(Flaws(lockout_after=3)) as port:
        result = check_lockout(target(port, auth_user=USER, auth_password="typo"))
    assert result.status is Status.SKIP
    assert "refused before any wrong one" in result.summary


def test_implicit_tls_skips_plaintext_checks() -> None:
    result = check_auth_before_tls(AuditTarget("127.0.0.1", 1, TlsMode.IMPLICIT))
    assert result.status is Status.SKIP
