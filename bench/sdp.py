"""SDP for the load generator's endpoints against forwarders that take a PeerConnection per direction (Janus,
LiveKit): the offer a publishing endpoint sends, what the bench needs of a remote description (ICE, DTLS,
candidates, m-lines), and the answer a subscribing endpoint gives to the forwarder's offer.

Sans-IO: strings in, strings out. Only what those peers send is understood; anything else in a remote
description is ignored, and a description without ICE credentials, a fingerprint or an m-line is refused
(`SdpError`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: What the load generator sends (native/loadgen: Opus-shaped audio, VP8).
PT_AUDIO = 111
PT_VIDEO = 100
#: RIDs of simulcast layers, lowest first (what the load generator writes; LiveKit's names).
RIDS = ("q", "h", "f")


class SdpError(ValueError):
    """A remote description the bench cannot use."""


@dataclass(frozen=True, slots=True)
class Media:
    kind: str  # "audio", "video", "application"
    mid: str
    port: int
    proto: str
    formats: tuple[str, ...]
    #: Its rtpmap/fmtp/rtcp-fb lines (the attribute text after "a="), for the payload types it offers.
    codec_lines: tuple[str, ...] = ()
    direction: str = "sendrecv"


@dataclass(frozen=True, slots=True)
class RemoteSdp:
    ufrag: str
    pwd: str
    fingerprints: tuple[tuple[str, str], ...]
    setup: str
    #: (ip, port, priority, type) of its UDP candidates.
    candidates: tuple[tuple[str, int, int, str], ...]
    media: tuple[Media, ...]
    bundle: tuple[str, ...] = field(default=())


def parse(sdp: str) -> RemoteSdp:
    """The parts of a remote offer or answer a load-generator endpoint connects with. Session-level ICE and
    DTLS attributes apply to every m-line; BUNDLE means one transport, so the first m-line's wins."""
    session: dict[str, str] = {}
    fingerprints: list[tuple[str, str]] = []
    candidates: list[tuple[str, int, int, str]] = []
    media: list[dict[str, Any]] = []
    bundle: tuple[str, ...] = ()
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 3:
                raise SdpError(f"bad m-line {line!r}")
            media.append(
                {
                    "kind": parts[0],
                    "port": int(parts[1]),
                    "proto": parts[2],
                    "formats": tuple(parts[3:]),
                    "attrs": [],
                }
            )
            continue
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        scope = media[-1]["attrs"] if media else None
        if name == "fingerprint":
            hash_name, _, fp = value.partition(" ")
            if (hash_name.lower(), fp.strip()) not in fingerprints:
                fingerprints.append((hash_name.lower(), fp.strip()))
        elif name == "candidate":
            cand = _candidate(value)
            if cand is not None and cand not in candidates:
                candidates.append(cand)
        elif name == "group" and value.startswith("BUNDLE"):
            bundle = tuple(value.split()[1:])
        elif scope is not None:
            scope.append((name, value))
            if name in ("ice-ufrag", "ice-pwd", "setup"):
                session.setdefault(name, value)
        elif name in ("ice-ufrag", "ice-pwd", "setup"):
            session[name] = value
    if not media:
        raise SdpError("no m-line")
    if "ice-ufrag" not in session or "ice-pwd" not in session:
        raise SdpError("no ICE credentials")
    if not fingerprints:
        raise SdpError("no DTLS fingerprint")
    out = []
    for i, m in enumerate(media):
        attrs: list[tuple[str, str]] = m["attrs"]
        mid = next((v for n, v in attrs if n == "mid"), str(i))
        direction = next(
            (n for n, _ in attrs if n in ("sendrecv", "sendonly", "recvonly", "inactive")), "sendrecv"
        )
        pts = set(m["formats"])
        codec = tuple(
            f"{n}:{v}" for n, v in attrs if n in ("rtpmap", "fmtp", "rtcp-fb") and v.split(" ", 1)[0] in pts
        )
        out.append(Media(m["kind"], mid, m["port"], m["proto"], m["formats"], codec, direction))
    return RemoteSdp(
        ufrag=session["ice-ufrag"],
        pwd=session["ice-pwd"],
        fingerprints=tuple(fingerprints),
        setup=session.get("setup", "actpass"),
        candidates=tuple(candidates),
        media=tuple(out),
        bundle=bundle,
    )


