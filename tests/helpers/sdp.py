"""Test-side signaling glue: the bridge's SDP offer to one peer, and that peer's answer parsed back.

This is NOT the product's signaling (signaling/ will speak Jingle). It only lets real WebRTC stacks
(aiortc, Chromium) talk to the bridge through its Python API in tests.

The bridge is the offerer, like Jitsi's session-initiate:

- one BUNDLE group, one set of ICE credentials, the bridge's fingerprint(s) with ``a=setup:actpass``,
  its host candidates and ``a=end-of-candidates`` (it has them all up front), ``a=rtcp-mux``;
- no ``a=ice-lite``: the bridge is a full, controlling agent, so the peer must take the controlled role;
- mid 0 (audio, opus/48000/2, PT 111) and mid 1 (video, VP8/90000, PT 100) are ``sendrecv``: the peer sends
  its own audio and video on them, and receives the FIRST remote participant's sources on them;
- every further remote participant gets one more audio + video pair, ``sendonly`` from the bridge's side;
- every remote source is signalled with ``a=ssrc:<ssrc> cname:``/``msid:`` (and ``a=ssrc-group:FID`` for
  RTX), because the bridge forwards packets unchanged and the peer must route them by SSRC;
- no sdes:mid / rid header extensions (a sender's MID would be wrong for the receiver) and the same payload
  types in every offer (the bridge does not rewrite them).

Renegotiation keeps the existing m-lines in their order and appends new pairs (`OfferBuilder`). A slot is
never reused for another participant: aiortc registers a receiver's SSRCs only once, when it starts.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, cast

from bridge import Candidate, Fingerprint, Source, SsrcGroup, TransportDescription
from bridge.description import CandidateType, MediaKind, Setup

AUDIO_PT = 111
VIDEO_PT = 100
RTX_PT = 101

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True, slots=True)
class RemoteParticipant:
    """Another participant of the conference, as the bridge will present it to a peer."""

    endpoint_id: str
    sources: tuple[Source, ...]

    def source(self, kind: MediaKind) -> Source | None:
        return next((s for s in self.sources if s.kind == kind), None)


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One m-line of a bridge offer. `direction` is from the bridge's side."""

    mid: str
    kind: MediaKind
    direction: Direction
    participant: str | None
    source: Source | None


@dataclass(frozen=True, slots=True)
class BridgeOffer:
    sdp: str
    sections: tuple[MediaSection, ...]
    version: int

    @property
    def mids(self) -> tuple[str, ...]:
        return tuple(s.mid for s in self.sections)

    def participant_of(self, mid: str) -> str | None:
        return next((s.participant for s in self.sections if s.mid == mid), None)

    def mids_of(self, participant: str, kind: MediaKind | None = None) -> tuple[str, ...]:
        return tuple(
            s.mid for s in self.sections if s.participant == participant and (kind is None or s.kind == kind)
        )

    def participant_of_ssrc(self, ssrc: int) -> str | None:
        for s in self.sections:
            if s.source is not None and ssrc in s.source.ssrcs:
                return s.participant
        return None


@dataclass(slots=True)
class _Slot:
    participant: RemoteParticipant | None
    left: bool = False


