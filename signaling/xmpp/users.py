"""User accounts on `auth.<domain>` (`sluice user add/remove/list`), stored as SCRAM credentials only.

The file is JSON, mode 0600, replaced atomically on each change. Per user and per hash (SCRAM-SHA-1 and
SCRAM-SHA-256, RFC 5802 §3): a random salt, the PBKDF2 iteration count, StoredKey = H(HMAC(SaltedPassword,
"Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"). The password itself is never written:
SCRAM logins need only these, and PLAIN is checked by deriving StoredKey from the offered password.

    {"version": 1, "users": {"alice": {"SCRAM-SHA-256": {"salt": "<b64>", "iterations": 10000,
                                                         "stored-key": "<b64>", "server-key": "<b64>"},
                                       "SCRAM-SHA-1": {...}}}}

The server reads the file at start and again whenever its modification time or size changes (checked at
most once a second, as logins arrive), so `sluice user add` takes effect without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: PBKDF2 rounds for new credentials (Prosody's default; RFC 7677 asks for at least 4096).
USER_ITERATIONS = 10_000
#: The hashes each user gets credentials for, by SASL mechanism name.
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
#: User names: the local part of `<name>@auth.<domain>`, plain and lower case.
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: Names the deployment's own accounts use (the focus, bridges): never user accounts.
RESERVED = ("focus", "jvb", "jibri", "jigasi", "recorder", "transcriber")
#: Largest users file read (bytes): far above any real deployment's, far below a memory problem.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Most users accepted with a password (a bound on the file the server holds in memory).
MAX_USERS = 50_000


class UserStoreError(ValueError):
    """A users file or a user name the store refuses; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def derive(password: str, hash_name: str, salt: bytes, iterations: int) -> ScramCredentials:
    """RFC 5802 §3: the credentials a server stores for `password`."""
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


def check_name(name: str) -> str:
    """The user name, or UserStoreError saying why it cannot be one."""
    if not USER_NAME.fullmatch(name):
        raise UserStoreError(
            f"bad user name {name!r}: 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    if name in RESERVED or name.startswith("jvb"):
        raise UserStoreError(f"{name!r} is reserved for the deployment's own accounts")
    return name


class UserStore:
    """The users file: read, changed and written by `sluice user`, read (and re-read) by the server."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._users: dict[str, dict[str, ScramCredentials]] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._checked_at = float("-inf")

    # ---- reading

    def load(self) -> None:
        """Reads the file (absent: no users). UserStoreError for a file the server must not trust."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._users, self._seen = {}, None
            return
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UserStoreError(
                f"{self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
            )
        if st.st_size > MAX_FILE_BYTES:
            raise UserStoreError(f"{self.path} is larger than {MAX_FILE_BYTES} bytes")
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            raise UserStoreError(f"{self.path}: cannot read it: {exc}") from None
        self._users = _parse(doc, str(self.path))
        self._seen = (st.st_mtime_ns, st.st_size)

    def refresh(self, now: float) -> bool:
        """Re-reads the file if it changed (looked at most once a second). True when it was re-read. A file
        that became unreadable or unsafe keeps the last good users and raises UserStoreError."""
        if now - self._checked_at < 1.0:
            return False
        self._checked_at = now
        try:
            st = self.path.stat()
            seen: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return False
        self.load()
        return True

    def names(self) -> list[str]:
        return sorted(self._users)

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def __len__(self) -> int:
        return len(self._users)

    def credentials(self, name: str, hash_name: str) -> ScramCredentials | None:
        return self._users.get(name, {}).get(hash_name)

    def check_password(self, name: str, password: str) -> bool:
        """PLAIN: derive StoredKey from the offered password with the user's salt and compare."""
        creds = self._users.get(name)
        if not creds:
            return False
        hash_name, stored = next(iter(creds.items()))
        mine = derive(password, hash_name, stored.salt, stored.iterations)
        return hmac.compare_digest(mine.stored_key, stored.stored_key)

    # ---- changing (sluice user)

    def add(self, name: str, password: str, *, iterations: int = USER_ITERATIONS) -> bool:
        """Adds `name` or changes its password; True when it is new. Writes the file."""
        check_name(name)
        if not password:
            raise UserStoreError("an empty password is not allowed")
        new = name not in self._users
        if new and len(self._users) >= MAX_USERS:
            raise UserStoreError(f"at most {MAX_USERS} users")
        self._users[name] = {
            hash_name: derive(password, hash_name, secrets.token_bytes(16), iterations)
            for hash_name in HASHES.values()
        }
        self.save()
        return new

    def remove(self, name: str) -> bool:
        """Removes `name`; False when there was no such user. Writes the file."""
        if self._users.pop(name, None) is None:
            return False
        self.save()
        return True

    def save(self) -> None:
        """Writes the file atomically, mode 0600 from its creation (never briefly readable by others)."""
        doc = {
            "version": 1,
            "users": {
                name: {mech: _encode(creds[h]) for mech, h in HASHES.items() if h in creds}
                for name, creds in sorted(self._users.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")  # mkstemp: 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        st = self.path.stat()
        self._seen = (st.st_mtime_ns, st.st_size)


def _encode(c: ScramCredentials) -> dict[str, Any]:
    b64 = base64.b64encode
    return {
        "salt": b64(c.salt).decode(),
        "iterations": c.iterations,
        "stored-key": b64(c.stored_key).decode(),
        "server-key": b64(c.server_key).decode(),
    }


def _parse(doc: object, where: str) -> dict[str, dict[str, ScramCredentials]]:
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("users"), dict):
        raise UserStoreError(f'{where}: not a users file (expected {{"version": 1, "users": {{...}}}})')
    users: dict[str, dict[str, ScramCredentials]] = {}
    for name, entry in doc["users"].items():
        if not isinstance(name, str) or not USER_NAME.fullmatch(name) or not isinstance(entry, dict):
            raise UserStoreError(f"{where}: bad entry for user {name!r}")
        creds: dict[str, ScramCredentials] = {}
        for mech, value in entry.items():
            hash_name = HASHES.get(mech)
            if hash_name is None or not isinstance(value, dict):
                raise UserStoreError(f"{where}: user {name!r}: unknown mechanism {mech!r}")
            try:
                c = ScramCredentials(
                    salt=base64.b64decode(value["salt"], validate=True),
                    iterations=int(value["iterations"]),
                    stored_key=base64.b64decode(value["stored-key"], validate=True),
                    server_key=base64.b64decode(value["server-key"], validate=True),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise UserStoreError(f"{where}: user {name!r} {mech}: {exc}") from None
            size = hashlib.new(hash_name).digest_size
            if (
                not 4096 <= c.iterations <= 10_000_000
                or len(c.stored_key) != size
                or len(c.server_key) != size
            ):
                raise UserStoreError(f"{where}: user {name!r} {mech}: bad iterations or key length")
            creds[hash_name] = c
        if not creds:
            raise UserStoreError(f"{where}: user {name!r} has no credentials")
        users[name] = creds
    if len(users) > MAX_USERS:
        raise UserStoreError(f"{where}: more than {MAX_USERS} users")
    return users
