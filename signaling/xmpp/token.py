"""JWT tokens as Jitsi deployments issue them (Prosody's token auth), verified with PyJWT.

A room URL carries `?jwt=<token>`; the web client passes it on the XMPP WebSocket URL as `?token=`, and the
server verifies it when the session authenticates (SASL ANONYMOUS on the login domain). What is checked:

- the signature: HS256 with the app secret, or RS256 with the app's public key (exactly one algorithm is
  accepted, so a token cannot pick another one, e.g. HS256 keyed with the public key);
- `exp` (required) and `nbf`/`iat` (when present), with `leeway` seconds either way for clock skew;
- `aud` (one of the accepted audiences), `iss` (the app id), `sub` (this server's domain or `*`);
- `room` (required): a room name or `*`, checked later when the session asks for or joins a room;
- `context.user` (name, email, avatar, id: strings of bounded length) and `moderator` (top-level, or
  `context.user.moderator` as some issuers put it; a boolean or "true"/"false").

PyJWT reads the wall clock for `exp`/`nbf`: the one clock read here, as tokens carry wall-clock times.
Every refusal is a `TokenError` whose `reason` is one of `REASONS` (a bounded label set for counters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

#: Why a token was refused; each is a counter `token_refused_<reason>`.
REASONS = (
    "missing",
    "too_large",
    "malformed",
    "bad_algorithm",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "wrong_subject",
    "missing_claim",
    "bad_claim",
    "wrong_room",
)

#: Longest value taken from `context.user` (characters); longer is `bad_claim`.
USER_FIELD_LIMITS = {"name": 128, "email": 254, "avatar": 1024, "id": 256}
#: Longest room claim (room names are at most 64 characters; signaling/web.py).
MAX_ROOM_CLAIM = 64


class TokenError(Exception):
    """A token refused: `reason` (one of REASONS) and a text for the client."""

    def __init__(self, reason: str, text: str) -> None:
        assert reason in REASONS, reason
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """How tokens are verified (`[signaling.auth.token]` in the settings file)."""

    #: The issuer (`iss`) tokens must carry: Jitsi's app id.
    app_id: str
    #: HS256 shared secret; exactly one of `secret` and `public_key` is set.
    secret: str | None = None
    #: RS256: the issuer's public key, PEM text.
    public_key: str | None = None
    #: Accepted `aud` values; empty: the app id alone.
    audiences: tuple[str, ...] = ()
    #: Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    leeway: float = 10.0
    #: Largest token accepted (bytes of its compact form); browsers and proxies cap URLs near 8 KiB anyway.
    max_bytes: int = 4096

    def __post_init__(self) -> None:
        if (self.secret is None) == (self.public_key is None):
            raise ValueError("a token configuration needs exactly one of an app secret and a public key")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token grants its session."""

    #: The room it is for, lower case, or "*" for any room.
    room: str
    moderator: bool = False
    name: str | None = None
    email: str | None = None
    avatar: str | None = None
    user_id: str | None = None

    def allows_room(self, room: str) -> bool:
        return self.room == "*" or self.room == room.lower()


class TokenVerifier:
    """Verifies tokens for one server domain."""

    def __init__(self, config: TokenConfig, domain: str) -> None:
        self.config = config
        self.domain = domain.lower()
        self._algorithm = "HS256" if config.secret is not None else "RS256"
        self._key: Any
        if config.secret is not None:
            self._key = config.secret
        else:
            assert config.public_key is not None
            from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: PLC0415

            try:
                self._key = load_pem_public_key(config.public_key.encode())
            except ValueError as exc:
                raise ValueError(f"the token public key does not load: {exc}") from None
        self._audiences = list(config.audiences or (config.app_id,))

    @property
    def algorithm(self) -> str:
        return self._algorithm

    def verify(self, token: str | None) -> TokenClaims:
        """The token's claims, or TokenError saying why not."""
        if not token:
            raise TokenError("missing", "a token is required")
        if len(token.encode()) > self.config.max_bytes:
            raise TokenError("too_large", f"the token is larger than {self.config.max_bytes} bytes")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audiences,
                issuer=self.config.app_id,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "aud", "sub", "room"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "the token has expired") from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise TokenError("not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenError("wrong_audience", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("wrong_issuer", "the token was issued by another app") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("missing_claim", f"the token has no {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("bad_algorithm", f"the token is not signed with {self._algorithm}") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature", "the token's signature does not verify") from None
        except jwt.InvalidKeyError:
            raise TokenError("bad_algorithm", f"the token is not signed with {self._algorithm}") from None
        except jwt.DecodeError:
            raise TokenError("malformed", "the token does not decode") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError("bad_claim", f"the token is invalid: {exc}") from None
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> TokenClaims:
        sub = claims["sub"]
        if not isinstance(sub, str) or sub.lower() not in ("*", self.domain):
            raise TokenError("wrong_subject", "the token is for another domain")
        room = claims["room"]
        if not isinstance(room, str) or not room or len(room) > MAX_ROOM_CLAIM:
            raise TokenError("bad_claim", "the token's room claim is not a room name")
        context = claims.get("context", {})
        if not isinstance(context, dict):
            raise TokenError("bad_claim", "the token's context is not an object")
        user = context.get("user", {})
        if not isinstance(user, dict):
            raise TokenError("bad_claim", "the token's context.user is not an object")
        fields: dict[str, str | None] = {}
        for key, limit in USER_FIELD_LIMITS.items():
            value = user.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise TokenError("bad_claim", f"context.user.{key} is not a string of at most {limit}")
            fields[key] = value.strip() or None if isinstance(value, str) else None
        moderator = _flag(claims.get("moderator", user.get("moderator", False)))
        return TokenClaims(
            room=room.lower(),
            moderator=moderator,
            name=fields["name"],
            email=fields["email"],
            avatar=fields["avatar"],
            user_id=fields["id"],
        )


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise TokenError("bad_claim", "the token's moderator claim is not a boolean")
