"""config.check — do the files a Config names exist and can be used?

SYNOPSIS
    problems = validate_files(config)    # [] when all is well
    # ["tls.cert_file: /etc/x.pem: No such file or directory", ...]

DESCRIPTION
    Parsing never touches the filesystem, so a config can be checked on one machine
    and deployed on another. This is the second half, run by `postgate serve` at
    start and by `postgate config check`, as the user the server runs as: the
    certificate and key must be readable (a Let's Encrypt key readable only by root
    is the usual failure) and must match each other, the alias file readable, the
    data directory writable, and every file the server creates (queue, user
    database, mailboxes, log) must be creatable.

DIAGNOSTICS
    One string per problem: ``dotted.key: path: reason``, reasons in strerror form.
"""

from __future__ import annotations

import errno
import os
import ssl
from pathlib import Path

from postgate.config.model import Config


def validate_files(config: Config) -> list[str]:
    problems: list[str] = []
    if config.tls is not None:
        cert_ok = _readable("tls.cert_file", config.tls.cert_file, problems)
        key_ok = _readable("tls.key_file", config.tls.key_file, problems)
        if cert_ok and key_ok:
            _key_pair("tls.cert_file", config.tls.cert_file, config.tls.key_file, problems)
    if config.routing.alias_file is not None:
        _readable("routing.alias_file", config.routing.alias_file, problems)
    _writable_dir("server.data_dir", config.data_dir, problems, may_create=False)
    _writable_file("queue.path", config.queue.path, problems)
    _writable_file("auth.user_db", config.auth.user_db, problems)
    _writable_dir("delivery.maildir_root", config.delivery.maildir_root, problems, may_create=True)
    if config.log.file is not None:
        _writable_file("log.file", config.log.file, problems)
    return problems


def _say(problems: list[str], key: str, path: Path, code: int) -> None:
    problems.append(f"{key}: {path}: {os.strerror(code)}")


def _readable(key: str, path: Path, problems: list[str]) -> bool:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        problems.append(f"{key}: {path}: {exc.strerror}")
        return False
    return True


def _key_pair(key: str, cert_file: Path, key_file: Path, problems: list[str]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        problems.append(f"{key}: {cert_file}: cannot load with {key_file}: {reason}")


def _writable_dir(key: str, path: Path, problems: list[str], *, may_create: bool) -> None:
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            _say(problems, key, path, errno.EACCES)
    elif path.exists():
        _say(problems, key, path, errno.ENOTDIR)
    elif not may_create:
        _say(problems, key, path, errno.ENOENT)
    else:
        _creatable(key, path, problems)


def _writable_file(key: str, path: Path, problems: list[str]) -> None:
    if path.is_dir():
        _say(problems, key, path, errno.EISDIR)
    elif path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            _say(problems, key, path, errno.EACCES)
    else:
        _creatable(key, path, problems)


def _creatable(key: str, path: Path, problems: list[str]) -> None:
    """The server creates missing directories on the way (mkdir -p), so the nearest
    existing ancestor must be a writable directory."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        _say(problems, key, path, errno.ENOTDIR)
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        _say(problems, key, path, errno.EACCES)
