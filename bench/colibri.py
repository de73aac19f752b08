"""Allocates load-generator endpoints on a bridge through its Colibri2 HTTP API (docs/jitsi-protocol.md 2.7).

The requests are what Jicofo would send (2.3): create the conference with the first endpoint, one create per
further endpoint, then one update per endpoint with its ICE transport, fingerprint and full source set.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from colibri2.json import conference_modified_from_json, conference_modify_to_json
from colibri2.model import (
    Candidate,
    ConferenceModify,
    Endpoint,
    Fingerprint,
    IceUdpTransport,
    Media,
    MediaSource,
    Parameter,
    PayloadType,
    RtcpFb,
    RtpHdrExt,
    SourceDesc,
    SsrcGroupDesc,
    Transport,
)

AUDIO_LEVEL = RtpHdrExt(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
#: Transport-wide sequence numbers in extension 5, as the focus offers them (signaling/focus/media.py).
TRANSPORT_CC = RtpHdrExt(5, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01")
_OPUS = PayloadType(111, "opus", 48000, 2, (Parameter("minptime", "10"), Parameter("useinbandfec", "1")))

#: Jicofo's defaults (2.8), trimmed to what the load generator sends: opus 111 with audio levels in
#: extension 1, and VP8 100.
MEDIAS = (
    Media("audio", payload_types=(_OPUS,), rtp_hdrexts=(AUDIO_LEVEL,)),
    Media("video", payload_types=(PayloadType(100, "VP8", 90000),)),
)

#: With feedback (the scenario's `feedback`, on by default), what the focus offers a browser for the same
#: codecs: VP8 with its RTCP feedback (NACK, PLI, FIR, transport-cc) and RTX 96 (apt 100), transport-cc
#: on both medias. The bridge takes the extension id (`SetHeaderExtensions`) and RTX payload type from it.
MEDIAS_WITH_FEEDBACK = (
    Media(
        "audio",
        payload_types=(PayloadType(111, "opus", 48000, 2, _OPUS.parameters, (RtcpFb("transport-cc"),)),),
        rtp_hdrexts=(AUDIO_LEVEL, TRANSPORT_CC),
    ),
    Media(
        "video",
        payload_types=(
            PayloadType(
                100,
                "VP8",
                90000,
                rtcp_fbs=(
                    RtcpFb("nack"),
                    RtcpFb("nack", "pli"),
                    RtcpFb("ccm", "fir"),
                    RtcpFb("transport-cc"),
                ),
            ),
            PayloadType(96, "rtx", 90000, parameters=(Parameter("apt", "100"),)),
        ),
        rtp_hdrexts=(TRANSPORT_CC,),
    ),
)


class AllocationError(RuntimeError):
    """The bridge refused a Colibri2 request; carries its status and body."""


@dataclass(frozen=True, slots=True)
class BridgeTransport:
    """What the bridge answered for one endpoint: its ICE credentials, candidates and fingerprint."""

    ufrag: str
    pwd: str
    candidates: tuple[tuple[str, int], ...]
    fingerprint_hash: str
    fingerprint: str
    #: The bridge channel's colibri websocket URLs (none when the bridge has websockets off).
    web_sockets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalTransport:
    """The load-generator side of one endpoint, as the update carries it."""

    ufrag: str
    pwd: str
    fingerprint_hash: str
    fingerprint: str
    candidates: tuple[tuple[str, int], ...]
    #: DTLS role we take; the bridge takes the other one.
    setup: str = "active"


@dataclass(frozen=True, slots=True)
class SourceSet:
    """One endpoint's sources: an audio SSRC (or none), its video SSRCs (SIM group when several) and
    each one's RTX SSRC (an FID group each, as browsers signal them; none without RTX)."""

    endpoint_id: str
    audio_ssrc: int | None
    video_ssrcs: tuple[int, ...]
    rtx_ssrcs: tuple[int, ...] = ()

    def media_sources(self) -> tuple[MediaSource, ...]:
        out = []
        if self.audio_ssrc is not None:
            name = f"{self.endpoint_id}-a0"
            out.append(MediaSource("audio", name, sources=(SourceDesc(self.audio_ssrc, name),)))
        if self.video_ssrcs:
            name = f"{self.endpoint_id}-v0"
            groups: tuple[SsrcGroupDesc, ...] = ()
            if len(self.video_ssrcs) > 1:
                groups = (SsrcGroupDesc("SIM", self.video_ssrcs),)
            pairs = zip(self.video_ssrcs, self.rtx_ssrcs, strict=False)
            groups += tuple(SsrcGroupDesc("FID", pair) for pair in pairs)
            out.append(
                MediaSource(
                    "video",
                    name,
                    sources=tuple(SourceDesc(s, name) for s in self.video_ssrcs + self.rtx_ssrcs),
                    ssrc_groups=groups,
                )
            )
        return tuple(out)