def rtx_payload_type(remote: RemoteSdp) -> int | None:
    """The payload type of RTX (RFC 4588) in a remote description's video, or None."""
    for m in remote.media:
        if m.kind != "video":
            continue
        for line in m.codec_lines:
            name, _, rest = line.partition(":")
            pt, _, codec = rest.partition(" ")
            if name == "rtpmap" and codec.lower().startswith("rtx/"):
                return int(pt)
    return None


def candidate_from_attribute(text: str) -> tuple[str, int, int, str] | None:
    """A trickled candidate (`candidate:...`, as an RTCIceCandidateInit carries it), like `_candidate`."""
    return _candidate(text.removeprefix("a=").removeprefix("candidate:"))


def _candidate(value: str) -> tuple[str, int, int, str] | None:
    """(ip, port, priority, type) of a UDP candidate line (RFC 8839 5.1); None for TCP or a malformed one."""
    parts = value.split()
    if len(parts) < 8 or parts[2].lower() != "udp" or parts[6] != "typ":
        return None
    try:
        return parts[4], int(parts[5]), int(parts[3]), parts[7]
    except ValueError:
        return None


def _transport_lines(ep: Mapping[str, Any], setup: str, candidates: bool) -> list[str]:
    lines = [
        f"a=ice-ufrag:{ep['ufrag']}",
        f"a=ice-pwd:{ep['pwd']}",
        f"a=fingerprint:{ep['fingerprint_hash']} {ep['fingerprint']}",
        f"a=setup:{setup}",
    ]
    if candidates:
        for c in ep["candidates"]:
            lines.append(
                f"a=candidate:{c['foundation']} 1 udp {c['priority']} {c['ip']} {c['port']} typ {c['type']}"
            )
        lines.append("a=end-of-candidates")
    return lines


def _session(ep: Mapping[str, Any], mids: Sequence[str]) -> list[str]:
    return [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {' '.join(mids)}",
        f"a=msid-semantic: WMS lg{ep['index']}",
    ]


