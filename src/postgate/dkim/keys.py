"""dkim.keys — the DKIM key store: private keys on disk and each key's state.

SYNOPSIS
    store = KeyStore(data_dir / "dkim")
    store.domains()                          # ["example.com", ...]
    store.keys("example.com")                # list[DkimKey], oldest first
    store.active_keys("example.com")         # the keys that sign now (one per algorithm)
    store.private_key(key)                   # bytes in the form dkimpy signs with
    store.update("example.com", change)      # read-modify-write under a lock
    material = new_key_material(Algorithm.RSA)

DESCRIPTION
    Layout, one directory per signing domain (directories 0700, files 0600):

        <root>/<domain>/<selector>.<algorithm>.key   private key
        <root>/<domain>/keys.json                    selectors, algorithm, state, times
        <root>/<domain>/.lock                        flock(2) for read-modify-write

    RSA keys are 2048-bit, stored as PKCS#1 PEM (RFC 8017 RSAPrivateKey, what dkimpy
    reads); Ed25519 keys (RFC 8463) as the base64 32-octet seed. The public key is
    kept in keys.json so the TXT record can be shown without reading secrets: RSA
    as base64 SubjectPublicKeyInfo, Ed25519 as the base64 raw 32-octet key
    (RFC 8463 4.2).

    The states are described in dkim.rotation, which alone moves keys between them;
    this module only stores them. keys.json is replaced atomically (write, fsync,
    rename, fsync the directory) so a crash leaves the old or the new state, never
    half of one. The server and the CLI may both change a domain; ``update`` holds
    an exclusive flock on the domain's .lock file for the whole read-modify-write.

    Reads are cached per instance by the file's mtime and size, so the signer can
    ask for the active keys on every message without parsing JSON each time, and
    still sees a change the CLI made in another process.

SECURITY
    Private key files are created with O_EXCL and mode 0600 inside a 0700
    directory; they are never rewritten (a new key gets a new selector).

SEE ALSO
    dkim.rotation, dkim.manager, dkim.signer, dkim.txt, RFC 6376 3.6.1, RFC 8463, RFC 8301
"""

from __future__ import annotations

import base64
import contextlib
import enum
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postgate.dkim.txt import TxtRecord, key_record_value
from postgate.dns.resolver import DnsError, canonical_name

RSA_BITS = 2048  # RFC 8301 3.2: signers MUST use at least 1024, SHOULD use 2048
STATE_FILE = "keys.json"
STATE_VERSION = 1

T = TypeVar("T")

# RFC 6376 3.1: a selector is one or more DNS labels separated by periods.
_SELECTOR = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


class DkimError(Exception):
    """An expected DKIM failure (bad domain or selector, unreadable key store),
    carrying a message fit for a CLI error line or a log line."""


class Algorithm(enum.StrEnum):
    """A key type, named as in the k= tag of the key record."""

    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def signature_algorithm(self) -> str:
        """The a= value. Never rsa-sha1: RFC 8301 3.1 forbids signing with it."""
        return "rsa-sha256" if self is Algorithm.RSA else "ed25519-sha256"

    @property
    def letter(self) -> str:
        """The last letter of default selector names (s202612r, s202612e)."""
        return "r" if self is Algorithm.RSA else "e"


class KeyState(enum.StrEnum):
    PENDING = "pending"  # generated; its TXT record has not been seen in DNS yet
    ACTIVE = "active"  # signs new mail
    RETIRING = "retiring"  # no longer signs; TXT stays published until retire_at
    RETIRED = "retired"  # its TXT record may be removed

    @property
    def published(self) -> bool:
        """Whether the key's TXT record belongs in DNS."""
        return self is not KeyState.RETIRED


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One selector of one domain. Times are Unix seconds."""

    domain: str
    selector: str
    algorithm: Algorithm
    state: KeyState
    created_at: float
    public_key: str
    activated_at: float | None = None
    retire_at: float | None = None
    retired_at: float | None = None

    @property
    def txt_name(self) -> str:
        """Where receivers look the key up (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt_value(self) -> str:
        return key_record_value(self.algorithm.value, self.public_key)

    def txt_record(self) -> TxtRecord:
        return TxtRecord(self.txt_name, self.txt_value)

    @property
    def file_name(self) -> str:
        return f"{self.selector}.{self.algorithm.value}.key"


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """A freshly generated key pair: ``private`` as stored, ``public`` for p=."""

    algorithm: Algorithm
    private: bytes
    public: str


def new_key_material(algorithm: Algorithm) -> KeyMaterial:
    """Generate a key pair in the forms dkimpy signs with and DKIM publishes."""
    if algorithm is Algorithm.RSA:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, as dkimpy parses
            serialization.NoEncryption(),
        )
        public_der = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return KeyMaterial(algorithm, private, base64.b64encode(public_der).decode("ascii"))
    ed_key = ed25519.Ed25519PrivateKey.generate()
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyMaterial(
        algorithm, base64.b64encode(seed) + b"\n", base64.b64encode(raw_public).decode("ascii")
    )


