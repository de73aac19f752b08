"""The shared c2s client's pure parts: the reconnect backoff and how slixmpp is set up for an account."""

from __future__ import annotations

import ssl

import pytest

from xmppclient import Account, Backoff, Reconnect, make_slixmpp


def no_jitter(low: float, high: float) -> float:
    return 1.0


def test_backoff_grows_by_the_factor_up_to_the_ceiling_and_starts_over_after_a_session() -> None:
    backoff = Backoff(Reconnect(min=0.5, max=3.0, factor=2.0), no_jitter)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5
    tripling = Backoff(Reconnect(min=0.2, max=30.0, factor=3.0), no_jitter)
    assert [round(tripling.next(), 6) for _ in range(3)] == [0.2, 0.6, 1.8]


def test_each_delay_is_jittered_within_a_fifth_either_way() -> None:
    asked: list[tuple[float, float]] = []

    def jitter(low: float, high: float) -> float:
        asked.append((low, high))
        return high

    backoff = Backoff(Reconnect(min=1.0, max=10.0), jitter)
    assert backoff.next() == pytest.approx(1.2)
    assert backoff.next() == pytest.approx(2.4), "the jitter does not compound into the next delay"
    assert asked == [(0.8, 1.2), (0.8, 1.2)]


async def test_plain_tcp_allows_scram_only() -> None:
    xmpp = make_slixmpp(Account("jvb@auth.meet.test", "pw", "127.0.0.1", use_tls=False))
    mechanisms = xmpp.plugin["feature_mechanisms"]
    assert mechanisms.unencrypted_scram, "SCRAM never sends the password"
    assert not mechanisms.unencrypted_plain
    assert xmpp.enable_plaintext and not xmpp.enable_starttls and not xmpp.enable_direct_tls


async def test_tls_is_starttls_with_certificates_checked_unless_told_otherwise() -> None:
    xmpp = make_slixmpp(Account("focus@auth.meet.test/focus", "pw", "xmpp.example"))
    assert xmpp.enable_starttls and not xmpp.enable_plaintext and not xmpp.enable_direct_tls
    assert not xmpp.plugin["feature_mechanisms"].unencrypted_scram
    assert xmpp.ssl_context.verify_mode == ssl.CERT_REQUIRED and xmpp.ssl_context.check_hostname
    assert str(xmpp.boundjid) == "focus@auth.meet.test/focus"
    unchecked = make_slixmpp(
        Account("focus@auth.meet.test", "pw", "xmpp.example", disable_certificate_verification=True)
    )
    assert unchecked.ssl_context.verify_mode == ssl.CERT_NONE and not unchecked.ssl_context.check_hostname
    plain = make_slixmpp(
        Account(
            "focus@auth.meet.test", "pw", "127.0.0.1", use_tls=False, disable_certificate_verification=True
        )
    )
    assert plain.ssl_context.verify_mode == ssl.CERT_REQUIRED, "the switch only counts with TLS"