def publisher_offer(
    ep: Mapping[str, Any],
    audio_ssrc: int | None,
    video_ssrcs: Sequence[int],
    *,
    track_ids: tuple[str, str] | None = None,
    stream: str | None = None,
    rid_ext: tuple[int, int] | None = None,
) -> str:
    """A sendonly offer for what endpoint `ep` (a `LoadGen.create_endpoints` dict) sends: Opus on
    `audio_ssrc`, VP8 on `video_ssrcs` (several: an SSRC simulcast group, lowest layer first, as Chrome
    signals it). Its a=setup is `active`: the load generator's endpoints are DTLS clients. `track_ids`
    (audio, video) and `stream` name the MediaStreamTracks in a=msid (LiveKit matches them to the tracks
    it was told of); by default they are made from the endpoint's index. With `rid_ext` (the one-byte
    extension ids of MID and RID) several video SSRCs are signalled as RID simulcast instead (RFC 8853:
    a=rid per layer, `q`, `h`, `f` from the lowest, a=simulcast, no SSRC lines), as browsers offer it to
    LiveKit; the endpoint must then write those extensions (`create_endpoints(rid=...)`)."""
    name = stream or f"lg{ep['index']}"
    audio_id, video_id = track_ids or (f"{name}-a0", f"{name}-v0")
    sections: list[tuple[str, list[str]]] = []
    if audio_ssrc is not None:
        sections.append(
            (
                "audio",
                [
                    f"m=audio 9 UDP/TLS/RTP/SAVPF {PT_AUDIO}",
                    f"a=rtpmap:{PT_AUDIO} opus/48000/2",
                    f"a=fmtp:{PT_AUDIO} minptime=10;useinbandfec=1",
                    f"a=msid:{name} {audio_id}",
                    f"a=ssrc:{audio_ssrc} cname:{name}",
                    f"a=ssrc:{audio_ssrc} msid:{name} {audio_id}",
                ],
            )
        )
    if video_ssrcs:
        lines = [
            f"m=video 9 UDP/TLS/RTP/SAVPF {PT_VIDEO}",
            f"a=rtpmap:{PT_VIDEO} VP8/90000",
            f"a=rtcp-fb:{PT_VIDEO} nack",
            f"a=rtcp-fb:{PT_VIDEO} nack pli",
            f"a=rtcp-fb:{PT_VIDEO} ccm fir",
            f"a=msid:{name} {video_id}",
        ]
        if rid_ext is not None and len(video_ssrcs) > 1:
            rids = RIDS[: len(video_ssrcs)]
            lines += [
                f"a=extmap:{rid_ext[0]} urn:ietf:params:rtp-hdrext:sdes:mid",
                f"a=extmap:{rid_ext[1]} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                *(f"a=rid:{r} send" for r in rids),
                f"a=simulcast:send {';'.join(rids)}",
            ]
        else:
            if len(video_ssrcs) > 1:
                lines.append(f"a=ssrc-group:SIM {' '.join(str(s) for s in video_ssrcs)}")
            for s in video_ssrcs:
                lines += [f"a=ssrc:{s} cname:{name}", f"a=ssrc:{s} msid:{name} {video_id}"]
        sections.append(("video", lines))
    if not sections:
        raise SdpError("an offer needs audio or video")
    mids = [str(i) for i in range(len(sections))]
    out = _session(ep, mids)
    for i, (_, lines) in enumerate(sections):
        out += [lines[0], "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0"]
        out += _transport_lines(ep, "active", candidates=i == 0)
        out += [f"a=mid:{mids[i]}", "a=sendonly", "a=rtcp-mux", *lines[1:]]
    return "\r\n".join(out) + "\r\n"


def subscriber_answer(offer: RemoteSdp, ep: Mapping[str, Any], *, accept_data: bool = False) -> str:
    """A recvonly answer by endpoint `ep` to a forwarder's offer: every audio and video m-line accepted with
    the codecs offered, a data channel (SCTP) accepted with `accept_data` (its association never opens: the
    load generator speaks no SCTP; LiveKit offers one first and bundles the rest with it) and else rejected
    with port 0, like anything else; one BUNDLE transport, DTLS client (`active`)."""
    kinds = ("audio", "video", "application") if accept_data else ("audio", "video")
    accepted = [m.mid for m in offer.media if m.kind in kinds and m.port != 0]
    if not accepted:
        raise SdpError("the offer has nothing to receive")
    out = _session(ep, [mid for mid in (offer.bundle or accepted) if mid in accepted])
    first = True
    for m in offer.media:
        if m.mid not in accepted:
            out += [f"m={m.kind} 0 {m.proto} {' '.join(m.formats)}", "c=IN IP4 0.0.0.0", f"a=mid:{m.mid}"]
            continue
        out += [
            f"m={m.kind} 9 {m.proto} {' '.join(m.formats)}",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
        ]
        out += _transport_lines(ep, "active", candidates=first)
        first = False
        if m.kind == "application":
            out += [f"a=mid:{m.mid}", "a=sctp-port:5000", "a=max-message-size:262144"]
            continue
        direction = "recvonly" if m.direction in ("sendrecv", "sendonly") else "inactive"
        out += [f"a=mid:{m.mid}", f"a={direction}", "a=rtcp-mux"]
        out += [f"a={line}" for line in m.codec_lines]
    return "\r\n".join(out) + "\r\n"
