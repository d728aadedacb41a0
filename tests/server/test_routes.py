"""Mailbox paths never leave the Maildir root, whatever the address says."""

from __future__ import annotations

from pathlib import Path

import pytest

from postgate.server.routes import mailbox_directory


def test_ordinary_address_maps_under_root(tmp_path: Path) -> None:
    assert mailbox_directory(tmp_path, "Bob@Example.TEST") == tmp_path / "example.test" / "bob"


@pytest.mark.parametrize(
    "address",
    [
        "../../etc@example.test",
        "a/b@example.test",
        ".Junk@example.test",
        "x@../..",
        "x@a/b",
        "@example.test",
        "x@",
    ],
)
def test_unsafe_addresses_have_no_mailbox(tmp_path: Path, address: str) -> None:
    assert mailbox_directory(tmp_path, address) is None
