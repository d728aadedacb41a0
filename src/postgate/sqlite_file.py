"""sqlite_file — open one of our small SQLite files (users, counters) the same way.

The file is created mode 0600 before SQLite touches it (it holds password hashes or
ban lists), in WAL mode with autocommit, so the CLI and the server can use it at once
and never hold a lock on each other for long.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


def open_private_database(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating 0600) ``path`` and apply ``schema``; raises OSError or sqlite3.Error."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(descriptor)
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
        use_wal(connection)
        connection.executescript(schema)
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def use_wal(connection: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch to WAL mode, waiting out another process doing the same.

    Changing the journal mode of a new file needs it to ourselves, and SQLite answers
    "database is locked" at once, without its busy handler, when another connection
    (a second worker process starting at the same moment) holds it. Bounded retries:
    a lock that outlasts them is an error for the caller.
    """
    for attempt in range(attempts):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
