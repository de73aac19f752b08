"""The bridge's own RTCP comes from the feedback SSRCs its Colibri2 answer signals (`jvb-a0`, `jvb-v0`).

Two aiortc peers in a real call through the real bridge, the conference created by the Colibri2 handler. Alice
records every RTCP packet aiortc decrypts for her; every packet the bridge sends as itself (its receiver
reports and their SDES, the PLI it asks for a keyframe with, and the FIR and NACK it passes on from Bob) must
carry the answer's SSRC for the kind of the stream it is about.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

import pytest
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
)

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from colibri2.model import ConferenceModify
from tests.helpers.call import Call, wait_until
from tests.helpers.peers import AiortcPeer, PeerFactory
from tests.helpers.sdp import BridgeOffer

pytestmark = pytest.mark.integration

MEETING = "feedback-ssrcs"
RTCP_PSFB_FIR = 4  # RFC 5104 4.3.1


class RtcpRecordingPeer(AiortcPeer):
    """An aiortc peer that also keeps every RTCP packet it receives, as aiortc decrypted and parsed it."""

    def __init__(self, name: str, *, send_audio: bool = True, send_video: bool = True) -> None:
        super().__init__(name, send_audio=send_audio, send_video=send_video)
        self.rtcp: list[AnyRtcpPacket] = []
        self._recording: set[int] = set()

    async def answer(self, offer: BridgeOffer) -> str:
        sdp = await super().answer(offer)
        # Transports exist once the description is set, and carry no SRTCP before DTLS: nothing is missed.
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if id(dtls) in self._recording:
                continue
            self._recording.add(id(dtls))
            handle: Callable[[bytes], Awaitable[None]] = dtls._handle_rtcp_data

            async def recording(data: bytes, handle: Callable[[bytes], Awaitable[None]] = handle) -> None:
                with contextlib.suppress(ValueError):
                    self.rtcp.extend(RtcpPacket.parse(data))
                await handle(data)

            dtls._handle_rtcp_data = recording  # type: ignore[method-assign]
        return sdp


def receiver_for(peer: AiortcPeer, participant: str, kind: str) -> RTCRtpReceiver:
    """`peer`'s receiver of `participant`'s stream of `kind` (aiortc sends RTCP through receivers)."""
    for transceiver in peer.pc.getTransceivers():
        if transceiver.mid in peer.mids_of(participant) and transceiver.kind == kind:
            return transceiver.receiver
    raise LookupError(f"{peer.name} has no {kind} receiver for {participant}")


def about(packet: AnyRtcpPacket) -> tuple[str, int, list[int]]:
    """(what, packet sender SSRC, the media SSRCs it is about) for a packet the bridge sends as itself."""
    if isinstance(packet, RtcpRrPacket):
        return "rr", packet.ssrc, [r.ssrc for r in packet.reports]
    if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
        return "pli", packet.ssrc, [packet.media_ssrc]
    if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
        # FCI entries: SSRC, seq nr, 3 reserved octets (RFC 5104 4.3.1.1).
        entries = [packet.fci[i : i + 8] for i in range(0, len(packet.fci), 8)]
        return "fir", packet.ssrc, [struct.unpack("!L", e[:4])[0] for e in entries]
    if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
        return "nack", packet.ssrc, [packet.media_ssrc]
    raise AssertionError(f"the bridge sent an unexpected RTCP packet: {packet}")


async def test_every_rtcp_packet_of_the_bridge_comes_from_the_signalled_feedback_ssrcs(
    bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    handler = Colibri2Handler(bridge)
    created = handler.handle(ConferenceModify(MEETING, create=True))
    assert created.sources is not None
    signalled = {ms.type: ms.sources[0].ssrc for ms in created.sources}
    assert set(signalled) == {"audio", "video"} and signalled["audio"] != signalled["video"], created.sources
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None

    call = Call(conference)
    alice = aiortc_peers("alice", RtcpRecordingPeer)
    bob = aiortc_peers("bob")
    assert isinstance(alice, RtcpRecordingPeer)
    await call.join(alice)
    await call.join(bob)
    await wait_until(lambda: bob.frames_from("alice") > 0, within=10, describe=bob.summary)

    kind_of = {ssrc: s.kind for s in call.members["alice"].sources for ssrc in s.ssrcs}
    audio = next(ssrc for ssrc, kind in kind_of.items() if kind == "audio")
    video = next(ssrc for ssrc, kind in kind_of.items() if kind == "video")
    # Bob asks for a keyframe and for retransmissions; the bridge passes FIR and NACK on as itself and
    # answers the PLI with its own (rate-limited, so one may already have gone out when Bob joined).
    bob_video, bob_audio = receiver_for(bob, "alice", "video"), receiver_for(bob, "alice", "audio")
    await bob_video._send_rtcp_pli(video)
    fir = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=0x7777, media_ssrc=0, fci=struct.pack("!LBxxx", video, 1))
    await bob_video._send_rtcp(fir)
    # A video NACK names a sequence number Bob was sent (the bridge maps it back through Bob's Projection;
    # one it never sent goes nowhere). Asked after the bridge's RTX cache let it go (1 s), it is passed on.
    streams = bob_video._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    sent_to_bob = streams[video].max_seq
    await asyncio.sleep(1.2)
    await bob_video._send_rtcp_nack(video, [sent_to_bob])
    await bob_audio._send_rtcp_nack(audio, [1])

    wanted = {("rr", audio), ("rr", video), ("pli", video), ("fir", video), ("nack", audio), ("nack", video)}

    def seen() -> set[tuple[str, int]]:
        own = [p for p in alice.rtcp if not isinstance(p, RtcpSrPacket | RtcpSdesPacket)]
        return {(what, m) for what, _, media in map(about, own) for m in media}

    await wait_until(lambda: wanted <= seen(), within=10, describe=lambda: f"missing {wanted - seen()}")

    # SRs are Bob's own, passed on; everything else is the bridge speaking.
    for packet in alice.rtcp:
        if isinstance(packet, RtcpSrPacket):
            assert packet.ssrc in {s for m in call.members["bob"].sources for s in m.ssrcs}, packet
        elif isinstance(packet, RtcpSdesPacket):
            for chunk in packet.chunks:
                assert chunk.ssrc in signalled.values(), f"SDES from {chunk.ssrc:#x}, signalled {signalled}"
        else:
            what, sender, media = about(packet)
            kinds = {kind_of[m] for m in media}
            assert len(kinds) == 1, f"{what} about {media} mixes kinds"
            kind = kinds.pop()
            assert sender == signalled[kind], f"{what} about {media} came from {sender:#x}, not {signalled}"
