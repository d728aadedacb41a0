"""bench.main — parse the command line, run the chosen scenarios, write the results.

SYNOPSIS
    python -m bench [--quick] [--scenario N ...] [--workers N] [--keep] [--output DIR]

DESCRIPTION
    Starts one private NSD (the sender domain's SPF and DMARC records for postgate's
    inbound checks), then runs the scenarios in order (scenario 6 uses scenario 1's
    peak rates when both run; otherwise it measures them itself). A scenario that
    fails is recorded with its error and the next one runs. At the end it prints the
    table and writes OUTPUT/latest.json and OUTPUT/latest.md (default bench/results).

    Everything runs under a fresh folder in /tmp (Postfix's unprivileged daemons
    must be able to traverse it), removed at the end unless --keep.

OPTIONS
    --quick          small counts and 2 rounds: a smoke run of under a minute
    --scenario N     run only these scenarios (repeatable, or several numbers)
    --workers N      run postgate with ``[server] workers = N``
    --keep           keep the work folder (server logs, configs, queues)
    --output DIR     where latest.json and latest.md go
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, describe_versions
from bench.plan import plan_for
from bench.report import footnotes, render_markdown, render_text, table_rows, write_json
from bench.results import ScenarioReport
from bench.scenarios import idle, latency, outbound, receive, submission
from bench.scenarios.common import RECOVERABLE, Context, describe_error

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results"
FD_LIMIT_WANTED = 65_536

SCENARIOS: dict[int, tuple[str, Callable[[Context], ScenarioReport]]] = {
    1: (receive.TITLES[1], lambda ctx: receive.run(ctx, 1)),
    2: (receive.TITLES[2], lambda ctx: receive.run(ctx, 2)),
    3: (submission.TITLE, submission.run),
    4: (outbound.TITLE, outbound.run),
    5: (idle.TITLE, idle.run),
    6: (latency.TITLE, latency.run),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="postgate and Postfix side by side on this machine (see bench/README.md).",
        epilog="example: bash scripts/bench.sh --quick --scenario 1 6",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, 2 rounds")
    parser.add_argument(
        "--scenario",
        type=int,
        nargs="+",
        action="extend",
        choices=sorted(SCENARIOS),
        metavar="N",
        help="scenario numbers to run (default: all)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="postgate's [server] workers (default: its own default, one process)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results folder")
    return parser.parse_args(argv)


def raise_fd_limit() -> int:
    """As many descriptors as allowed (10,000 idle connections need them, on both ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_WANTED)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def dns_server(ctx: Context) -> Iterator[None]:
    """The bench's NSD for the whole run; without it postgate runs without inbound checks."""
    from bench.peers.dns import sender_dns

    with contextlib.ExitStack() as stack:
        try:
            ctx.dns_server = stack.enter_context(sender_dns(ctx.folder("nsd"))).nameserver
        except RECOVERABLE as exc:
            ctx.dns_error = f"NSD could not start: {describe_error(exc)}"
            log(f"WARNING: {ctx.dns_error}; postgate runs without inbound checks")
        yield


def log(message: str) -> None:
    print(message, flush=True)


def run_scenarios(ctx: Context, numbers: Sequence[int]) -> list[ScenarioReport]:
    reports = []
    for number in numbers:
        title, run = SCENARIOS[number]
        log(f"[{number}] {title}")
        started = time.perf_counter()
        try:
            report = run(ctx)
        except RECOVERABLE as exc:
            report = ScenarioReport(number, title, errors=[describe_error(exc)])
            log(f"[{number}] ERROR {describe_error(exc)}")
        report.seconds = time.perf_counter() - started
        log(f"[{number}] done in {report.seconds:.0f} s")
        reports.append(report)
    return reports


def markdown_document(document: dict[str, Any], reports: Sequence[ScenarioReport]) -> str:
    machine = document["machine"]
    versions = document["versions"]
    lines = [
        f"Measured {document['date']} on {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, {machine['kernel']}; postgate "
        f"{versions['postgate_commit']}, Python {versions['python']}, uvloop "
        f"{versions['uvloop']}; Postfix {versions['postfix']}.",
        "",
        f"Command: `{document['command']}` "
        f"({'quick smoke run' if document['quick'] else 'full run'}, "
        f"{document['rounds']} rounds per side, medians; ratio = postgate / Postfix; "
        f"postgate with {document['postgate_workers']} worker process"
        f"{'es' if document['postgate_workers'] > 1 else ''}).",
        "",
        render_markdown(table_rows(reports)),
    ]
    notes = footnotes(reports)
    if notes:
        lines += ["", "Notes and errors:", ""]
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    numbers = sorted(set(args.scenario or SCENARIOS))
    plan = plan_for(args.quick)
    fd_limit = raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="pgbench-", dir="/tmp"))
    workdir.chmod(0o755)
    if args.workers is not None and args.workers < 1:
        raise SystemExit("bench: --workers must be 1 or more")
    ctx = Context(workdir=workdir, plan=plan, dns_server=None, log=log, workers=args.workers)
    given = list(sys.argv[1:] if argv is None else argv)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        [".venv/bin/python", "-m", "bench", *given]
    )
    started = datetime.datetime.now(datetime.UTC)
    log(f"bench: scenarios {numbers}, {'quick' if args.quick else 'full'}, work folder {workdir}")
    try:
        with dns_server(ctx):
            reports = run_scenarios(ctx, numbers)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    document: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "command": command,
        "argv": sys.argv,
        "quick": args.quick,
        "postgate_workers": args.workers or 1,
        "rounds": plan.rounds,
        "plan": plan.__dict__,
        "fd_limit": fd_limit,
        "machine": describe_machine(),
        "versions": describe_versions(REPO),
        "dns": ctx.dns_error or f"NSD at {ctx.dns_server}",
        "scenarios": [report.to_json() for report in reports],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "latest.json", document)
    markdown = markdown_document(document, reports)
    (args.output / "latest.md").write_text(markdown)
    log("")
    log(render_text(table_rows(reports)))
    notes = footnotes(reports)
    if notes:
        log("")
        log("\n".join(notes))
    log("")
    log(f"wrote {args.output / 'latest.json'} and {args.output / 'latest.md'}")
    if args.keep:
        log(f"work folder kept: {workdir}")
    return 0