class ColibriClient:
    """One bridge's private HTTP API, e.g. http://127.0.0.1:8080."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def _send(self, method: str, path: str, request: ConferenceModify) -> dict[str, object]:
        url = f"{self.base_url}{path}"
        async with self.session.request(method, url, json=conference_modify_to_json(request)) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise AllocationError(f"{method} {path}: HTTP {resp.status}: {body[:300]}")
            data: dict[str, object] = await resp.json()
            return data

    async def create_endpoint(
        self, meeting_id: str, endpoint_id: str, *, first: bool, feedback: bool = False
    ) -> BridgeTransport:
        """Creates `endpoint_id` (and the conference, when `first`) with the medias of `MEDIAS`, or with
        `feedback` those of `MEDIAS_WITH_FEEDBACK`; returns the bridge's transport."""
        request = ConferenceModify(
            meeting_id=meeting_id,
            create=first,
            name=f"{meeting_id}@conference.bench.invalid" if first else None,
            endpoints=(
                Endpoint(
                    id=endpoint_id,
                    create=True,
                    stats_id=endpoint_id,
                    medias=MEDIAS_WITH_FEEDBACK if feedback else MEDIAS,
                    transport=Transport(ice_controlling=True),
                    capabilities=("source-names",),
                    sources=(),
                ),
            ),
        )
        path = "/colibri/v2/conferences" if first else f"/colibri/v2/conferences/{meeting_id}"
        response = conference_modified_from_json(
            await self._send("POST" if first else "PATCH", path, request)
        )
        ep = next((e for e in response.endpoints if e.id == endpoint_id), None)
        ice = ep.transport.ice if ep is not None and ep.transport is not None else None
        if ice is None or ice.ufrag is None or ice.pwd is None or not ice.fingerprints:
            raise AllocationError(f"no ICE transport for {endpoint_id} in the answer")
        fp = next((f for f in ice.fingerprints if f.hash == "sha-256"), ice.fingerprints[0])
        return BridgeTransport(
            ufrag=ice.ufrag,
            pwd=ice.pwd,
            candidates=tuple((c.ip, c.port) for c in ice.candidates if c.protocol == "udp"),
            fingerprint_hash=fp.hash,
            fingerprint=fp.value,
            web_sockets=ice.web_sockets,
        )

    async def connect_endpoint(
        self, meeting_id: str, endpoint_id: str, local: LocalTransport, sources: SourceSet
    ) -> None:
        """The update Jicofo sends after session-accept: our transport and our complete source set."""
        ice = IceUdpTransport(
            ufrag=local.ufrag,
            pwd=local.pwd,
            candidates=tuple(
                Candidate(1, str(i + 1), 0, f"{endpoint_id}-{i}", ip, 0, port, 2130706431 - i, "udp", "host")
                for i, (ip, port) in enumerate(local.candidates)
            ),
            rtcp_mux=True,
            fingerprints=(Fingerprint(local.fingerprint_hash, local.fingerprint, local.setup),),
        )
        request = ConferenceModify(
            meeting_id=meeting_id,
            endpoints=(
                Endpoint(
                    id=endpoint_id,
                    stats_id=endpoint_id,
                    transport=Transport(ice=ice),
                    sources=sources.media_sources(),
                ),
            ),
        )
        await self._send("PATCH", f"/colibri/v2/conferences/{meeting_id}", request)

    async def expire_conference(self, meeting_id: str) -> None:
        await self._send(
            "PATCH",
            f"/colibri/v2/conferences/{meeting_id}",
            ConferenceModify(meeting_id=meeting_id, expire=True),
        )

    async def stats(self) -> dict[str, object]:
        async with self.session.get(f"{self.base_url}/colibri/stats") as resp:
            if resp.status != 200:
                raise AllocationError(f"GET /colibri/stats: HTTP {resp.status}")
            data: dict[str, object] = await resp.json()
            return data
