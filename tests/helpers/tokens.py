"""Tokens as a Jitsi deployment's issuer makes them (PyJWT), for the verifier's and the browsers' tests."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

APP_ID = "sluice-test"
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def claims(
    room: str = "*",
    *,
    name: str | None = "Grace Hopper",
    moderator: bool | None = None,
    lifetime: float = 3600.0,
    **extra: Any,
) -> dict[str, Any]:
    """A Jitsi-style claim set: iss = aud = the app id, sub = the domain, room, context.user."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": APP_ID,
        "aud": APP_ID,
        "sub": "meet.sluice",
        "room": room,
        "iat": now,
        "nbf": now - 5,
        "exp": now + int(lifetime),
        "context": {
            "user": {"id": "u-42", "email": "grace@example.org", "avatar": "https://example.org/g.png"}
        },
    }
    if name is not None:
        out["context"]["user"]["name"] = name
    if moderator is not None:
        out["moderator"] = moderator
    out.update(extra)
    return out


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def rsa_key() -> tuple[rsa.RSAPrivateKey, str]:
    """A fresh RSA key and its public half as PEM text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    return jwt.encode(payload, key, algorithm="RS256")