class OfferBuilder:
    """The bridge's successive offers to ONE peer: same transport, m-lines only ever appended.

    Slot 0 (mids 0 and 1) is the peer's own sendrecv pair and carries the first participant added;
    each later participant gets a new sendonly pair at the end. A participant that leaves keeps its slot
    (no ssrc lines; ``inactive``, except the sendrecv pair, which the peer still sends on).
    """

    def __init__(self, transport: TransportDescription, *, rtx: bool = True, trickle: bool = False) -> None:
        if not transport.fingerprints:
            raise ValueError("the bridge's transport description has no fingerprint")
        self.transport = transport
        self.rtx = rtx
        self.trickle = trickle
        self.session_id = random.randrange(1 << 40, 1 << 62)
        self.version = 0
        self._slots: list[_Slot] = [_Slot(None)]

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(s.participant.endpoint_id for s in self._slots if s.participant and not s.left)

    def add(self, remote: RemoteParticipant) -> None:
        if any(s.participant and s.participant.endpoint_id == remote.endpoint_id for s in self._slots):
            raise ValueError(f"participant {remote.endpoint_id} was already added")
        if self._slots[0].participant is None and not self._slots[0].left:
            self._slots[0] = _Slot(remote)
        else:
            self._slots.append(_Slot(remote))

    def remove(self, endpoint_id: str) -> None:
        for slot in self._slots:
            if slot.participant is not None and slot.participant.endpoint_id == endpoint_id:
                slot.left = True
                return
        raise KeyError(endpoint_id)

    def offer(self) -> BridgeOffer:
        self.version += 1
        sections: list[MediaSection] = []
        for index, slot in enumerate(self._slots):
            for kind, mid in (("audio", str(2 * index)), ("video", str(2 * index + 1))):
                media_kind = cast(MediaKind, kind)
                remote = slot.participant if not slot.left else None
                source = remote.source(media_kind) if remote is not None else None
                direction: Direction
                if index == 0:
                    direction = "sendrecv"
                elif source is None:
                    direction = "inactive"
                else:
                    direction = "sendonly"
                sections.append(
                    MediaSection(
                        mid=mid,
                        kind=media_kind,
                        direction=direction,
                        participant=remote.endpoint_id if remote is not None else None,
                        source=source,
                    )
                )
        sdp = _render_offer(
            self.transport,
            sections=sections,
            session_id=self.session_id,
            version=self.version,
            rtx=self.rtx,
            trickle=self.trickle,
        )
        return BridgeOffer(sdp=sdp, sections=tuple(sections), version=self.version)


def build_offer(
    transport: TransportDescription,
    remotes: Sequence[RemoteParticipant] = (),
    *,
    rtx: bool = True,
    trickle: bool = False,
) -> BridgeOffer:
    """The bridge's first offer to a peer that joins when `remotes` are already in the conference."""
    builder = OfferBuilder(transport, rtx=rtx, trickle=trickle)
    for remote in remotes:
        builder.add(remote)
    return builder.offer()


