"""sasl.jwks — read an issuer's key set (JWKS, RFC 7517) from a file or an HTTPS URL.

SYNOPSIS
    jwks = await load_jwks("/etc/postgate/idp-keys.json")
    jwks = await load_jwks("https://www.googleapis.com/oauth2/v3/certs", timeout=10.0)
    validator = TokenValidator(jwks, audience=...)

DESCRIPTION
    The one part of sasl/ that does I/O, and only at start-up or reload: the server
    fetches the key set once when it builds its TokenValidator and keeps it (cached
    for the life of that configuration); a reload (SIGHUP) fetches it again, which is
    how rotated issuer keys are picked up. Tokens are never checked against the
    network.

SECURITY
    Keys decide who may log in, so a URL must be https; plain http is allowed only to
    a loopback address (tests, a local key server). Redirects are not followed.
    The document is capped at 1 MiB.

DIAGNOSTICS
    JwksError with a one-line message naming the source.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_JWKS_OCTETS = 1 << 20


class JwksError(Exception):
    """The key set could not be read; the message names the source and the cause."""


def _parse(source: str, raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_JWKS_OCTETS:
        raise JwksError(f"JWKS {source}: larger than {MAX_JWKS_OCTETS} octets")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"JWKS {source}: not JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError(f'JWKS {source}: expected an object with a "keys" list')
    return document


def read_jwks_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise JwksError(f"JWKS {path}: {exc.strerror}") from exc
    return _parse(str(path), raw)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def fetch_jwks(
    url: str, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any]:
    """GET the key set; ``transport`` lets a test substitute httpx's mock transport."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (
        parts.scheme == "http" and _is_loopback(parts.hostname or "")
    ):
        raise JwksError(f"JWKS {url}: must be an https URL (http only to loopback)")
    try:
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport
        ) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise JwksError(f"JWKS {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise JwksError(f"JWKS {url}: HTTP {response.status_code}")
    return _parse(url, response.content)


async def load_jwks(source: str, *, timeout: float = 10.0) -> dict[str, Any]:
    """A file path, or an http(s) URL."""
    if source.startswith(("https://", "http://")):
        return await fetch_jwks(source, timeout=timeout)
    return read_jwks_file(Path(source))
