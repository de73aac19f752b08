"""Three aiortc peers in one conference through the bridge's Python API (real native core, real peers)."""

from __future__ import annotations

import asyncio

import pytest

from bridge import Bridge
from tests.helpers.call import Call, wait_until
from tests.helpers.peers import AiortcPeer, PeerFactory, WrongFingerprintPeer

pytestmark = pytest.mark.integration


def fingerprint_failures(stats: dict[str, object]) -> int:
    """Transports refused because the peer's certificate matched none of its announced fingerprints."""
    failures = stats["failures"]
    assert isinstance(failures, dict), stats
    value = failures["dtls_fingerprint"]
    assert isinstance(value, int)
    return value


def cross_counts(peers: list[AiortcPeer]) -> str:
    return "; ".join(p.summary() for p in peers)


async def test_three_peers_exchange_video_and_audio_then_one_leaves(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    call = Call(bridge.create_conference(meeting_id="three-aiortc"))
    alice, bob, carol = aiortc_peers("alice"), aiortc_peers("bob"), aiortc_peers("carol")
    peers = [alice, bob, carol]

    await call.join(alice)
    await call.join(bob)
    # alice joined alone, so her sendrecv pair started without SSRCs and aiortc latches bob's SSRCs there
    # by payload type; that only works while she has one receiver per payload type, i.e. before carol.
    await wait_until(
        lambda: alice.frames_from("bob") > 0 and bob.frames_from("alice") > 0,
        within=10,
        describe=lambda: cross_counts(peers),
    )
    await call.join(carol)

    took = await wait_until(
        lambda: all(p.frames_from(o.name) >= 30 for p in peers for o in peers if o is not p),
        within=15,
        describe=lambda: cross_counts(peers),
    )
    for p in peers:
        for o in peers:
            if o is not p:
                assert p.audio_frames_from(o.name) > 0, f"{p.name} decoded no audio from {o.name}"
                assert p.frame_size_from(o.name) == (320, 240)
    print(f"all six video directions at >= 30 frames after {took:.1f} s: {cross_counts(peers)}")

    stats = await bridge.get_stats()
    total = stats["total"]
    assert isinstance(total, dict)
    assert total["packets_in"] > 0 and total["packets_out"] > 0, total

    # carol leaves: endpoint expired, peer closed, alice and bob re-offered with her m-lines inactive.
    await call.leave("carol", renegotiate=True)
    assert call.conference.get_endpoint("carol") is None
    before = (alice.frames_from("bob"), bob.frames_from("alice"))
    await asyncio.sleep(3)
    after = (alice.frames_from("bob"), bob.frames_from("alice"))
    assert after[0] >= before[0] + 30, f"alice stopped receiving bob after carol left: {before} -> {after}"
    assert after[1] >= before[1] + 30, f"bob stopped receiving alice after carol left: {before} -> {after}"


async def test_wrong_dtls_fingerprint_is_refused_and_counted(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    call = Call(bridge.create_conference(meeting_id="fingerprint"))
    alice = aiortc_peers("alice")
    await call.join(alice)
    baseline = fingerprint_failures(await bridge.get_stats())

    mallory = aiortc_peers("mallory", WrongFingerprintPeer)
    member = await call.join(mallory, wait=False)
    try:
        state = await member.endpoint.wait_state("connected", timeout=15)
    except TimeoutError:
        pytest.fail(f"mallory's transport neither connected nor failed in 15 s: {member.endpoint.state!r}")
    assert state == "failed", f"a peer with a foreign certificate got {state!r} ({member.endpoint.detail!r})"

    assert "fingerprint" in member.endpoint.detail, member.endpoint.detail
    value = fingerprint_failures(await bridge.get_stats())
    assert value == baseline + 1, f"failures.dtls_fingerprint did not rise by one: {baseline} -> {value}"

    await asyncio.sleep(1)
    assert alice.frames_from("mallory") == 0, "media of a refused transport was forwarded"
    assert call.members["alice"].endpoint.state == "connected"
