"""bench.peers.dovecot — a private Dovecot auth service: SASL for the Postfix peer.

SYNOPSIS
    with DovecotAuth(workdir, {"bob@example.test": "$argon2id$v=19$m=65536,t=3,p=4$..."}) as auth:
        auth.socket_path            # Postfix: smtpd_sasl_type = dovecot, smtpd_sasl_path = this

DESCRIPTION
    Runs Debian's ``dovecot -F -c FILE`` with a config of its own: its own base_dir,
    no protocols (no IMAP/POP3, only the auth service), a passwd-file passdb and an
    auth client socket at an absolute path, which Postfix 3.7 accepts for
    ``smtpd_sasl_path`` (a relative path would be taken under its queue directory).

    The passdb holds the very argon2id string postgate stored for the user
    (argon2-cffi's defaults, m=65536 KiB, t=3, p=4); Dovecot 2.3 verifies it with
    libsodium under its ARGON2ID scheme, so both sides pay the same hash cost.
    libsodium computes the 4 lanes one after another in one thread, argon2-cffi in
    4 threads; the work is the same, the wall time per check may differ.

    The auth cache is on (``auth_cache_size``, ``auth_cache_ttl``) because postgate
    keeps verified credentials briefly too. Dovecot's cache keeps the passdb entry
    (the hash) and still runs argon2 on each login; with
    ``auth_cache_verify_password_with_worker`` that check runs in auth-worker
    processes, in parallel, like postgate's argon2 thread pool.

    Needs root (Dovecot switches to its dovecot/dovenull users) and the package
    dovecot-core (scripts/bench.sh installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.peers.process import stop_process

DOVECOT = "/usr/sbin/dovecot"
START_TIMEOUT = 20.0

CACHE_SETTINGS = {
    "auth_cache_size": "10M",
    "auth_cache_ttl": "1 hour",
    "auth_cache_negative_ttl": "0",
    "auth_cache_verify_password_with_worker": "yes",
}


def dovecot_missing() -> str | None:
    if not Path(DOVECOT).exists():
        return "dovecot is not installed (apt-get install dovecot-core)"
    if os.geteuid() != 0:
        return "a private dovecot needs root"
    return None


class DovecotAuth:
    def __init__(self, root: Path, users: Mapping[str, str]) -> None:
        self.root = root
        self.users = dict(users)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.root / "auth-client"

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    def settings(self) -> dict[str, str]:
        return {
            "passdb": "passwd-file, scheme ARGON2ID",
            **CACHE_SETTINGS,
        }

    def _write_config(self) -> None:
        run = self.root / "run"
        run.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        passwd = self.root / "users"
        passwd.write_text(
            "".join(f"{user}:{{ARGON2ID}}{pw_hash}::::::\n" for user, pw_hash in self.users.items())
        )
        os.chmod(passwd, 0o644)
        cache = "".join(f"{key} = {value}\n" for key, value in CACHE_SETTINGS.items())
        self.config_path.write_text(
            f"""base_dir = {run}
state_dir = {run}
instance_name = pgbench-{os.getpid()}
protocols =
listen = 127.0.0.1
ssl = no
log_path = {self.root / "dovecot.log"}
auth_mechanisms = plain login
disable_plaintext_auth = no
{cache}passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {self.socket_path} {{
    mode = 0666
  }}
}}
"""
        )

    def start(self) -> None:
        reason = dovecot_missing()
        if reason is not None:
            raise RuntimeError(reason)
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.root / "dovecot.out", "ab") as out:
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_path)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket_path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = (self.root / "dovecot.out").read_text(errors="replace")[-800:]
                log = self.root / "dovecot.log"
                detail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise RuntimeError(f"dovecot did not start: {output} {detail}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, 15)

    def remove(self) -> None:
        shutil.rmtree(self.root / "run", ignore_errors=True)

    def __enter__(self) -> DovecotAuth:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
