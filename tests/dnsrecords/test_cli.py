"""`postgate dns records|check` through their own parser, keys from `postgate dkim`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from postgate.cli import dkim_cmd, dns_cmd
from postgate.cli.common import CliError
from tests.dkim.helpers import zone_txt
from tests.dkim.test_cli import write_config
from tests.fixtures.nsd import NsdServer, Record, Zones


def run(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path)
    commands = parser.add_subparsers()
    dkim_cmd.register(commands)
    dns_cmd.register(commands)
    args = parser.parse_args(["--config", str(config), *argv])
    code: int = args.handler(args)
    return code


def records_json(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert run(config, "dns", "records", "example.test", "--address", "192.0.2.25", "--json") == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_records_lists_every_kind_with_our_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    run(config, "dkim", "keygen", "example.test", "--activate-now", "--json")
    capsys.readouterr()
    plan = records_json(config, capsys)
    records = plan["records"]
    assert isinstance(records, list)
    names = [(r["name"], r["type"]) for r in records]
    assert names[:2] == [("example.test", "MX"), ("example.test", "TXT")]
    assert sum(1 for n, _t in names if "._domainkey." in n) == 2
    assert {n for n, _t in names} >= {
        "_dmarc.example.test",
        "_mta-sts.example.test",
        "_smtp._tls.example.test",
    }
    assert run(config, "dns", "records", "example.test") == 0
    text = capsys.readouterr().out
    assert "example.test. IN MX 10 mx.example.test." in text
    assert "mta-sts.txt" in text


def test_records_refuses_a_bad_address(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="not an IP address"):
        run(write_config(tmp_path), "dns", "records", "example.test", "--address", "mx")


@pytest.mark.nsd
def test_check_exit_codes_and_json(
    tmp_path: Path, nsd_server: Callable[[Zones], NsdServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    run(config, "dkim", "keygen", "example.test", "--activate-now", "--json")
    capsys.readouterr()
    plan = records_json(config, capsys)
    zone: list[Record] = [
        (
            f"{r['name']}.",
            r["type"],
            zone_txt(r["value"]) if r["type"] == "TXT" else r["value"],
        )
        for r in plan["records"]  # type: ignore[attr-defined]
    ]
    zone.append(("mx", "A", "192.0.2.25"))
    server = nsd_server(
        {
            "example.test": zone,
            "2.0.192.in-addr.arpa": [("25", "PTR", "mx.example.test.")],
        }
    )
    config = write_config(tmp_path, server.nameserver)
    assert run(config, "dns", "check", "example.test", "--address", "192.0.2.25") == 0
    table = capsys.readouterr().out
    assert table.count("PASS") == 8 and "FAIL" not in table

    assert run(config, "dns", "check", "example.test", "--hostname", "other.test", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] is True
    assert {r["check"]: r["status"] for r in report["results"]}["mx"] == "fail"
