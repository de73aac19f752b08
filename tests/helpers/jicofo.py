"""Jicofo's side of Colibri2, written out element by element as docs/jitsi-protocol.md 2.3 describes it.

Shared by the tests that drive a bridge through a real Prosody: the requests are built here by hand (not with
colibri2's builder), so those tests check the wire shape, not our codec against itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from bridge import Candidate, Fingerprint, TransportDescription
from bridge.description import CandidateType, Setup
from tests.helpers.peers import AiortcPeer
from tests.helpers.prosody import AUTH_DOMAIN, BREWERY_JID, JVB_USER, Prosody
from tests.helpers.sdp import OfferBuilder, PeerAnswer, only_loopback, parse_answer

REPO = Path(__file__).resolve().parents[2]
C2 = "jitsi:colibri2"
RTP = "urn:xmpp:jingle:apps:rtp:1"
FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
ICE = "urn:xmpp:jingle:transports:ice-udp:1"
DTLS = "urn:xmpp:jingle:apps:dtls:0"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NICK = "sluice-jvb-test"
ROOM = "room1@conference.meet.test"


def bridge_toml(prosody: Prosody, nickname: str = NICK) -> str:
    return f"""
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]

[videobridge.stats]
interval = "300ms"

[videobridge.http-servers.private]
host = "127.0.0.1"
port = 0

