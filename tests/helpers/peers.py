"""aiortc peers for integration tests: synthetic media out, decoded-frame counters in.

A peer answers the bridge's offers (see `tests.helpers.sdp`), sends a moving 320x240 VP8 picture at 30 fps
and a 400 Hz opus tone, and counts what it decodes on each m-line. Frames are attributed to participants
through the offers' layout (mid -> participant), which never changes for a given mid.

Facts about aiortc 1.16 that shape this (and that the bridge must respect):
- It routes incoming RTP by the SSRCs signalled on each m-line (``a=ssrc``; the first one is the media
  SSRC, a second one in the same m-line is taken as its RTX). A receiver registers its SSRCs only once,
  when it starts; an SSRC that was never signalled is latched to a receiver only if exactly one receiver
  has that payload type, otherwise it is dropped. RTX SSRCs are never registered, so with two or more
  video m-lines forwarded RTX is dropped by the receiver (harmless: retransmissions only).
- Every transceiver has a sender SSRC, also the recvonly ones: RTCP RR, NACK and PLI of a receiver go out
  with that (never signalled as a source) SSRC as the packet sender SSRC.
- A receiver sends a PLI when its VP8 decoder fails (e.g. the first frame it gets is not a keyframe) or
  its jitter buffer resets; its encoder makes a keyframe only at start and on PLI/FIR (gop 3000 frames).
- A receiver that gets an RTCP BYE for its SSRC stops decoding for good.
- With the default bundlePolicy ("balanced") a first offer carrying two m-lines of the same kind breaks:
  the later one stays on a per-kind transport that BUNDLE discards. Peers here use "max-bundle".
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import struct
import time
from collections import defaultdict
from typing import Protocol

import av
from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCCertificate

from bridge import Fingerprint, TransportDescription
from bridge.description import Setup
from tests.helpers.sdp import BridgeOffer, PeerAnswer, with_fingerprints

VIDEO_WIDTH = 320
VIDEO_HEIGHT = 240


class MovingPatternTrack(VideoStreamTrack):
    """A diagonal luma ramp that moves every frame, with slowly cycling chroma (320x240, 30 fps)."""

    def __init__(self, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self._ramp = bytes(i & 0xFF for i in range(256 + width))
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(width=self.width, height=self.height, format="yuv420p")
        step = (self._count * 4) & 0xFF
        luma = frame.planes[0]
        pad = bytes(luma.line_size - self.width)
        rows = [
            self._ramp[(y + step) & 0xFF : ((y + step) & 0xFF) + self.width] + pad for y in range(self.height)
        ]
        luma.update(b"".join(rows))
        for index, plane in enumerate(frame.planes[1:]):
            value = 128 + int(60 * math.sin(self._count / 15 + index * math.pi / 2))
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self._count += 1
        return frame


class ToneTrack(AudioStreamTrack):
    """A 400 Hz tone: 20 ms stereo s16 frames at 48 kHz (exactly 8 periods per frame)."""

    SAMPLE_RATE = 48000
    SAMPLES = 960

    def __init__(self, frequency: int = 400) -> None:
        super().__init__()
        samples = [
            int(8000 * math.sin(2 * math.pi * frequency * i / self.SAMPLE_RATE)) for i in range(self.SAMPLES)
        ]
        self._payload = b"".join(struct.pack("<hh", s, s) for s in samples)
        self._pts = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            self._pts += self.SAMPLES
            await asyncio.sleep(max(0.0, self._t0 + self._pts / self.SAMPLE_RATE - time.monotonic()))
        frame = av.AudioFrame(format="s16", layout="stereo", samples=self.SAMPLES)
        frame.planes[0].update(self._payload)
        frame.pts = self._pts
        frame.sample_rate = self.SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        return frame


class AiortcPeer:
    """One aiortc participant. Use `answer()` for every offer the bridge makes to it, `close()` at the end."""

    def __init__(self, name: str, *, send_audio: bool = True, send_video: bool = True) -> None:
        self.name = name
        # max-bundle: with aiortc's default (balanced), a FIRST offer with two m-lines of one kind leaves the
        # second on the transport that BUNDLE then discards, and that m-line never receives anything.
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.local_tracks: list[MediaStreamTrack] = []
        if send_audio:
            self.local_tracks.append(ToneTrack())
        if send_video:
            self.local_tracks.append(MovingPatternTrack())
        for track in self.local_tracks:
            self.pc.addTrack(track)
        self.video_frames: dict[str, int] = defaultdict(int)
        self.audio_frames: dict[str, int] = defaultdict(int)
        self.frame_sizes: dict[str, tuple[int, int]] = {}
        self.mid_owner: dict[str, str] = {}
        self.offers: list[BridgeOffer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: list[MediaStreamTrack] = []
        self.closed = False
        self.pc.on("track", self._pending.append)

    async def answer(self, offer: BridgeOffer) -> str:
        """Applies a bridge offer (first or re-offer) and returns the complete answer (all candidates)."""
        self._remember(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # aiortc gathers inside setLocalDescription: the description is complete here.
        self._start_consumers()
        return self.pc.localDescription.sdp

    def describe_for_bridge(self, answer: PeerAnswer) -> TransportDescription:
        """The transport the test hands to the bridge for this peer (a lying peer overrides this)."""
        return answer.transport

    def _remember(self, offer: BridgeOffer) -> None:
        self.offers.append(offer)
        for section in offer.sections:
            if section.participant is not None:
                self.mid_owner.setdefault(section.mid, section.participant)

    def _start_consumers(self) -> None:
        pending, self._pending[:] = list(self._pending), []
        for track in pending:
            mid = self._mid_of(track)
            self._tasks.append(asyncio.create_task(self._consume(track, mid), name=f"{self.name}-recv-{mid}"))

    def _mid_of(self, track: MediaStreamTrack) -> str:
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is track and transceiver.mid is not None:
                return transceiver.mid
        raise LookupError(f"{self.name}: no transceiver for remote track {track.id}")

    async def _consume(self, track: MediaStreamTrack, mid: str) -> None:
        counters = self.video_frames if track.kind == "video" else self.audio_frames
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                counters[mid] += 1
                if isinstance(frame, av.VideoFrame):
                    self.frame_sizes[mid] = (frame.width, frame.height)

    def mids_of(self, participant: str) -> list[str]:
        return [mid for mid, owner in self.mid_owner.items() if owner == participant]

    def frames_from(self, participant: str) -> int:
        """Video frames decoded so far from `participant` (0 if it was never offered to this peer)."""
        return sum(self.video_frames[mid] for mid in self.mids_of(participant))

    def audio_frames_from(self, participant: str) -> int:
        return sum(self.audio_frames[mid] for mid in self.mids_of(participant))

    def frame_size_from(self, participant: str) -> tuple[int, int] | None:
        return next((self.frame_sizes[m] for m in self.mids_of(participant) if m in self.frame_sizes), None)

    def summary(self) -> str:
        owners = sorted(set(self.mid_owner.values()))
        parts = [f"{o}: video={self.frames_from(o)} audio={self.audio_frames_from(o)}" for o in owners]
        return f"{self.name} [{self.pc.connectionState}] " + ", ".join(parts)

    async def close(self) -> None:
        """Cancels the recv loops first (else they raise MediaStreamError), then closes the connection."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task
        await self.pc.close()
        for track in self.local_tracks:
            track.stop()


def foreign_fingerprints(setup: Setup = "active") -> tuple[Fingerprint, ...]:
    """Fingerprints of a freshly generated certificate that no peer uses."""
    cert = RTCCertificate.generateCertificate()
    return tuple(Fingerprint.parse(fp.algorithm, fp.value, setup) for fp in cert.getFingerprints())


class PeerFactory(Protocol):
    """The `aiortc_peers` fixture: makes peers that are closed at teardown."""

    def __call__(
        self, name: str, cls: type[AiortcPeer] = ..., *, send_audio: bool = ..., send_video: bool = ...
    ) -> AiortcPeer: ...


class WrongFingerprintPeer(AiortcPeer):
    """A normal aiortc peer, except that the bridge is told the fingerprints of ANOTHER certificate.

    Its DTLS handshake therefore presents a certificate that matches none of the signalled fingerprints;
    the bridge must refuse the transport (endpoint state "failed") and forward nothing to or from it.
    """

    def describe_for_bridge(self, answer: PeerAnswer) -> TransportDescription:
        setup = answer.transport.fingerprints[0].setup
        return with_fingerprints(answer.transport, foreign_fingerprints(setup))
