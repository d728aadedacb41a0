"""cli.queue_cmd — `postgate queue ...` and `postgate qshape`: look at and steer the queue.

The CLI opens the same SQLite queue the server uses (WAL lets both work at once);
actions change recipient rows, and a running server picks them up at its next look
at the queue (at most a few seconds later).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from postgate.cli.common import CliError, format_time, load, print_json
from postgate.queue.admin import Selector
from postgate.queue.model import QueuedMessageSummary, RecipientStatus
from postgate.queue.qshape import DEFAULT_STATUSES, build_qshape
from postgate.queue.sqlite import SqliteStore
from postgate.queue.wakeup import poke, wakeup_path

QSHAPE_QUEUES = {
    "active": (RecipientStatus.QUEUED,),
    "deferred": (RecipientStatus.DEFERRED,),
    "hold": (RecipientStatus.HELD,),
    "all": DEFAULT_STATUSES,
}


def register(commands: Any) -> None:
    queue = commands.add_parser("queue", help="list, show and act on queued mail")
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser(
        "list", help="list queued messages", epilog="example: postgate queue list --deferred --json"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    which = listing.add_mutually_exclusive_group()
    which.add_argument(
        "--deferred", action="store_true", help="only messages with deferred recipients"
    )
    which.add_argument("--held", action="store_true", help="only messages on hold")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser(
        "show",
        help="one message: envelope, recipients, status log",
        epilog="example: postgate queue show 01JD3K7QZP4XM0A2 --json",
    )
    show.add_argument("queue_id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--message", action="store_true", help="also print the message itself")
    show.set_defaults(handler=run_show)

    for name, help_text in (
        ("flush", "make deferred mail due now"),
        ("requeue", "make deferred mail due now (same as flush)"),
        ("hold", "put mail on hold: it is not delivered until released"),
        ("release", "release held mail"),
        ("delete", "delete mail from the queue (no bounce is sent)"),
    ):
        action = actions.add_parser(
            name,
            help=help_text,
            epilog=f"examples: postgate queue {name} 01JD3K7QZP4XM0A2\n"
            f"          postgate queue {name} --domain example.com",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        action.add_argument("queue_ids", nargs="*", metavar="QUEUE_ID")
        action.add_argument("--sender", help="envelope sender ('' for <>)")
        action.add_argument("--recipient", help="recipient address")
        action.add_argument("--domain", help="recipient domain")
        action.add_argument("--all", action="store_true", help="everything in the queue")
        action.set_defaults(handler=run_action, action_name=name)

    qshape = commands.add_parser(
        "qshape",
        help="recipient domains by age (like Postfix's qshape)",
        epilog="examples: postgate qshape\n          postgate qshape deferred --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    qshape.add_argument("queue", nargs="?", default="all", choices=sorted(QSHAPE_QUEUES))
    qshape.add_argument("--json", action="store_true", help="machine-readable output")
    qshape.add_argument("--top", type=int, default=20, help="how many domains to show (default 20)")
    qshape.add_argument("--senders", action="store_true", help="group by sender domain")
    qshape.set_defaults(handler=run_qshape)


def _with_store(args: argparse.Namespace, work: Callable[[SqliteStore], Awaitable[int]]) -> int:
    config = load(args)
    if not config.queue.path.exists():
        raise CliError(f"queue.path: {config.queue.path}: no queue yet (has the server run?)")

    async def run() -> int:
        store = await SqliteStore.open(config.queue.path)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _message_json(message: QueuedMessageSummary) -> dict[str, Any]:
    value = dataclasses.asdict(message)
    for recipient in value["recipients"]:
        recipient["status"] = str(recipient["status"])
    return value


def _print_message_line(message: QueuedMessageSummary) -> None:
    print(
        f"{message.queue_id}  {message.size:>9}  {format_time(message.received_at)}  "
        f"<{message.sender}>"
    )
    for recipient in message.recipients:
        due = (
            f" next {format_time(recipient.next_attempt_at)}"
            if recipient.status in (RecipientStatus.QUEUED, RecipientStatus.DEFERRED)
            else ""
        )
        print(f"    {recipient.address}  [{recipient.status}] attempts {recipient.attempts}{due}")
        if recipient.last_reply:
            print(f"        ({recipient.last_reply})")


def run_list(args: argparse.Namespace) -> int:
    statuses = None
    if args.deferred:
        statuses = [RecipientStatus.DEFERRED]
    elif args.held:
        statuses = [RecipientStatus.HELD]

    async def work(store: SqliteStore) -> int:
        messages = await store.list_messages(statuses)
        if args.json:
            print_json([_message_json(m) for m in messages])
        else:
            for message in messages:
                _print_message_line(message)
            print(f"-- {len(messages)} message(s)")
        return 0

    return _with_store(args, work)


def run_show(args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> int:
        message = await store.get_message(args.queue_id)
        log = await store.status_log(args.queue_id)
        if message is None and not log:
            raise CliError(f"no message {args.queue_id} in the queue or its status log")
        body = await store.load_message(args.queue_id) if (message and args.message) else None
        if args.json:
            print_json(
                {
                    "message": _message_json(message) if message else None,
                    "status_log": [
                        {**dataclasses.asdict(entry), "status": str(entry.status)} for entry in log
                    ],
                    **({"content": body.decode("utf-8", "replace")} if body is not None else {}),
                }
            )
            return 0
        if message is not None:
            _print_message_line(message)
        else:
            print(f"{args.queue_id}: no longer queued (every recipient is final)")
        print("status log:")
        for entry in log:
            print(
                f"  {format_time(entry.logged_at)}  {entry.address}  {entry.status}  "
                f"attempt {entry.attempt}  {entry.remote_host or '-'}  {entry.reply}"
            )
        if body is not None:
            sys.stdout.write(body.decode("utf-8", "replace"))
        return 0

    return _with_store(args, work)


def _selectors(args: argparse.Namespace) -> list[Selector]:
    if args.all:
        if args.queue_ids or args.sender is not None or args.recipient or args.domain:
            raise CliError("--all cannot be combined with other selections")
        return [Selector.everything()]
    common = {"sender": args.sender, "recipient": args.recipient, "recipient_domain": args.domain}
    if args.queue_ids:
        return [Selector(queue_id=queue_id, **common) for queue_id in args.queue_ids]
    selector = Selector(**common)
    if selector.is_empty():
        raise CliError("say which mail: QUEUE_ID..., --sender, --recipient, --domain or --all")
    return [selector]


class _Progress:
    """A one-line progress bar on stderr, only when a person is watching."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = total > 20 and sys.stderr.isatty()
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // self.total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        if done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_action(args: argparse.Namespace) -> int:
    selectors = _selectors(args)
    name = "requeue" if args.action_name == "flush" else args.action_name

    async def work(store: SqliteStore) -> int:
        operation = getattr(store, name)
        progress = _Progress(len(selectors))
        changed = 0
        unknown: list[str] = []
        for done, selector in enumerate(selectors, 1):
            count = await operation(selector)
            changed += count
            if (
                count == 0
                and selector.queue_id is not None
                and await store.get_message(selector.queue_id) is None
            ):
                unknown.append(selector.queue_id)
            progress.update(done)
        print(f"{args.action_name}: {changed} recipient(s) changed")
        if changed and name in ("requeue", "release"):
            # Now due: tell a running server, as `postqueue -f` tells Postfix's qmgr.
            poke(wakeup_path(store.path))
        if unknown:
            # A mistyped id must not look like success to a script.
            raise CliError(f"no queued message {', '.join(unknown)}")
        return 0

    return _with_store(args, work)


def run_qshape(args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> int:
        messages = await store.list_messages()
        shape = build_qshape(
            messages,
            time.time(),
            statuses=QSHAPE_QUEUES[args.queue],
            top=args.top,
            by_sender=args.senders,
        )
        print(shape.to_json() if args.json else shape.format_text())
        return 0

    return _with_store(args, work)
