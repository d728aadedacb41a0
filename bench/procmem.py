"""bench.procmem — memory of server processes from /proc (RSS and PSS, in KiB).

SYNOPSIS
    rss_kib(pid)                      # VmRSS from /proc/PID/status
    pss_kib(pid)                      # Pss from /proc/PID/smaps_rollup
    process_tree(pid)                 # pid and all its descendants
    children_named(master_pid, "smtpd")

DESCRIPTION
    RSS counts shared pages (libraries, copy-on-write parents) in full for every
    process, so summing RSS over Postfix's many smtpd processes overstates what they
    cost together; PSS divides each shared page among the processes that map it and
    is the fair sum. For postgate (one process) the two differ only by its share of
    the shared libraries. A process that exits while being read counts as 0.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC = Path("/proc")


def _field_kib(path: Path, name: str) -> int:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return _field_kib(PROC / str(pid) / "status", "VmRSS")


def pss_kib(pid: int) -> int:
    return _field_kib(PROC / str(pid) / "smaps_rollup", "Pss")


def _parent_and_name(pid: int) -> tuple[int, str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may itself contain spaces or parentheses.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), name


def _all_parents() -> dict[int, tuple[int, str]]:
    found: dict[int, tuple[int, str]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = _parent_and_name(int(entry.name))
            if info is not None:
                found[int(entry.name)] = info
    return found


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant alive now."""
    parents = _all_parents()
    tree = [root]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _) in parents.items() if ppid == parent]
        tree.extend(kids)
        frontier.extend(kids)
    return tree


def children_named(root: int, name: str) -> list[int]:
    """Descendants of ``root`` whose command name is ``name`` (e.g. Postfix's smtpd)."""
    parents = _all_parents()
    return [
        pid for pid in process_tree(root) if pid != root and parents.get(pid, (0, ""))[1] == name
    ]


def tree_memory_kib(root: int) -> tuple[int, int]:
    """(RSS sum, PSS sum) over ``root`` and its descendants."""
    pids = process_tree(root)
    return sum(rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)


def sum_memory_kib(pids: list[int]) -> tuple[int, int]:
    return sum(rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)
