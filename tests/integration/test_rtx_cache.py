"""The bridge's RTX cache with a third-party receiver: aiortc loses two of Alice's video packets on its way
in, NACKs them itself, and gets them from the bridge as RTX (RFC 4588) on the RTX SSRC it was told, which it
unwraps to the very payloads it lost; Alice is not asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from bridge import Bridge
from colibri2.model import Media, Parameter, PayloadType
from tests.helpers.call import Call, wait_until
from tests.helpers.peers import PeerFactory
from tests.helpers.sdp import RTX_PT, VIDEO_PT
from tests.integration.test_feedback_ssrc import receiver_for

pytestmark = pytest.mark.integration


def _transport_counters(stats: dict[str, object], transport: int) -> dict[str, Any]:
    transports = stats.get("transports")
    assert isinstance(transports, dict)
    counters = transports.get(transport)
    assert isinstance(counters, dict), transports.keys()
    return counters


async def test_an_aiortc_receivers_nacks_are_answered_with_rtx_from_the_cache(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    call = Call(bridge.create_conference(meeting_id="rtx-cache"))
    alice, bob = aiortc_peers("alice"), aiortc_peers("bob")
    await call.join(alice)
    await call.join(bob)
    # What Colibri2 would say of both (the helper's Call sets no medias): VP8 and its RTX.
    video_media = Media(
        "video",
        (
            PayloadType(VIDEO_PT, "VP8", 90000),
            PayloadType(RTX_PT, "rtx", 90000, parameters=(Parameter("apt", str(VIDEO_PT)),)),
        ),
    )
    for member in call.members.values():
        member.endpoint.set_medias((video_media,))
    await wait_until(lambda: bob.frames_from("alice") > 10, within=10, describe=bob.summary)

    video = next(s for s in call.members["alice"].sources if s.kind == "video")
    group = next(g for g in video.groups if g.semantics == "FID")
    primary, rtx = group.ssrcs[0], group.ssrcs[1]
    receiver = receiver_for(bob, "alice", "video")
    handle: Callable[..., Awaitable[None]] = receiver._handle_rtp_packet
    lost: dict[int, bytes] = {}
    resent: dict[int, bytes] = {}
    seen = 0

    async def lossy(packet: RtpPacket, arrival_time_ms: int) -> None:
        nonlocal seen
        if packet.ssrc == primary:
            seen += 1
            # Two in a row, once, a while after the handler is in place.
            if 20 <= seen < 22 and len(lost) < 2:
                lost[packet.sequence_number] = packet.payload
                return
        elif packet.ssrc == rtx and len(packet.payload) >= 2:
            resent[int.from_bytes(packet.payload[:2], "big")] = packet.payload[2:]
        await handle(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = lossy  # type: ignore[method-assign]
    await wait_until(
        lambda: len(lost) == 2 and set(lost) <= set(resent),
        within=10,
        describe=lambda: f"{lost.keys()} {resent.keys()}",
    )
    assert {seq: resent[seq] for seq in lost} == lost, "the RTX payloads are not the ones lost"

    stats = await bridge.get_stats()
    bob_transport = call.members["bob"].endpoint.transport_id
    counters = _transport_counters(stats, bob_transport)
    assert counters["retransmitted"] >= 2 and counters["nack_cache_hit"] >= 2, counters
    assert counters["retransmitted_bytes"] > sum(map(len, lost.values())), counters
    assert counters["nack_cache_miss"] == 0, counters
