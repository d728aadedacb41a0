"""The `postgate` command as an operator uses it: real processes, real files."""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOB, make_server
from tests.server_process import ServerProcess, free_port


def postgate(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postgate.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_init_writes_a_working_setup_and_shows_the_password_once(tmp_path: Path) -> None:
    ports = f"{free_port()},{free_port()},{free_port()}"
    result = postgate(
        "init",
        "--dir",
        str(tmp_path / "var"),
        "--domain",
        "example.test",
        "--hostname",
        "mail.example.test",
        "--ports",
        ports,
    )
    assert result.returncode == 0, result.stderr
    password = re.search(r"password\s+(\S+)", result.stdout)
    assert password and len(password.group(1)) >= 16
    config = tmp_path / "var" / "postgate.toml"
    assert config.exists()
    # postmaster must reach a person, or its mail would bounce (RFC 5321 4.5.1).
    assert 'postmaster = "admin@example.test"' in config.read_text()
    assert (tmp_path / "var" / "tls" / "privkey.pem").stat().st_mode & 0o077 == 0
    assert "swaks --server 127.0.0.1:" in result.stdout
    again = postgate("init", "--dir", str(tmp_path / "var"))
    assert again.returncode != 0 and "exists already" in again.stderr
    check = postgate("--config", str(config), "config", "check")
    assert check.returncode == 0, check.stderr
    users = postgate("user", "list", "--json", "--config", str(config))
    assert [u["address"] for u in json.loads(users.stdout)] == ["admin@example.test"]


def test_user_add_passwd_del_list(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    cfg = str(server.config_path)
    added = postgate(
        "--config",
        cfg,
        "user",
        "add",
        "carol@example.test",
        "--password-stdin",
        stdin="first-password\n",
    )
    assert added.returncode == 0, added.stderr
    duplicate = postgate("--config", cfg, "user", "add", "carol@example.test", "--generate")
    assert duplicate.returncode != 0
    assert duplicate.stderr.startswith("postgate: ") and duplicate.stderr.count("\n") == 1
    changed = postgate("--config", cfg, "user", "passwd", "carol@example.test", "--generate")
    assert changed.returncode == 0 and "password:" in changed.stdout
    listing = json.loads(postgate("--config", cfg, "user", "list", "--json").stdout)
    assert "carol@example.test" in [entry["address"] for entry in listing]
    assert postgate("--config", cfg, "user", "del", "carol@example.test").returncode == 0
    listing = json.loads(postgate("--config", cfg, "user", "list", "--json").stdout)
    assert "carol@example.test" not in [entry["address"] for entry in listing]
    missing = postgate("--config", cfg, "user", "del", "nobody@example.test")
    assert missing.returncode != 0


def test_missing_config_is_one_clear_line(tmp_path: Path) -> None:
    result = postgate("--config", str(tmp_path / "nope.toml"), "queue", "list")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope.toml" in result.stderr and "postgate init" in result.stderr


def test_config_check_reports_bad_key_with_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nhostname = "mail.example.test"\n\n[limits]\nmax_recipientz = 5\n')
    result = postgate("--config", str(config), "config", "check")
    assert result.returncode == 2
    assert "bad.toml:5:" in result.stderr and "max_recipientz" in result.stderr


@pytest.fixture
def held_server(tmp_path: Path) -> ServerProcess:
    """A server whose mail stays queued: Bob's Maildir path is blocked by a file."""
    server = make_server(tmp_path / "pg")
    server.maildir_root.mkdir(parents=True)
    (server.maildir_root / "example.test").mkdir()
    server.maildir(BOB[0]).write_text("blocked")
    return server


def test_queue_list_show_qshape_and_actions(held_server: ServerProcess) -> None:
    server = held_server
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["mx"], timeout=10) as client:
            for number in range(3):
                client.sendmail(
                    f"sender{number}@example.org",
                    [BOB[0]],
                    f"Subject: queued {number}\r\n\r\nbody\r\n".encode(),
                )
        server.wait_for_log(event="delivery", status="deferred")
    finally:
        server.stop()
    cfg = str(server.config_path)
    listing = postgate("--config", cfg, "queue", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    messages = json.loads(listing.stdout)
    assert len(messages) == 3
    queue_id = messages[0]["queue_id"]
    assert messages[0]["recipients"][0]["address"] == BOB[0]
    shown = json.loads(postgate("--config", cfg, "queue", "show", queue_id, "--json").stdout)
    assert shown["message"]["queue_id"] == queue_id
    assert shown["status_log"] and shown["status_log"][0]["status"] == "deferred"
    assert "4.3.0" in shown["status_log"][0]["enhanced_status"] + shown["status_log"][0]["reply"]
    text = postgate("--config", cfg, "qshape").stdout
    assert re.search(r"example\.test\s+3\s+3\b", text), text
    deferred = json.loads(postgate("--config", cfg, "qshape", "deferred", "--json").stdout)
    assert "example.test" in json.dumps(deferred)
    held = postgate("--config", cfg, "queue", "hold", queue_id)
    assert held.returncode == 0 and "1 recipient" in held.stdout
    assert (
        len(json.loads(postgate("--config", cfg, "queue", "list", "--held", "--json").stdout)) == 1
    )
    assert postgate("--config", cfg, "queue", "release", queue_id).returncode == 0
    refused = postgate("--config", cfg, "queue", "delete")
    assert refused.returncode != 0 and "say which mail" in refused.stderr
    unknown = postgate("--config", cfg, "queue", "hold", "0000000000NOSUCH")
    assert unknown.returncode == 1 and "no queued message 0000000000NOSUCH" in unknown.stderr
    deleted = postgate("--config", cfg, "queue", "delete", "--sender", "sender1@example.org")
    assert "1 recipient" in deleted.stdout
    assert len(json.loads(postgate("--config", cfg, "queue", "list", "--json").stdout)) == 2


def test_send_prints_the_dialogue_and_delivers(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    server.start()
    try:
        result = postgate(
            "send",
            "--server",
            f"127.0.0.1:{server.ports['submission']}",
            "--starttls",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-secret-pw",
            "--from",
            "alice@example.test",
            "--to",
            BOB[0],
            "--header",
            "Subject: via send",
            "--body",
            "hello from postgate send",
            "--helo",
            "client.example",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "-> EHLO client.example" in out and "<- 250" in out
        assert "=== TLS started: TLSv1." in out
        assert "alice-secret-pw" not in out and "-> AUTH PLAIN ****" in out
        assert re.search(r"=== accepted in [\d.]+s: 250 2\.0\.0 Ok: queued as \w+", out)
        delivered = server.wait_for_delivery(BOB[0])[0].read_bytes()
        assert b"Subject: via send" in delivered and b"hello from postgate send" in delivered
        implicit = postgate(
            "send",
            "--server",
            f"127.0.0.1:{server.ports['submissions']}",
            "--tls",
            "-q",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-secret-pw",
            "--from",
            "alice@example.test",
            "--to",
            BOB[0],
        )
        assert implicit.returncode == 0, implicit.stderr
        refused = postgate(
            "send",
            "--server",
            f"127.0.0.1:{server.ports['mx']}",
            "-q",
            "--from",
            "x@example.org",
            "--to",
            "victim@elsewhere.example",
        )
        assert refused.returncode == 1
        assert "refused: victim@elsewhere.example: 554 5.7.1" in refused.stderr
    finally:
        server.stop()


def test_every_command_word_names_the_module_that_defines_it() -> None:
    from postgate.cli.main import MODULE_OF_COMMAND, build_parser

    full = build_parser()
    subparsers = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(MODULE_OF_COMMAND)
    for word in MODULE_OF_COMMAND:
        alone = build_parser([word])
        only = next(a for a in alone._actions if isinstance(a, argparse._SubParsersAction))
        assert word in only.choices


def test_a_queue_command_does_not_load_the_server() -> None:
    # `postgate queue release` is waited for (by the operator and by the mail it
    # releases): it must not pay for importing the whole server.
    probe = (
        "import sys\n"
        "from postgate.cli.main import main\n"
        "main(['--config', '/nonexistent/postgate.toml', 'queue', 'list'])\n"
        "print('postgate.server.app' in sys.modules, 'postgate.cli.queue_cmd' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.split() == ["False", "True"], result.stderr
