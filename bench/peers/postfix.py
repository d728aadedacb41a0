"""bench.peers.postfix — Debian's Postfix as the benchmark peer, holding what it accepts.

SYNOPSIS
    server = PostfixServer(workdir, process_limit=200)
    server.start()
    server.port("smtp"); server.held_messages(); server.delete_held()
    server.release_held()                  # postsuper -H ALL; postqueue -f
    server.queued_messages()               # every queue (incoming, active, deferred, hold...)
    server.stop()

DESCRIPTION
    A tests.fixtures.postfix.PostfixInstance (own config dir, queue, ports, log; never
    /etc/postfix) with the settings below on top of the fixture's:

      smtpd_end_of_data_restrictions = check_client_access static:HOLD
                       every accepted message goes to the hold queue; cleanup has
                       fsync'd the queue file before smtpd answers 250
      default_process_limit
                       at least 100 (the default): 50 sessions plus the bench's own
                       connections must each get an smtpd process
      in_flow_delay = 0
                       Postfix throttles smtpd when qmgr does not hand back flow
                       tokens fast enough; with everything held qmgr never sees the
                       mail, so the throttle would measure nothing but itself
      smtpd_peername_lookup = no
                       no reverse DNS for the client (postgate does none either,
                       and the bench must not ask the machine's resolver)
      smtpd_client_event_limit_exceptions = 127.0.0.0/8 (from the fixture)
                       no anvil rate limits for the loopback load generator

    The recipient bob@example.test is a virtual mailbox (the fixture's ``mailboxes``),
    so smtpd checks that the user exists, as postgate does, and would deliver it to
    a Maildir if it were not held.

    Postfix does no SPF or DMARC checks here (that would take a policy daemon or a
    milter); bench/README.md lists this under fairness.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from bench.peers.names import RECIPIENT
from bench.procmem import children_named
from tests.fixtures.postfix import MASTER, POSTFIX, PostfixInstance

POSTSUPER = "/usr/sbin/postsuper"
POSTQUEUE = "/usr/sbin/postqueue"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

HOLD_SETTINGS = {
    "smtpd_end_of_data_restrictions": "check_client_access static:HOLD",
    "in_flow_delay": "0",
    "smtpd_peername_lookup": "no",
}


def postfix_missing() -> str | None:
    """Why Postfix cannot run here, or None."""
    if not (POSTFIX.exists() and MASTER.exists()):
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    return None


def _count_files(folder: Path) -> int:
    count = 0
    for _dirpath, _dirnames, filenames in os.walk(folder):
        count += len(filenames)
    return count


class PostfixServer:
    def __init__(
        self,
        log_dir: Path,
        *,
        process_limit: int = 150,
        main_cf: Mapping[str, str] | None = None,
        listeners: Mapping[str, int | None] | None = None,
        listener_options: Mapping[str, Mapping[str, str]] | None = None,
        relay_routes: Mapping[str, int] | None = None,
        mailboxes: tuple[str, ...] = (RECIPIENT,),
    ) -> None:
        self.process_limit = process_limit
        self.main_cf = {
            **HOLD_SETTINGS,
            "default_process_limit": str(process_limit),
            **(main_cf or {}),
        }
        self.instance = PostfixInstance(
            log_dir,
            main_cf_extra=self.main_cf,
            smtpd_listeners=listeners,
            listener_options=listener_options,
            relay_routes=relay_routes,
            mailboxes=mailboxes,
        )

    def start(self) -> None:
        reason = postfix_missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.instance.start()

    def stop(self) -> None:
        self.instance.stop()

    def port(self, listener: str = "smtp") -> int:
        return self.instance.port(listener)

    @property
    def config_dir(self) -> Path:
        return self.instance.config_dir

    @property
    def spool(self) -> Path:
        return self.instance.config_dir.parent / "spool"

    @property
    def master_pid(self) -> int:
        return int((self.spool / "pid" / "master.pid").read_text().strip())

    def smtpd_pids(self) -> list[int]:
        return children_named(self.master_pid, "smtpd")

    def held_messages(self) -> int:
        return _count_files(self.spool / "hold")

    def wait_held(self, expected: int, timeout: float = 10.0) -> int:
        """The hold queue's count once it reaches ``expected``, or when ``timeout`` ran out.

        cleanup moves the queue file into hold before smtpd answers 250, so this
        normally returns at once; the wait only covers a slow directory listing."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.held_messages()
            if held >= expected or time.monotonic() > deadline:
                return held
            time.sleep(0.02)

    def queued_messages(self) -> int:
        return sum(_count_files(self.spool / queue) for queue in QUEUES)

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()}")

    def delete_held(self) -> None:
        self._run([POSTSUPER, "-c", str(self.config_dir), "-d", "ALL", "hold"])

    def delete_all(self) -> None:
        self._run([POSTSUPER, "-c", str(self.config_dir), "-d", "ALL"])

    def release_held(self) -> None:
        """What an operator does: move held mail to the deferred queue, then flush it."""
        self._run([POSTSUPER, "-c", str(self.config_dir), "-H", "ALL"])
        self._run([POSTQUEUE, "-c", str(self.config_dir), "-f"])

    def log_count(self, needle: str) -> int:
        return self.instance.log_text().count(needle)

    def log_problems(self, limit: int = 5) -> list[str]:
        found = [
            line
            for line in self.instance.log_text().splitlines()
            if "warning:" in line or "fatal:" in line or "error:" in line
        ]
        return found[:limit]