def _ip_line(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"IN IP{ip.version} {ip}"


def _render_offer(
    transport: TransportDescription,
    *,
    sections: Sequence[MediaSection],
    session_id: int,
    version: int,
    rtx: bool,
    trickle: bool,
) -> str:
    default = max(transport.candidates, key=lambda c: c.priority) if transport.candidates else None
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(s.mid for s in sections),
        "a=msid-semantic:WMS *",
    ]
    if trickle:
        lines.append("a=ice-options:trickle")
    for section in sections:
        video_fmts = [VIDEO_PT, RTX_PT] if rtx else [VIDEO_PT]
        fmts = [AUDIO_PT] if section.kind == "audio" else video_fmts
        port = default.port if default else 9
        lines.append(f"m={section.kind} {port} UDP/TLS/RTP/SAVPF {' '.join(map(str, fmts))}")
        lines.append("c=" + (_ip_line(default.ip) if default else "IN IP4 0.0.0.0"))
        lines.append(f"a=ice-ufrag:{transport.ufrag}")
        lines.append(f"a=ice-pwd:{transport.pwd}")
        for fp in transport.fingerprints:
            lines.append(f"a=fingerprint:{fp.hash} {fp.value}")
        lines.append("a=setup:actpass")
        lines.append(f"a=mid:{section.mid}")
        lines.append(f"a={section.direction}")
        lines.append("a=rtcp-mux")
        if section.kind == "audio":
            lines.append(f"a=rtpmap:{AUDIO_PT} opus/48000/2")
            lines.append(f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1")
        else:
            lines.append(f"a=rtpmap:{VIDEO_PT} VP8/90000")
            lines.append(f"a=rtcp-fb:{VIDEO_PT} nack")
            lines.append(f"a=rtcp-fb:{VIDEO_PT} nack pli")
            lines.append(f"a=rtcp-fb:{VIDEO_PT} ccm fir")
            if rtx:
                lines.append(f"a=rtpmap:{RTX_PT} rtx/90000")
                lines.append(f"a=fmtp:{RTX_PT} apt={VIDEO_PT}")
        if section.source is not None and section.participant is not None:
            lines.extend(_source_lines(section.participant, section.source, rtx))
        for c in transport.candidates:
            lines.append("a=candidate:" + candidate_to_sdp(c))
        if not trickle or transport.candidates:
            lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def _source_lines(participant: str, source: Source, rtx: bool) -> list[str]:
    """a=msid, a=ssrc-group and a=ssrc lines; the primary SSRC first (aiortc takes the first as media)."""
    stream = participant
    track = source.name or f"{participant}-{source.kind[0]}"
    ssrcs = _ordered_ssrcs(source)
    groups = [g for g in source.groups if g.semantics == "FID"]
    if not rtx:
        rtx_ssrcs = {g.ssrcs[1] for g in groups if len(g.ssrcs) > 1}
        ssrcs = [s for s in ssrcs if s not in rtx_ssrcs]
        groups = []
    out = [f"a=msid:{stream} {track}"]
    out.extend("a=ssrc-group:FID " + " ".join(map(str, g.ssrcs)) for g in groups)
    for ssrc in ssrcs:
        out.append(f"a=ssrc:{ssrc} cname:{participant}")
        out.append(f"a=ssrc:{ssrc} msid:{stream} {track}")
    return out


def _ordered_ssrcs(source: Source) -> list[int]:
    ordered: list[int] = []
    for group in source.groups:
        if group.semantics == "FID":
            ordered.extend(s for s in group.ssrcs if s not in ordered)
    ordered.extend(s for s in source.ssrcs if s not in ordered)
    return ordered


def candidate_to_sdp(c: Candidate) -> str:
    """RFC 8839 5.1 candidate-attribute value (without ``a=candidate:``)."""
    return f"{c.foundation} 1 udp {c.priority} {c.ip} {c.port} typ {c.type} generation {c.generation}"


def candidate_from_sdp(value: str) -> Candidate | None:
    """Parses an ``a=candidate`` value (the part after ``candidate:``); None for a candidate the bridge cannot
    use (TCP, RTCP's component, an mDNS name)."""
    value = value.removeprefix("candidate:")
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise ValueError(f"malformed candidate: {value!r}")
    extras = dict(zip(bits[8::2], bits[9::2], strict=False))
    ctype = bits[7]
    if ctype not in ("host", "srflx", "prflx", "relay"):
        raise ValueError(f"unknown candidate type {ctype!r}")
    if bits[2].lower() != "udp" or bits[1] != "1":
        return None
    try:
        ip = ipaddress.ip_address(bits[4])
    except ValueError:
        return None
    return Candidate(
        ip=ip,
        port=int(bits[5]),
        priority=int(bits[3]),
        type=cast(CandidateType, ctype),
        foundation=bits[0],
        generation=int(extras.get("generation", "0")),
    )


# --- the peer's answer ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Media:
    kind: str
    port: int
    mid: str = ""
    direction: Direction = "sendrecv"
    attrs: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.attrs if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.attrs if k == name]


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    """What the bridge needs from a peer's answer: its transport and the sources it sends."""

    transport: TransportDescription
    sources: tuple[Source, ...]
    directions: dict[str, Direction]


def _split(sdp: str) -> tuple[list[tuple[str, str]], list[_Media]]:
    session: list[tuple[str, str]] = []
    media: list[_Media] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            media.append(_Media(kind=parts[0], port=int(parts[1])))
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        target = media[-1].attrs if media else session
        target.append((name, value.strip()))
    for m in media:
        m.mid = m.get("mid") or ""
        for d in _DIRECTIONS:
            if any(k == d for k, _ in m.attrs):
                m.direction = d
    return session, media


