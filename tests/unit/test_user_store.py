"""The users file of `sluice user` (signaling/xmpp/users.py): mode 0600, SCRAM credentials only (no password
or anything a password could be read from), logins with SCRAM and PLAIN against it, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import stat
from pathlib import Path

import pytest

from signaling.xmpp import sasl
from signaling.xmpp.jid import Jid
from signaling.xmpp.users import UserStore, UserStoreError, derive
from sluice.cli import main

PASSWORD = "correct horse battery staple"


def store(tmp_path: Path) -> UserStore:
    s = UserStore(tmp_path / "users.json")
    s.load()
    s.add("alice", PASSWORD)
    return s


def test_file_mode_and_no_plaintext(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
    text = s.path.read_text()
    assert PASSWORD not in text and base64.b64encode(PASSWORD.encode()).decode() not in text
    doc = json.loads(text)
    entry = doc["users"]["alice"]
    assert set(entry) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    for mech, hash_name in (("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256")):
        c = entry[mech]
        assert set(c) == {"salt", "iterations", "stored-key", "server-key"}
        assert c["iterations"] >= 4096
        salt = base64.b64decode(c["salt"])
        assert len(salt) == 16
        # What is stored is RFC 5802's StoredKey/ServerKey for this password and salt: nothing more.
        expected = derive(PASSWORD, hash_name, salt, c["iterations"])
        assert base64.b64decode(c["stored-key"]) == expected.stored_key
        assert base64.b64decode(c["server-key"]) == expected.server_key
    # Salted per user and per hash: the same password twice gives different credentials.
    s.add("bob", PASSWORD)
    users = json.loads(s.path.read_text())["users"]
    assert users["alice"]["SCRAM-SHA-256"]["salt"] != users["bob"]["SCRAM-SHA-256"]["salt"]
    assert users["alice"]["SCRAM-SHA-256"]["stored-key"] != users["bob"]["SCRAM-SHA-256"]["stored-key"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    s = store(tmp_path)
    os.chmod(s.path, 0o644)
    with pytest.raises(UserStoreError, match="readable by others"):
        UserStore(s.path).load()


def test_bad_files_and_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    for content in (
        "[]",
        '{"version": 2, "users": {}}',
        '{"version": 1, "users": {"a": {"PLAIN": "x"}}}',
        "{",
    ):
        bad.write_text(content)
        os.chmod(bad, 0o600)
        with pytest.raises(UserStoreError):
            UserStore(bad).load()
    s = store(tmp_path)
    for name in ("focus", "jvb", "jvb-2", "Alice", "a b", "", "x" * 65, "a@b"):
        with pytest.raises(UserStoreError):
            s.add(name, "pw")
    with pytest.raises(UserStoreError, match="empty"):
        s.add("carol", "")


def scram_login(accounts: sasl.Accounts, user: str, password: str, mech: str) -> sasl.Step:
    """RFC 5802 from the client's side against the server's exchange."""
    hash_name = sasl.SCRAM_HASHES[mech]
    nonce = "clientnonce123"
    first_bare = f"n={user},r={nonce}"
    exchange, step = sasl.start(mech, f"n,,{first_bare}".encode(), host="auth.meet.sluice", accounts=accounts)
    if not isinstance(step, sasl.Challenge):
        return step
    assert exchange is not None
    server_first = step.data.decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    final = exchange.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    if isinstance(final, sasl.Success):
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        expected = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, hash_name))
        assert final.data == expected, "the server did not prove it knows the ServerKey"
    return final


def test_scram_and_plain_logins_against_the_store(tmp_path: Path) -> None:
    s = store(tmp_path)
    accounts = sasl.Accounts({"focus@auth.meet.sluice": "focus-pw"}, s, "auth.meet.sluice")
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        ok = scram_login(accounts, "alice", PASSWORD, mech)
        assert isinstance(ok, sasl.Success) and str(ok.jid) == "alice@auth.meet.sluice"
        assert isinstance(scram_login(accounts, "alice", "wrong", mech), sasl.Failure)
        assert isinstance(scram_login(accounts, "nobody", PASSWORD, mech), sasl.Failure)
    # An unknown name gets a challenge like a real one (the same salt each time) and fails at the proof, so
    # the exchange does not tell which names exist (RFC 5802 §9).
    salts = set()
    for _ in range(2):
        _, first = sasl.start(
            "SCRAM-SHA-256", b"n,,n=nobody,r=abc", host="auth.meet.sluice", accounts=accounts
        )
        assert isinstance(first, sasl.Challenge)
        salts.add(dict(a.split("=", 1) for a in first.data.decode().split(","))["s"])
    assert len(salts) == 1
    alice = Jid.parse("alice@auth.meet.sluice")
    assert accounts.check_password(alice, PASSWORD) and not accounts.check_password(alice, "wrong")
    assert alice in accounts and not accounts.configured(alice)
    # Users live on the auth domain only, and a configured account always wins over a user.
    assert Jid.parse("alice@meet.sluice") not in accounts
    assert accounts.configured(Jid.parse("focus@auth.meet.sluice"))


def test_refresh_sees_changes_and_keeps_the_last_good_users(tmp_path: Path) -> None:
    s = store(tmp_path)
    server = UserStore(s.path)
    server.load()
    assert server.names() == ["alice"]
    assert not server.refresh(0.0)  # unchanged
    s.add("bob", "pw")
    assert not server.refresh(0.5)  # looked at most once a second
    assert server.refresh(2.0) and server.names() == ["alice", "bob"]
    os.chmod(s.path, 0o640)
    os.utime(s.path, ns=(1, 1))
    with pytest.raises(UserStoreError):
        server.refresh(4.0)
    assert server.names() == ["alice", "bob"]


def test_the_cli_adds_lists_and_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "conf" / "users.json"
    config = tmp_path / "conf" / "sluice.toml"
    config.parent.mkdir()
    config.write_text('[signaling.auth]\nsecure-domain = true\nusers-file = "users.json"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    assert main(["user", "add", "alice", "--config", str(config), "--password-stdin"]) == 0
    assert stat.S_IMODE(users.stat().st_mode) == 0o600 and "s3cret-pass" not in users.read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("other-pass\n"))
    assert main(["user", "add", "bob", "--file", str(users), "--password-stdin"]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--file", str(users)]) == 0
    assert capsys.readouterr().out.split() == ["alice", "bob"]
    assert main(["user", "remove", "alice", "--config", str(config)]) == 0
    assert main(["user", "remove", "alice", "--config", str(config)]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["user", "add", "focus", "--file", str(users), "--password-stdin"]) == 2
    assert "reserved" in capsys.readouterr().err
    s = UserStore(users)
    s.load()
    assert s.names() == ["bob"]
