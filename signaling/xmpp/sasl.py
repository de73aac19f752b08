"""SASL server mechanisms (RFC 6120 §6): ANONYMOUS, PLAIN (RFC 4616), SCRAM-SHA-1/-256 (RFC 5802, 7677).

Sans-IO: `start()` and `Exchange.step()` take the client's decoded bytes and return a challenge, a success
(with optional additional data) or a failure condition. Hashing and PBKDF2 come from `hashlib`/`hmac`
(OpenSSL underneath). Channel binding (-PLUS) is not offered, so a client flag `p=` is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from signaling.xmpp.jid import Jid, JidError
from signaling.xmpp.users import USER_ITERATIONS, ScramCredentials, UserStore, derive

SCRAM_ITERATIONS = 4096
SCRAM_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    jid: Jid
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Failure:
    condition: str
    text: str = ""


Step = Challenge | Success | Failure


_ScramKeys = ScramCredentials


class Accounts:
    """Who may log in with a password: the deployment's configured accounts (bare JID -> password; their
    SCRAM keys derived once per account and hash) and, on `users_domain`, the users of a `UserStore` (stored
    as SCRAM credentials only). A configured account wins over a user of the same JID."""

    def __init__(
        self, accounts: Mapping[str, str], users: UserStore | None = None, users_domain: str = ""
    ) -> None:
        self._passwords: dict[Jid, str] = {}
        for jid_text, password in accounts.items():
            self._passwords[Jid.parse(jid_text).bare] = password
        self._scram: dict[tuple[Jid, str], _ScramKeys] = {}
        self.users = users
        self.users_domain = users_domain.lower()
        #: Keys the decoys of unknown names are derived from (per process).
        self._decoy_secret = secrets.token_bytes(32)

    def configured(self, jid: Jid) -> bool:
        """One of the deployment's own accounts (focus, bridges), not a user of the store."""
        return jid.bare in self._passwords

    def _user(self, jid: Jid) -> str | None:
        """The store's user name for `jid`, if it names one."""
        if self.users is None or jid.domain != self.users_domain or jid.bare in self._passwords:
            return None
        return jid.local if jid.local in self.users else None

    def __contains__(self, jid: Jid) -> bool:
        return jid.bare in self._passwords or self._user(jid) is not None

    def decoy_keys(self, jid: Jid, hash_name: str) -> _ScramKeys:
        """SCRAM keys for a name that has no account, the same on every attempt (RFC 5802 §9: the exchange
        goes on and fails at the proof, so it does not tell which names exist)."""
        seed = hmac.digest(self._decoy_secret, f"{hash_name}\0{jid}".encode(), "sha256")
        size = hashlib.new(hash_name).digest_size
        iterations = USER_ITERATIONS if self.users is not None else SCRAM_ITERATIONS
        return _ScramKeys(seed[:16], iterations, secrets.token_bytes(size), secrets.token_bytes(size))

    def check_password(self, jid: Jid, password: str) -> bool:
        expected = self._passwords.get(jid)
        user = self._user(jid) if expected is None else None
        if user is not None:
            assert self.users is not None
            return self.users.check_password(user, password)
        if expected is None and self.users is not None:
            # As long as a user's check takes (a PBKDF2 run), so the time does not tell that none exists.
            derive(password, "sha256", self.decoy_keys(jid, "sha256").salt, USER_ITERATIONS)
            return False
        # compare_digest on both branches keeps the timing of unknown and known users alike.
        if expected is None:
            hmac.compare_digest(password.encode(), password.encode())
            return False
        return hmac.compare_digest(expected.encode(), password.encode())

    def scram_keys(self, jid: Jid, hash_name: str) -> _ScramKeys | None:
        password = self._passwords.get(jid)
        if password is None:
            user = self._user(jid)
            if user is None:
                return None
            assert self.users is not None
            return self.users.credentials(user, hash_name)
        keys = self._scram.get((jid, hash_name))
        if keys is None:
            keys = derive(password, hash_name, secrets.token_bytes(16), SCRAM_ITERATIONS)
            self._scram[(jid, hash_name)] = keys
        return keys


class Exchange:
    """One SASL negotiation in progress."""

    def step(self, response: bytes) -> Step:
        raise NotImplementedError


def mechanisms_for(host: str, *, anonymous_host: str, accounts_host: str) -> tuple[str, ...]:
    """What `host` offers: ANONYMOUS on the login domain, passwords on the accounts domain (Jitsi layout)."""
    if host == anonymous_host:
        return ("ANONYMOUS",)
    if host == accounts_host:
        return ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
    return ()


