"""bench.machine — what the numbers were measured on: hardware, kernel and versions.

SYNOPSIS
    describe_machine()        # {"cores": 2, "cpu_model": ..., "kernel": ..., "ram_gib": ...}
    describe_versions(repo)   # {"python": ..., "uvloop": ..., "postgate_commit": ..., ...}

DESCRIPTION
    Read from /proc and from the programs themselves, so a results file says which
    build of each side produced it. A value that cannot be found is recorded as
    "unknown" rather than failing the run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

UNKNOWN = "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or UNKNOWN


def _ram_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / (1024 * 1024), 1)
    return None


def describe_machine() -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "ram_gib": _ram_gib(),
        "os": _os_name(),
    }


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return UNKNOWN


def _output(argv: list[str], cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return UNKNOWN
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    text = (done.stdout or done.stderr).strip()
    return text if done.returncode == 0 and text else UNKNOWN


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit(repo: Path) -> str:
    commit = _output(["git", "rev-parse", "HEAD"], cwd=repo)
    if commit == UNKNOWN:
        return commit
    # The lead benchmarks work in progress: say so when the tree differs from HEAD.
    changes = _output(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=repo)
    dirty = changes not in (UNKNOWN, "")
    return f"{commit}{' (+uncommitted changes in src/)' if dirty else ''}"


def describe_versions(repo: Path) -> dict[str, object]:
    postfix = _output(["/usr/sbin/postconf", "-d", "mail_version"])
    return {
        "python": sys.version.split()[0],
        "uvloop": _package_version("uvloop"),
        "argon2_cffi": _package_version("argon2-cffi"),
        "postgate": _package_version("postgate"),
        "postgate_commit": _git_commit(repo),
        "postfix": postfix.partition("=")[2].strip() if "=" in postfix else postfix,
        "dovecot": _output(["/usr/sbin/dovecot", "--version"]),
        "nsd": _nsd_version(),
    }


def _nsd_version() -> str:
    text = _output(["/usr/sbin/nsd", "-v"])
    return text.splitlines()[0] if text != UNKNOWN else text