[videobridge.apis.xmpp-client.configs.test-prosody]
hostname = "127.0.0.1"
port = {prosody.c2s_port}
domain = "{AUTH_DOMAIN}"
username = "{JVB_USER}"
password = "{prosody.jvb_password}"
muc_jids = "{BREWERY_JID}"
muc_nickname = "{nickname}"
use-tls = false
"""


def el(parent: ET.Element, ns: str, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{ns}}}{tag}", {k.replace("_", "-"): v for k, v in attrs.items()})


def conference_modify(meeting_id: str, **attrs: str) -> ET.Element:
    return ET.Element(f"{{{C2}}}conference-modify", {"meeting-id": meeting_id, **attrs})


def add_media(endpoint: ET.Element) -> None:
    """Jicofo's default offer (2.8): opus 111 + telephone-event 126; VP8 100 with rtx 96."""
    audio = el(endpoint, C2, "media", type="audio")
    opus = el(audio, RTP, "payload-type", id="111", name="opus", clockrate="48000", channels="2")
    el(opus, RTP, "parameter", name="minptime", value="10")
    el(opus, RTP, "parameter", name="useinbandfec", value="1")
    el(opus, FB, "rtcp-fb", type="transport-cc")
    el(audio, RTP, "payload-type", id="126", name="telephone-event", clockrate="8000")
    el(audio, HDREXT, "rtp-hdrext", id="1", uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    el(audio, HDREXT, "extmap-allow-mixed")
    video = el(endpoint, C2, "media", type="video")
    vp8 = el(video, RTP, "payload-type", id="100", name="VP8", clockrate="90000")
    for fb_type, subtype in (("ccm", "fir"), ("nack", None), ("nack", "pli"), ("transport-cc", None)):
        fb = el(vp8, FB, "rtcp-fb", type=fb_type)
        if subtype:
            fb.set("subtype", subtype)
    rtx = el(video, RTP, "payload-type", id="96", name="rtx", clockrate="90000")
    el(rtx, RTP, "parameter", name="apt", value="100")
    el(video, HDREXT, "rtp-hdrext", id="3", uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
    el(video, HDREXT, "extmap-allow-mixed")


def create_endpoint(request: ET.Element, endpoint_id: str) -> None:
    ep = el(request, C2, "endpoint", id=endpoint_id, create="true", stats_id=f"{endpoint_id}-stats")
    el(ep, C2, "capability", name="source-names")
    add_media(ep)
    el(ep, C2, "transport", ice_controlling="true")
    el(ep, C2, "sources")


def update_endpoint(meeting_id: str, endpoint_id: str, answer: PeerAnswer) -> ET.Element:
    """After session-accept: the client's ICE transport and its complete source set."""
    request = conference_modify(meeting_id)
    ep = el(request, C2, "endpoint", id=endpoint_id, stats_id=f"{endpoint_id}-stats")
    wrapper = el(ep, C2, "transport")
    t = answer.transport
    ice = el(wrapper, ICE, "transport", ufrag=t.ufrag, pwd=t.pwd)
    for i, c in enumerate(t.candidates):
        el(
            ice,
            ICE,
            "candidate",
            component="1",
            foundation=c.foundation,
            generation=str(c.generation),
            id=f"{endpoint_id}-c{i}",
            ip=str(c.ip),
            network="0",
            port=str(c.port),
            priority=str(c.priority),
            protocol="udp",
            type=c.type,
        )
    el(ice, ICE, "rtcp-mux")
    for fp in t.fingerprints:
        el(ice, DTLS, "fingerprint", hash=fp.hash, setup=fp.setup).text = fp.value
    sources = el(ep, C2, "sources")
    for source in answer.sources:
        ms = el(sources, C2, "media-source", type=source.kind, id=source.name)
        for ssrc in source.ssrcs:
            el(ms, SSMA, "source", ssrc=str(ssrc), name=source.name)
        for group in source.groups:
            g = el(ms, SSMA, "ssrc-group", semantics=group.semantics)
            for ssrc in group.ssrcs:
                el(g, SSMA, "source", ssrc=str(ssrc))
    return request


def result_payload(reply: ET.Element) -> ET.Element:
    if reply.get("type") != "result":
        raise AssertionError(f"colibri2 request failed: {ET.tostring(reply, encoding='unicode')}")
    modified = reply.find(f"{{{C2}}}conference-modified")
    assert modified is not None, ET.tostring(reply, encoding="unicode")
    return modified


def transport_of(modified: ET.Element, endpoint_id: str) -> TransportDescription:
    """The bridge's ICE transport for `endpoint_id`, read from the response as Jicofo reads it."""
    ep = modified.find(f"{{{C2}}}endpoint[@id='{endpoint_id}']")
    assert ep is not None, f"no endpoint {endpoint_id} in the response"
    ice = ep.find(f"{{{C2}}}transport/{{{ICE}}}transport")
    assert ice is not None, f"no ICE transport for {endpoint_id}"
    assert ice.find(f"{{{ICE}}}rtcp-mux") is not None
    fingerprints = tuple(
        Fingerprint.parse(fp.get("hash", ""), fp.text or "", _setup(fp.get("setup")))
        for fp in ice.iterfind(f"{{{DTLS}}}fingerprint")
    )
    candidates = tuple(
        Candidate(
            ip=ipaddress.ip_address(c.get("ip", "")),
            port=int(c.get("port", "0")),
            priority=int(c.get("priority", "0")),
            type=_candidate_type(c.get("type")),
            foundation=c.get("foundation", "1"),
            generation=int(c.get("generation", "0")),
        )
        for c in ice.iterfind(f"{{{ICE}}}candidate")
        if (c.get("protocol"), c.get("component")) == ("udp", "1")
    )
    return TransportDescription(
        ufrag=ice.get("ufrag", ""), pwd=ice.get("pwd", ""), fingerprints=fingerprints, candidates=candidates
    )


def _setup(value: str | None) -> Setup:
    assert value in ("actpass", "active", "passive"), value
    return cast(Setup, value)


def _candidate_type(value: str | None) -> CandidateType:
    assert value in ("host", "srflx", "prflx", "relay"), value
    return cast(CandidateType, value)


async def answer_of(peer: AiortcPeer, builder: OfferBuilder) -> PeerAnswer:
    return parse_answer(await peer.answer(builder.offer()), peer.name, candidate_filter=only_loopback)


def summary(*peers: AiortcPeer) -> str:
    return "; ".join(p.summary() for p in peers)


def error_reason(reply: ET.Element) -> tuple[str | None, str | None]:
    """(XMPP condition, colibri2 reason) of an IQ error reply."""
    assert reply.get("type") == "error", ET.tostring(reply, encoding="unicode")
    error = reply.find("{jabber:client}error")
    assert error is not None
    names = [c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}")]
    condition = next((n for n in names if n != "text"), None)
    c2 = error.find(f"{{{C2}}}error")
    return condition, c2.get("reason") if c2 is not None else None


#: `sluice` from this checkout.
SLUICE = (sys.executable, "-m", "sluice.cli")


async def start_sluice(
    *args: str, env: Mapping[str, str] | None = None, command: Sequence[str] = SLUICE, cwd: Path = REPO
) -> asyncio.subprocess.Process:
    """`python -m sluice.cli ARGS` from the repository (or another `command` in `cwd`, such as an installed
    `sluice`), without our SLUICE_* variables (but with `env`'s); output piped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")} | dict(env or {})
    return await asyncio.create_subprocess_exec(
        *command,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
