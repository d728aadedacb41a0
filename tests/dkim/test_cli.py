"""`postgate dkim keygen|list|rotate|advance` through their own parser."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from postgate.cli import dkim_cmd
from postgate.cli.common import CliError
from tests.dkim.helpers import zone_txt
from tests.fixtures.nsd import NsdServer, Zones


def write_config(tmp_path: Path, nameserver: str = "127.0.0.1:9") -> Path:
    path = tmp_path / "postgate.toml"
    path.write_text(
        f"""
[server]
hostname = "mx.example.test"
data_dir = "data"

[[listener]]
name = "mx"
role = "mx"
address = "127.0.0.1"
port = 2525

[routing]
local_domains = ["example.test"]

[delivery]
dns_servers = ["{nameserver}"]
"""
    )
    return path


def run(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    dkim_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["--config", str(config), *argv])
    code: int = args.handler(args)
    return code


def test_keygen_list_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert run(config, "dkim", "keygen", "example.test", "--algorithms", "ed25519") == 0
    out = capsys.readouterr().out
    assert "._domainkey.example.test. IN TXT" in out and "advance" in out
    assert (tmp_path / "data" / "dkim" / "example.test" / "keys.json").exists()

    assert run(config, "dkim", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(k["algorithm"], k["state"]) for k in listed] == [("ed25519", "pending")]
    assert listed[0]["txt_value"].startswith("v=DKIM1; k=ed25519; p=")

    with pytest.raises(CliError, match="already pending"):
        run(config, "dkim", "rotate", "example.test")

    assert (
        run(
            config, "dkim", "keygen", "other.test", "--selector", "mail", "--activate-now", "--json"
        )
        == 0
    )
    made = json.loads(capsys.readouterr().out)
    assert [(k["selector"], k["state"]) for k in made] == [("mailr", "active"), ("maile", "active")]
    assert run(config, "dkim", "rotate", "other.test") == 0
    assert "pending" in capsys.readouterr().out
    assert run(config, "dkim", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("domain\tselector") and len(table) == 1 + 1 + 4


@pytest.mark.nsd
def test_advance_activates_a_published_key(
    tmp_path: Path, nsd_server: Callable[[Zones], NsdServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    run(config, "dkim", "keygen", "example.test", "--algorithms", "ed25519", "--json")
    (key,) = json.loads(capsys.readouterr().out)
    server = nsd_server(
        {"example.test": [(f"{key['selector']}._domainkey", "TXT", zone_txt(key["txt_value"]))]}
    )
    config = write_config(tmp_path, server.nameserver)
    assert run(config, "dkim", "advance", "--json") == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["selector"], e["event"]) for e in events] == [(key["selector"], "activated")]
    assert run(config, "dkim", "advance", "example.test") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_bad_domain_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="not a mail domain"):
        run(write_config(tmp_path), "dkim", "keygen", "localhost")