def start(
    mechanism: str, initial: bytes | None, *, host: str, accounts: Accounts
) -> tuple[Exchange | None, Step]:
    """Begins `mechanism` on a stream to `host`: the exchange (if it continues) and its first step."""
    if mechanism == "ANONYMOUS":
        # RFC 4505: the trace data is ignored; the session gets a random local part.
        return None, Success(Jid(uuid.uuid4().hex[:16], host))
    if mechanism == "PLAIN":
        if initial is None:
            return _Plain(host, accounts), Challenge(b"")
        return None, _Plain(host, accounts).step(initial)
    if mechanism in SCRAM_HASHES:
        scram = _Scram(host, accounts, SCRAM_HASHES[mechanism])
        if initial is None:
            return scram, Challenge(b"")
        return scram, scram.step(initial)
    return None, Failure("invalid-mechanism", f"{mechanism} is not offered")


def _user_jid(username: str, host: str) -> Jid | None:
    try:
        jid = Jid.parse(f"{username}@{host}")
    except JidError:
        return None
    return jid if jid.is_bare and jid.local else None


class _Plain(Exchange):
    def __init__(self, host: str, accounts: Accounts) -> None:
        self.host = host
        self.accounts = accounts

    def step(self, response: bytes) -> Step:
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return Failure("malformed-request", "PLAIN expects authzid NUL authcid NUL passwd")
        try:
            authzid, authcid, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            return Failure("malformed-request", "not UTF-8")
        jid = _user_jid(authcid, self.host)
        if jid is None or not self.accounts.check_password(jid, password):
            return Failure("not-authorized")
        if authzid and authzid != str(jid):
            return Failure("invalid-authzid")
        return Success(jid)


def _scram_name(text: str) -> str:
    return text.replace("=2C", ",").replace("=3D", "=")


def _attrs(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        key, eq, value = part.partition("=")
        if not eq or len(key) != 1:
            raise ValueError(f"bad SCRAM attribute {part!r}")
        out.setdefault(key, value)
    return out


class _Scram(Exchange):
    def __init__(self, host: str, accounts: Accounts, hash_name: str) -> None:
        self.host = host
        self.accounts = accounts
        self.hash_name = hash_name
        self.state = 0
        self.gs2_header = ""
        self.client_first_bare = ""
        self.server_first = ""
        self.nonce = ""
        self.jid: Jid | None = None
        self.keys: _ScramKeys | None = None

    def step(self, response: bytes) -> Step:
        try:
            text = response.decode()
            if self.state == 0:
                return self._first(text)
            if self.state == 1:
                return self._final(text)
        except (UnicodeDecodeError, ValueError) as exc:
            return Failure("malformed-request", str(exc))
        return Failure("malformed-request", "unexpected SASL response")

    def _first(self, text: str) -> Step:
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare,
        # gs2-header = cbind-flag "," [authzid] ","
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag.startswith("p="):
            return Failure("not-authorized", "channel binding is not offered")
        if flag not in ("n", "y") or (authzid and not authzid.startswith("a=")):
            return Failure("malformed-request", "bad GS2 header")
        attrs = _attrs(bare)
        if "m" in attrs or "n" not in attrs or not attrs.get("r"):
            return Failure("malformed-request", "client-first-message needs n= and r=")
        jid = _user_jid(_scram_name(attrs["n"]), self.host)
        if jid is None:
            return Failure("not-authorized")
        keys = self.accounts.scram_keys(jid, self.hash_name)
        if keys is None:
            keys = self.accounts.decoy_keys(jid, self.hash_name)  # fails at the proof
        if authzid and _scram_name(authzid[2:]) != str(jid):
            return Failure("invalid-authzid")
        self.gs2_header = f"{flag},{authzid},"
        self.client_first_bare = bare
        self.nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(keys.salt).decode()
        self.server_first = f"r={self.nonce},s={salt},i={keys.iterations}"
        self.jid, self.keys = jid, keys
        self.state = 1
        return Challenge(self.server_first.encode())

    def _final(self, text: str) -> Step:
        self.state = 2
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            return Failure("malformed-request", "client-final-message needs p=")
        attrs = _attrs(without_proof)
        expected_binding = base64.b64encode(self.gs2_header.encode()).decode()
        if attrs.get("c") != expected_binding or attrs.get("r") != self.nonce:
            return Failure("not-authorized", "channel binding or nonce mismatch")
        keys, jid = self.keys, self.jid
        assert keys is not None and jid is not None, "state 1 is reached only with keys and a JID"
        proof = base64.b64decode(proof_part, validate=True)
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        client_signature = hmac.digest(keys.stored_key, auth_message, self.hash_name)
        if len(proof) != len(client_signature):
            return Failure("not-authorized")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), keys.stored_key):
            return Failure("not-authorized")
        server_signature = hmac.digest(keys.server_key, auth_message, self.hash_name)
        return Success(jid, b"v=" + base64.b64encode(server_signature))
