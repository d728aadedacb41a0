"""dkim.keys and KeyManager.keygen/rotate: files, modes, states, selector names."""

from __future__ import annotations

import base64
import datetime
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postgate.dkim.keys import Algorithm, DkimError, KeyState, KeyStore
from postgate.dkim.manager import KeyManager
from postgate.dkim.rotation import RotationPolicy

DEC_2026 = datetime.datetime(2026, 12, 15, tzinfo=datetime.UTC).timestamp()


def manager(tmp_path: Path, now: float = DEC_2026) -> KeyManager:
    return KeyManager(KeyStore(tmp_path / "dkim"), clock=lambda: now)


def test_keygen_default_makes_pending_rsa_and_ed25519_with_dated_selectors(tmp_path: Path) -> None:
    keys = manager(tmp_path).keygen("Example.TEST.")
    assert [(k.selector, k.algorithm, k.state) for k in keys] == [
        ("s202612r", Algorithm.RSA, KeyState.PENDING),
        ("s202612e", Algorithm.ED25519, KeyState.PENDING),
    ]
    assert all(k.domain == "example.test" for k in keys)
    directory = tmp_path / "dkim" / "example.test"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for key in keys:
        path = directory / key.file_name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = json.loads((directory / "keys.json").read_text())
    assert [k["state"] for k in state["keys"]] == ["pending", "pending"]


def test_generated_keys_are_rsa_2048_and_ed25519_matching_their_txt(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "dkim")
    rsa_key, ed_key = KeyManager(store).keygen("example.test")
    private = serialization.load_pem_private_key(store.private_key(rsa_key), None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert store.private_key(rsa_key).startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert rsa_key.txt_value == "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode()
    seed = base64.b64decode(store.private_key(ed_key))
    raw = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert ed_key.txt_value == "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
    assert len(rsa_key.txt_record().strings()) == 2  # 392 base64 chars need two strings


def test_second_key_in_the_same_month_gets_a_counter(tmp_path: Path) -> None:
    keys = manager(tmp_path)
    keys.keygen("example.test", algorithms=["ed25519"])
    again = keys.keygen("example.test", algorithms=["ed25519"])
    assert [k.selector for k in again] == ["s202612e2"]


def test_operator_selector_single_and_per_algorithm(tmp_path: Path) -> None:
    keys = manager(tmp_path)
    assert [k.selector for k in keys.keygen("a.test", "Mail", ["rsa"])] == ["mail"]
    assert [k.selector for k in keys.keygen("b.test", "mail")] == ["mailr", "maile"]
    with pytest.raises(DkimError, match="already exists"):
        keys.keygen("a.test", "mail", ["rsa"])
    with pytest.raises(DkimError, match="invalid selector"):
        keys.keygen("a.test", "bad_selector!", ["rsa"])
    with pytest.raises(DkimError, match="unknown DKIM algorithm"):
        keys.keygen("a.test", algorithms=["rsa-sha1"])
    with pytest.raises(DkimError):
        keys.keygen("../etc", algorithms=["rsa"])


def test_activate_now_signs_at_once_and_retires_the_previous_key(tmp_path: Path) -> None:
    keys = manager(tmp_path)
    store = keys.store
    first = keys.keygen("example.test", algorithms=["rsa"], activate_now=True)[0]
    assert first.state is KeyState.ACTIVE and first.activated_at == DEC_2026
    assert [k.selector for k in store.active_keys("example.test")] == [first.selector]
    second = keys.keygen("example.test", algorithms=["rsa"], activate_now=True)[0]
    states = {k.selector: k for k in store.keys("example.test")}
    assert states[second.selector].state is KeyState.ACTIVE
    assert states[first.selector].state is KeyState.RETIRING
    assert states[first.selector].retire_at == DEC_2026 + RotationPolicy().overlap


def test_rotate_uses_active_algorithms_and_refuses_a_second_pending(tmp_path: Path) -> None:
    keys = manager(tmp_path)
    keys.keygen("example.test", algorithms=["ed25519"], activate_now=True)
    rotated = keys.rotate("example.test")
    assert [(k.algorithm, k.state) for k in rotated] == [(Algorithm.ED25519, KeyState.PENDING)]
    with pytest.raises(DkimError, match="already pending"):
        keys.rotate("example.test")


def test_store_sees_changes_made_by_another_instance(tmp_path: Path) -> None:
    reader = KeyStore(tmp_path / "dkim")
    assert reader.active_keys("example.test") == []
    assert reader.domains() == []
    manager(tmp_path).keygen("example.test", algorithms=["ed25519"], activate_now=True)
    assert len(reader.active_keys("example.test")) == 1
    assert reader.domains() == ["example.test"]


def test_damaged_state_file_is_a_dkim_error(tmp_path: Path) -> None:
    manager(tmp_path).keygen("example.test", algorithms=["ed25519"])
    (tmp_path / "dkim" / "example.test" / "keys.json").write_text("{not json")
    with pytest.raises(DkimError, match="damaged"):
        KeyStore(tmp_path / "dkim").keys("example.test")
    assert KeyStore(tmp_path / "dkim").active_keys("example.test") == []