def normalize_domain(domain: str) -> str:
    """Lower-case A-label form; raises DkimError for something that is no domain."""
    try:
        name = canonical_name(domain)
    except DnsError as exc:
        raise DkimError(str(exc)) from None
    if "." not in name or "/" in name or name.startswith("."):
        raise DkimError(f"not a mail domain: {domain!r}")
    return name


def check_selector(selector: str) -> str:
    selector = selector.strip().lower()
    if not _SELECTOR.fullmatch(selector) or len(selector) > 253:
        raise DkimError(f"invalid selector {selector!r}: use letters, digits and hyphens")
    return selector


class KeyStore:
    """Private keys and key states under ``root``; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._state_cache: dict[str, tuple[tuple[int, int], list[DkimKey]]] = {}
        self._private_cache: dict[Path, bytes] = {}

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / STATE_FILE).is_file())

    def keys(self, domain: str) -> list[DkimKey]:
        """All keys of ``domain`` (retired ones too), oldest first; [] when none."""
        domain = normalize_domain(domain)
        path = self._domain_dir(domain) / STATE_FILE
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._state_cache.get(domain)
        if cached is not None and cached[0] == stamp:
            return list(cached[1])
        keys = self._read_state(domain, path)
        self._state_cache[domain] = (stamp, keys)
        return list(keys)

    def active_keys(self, domain: str) -> list[DkimKey]:
        """The keys that sign mail for ``domain`` now, RSA first."""
        try:
            keys = self.keys(domain)
        except DkimError:
            return []
        active = [k for k in keys if k.state is KeyState.ACTIVE]
        return sorted(active, key=lambda k: list(Algorithm).index(k.algorithm))

    def private_key(self, key: DkimKey) -> bytes:
        path = self._domain_dir(key.domain) / key.file_name
        cached = self._private_cache.get(path)
        if cached is not None:
            return cached
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DkimError(f"cannot read DKIM key {path}: {exc.strerror}") from None
        self._private_cache[path] = data
        return data

    def update(self, domain: str, change: Callable[[list[DkimKey]], tuple[list[DkimKey], T]]) -> T:
        """Apply ``change`` to the domain's keys under the domain lock and save the
        keys it returns; returns its second value. ``change`` may call
        ``write_private_key`` for keys it adds."""
        domain = normalize_domain(domain)
        with self._locked(domain):
            path = self._domain_dir(domain) / STATE_FILE
            current = self._read_state(domain, path) if path.exists() else []
            new_keys, result = change(current)
            if new_keys != current:
                self._write_state(domain, new_keys)
        return result

    def write_private_key(self, domain: str, selector: str, material: KeyMaterial) -> None:
        """Store a new private key; refuses to overwrite (O_EXCL)."""
        directory = self._domain_dir(normalize_domain(domain))
        self._ensure_dir(directory)
        path = directory / f"{selector}.{material.algorithm.value}.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise DkimError(f"{path} already exists: choose another selector") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(material.private)
            handle.flush()
            os.fsync(handle.fileno())

    def _domain_dir(self, domain: str) -> Path:
        return self.root / domain

    def _ensure_dir(self, directory: Path) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.root, directory):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)

    @contextlib.contextmanager
    def _locked(self, domain: str) -> Iterator[None]:
        directory = self._domain_dir(domain)
        self._ensure_dir(directory)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read_state(self, domain: str, path: Path) -> list[DkimKey]:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("version") != STATE_VERSION:
                raise DkimError(f"{path}: unknown version {document.get('version')!r}")
            return [_key_from_json(domain, item) for item in document["keys"]]
        except OSError as exc:
            raise DkimError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DkimError(f"{path}: damaged key state: {exc}") from None

    def _write_state(self, domain: str, keys: list[DkimKey]) -> None:
        directory = self._domain_dir(domain)
        document = {
            "version": STATE_VERSION,
            "domain": domain,
            "keys": [_key_to_json(k) for k in keys],
        }
        temporary = directory / f".{STATE_FILE}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / STATE_FILE)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        self._state_cache.pop(domain, None)


def _key_to_json(key: DkimKey) -> dict[str, Any]:
    return {
        "selector": key.selector,
        "algorithm": key.algorithm.value,
        "state": key.state.value,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retire_at": key.retire_at,
        "retired_at": key.retired_at,
        "public_key": key.public_key,
    }


def _key_from_json(domain: str, item: dict[str, Any]) -> DkimKey:
    def optional_time(name: str) -> float | None:
        value = item.get(name)
        return None if value is None else float(value)

    return DkimKey(
        domain=domain,
        selector=check_selector(str(item["selector"])),
        algorithm=Algorithm(item["algorithm"]),
        state=KeyState(item["state"]),
        created_at=float(item["created_at"]),
        public_key=str(item["public_key"]),
        activated_at=optional_time("activated_at"),
        retire_at=optional_time("retire_at"),
        retired_at=optional_time("retired_at"),
    )


def with_state(key: DkimKey, state: KeyState, **times: float | None) -> DkimKey:
    """A copy of ``key`` in ``state`` with the given time fields set."""
    return replace(key, state=state, **times)  # type: ignore[arg-type]