def parse_answer(
    sdp: str,
    endpoint_id: str,
    *,
    candidate_filter: Callable[[Candidate], bool] | None = None,
) -> PeerAnswer:
    """Parses a peer's answer to a bridge offer (gather ICE candidates completely before calling).

    The transport comes from the BUNDLE-tagged m-line (first mid of the group), falling back to the
    session level; candidates from every m-line (Chromium lists them once, aiortc in every m-line),
    deduplicated. Sources are the a=ssrc / a=ssrc-group lines of the m-lines the peer SENDS on
    (aiortc also lists its idle sender's SSRC on recvonly m-lines: those are not sources).
    """
    session, media = _split(sdp)
    session_get = dict(session)
    bundle = next((v.split()[1:] for k, v in session if k == "group" and v.startswith("BUNDLE")), [])
    live = [m for m in media if m.port != 0]
    if not live:
        raise ValueError("answer has no accepted m-line")
    tagged = next((m for m in live if bundle and m.mid == bundle[0]), live[0])

    def attr(name: str) -> str | None:
        return tagged.get(name) or session_get.get(name)

    ufrag, pwd, setup = attr("ice-ufrag"), attr("ice-pwd"), attr("setup")
    if not ufrag or not pwd:
        raise ValueError("answer has no ICE credentials")
    if setup not in ("active", "passive"):
        raise ValueError(f"an answer must say a=setup:active or passive, not {setup!r}")
    fp_values = tagged.all("fingerprint") or [v for k, v in session if k == "fingerprint"]
    if not fp_values:
        raise ValueError("answer has no DTLS fingerprint")
    fingerprints: list[Fingerprint] = []
    for value in fp_values:
        hash_name, fp = value.split()
        item = Fingerprint.parse(hash_name, fp, cast(Setup, setup))
        if item not in fingerprints:
            fingerprints.append(item)

    candidates: list[Candidate] = []
    seen: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
    for m in [tagged, *[m for m in live if m is not tagged]]:
        for value in m.all("candidate"):
            c = candidate_from_sdp(value)
            if c is None:
                continue
            key = (c.ip, c.port)
            if key in seen or (candidate_filter is not None and not candidate_filter(c)):
                continue
            seen.add(key)
            candidates.append(c)

    sources: list[Source] = []
    counters = {"audio": 0, "video": 0}
    for m in live:
        if m.kind not in counters or m.direction not in ("sendrecv", "sendonly"):
            continue
        source = _media_source(m, endpoint_id, counters[m.kind])
        if source is not None:
            counters[m.kind] += 1
            sources.append(source)

    transport = TransportDescription(
        ufrag=ufrag, pwd=pwd, fingerprints=tuple(fingerprints), candidates=tuple(candidates)
    )
    return PeerAnswer(
        transport=transport, sources=tuple(sources), directions={m.mid: m.direction for m in media}
    )


def _media_source(m: _Media, endpoint_id: str, index: int) -> Source | None:
    kind = cast(MediaKind, m.kind)
    groups: list[SsrcGroup] = []
    for value in m.all("ssrc-group"):
        semantics, *ids = value.split()
        if semantics in ("FID", "SIM") and ids:
            groups.append(SsrcGroup(cast(Literal["FID", "SIM"], semantics), tuple(int(i) for i in ids)))
    ssrcs: list[int] = []
    for g in groups:
        ssrcs.extend(s for s in g.ssrcs if s not in ssrcs)
    for value in m.all("ssrc"):
        ssrc = int(value.split()[0])
        if ssrc not in ssrcs:
            ssrcs.append(ssrc)
    if not ssrcs:
        return None
    name = f"{endpoint_id}-{kind[0]}{index}"
    return Source(kind=kind, ssrcs=tuple(ssrcs), name=name, groups=tuple(groups))


def only_loopback(c: Candidate) -> bool:
    """A candidate filter keeping candidates on 127.0.0.0/8 (tests send nothing elsewhere)."""
    return c.ip.version == 4 and c.ip.is_loopback


def with_fingerprints(
    transport: TransportDescription, fingerprints: Iterable[Fingerprint]
) -> TransportDescription:
    """The same transport presenting other fingerprints (a peer lying about its certificate)."""
    return replace(transport, fingerprints=tuple(fingerprints))
