"""SqliteWriter's one-statement enqueue writes exactly what the long way writes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postgate.queue.model import DsnNotify, Envelope, EnvelopeRecipient
from postgate.queue.sqlite_checkpointer import Checkpointer
from postgate.queue.sqlite_schema import apply_schema, message_row, recipient_rows
from postgate.queue.sqlite_writer import SqliteWriter, enqueue_view_row

NOW = 1_700_000_000.123456789
BODY = b"Subject: caf\xc3\xa9\r\n\r\nhello\r\n"

ENVELOPE = Envelope(
    sender="jos\u00e9@example.org",
    recipients=(
        EnvelopeRecipient(
            address="\u00fc\u00f1\u00ee@example.com",
            original="\u00dc\u00f1\u00ee@Example.com",
            notify=frozenset({DsnNotify.FAILURE}),
            orcpt=("utf-8", "\u00fc;x@example.com"),
        ),
        EnvelopeRecipient(address='quote"back\\slash@example.net', original="q@example.net"),
        EnvelopeRecipient(address="third@example.net", original="third@example.net"),
    ),
    smtputf8=True,
    client_address="2001:db8::1",
    client_helo="helo.example",
    received_at=NOW - 0.1,
)


@contextlib.asynccontextmanager
async def running_writer(path: Path) -> AsyncIterator[SqliteWriter]:
    writer = SqliteWriter(path, prepare=apply_schema)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


def table_rows(path: Path, queue_id: str) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(path)
    try:
        message = conn.execute("SELECT * FROM messages WHERE queue_id = ?", (queue_id,)).fetchall()
        recipients = conn.execute(
            "SELECT * FROM recipients WHERE queue_id = ? ORDER BY id", (queue_id,)
        ).fetchall()
    finally:
        conn.close()
    # Drop the columns that differ by construction: the queue id and the row id.
    return [row[1:] for row in message], [row[2:] for row in recipients]


async def test_one_statement_and_long_way_write_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        assert (
            enqueue_view_row(
                message_row("FAST", ENVELOPE, BODY, NOW), recipient_rows("FAST", ENVELOPE, NOW)
            )
            is not None
        )
        await writer.enqueue(
            message_row("FAST", ENVELOPE, BODY, NOW),
            recipient_rows("FAST", ENVELOPE, NOW, hold=True),
        )
        assert writer.one_statement_commits == 1
        writer._one_statement = False  # the long way, for comparison
        await writer.enqueue(
            message_row("LONG", ENVELOPE, BODY, NOW),
            recipient_rows("LONG", ENVELOPE, NOW, hold=True),
        )
    fast = table_rows(path, "FAST")
    assert fast == table_rows(path, "LONG")
    messages, recipients = fast
    assert len(messages) == 1 and messages[0][-1] == BODY
    assert [r[0] for r in recipients] == [r.address for r in ENVELOPE.recipients]
    assert {r[4] for r in recipients} == {"held"}
    # REAL columns are bound, not passed through JSON: exactly the float given.
    assert {(r[6], r[10]) for r in recipients} == {(NOW, NOW - 0.1)}


async def test_a_batch_of_enqueues_is_one_commit(tmp_path: Path) -> None:
    async with running_writer(tmp_path / "queue.db") as writer:
        before = writer.commit_count
        envelopes = [(f"Q{i:04d}", ENVELOPE) for i in range(50)]
        await asyncio.gather(
            *(
                writer.enqueue(message_row(q, e, BODY, NOW), recipient_rows(q, e, NOW))
                for q, e in envelopes
            )
        )
        commits = writer.commit_count - before
        assert writer.one_statement_commits == commits
    conn = sqlite3.connect(tmp_path / "queue.db")
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (50,)
        assert conn.execute("SELECT count(*) FROM recipients").fetchone() == (150,)
    finally:
        conn.close()
    assert 1 <= commits < 50


def test_recipients_that_differ_per_message_fields_take_the_long_way() -> None:
    rows = recipient_rows("Q", ENVELOPE, NOW)
    rows[1] = (*rows[1][:6], NOW + 60, rows[1][7])
    assert enqueue_view_row(message_row("Q", ENVELOPE, BODY, NOW), rows) is None
    assert enqueue_view_row(message_row("Q", ENVELOPE, BODY, NOW), []) is None


def big_enqueue(queue_id: str) -> tuple[Any, Any]:
    body = b"Subject: big\r\n\r\n" + b"x" * (1 << 20) + b"\r\n"
    return message_row(queue_id, ENVELOPE, body, NOW), recipient_rows(queue_id, ENVELOPE, NOW)


async def test_the_checkpointer_thread_copies_the_wal_and_the_writer_restarts_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        for number in range(24):
            await writer.enqueue(*big_enqueue(f"BIG{number}"))
            await asyncio.sleep(0.01)  # a pace the thread keeps up with
        assert writer._checkpointer.prepared >= 2
        assert writer._checkpointer.passes >= 2
        assert writer.checkpoint_waits == 0
        # The WAL started over after each finished checkpoint instead of holding 24 MiB.
        assert (tmp_path / "queue.db-wal").stat().st_size < 10 << 20
        assert path.stat().st_size > 12 << 20
    assert table_rows(path, "BIG0")[0][0][-1] == big_enqueue("BIG0")[0][-1]


async def test_the_wal_stays_bounded_when_the_checkpointer_falls_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpointer that never gets round to it: the writer copies the WAL itself.
    monkeypatch.setattr(Checkpointer, "request", lambda self: None)
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        for number in range(24):
            await writer.enqueue(*big_enqueue(f"BIG{number}"))
        assert writer._checkpointer.passes == 0
        assert writer.checkpoint_waits >= 2
        assert (tmp_path / "queue.db-wal").stat().st_size < 10 << 20
    assert len(table_rows(path, "BIG23")[0]) == 1


async def test_the_wal_stays_bounded_with_many_recipients(tmp_path: Path) -> None:
    # 100 recipients (the default max_recipients): a 2 KB message then writes about
    # 70 KiB to the WAL, mostly recipient rows and index entries; 200 of them would
    # leave 14 MiB in it if only the message bytes counted towards a checkpoint.
    envelope = dataclasses.replace(
        ENVELOPE,
        recipients=tuple(
            EnvelopeRecipient(address=f"user{n}@remote{n % 7}.example", original=f"U{n}@x")
            for n in range(100)
        ),
    )
    body = b"Subject: many\r\n\r\n" + b"y" * 2000 + b"\r\n"
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        for number in range(200):
            queue_id = f"MANY{number}"
            await writer.enqueue(
                message_row(queue_id, envelope, body, NOW), recipient_rows(queue_id, envelope, NOW)
            )
        assert writer._checkpointer.prepared + writer.checkpoint_waits >= 2
        assert (tmp_path / "queue.db-wal").stat().st_size < 10 << 20
    assert len(table_rows(path, "MANY199")[1]) == 100


async def test_a_batch_of_big_messages_is_bounded_in_bytes(tmp_path: Path) -> None:
    # Thirty 1 MiB messages at once would make one transaction of 30 MiB, all of it in
    # the WAL at once; the writer takes about 8 MiB of messages per batch instead.
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        await asyncio.gather(*(writer.enqueue(*big_enqueue(f"BIG{n}")) for n in range(30)))
        assert 1 < writer.largest_batch <= 8
        assert writer.commit_count >= 4
        assert (tmp_path / "queue.db-wal").stat().st_size < 20 << 20
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 30
    finally:
        conn.close()


async def test_an_orcpt_with_a_nul_is_stored_whole(tmp_path: Path) -> None:
    # ORCPT=rfc822;a+00b decodes to a NUL, which SQLite's JSON functions would end the
    # string at: such a message takes the long way and is stored exactly as received.
    envelope = dataclasses.replace(
        ENVELOPE,
        recipients=(
            EnvelopeRecipient(
                address="a@example.com", original="a@example.com", orcpt=("rfc822", '"]}\0x@y')
            ),
        ),
    )
    path = tmp_path / "queue.db"
    async with running_writer(path) as writer:
        await writer.enqueue(
            message_row("NUL", envelope, BODY, NOW), recipient_rows("NUL", envelope, NOW)
        )
    stored = sqlite3.connect(path)
    try:
        (orcpt,) = stored.execute("SELECT orcpt FROM recipients WHERE queue_id = 'NUL'").fetchone()
    finally:
        stored.close()
    assert "\0x@y" in orcpt
