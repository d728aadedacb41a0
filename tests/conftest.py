"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

ALICE = ("alice@example.test", "alice-secret-pw")
BOB = ("bob@example.test", "bob-secret-pw")


def require_tool(name: str, package: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path:
        return path
    message = f"{name} is missing: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def make_server(root: Path, **options: str) -> ServerProcess:
    server = ServerProcess(root, **options)  # type: ignore[arg-type]
    server.write_config()
    server.add_user(*ALICE)
    server.add_user(*BOB)
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running postgate with users alice and bob at example.test."""
    process = make_server(tmp_path / "postgate")
    process.start()
    try:
        yield process
    finally:
        process.stop()
