"""Reading an issuer's key set from a file and from a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from postgate.sasl.jwks import JwksError, fetch_jwks, load_jwks, read_jwks_file
from postgate.sasl.tokens import TokenValidator
from tests.sasl.jwt_keys import AUDIENCE, claims, jwks, rsa_key

KEY = rsa_key()
DOCUMENT = json.dumps(jwks(KEY)).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes = {
            "/jwks.json": (200, DOCUMENT),
            "/broken.json": (200, b"{not json"),
            "/redirect": (302, b""),
        }
        status, body = routes.get(self.path, (404, b"no"))
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/jwks.json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def key_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_fetched_keys_validate_a_token(key_server: str) -> None:
    document = await load_jwks(f"{key_server}/jwks.json")
    validator = TokenValidator(document, audience=AUDIENCE)
    assert validator.validate(KEY.sign(claims())).user == "ann@example.org"


@pytest.mark.parametrize(
    ("path", "message"),
    [("/missing", "HTTP 404"), ("/broken.json", "not JSON"), ("/redirect", "HTTP 302")],
)
async def test_fetch_failures_name_the_source(key_server: str, path: str, message: str) -> None:
    with pytest.raises(JwksError) as raised:
        await fetch_jwks(f"{key_server}{path}", timeout=5.0)
    assert message in str(raised.value)
    assert key_server in str(raised.value)


async def test_plain_http_only_to_loopback() -> None:
    with pytest.raises(JwksError, match="https"):
        await fetch_jwks("http://keys.example.test/jwks.json")
    with pytest.raises(JwksError, match="https"):
        await fetch_jwks("ftp://127.0.0.1/jwks.json")


async def test_unreachable_server_is_a_jwks_error() -> None:
    # A bound socket that never listens: the port is ours and every connect is refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with pytest.raises(JwksError):
            await fetch_jwks(f"http://127.0.0.1:{port}/jwks.json", timeout=2.0)


async def test_file_source(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(DOCUMENT)
    assert await load_jwks(str(path)) == jwks(KEY)
    with pytest.raises(JwksError, match="keys"):
        path.write_text('{"no": 1}')
        read_jwks_file(path)
    with pytest.raises(JwksError):
        read_jwks_file(tmp_path / "absent.json")
