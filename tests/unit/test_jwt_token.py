"""The JWT verifier (signaling/xmpp/token.py): each claim, HS256 and RS256, leeway, the size bound.

Tokens are made as an issuer makes them (PyJWT, a real RSA key); each refusal names its reason.
"""

from __future__ import annotations

import base64
import hmac
import json
import time

import jwt
import pytest

from signaling.xmpp.token import REASONS, TokenConfig, TokenError, TokenVerifier
from tests.helpers.tokens import APP_ID, SECRET, claims, hs256, rs256, rsa_key


def verifier(**kw: object) -> TokenVerifier:
    base: dict[str, object] = {"app_id": APP_ID, "secret": SECRET}
    base.update(kw)
    return TokenVerifier(TokenConfig(**base), "meet.sluice")  # type: ignore[arg-type]


def refused(v: TokenVerifier, token: str | None) -> str:
    with pytest.raises(TokenError) as info:
        v.verify(token)
    assert info.value.reason in REASONS
    return info.value.reason


def test_a_valid_hs256_token_grants_its_claims() -> None:
    got = verifier().verify(hs256(claims("Team-Sync", moderator=True)))
    assert got.room == "team-sync" and got.moderator
    assert (got.name, got.email, got.user_id) == ("Grace Hopper", "grace@example.org", "u-42")
    assert got.allows_room("team-sync") and not got.allows_room("other")
    anywhere = verifier().verify(hs256(claims("*")))
    assert anywhere.allows_room("any-room") and not anywhere.moderator


def test_moderator_claim_forms() -> None:
    v = verifier()
    nested = claims()
    nested["context"]["user"]["moderator"] = "true"
    assert v.verify(hs256(nested)).moderator
    assert not v.verify(hs256(claims(moderator=False))).moderator
    assert refused(v, hs256(claims(moderator="yes"))) == "bad_claim"  # type: ignore[arg-type]


def test_rs256_with_the_public_key() -> None:
    key, pem = rsa_key()
    v = verifier(secret=None, public_key=pem)
    assert v.algorithm == "RS256"
    assert v.verify(rs256(claims("a"), key)).room == "a"
    other, _ = rsa_key()
    assert refused(v, rs256(claims("a"), other)) == "bad_signature"

    # Algorithm confusion: an HS256 token keyed with the public key's PEM is refused, not verified.
    # (Made by hand: PyJWT itself refuses to sign with a PEM as an HMAC secret.)
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims('a')).encode())}"
    mac = hmac.digest(pem.encode(), signing_input.encode(), "sha256")
    assert refused(v, f"{signing_input}.{b64(mac)}") == "bad_algorithm"


def test_signature_and_algorithm() -> None:
    v = verifier()
    assert refused(v, hs256(claims(), "another-secret-that-is-also-long-enough")) == "bad_signature"
    key, _ = rsa_key()
    assert refused(v, rs256(claims(), key)) == "bad_algorithm"
    # alg "none" (unsigned) is never accepted.
    assert refused(v, jwt.encode(claims(), "", algorithm="none")) == "bad_algorithm"
    # A tampered payload with the original signature.
    head, _body, sig = hs256(claims("a")).split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims("b")).encode()).rstrip(b"=").decode()
    assert refused(v, f"{head}.{body}.{sig}") == "bad_signature"


def test_malformed_missing_and_too_large() -> None:
    v = verifier(max_bytes=600)
    assert refused(v, None) == "missing"
    assert refused(v, "") == "missing"
    assert refused(v, "not.a.jwt") == "malformed"
    assert refused(v, "x" * 601) == "too_large"
    big = claims()
    big["padding"] = "p" * 600
    assert refused(v, hs256(big)) == "too_large"


def test_expiry_and_not_before_with_leeway() -> None:
    v = verifier(leeway=10)
    now = int(time.time())
    # Within the leeway either side: accepted.
    assert v.verify(hs256(claims(exp=now - 5)))
    assert v.verify(hs256(claims(nbf=now + 5)))
    # Past it: refused with the reason.
    assert refused(v, hs256(claims(exp=now - 30))) == "expired"
    assert refused(v, hs256(claims(nbf=now + 30))) == "not_yet_valid"
    assert refused(verifier(leeway=0), hs256(claims(exp=now - 5))) == "expired"


def test_audience_issuer_subject_and_required_claims() -> None:
    v = verifier()
    assert refused(v, hs256(claims(aud="someone-else"))) == "wrong_audience"
    assert verifier(audiences=("jitsi", APP_ID)).verify(hs256(claims()))
    assert refused(verifier(audiences=("jitsi",)), hs256(claims())) == "wrong_audience"
    assert refused(v, hs256(claims(iss="evil-app"))) == "wrong_issuer"
    assert refused(v, hs256(claims(sub="other.example"))) == "wrong_subject"
    assert v.verify(hs256(claims(sub="*")))
    assert v.verify(hs256(claims(sub="MEET.sluice")))
    for claim in ("exp", "aud", "iss", "sub", "room"):
        c = claims()
        del c[claim]
        assert refused(v, hs256(c)) == "missing_claim", claim


def test_bad_context_values() -> None:
    v = verifier()
    assert refused(v, hs256(claims(context="x"))) == "bad_claim"
    assert refused(v, hs256(claims(context={"user": ["x"]}))) == "bad_claim"
    assert refused(v, hs256(claims(name="n" * 129))) == "bad_claim"
    assert refused(v, hs256(claims(room=""))) == "bad_claim"
    assert refused(v, hs256(claims(room=7))) == "bad_claim"  # type: ignore[arg-type]
    assert v.verify(hs256(claims(name=None))).name is None


def test_configuration_needs_one_key() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TokenConfig(app_id="a")
    with pytest.raises(ValueError, match="exactly one"):
        TokenConfig(app_id="a", secret="s", public_key="p")
    with pytest.raises(ValueError, match="does not load"):
        TokenVerifier(TokenConfig(app_id="a", public_key="not a pem"), "meet.sluice")
