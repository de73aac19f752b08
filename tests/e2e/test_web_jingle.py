"""signaling/webclient/js/jingle-sdp.js in headless Chromium: Jitsi-style Jingle → SDP offer that a real
RTCPeerConnection accepts, its answer → session-accept with the fields the focus needs, source-add/remove
renegotiation, and stable round trips (recorded stanzas shaped like docs/jitsi-protocol.md §5.4, plus
hypothesis-generated ones)."""

from __future__ import annotations

import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import Bridge, Candidate, Fingerprint, Source, SsrcGroup, TransportDescription
from bridge.description import MediaKind
from tests.helpers.call import Call, wait_until, wait_until_async
from tests.helpers.chromium import ChromiumBrowser, PageError
from tests.helpers.peers import PeerFactory
from tests.helpers.sdp import RTX_PT, RemoteParticipant, only_loopback
from tests.helpers.webpage import WebServer

pytestmark = pytest.mark.e2e

JINGLE = "urn:xmpp:jingle:1"
RTP = "urn:xmpp:jingle:apps:rtp:1"
FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
ICE = "urn:xmpp:jingle:transports:ice-udp:1"
DTLS = "urn:xmpp:jingle:apps:dtls:0"
SCTP = "urn:xmpp:jingle:transports:dtls-sctp:1"
GROUPING = "urn:xmpp:jingle:apps:grouping:0"
JITMEET = "http://jitsi.org/jitmeet"
FOCUS = "http://jitsi.org/protocol/focus"

TCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
FINGERPRINT = ":".join(f"{(i * 37) % 256:02X}" for i in range(32))
ROOM = "room1@conference.meet.test"
FOCUS_FULL = "focus@auth.meet.test/focus"


@dataclass
class Src:
    """One remote source as the focus signals it (JSON-encoded, §5.4)."""

    ssrc: int
    name: str
    msid: str
    rtx: int | None = None
    sim: list[int] = field(default_factory=list)  # extra simulcast layers (ssrc, rtx) pairs flattened


@dataclass
class Owner:
    endpoint: str
    audio: list[Src]
    video: list[Src]

    def json(self) -> list[Any]:
        vs: list[dict[str, Any]] = []
        vg: list[list[Any]] = []
        for v in self.video:
            layers = [v.ssrc, *v.sim[0::2]]
            rtxs = [v.rtx, *v.sim[1::2]] if v.rtx is not None else []
            vs += [{"s": s, "n": v.name, "m": v.msid} for s in layers]
            vs += [{"s": s, "n": v.name, "m": v.msid} for s in rtxs]
            if len(layers) > 1:
                vg.append(["s", *layers])
            vg += [["f", s, r] for s, r in zip(layers, rtxs, strict=False)]
        audio = [{"s": a.ssrc, "n": a.name, "m": a.msid} for a in self.audio]
        return [vs, vg, audio, []]


def owner(endpoint: str, base: int, rtx: bool = True) -> Owner:
    return Owner(
        endpoint,
        audio=[Src(base + 1, f"{endpoint}-a0", f"{endpoint}-audio-0 a{base}")],
        video=[Src(base + 2, f"{endpoint}-v0", f"{endpoint}-video-0 v{base}", rtx=base + 3 if rtx else None)],
    )


def el(parent: ET.Element, tag: str, ns: str | None = None, **attrs: Any) -> ET.Element:
    e = ET.SubElement(parent, f"{{{ns}}}{tag}" if ns else tag)
    for k, v in attrs.items():
        if v is not None:
            e.set(k.replace("_", "-"), str(v))
    return e


def description(content: ET.Element, media: str, *, rtx: bool = True, rtx_pt: int = 96) -> ET.Element:
    d = el(content, "description", RTP, media=media, maxptime=60 if media == "audio" else None)
    if media == "audio":
        pt = el(d, "payload-type", RTP, id=111, name="opus", clockrate=48000, channels=2)
        el(pt, "parameter", RTP, name="minptime", value=10)
        el(pt, "parameter", RTP, name="useinbandfec", value=1)
        el(pt, "rtcp-fb", FB, type="transport-cc")
        el(d, "rtp-hdrext", HDREXT, id=1, uri=AUDIO_LEVEL)
        el(d, "rtp-hdrext", HDREXT, id=5, uri=TCC)
    else:
        pt = el(d, "payload-type", RTP, id=100, name="VP8", clockrate=90000)
        for t, s in (
            ("ccm", "fir"),
            ("nack", None),
            ("nack", "pli"),
            ("goog-remb", None),
            ("transport-cc", None),
        ):
            el(pt, "rtcp-fb", FB, type=t, subtype=s)
        if rtx:
            r = el(d, "payload-type", RTP, id=rtx_pt, name="rtx", clockrate=90000)
            el(r, "parameter", RTP, name="apt", value=100)
        el(d, "rtp-hdrext", HDREXT, id=3, uri=ABS_SEND_TIME)
        el(d, "rtp-hdrext", HDREXT, id=5, uri=TCC)
    el(d, "extmap-allow-mixed", HDREXT)
    el(d, "rtcp-mux", RTP)
    return d


def transport(content: ET.Element, *, sctp: bool = False) -> ET.Element:
    t = el(content, "transport", ICE, ufrag="7mf2a1j4nqb7bq", pwd="1d8r3hrvvhj8hf1bfm2u1b7tsp")
    el(t, "rtcp-mux", ICE)
    f = el(t, "fingerprint", DTLS, hash="sha-256", setup="actpass")
    f.text = FINGERPRINT
    el(
        t,
        "candidate",
        ICE,
        component=1,
        foundation=1,
        generation=0,
        id="c1",
        ip="127.0.0.1",
        network=0,
        port=10000,
        priority=2130706431,
        protocol="udp",
        type="host",
    )
    el(
        t,
        "candidate",
        ICE,
        component=1,
        foundation=2,
        generation=0,
        id="c2",
        ip="198.51.100.7",
        network=0,
        port=10000,
        priority=1694498815,
        protocol="udp",
        type="srflx",
        rel_addr="127.0.0.1",
        rel_port=10000,
    )
    if sctp:
        el(t, "sctpmap", SCTP, number=5000, protocol="webrtc-datachannel", streams=1024)
    return t


def jingle_iq(action: str, sid: str = "6b6a2vaqs8r0v") -> tuple[ET.Element, ET.Element]:
    iq = ET.Element("iq", {"type": "set", "from": f"{ROOM}/focus", "to": "x@meet.test/r", "id": "j1"})
    j = el(iq, "jingle", JINGLE, action=action, initiator=FOCUS_FULL, sid=sid)
    return iq, j


def json_message(j: ET.Element, owners: list[Owner], jvb: bool = True) -> None:
    sources: dict[str, Any] = {o.endpoint: o.json() for o in owners}
    if jvb:
        sources["jvb"] = [
            [{"s": 1863439907, "n": "jvb-v0", "m": "mixedmslabel mixedlabelvideo0"}],
            [],
            [{"s": 3191927963, "n": "jvb-a0", "m": "mixedmslabel mixedlabelaudio0"}],
        ]
    m = el(j, "json-message", JITMEET)
    m.text = json.dumps({"sources": sources})


def session_initiate(owners: list[Owner], *, data: bool = True, rtx: bool = True, jvb: bool = True) -> str:
    _, j = jingle_iq("session-initiate")
    names = ["audio", "video"] + (["data"] if data else [])
    for name in ("audio", "video"):
        c = el(j, "content", JINGLE, creator="initiator", name=name, senders="both")
        description(c, name, rtx=rtx)
        transport(c)
    if data:
        c = el(j, "content", JINGLE, creator="initiator", name="data")
        el(c, "description", "urn:xmpp:jingle:apps:webrtc-datachannel:0", media="application")
        transport(c, sctp=True)
    g = el(j, "group", GROUPING, semantics="BUNDLE")
    for n in names:
        el(g, "content", GROUPING, name=n)
    el(j, "bridge-session", FOCUS, id="1f3c9b2e-9a43-4c0b-8a1a-7c1d3b0e2f11", region="local")
    json_message(j, owners, jvb)
    return ET.tostring(j, encoding="unicode")


def source_change(action: str, owners: list[Owner], *, inline: bool = False) -> str:
    """source-add / source-remove, either JSON-encoded or as inline <source> + ssrc-info per content."""
    _, j = jingle_iq(action)
    if not inline:
        for media in ("audio", "video"):
            c = el(j, "content", JINGLE, name=media)
            el(c, "description", RTP, media=media)
        json_message(j, owners, jvb=False)
        return ET.tostring(j, encoding="unicode")
    for media in ("audio", "video"):
        c = el(j, "content", JINGLE, name=media)
        d = el(c, "description", RTP, media=media)
        for o in owners:
            for s in o.audio if media == "audio" else o.video:
                for ssrc in [s.ssrc] + ([s.rtx] if s.rtx is not None else []):
                    src = el(d, "source", SSMA, ssrc=ssrc, name=s.name)
                    el(src, "parameter", SSMA, name="msid", value=s.msid)
                    el(src, "ssrc-info", JITMEET, owner=f"{ROOM}/{o.endpoint}")
                if s.rtx is not None:
                    g = el(d, "ssrc-group", SSMA, semantics="FID")
                    el(g, "source", SSMA, ssrc=s.ssrc)
                    el(g, "source", SSMA, ssrc=s.rtx)
    return ET.tostring(j, encoding="unicode")


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromiumBrowser]:
    tmp = tmp_path_factory.mktemp("jingle-harness")
    with WebServer() as server:
        browser = ChromiumBrowser.start(tmp / "profile", server.url + "/__harness/jingle")
        try:
            yield browser
        finally:
            entries = browser.driver.get_log("browser")  # type: ignore[no-untyped-call]
            (tmp / "console.log").write_text("\n".join(json.dumps(e) for e in entries))
            browser.stop()
        assert server.missing == [], server.missing


def q(tag: str, ns: str) -> str:
    return f"{{{ns}}}{tag}"


def media_sections(sdp: str) -> list[str]:
    return ["m=" + s for s in sdp.split("\r\nm=")[1:]]


# ---------------------------------------------------------------------------------------------- tests


def test_session_initiate_is_accepted_and_answered(harness: ChromiumBrowser) -> None:
    alice, bob = owner("a11ce0aa", 1000), owner("b0b0b0bb", 2000)
    out = harness.call("initiate", session_initiate([alice, bob]), "c0ffee01", True)

    offer: str = out["offer"]
    sections = media_sections(offer)
    # audio + video (ours, sendrecv) + one line per remote source; the data content is left out.
    assert [re.search(r"a=mid:(\S+)", s).group(1) for s in sections][:2] == ["audio", "video"]  # type: ignore[union-attr]
    assert len(sections) == 6
    assert "m=application" not in offer
    assert "a=ice-lite" not in offer and "sdes:mid" not in offer
    group = re.search(r"a=group:BUNDLE (.+)\r\n", offer)
    assert group is not None and len(group.group(1).split()) == 6
    # Every remote SSRC is signalled on its own line with the owner's msid; RTX tied by FID.
    for o in (alice, bob):
        video = next(s for s in sections if f"a=ssrc:{o.video[0].ssrc} " in s)
        assert video.startswith("m=video") and "a=sendonly" in video
        assert f"a=ssrc-group:FID {o.video[0].ssrc} {o.video[0].rtx}" in video
        assert f"a=ssrc:{o.video[0].rtx} msid:{o.video[0].msid}" in video
        audio = next(s for s in sections if f"a=ssrc:{o.audio[0].ssrc} " in s)
        assert audio.startswith("m=audio") and f"a=msid:{o.audio[0].msid}" in audio
    # The bridge's jvb SSRCs sit on our sendrecv lines and create no tile lines.
    assert "a=ssrc:3191927963 msid:mixedmslabel mixedlabelaudio0" in sections[0]
    assert "a=sendrecv" in sections[0] and "a=sendrecv" in sections[1]

    tr = out["transceivers"]
    assert [(t["mid"], t["direction"], t["current"], t["sending"]) for t in tr[:2]] == [
        ("audio", "sendrecv", "sendrecv", True),
        ("video", "sendrecv", "sendrecv", True),
    ]
    assert (
        sorted((t["kind"], t["current"]) for t in tr[2:])
        == [("audio", "recvonly")] * 2 + [("video", "recvonly")] * 2
    )
    owners = {(s["owner"], s["media"]) for s in out["sources"]}
    assert owners == {
        ("a11ce0aa", "audio"),
        ("a11ce0aa", "video"),
        ("b0b0b0bb", "audio"),
        ("b0b0b0bb", "video"),
    }
    assert harness.call("ownerOfSsrc", bob.video[0].rtx) == "b0b0b0bb"
    assert harness.call("ownerOfSsrc", 3191927963) == "jvb"  # the bridge's own, never a tile

    # --- session-accept, read as the focus would
    answer: str = out["answer"]
    accept = ET.fromstring(out["accept"])
    assert accept.tag == q("jingle", JINGLE)
    assert accept.get("action") == "session-accept" and accept.get("sid") == "6b6a2vaqs8r0v"
    assert accept.get("initiator") == FOCUS_FULL and accept.get("responder") == "client@meet.test/r"
    contents = accept.findall(q("content", JINGLE))
    assert [c.get("name") for c in contents] == ["audio", "video"]
    bundle = accept.find(q("group", GROUPING))
    assert bundle is not None and bundle.get("semantics") == "BUNDLE"
    assert [c.get("name") for c in bundle] == ["audio", "video"]
    answer_ssrcs = {int(x) for x in re.findall(r"a=ssrc:(\d+) ", "".join(media_sections(answer)[:2]))}
    accepted_ssrcs: set[int] = set()
    for c in contents:
        d = c.find(q("description", RTP))
        assert d is not None
        media = d.get("media")
        assert media == c.get("name")
        pts = {(p.get("id"), p.get("name")) for p in d.findall(q("payload-type", RTP))}
        exts = {(x.get("id"), x.get("uri")) for x in d.findall(q("rtp-hdrext", HDREXT))}
        if media == "audio":
            assert ("111", "opus") in pts
            assert exts >= {("1", AUDIO_LEVEL), ("5", TCC)}
            opus = next(p for p in d.findall(q("payload-type", RTP)) if p.get("id") == "111")
            params = {p.get("name"): p.get("value") for p in opus.findall(q("parameter", RTP))}
            assert params.get("useinbandfec") == "1"
        else:
            assert {("100", "VP8"), ("96", "rtx")} <= pts
            vp8 = next(p for p in d.findall(q("payload-type", RTP)) if p.get("id") == "100")
            fbs = {(f.get("type"), f.get("subtype")) for f in vp8.findall(q("rtcp-fb", FB))}
            assert {("nack", None), ("nack", "pli"), ("ccm", "fir"), ("transport-cc", None)} <= fbs
            assert exts >= {("3", ABS_SEND_TIME), ("5", TCC)}
        sources = d.findall(q("source", SSMA))
        assert sources, f"no own source in {media}"
        name = "c0ffee01-a0" if media == "audio" else "c0ffee01-v0"
        for s in sources:
            assert s.get("name") == name
            msid = {p.get("name"): p.get("value") for p in s.findall(q("parameter", SSMA))}.get("msid")
            assert msid is not None and len(msid.split()) == 2
            accepted_ssrcs.add(int(s.get("ssrc", "0")))
        if media == "video":
            fid = d.findall(q("ssrc-group", SSMA))
            assert [g.get("semantics") for g in fid] == ["FID"]
            pair = [int(x.get("ssrc", "0")) for x in fid[0]]
            assert len(pair) == 2 and set(pair) == {int(s.get("ssrc", "0")) for s in sources}
        else:
            assert len(sources) == 1
        t = c.find(q("transport", ICE))
        ufrag, pwd = t.get("ufrag") if t is not None else None, t.get("pwd") if t is not None else None
        assert t is not None and ufrag and pwd
        assert f"a=ice-ufrag:{ufrag}" in answer and f"a=ice-pwd:{pwd}" in answer
        fp = t.find(q("fingerprint", DTLS))
        assert fp is not None and fp.get("setup") == "active" and fp.get("hash") == "sha-256"
        assert fp.text is not None and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp.text)
        cands = t.findall(q("candidate", ICE))
        assert cands, "no local candidate in session-accept"
        for cand in cands:
            assert cand.get("ip") and int(cand.get("port", "0")) > 0 and cand.get("protocol") == "udp"
            assert cand.get("type") in {"host", "srflx", "prflx", "relay"}
            assert int(cand.get("component", "0")) == 1 and int(cand.get("priority", "0")) > 0
    assert accepted_ssrcs == answer_ssrcs and len(accepted_ssrcs) == 3


def test_without_local_media_the_answer_has_no_own_sources(harness: ChromiumBrowser) -> None:
    out = harness.call("initiate", session_initiate([owner("a11ce0aa", 1000)], data=False), "feedf00d", False)
    accept = ET.fromstring(out["accept"])
    assert accept.findall(f".//{q('source', SSMA)}") == []
    assert [t["current"] for t in out["transceivers"][:2]] == ["recvonly", "recvonly"]


@pytest.mark.parametrize("inline", [False, True], ids=["json", "inline"])
def test_source_add_and_remove_renegotiate(harness: ChromiumBrowser, inline: bool) -> None:
    alice, bob, carol = owner("a11ce0aa", 1000), owner("b0b0b0bb", 2000), owner("ca401cc0", 3000, rtx=False)
    first = harness.call("initiate", session_initiate([alice]), "c0ffee01", True)
    assert len(first["transceivers"]) == 4

    added = harness.call("apply", source_change("source-add", [bob, carol], inline=inline))
    mids = [t["mid"] for t in added["transceivers"]]
    assert mids[:4] == [t["mid"] for t in first["transceivers"]]  # existing lines keep their place
    assert len(mids) == 8 and len(set(mids)) == 8
    assert all(t["current"] == "recvonly" for t in added["transceivers"][2:])
    assert {s["owner"] for s in added["sources"]} == {"a11ce0aa", "b0b0b0bb", "ca401cc0"}
    assert harness.call("ownerOfSsrc", bob.video[0].rtx) == "b0b0b0bb"
    assert f"a=ssrc-group:FID {bob.video[0].ssrc} {bob.video[0].rtx}" in added["offer"]

    removed = harness.call("apply", source_change("source-remove", [bob], inline=inline))
    # m-lines never disappear: bob's are rejected (port 0) in offer and answer, the rest keep their place.
    bob_mids = {s["mid"] for s in added["sources"] if s["owner"] == "b0b0b0bb"}
    assert len(bob_mids) == 2
    answer_lines = media_sections(removed["answer"])
    assert [re.search(r"a=mid:(\S+)", s).group(1) for s in answer_lines] == mids  # type: ignore[union-attr]
    rejected = {re.search(r"a=mid:(\S+)", s).group(1) for s in answer_lines if s.split(" ")[1] == "0"}  # type: ignore[union-attr]
    assert rejected == bob_mids
    # Chrome drops stopped transceivers after negotiation; the others are still receiving.
    assert {t["mid"] for t in removed["transceivers"]} == set(mids) - bob_mids
    sections = media_sections(removed["offer"])
    assert sum(1 for s in sections if s.split(" ")[1] == "0") == 2
    assert str(bob.video[0].ssrc) not in removed["offer"]
    assert harness.call("ownerOfSsrc", bob.video[0].ssrc) is None
    assert {s["owner"] for s in removed["sources"]} == {"a11ce0aa", "ca401cc0"}

    # The same participant may come back with new SSRCs: new lines, again accepted.
    back = owner("b0b0b0bb", 4000)
    again = harness.call("apply", source_change("source-add", [back], inline=inline))
    assert len(media_sections(again["answer"])) == 10 and len(again["transceivers"]) == 8
    assert harness.call("ownerOfSsrc", back.audio[0].ssrc) == "b0b0b0bb"


def test_transport_info_candidates_are_added(harness: ChromiumBrowser) -> None:
    harness.call("initiate", session_initiate([owner("a11ce0aa", 1000)]), "c0ffee01", True)
    _, j = jingle_iq("transport-info")
    c = el(j, "content", JINGLE, name="audio", creator="initiator")
    t = el(c, "transport", ICE, ufrag="7mf2a1j4nqb7bq", pwd="1d8r3hrvvhj8hf1bfm2u1b7tsp")
    el(
        t,
        "candidate",
        ICE,
        component=1,
        foundation=9,
        generation=0,
        id="c9",
        ip="127.0.0.2",
        network=0,
        port=10001,
        priority=2130706000,
        protocol="udp",
        type="host",
    )
    out = harness.call("apply", ET.tostring(j, encoding="unicode"))
    assert "a=candidate:9 1 udp 2130706000 127.0.0.2 10001 typ host generation 0" in out["offer"]


@pytest.mark.parametrize(
    ("stanza", "message"),
    [
        ('<jingle xmlns="urn:xmpp:jingle:1" action="session-initiate"/>', "lacks action or sid"),
        ('<jingle xmlns="urn:xmpp:jingle:0" action="x" sid="1"/>', "not a urn:xmpp:jingle:1"),
        (
            '<jingle xmlns="urn:xmpp:jingle:1" action="source-add" sid="1">'
            '<json-message xmlns="http://jitsi.org/jitmeet">{"sources": nope</json-message></jingle>',
            "json-message is not JSON",
        ),
        (
            '<jingle xmlns="urn:xmpp:jingle:1" action="source-add" sid="1">'
            '<json-message xmlns="http://jitsi.org/jitmeet">{"sources":{"x":[[{"s":-4}]]}}</json-message></jingle>',
            "bad source",
        ),
        (
            '<jingle xmlns="urn:xmpp:jingle:1" action="source-add" sid="1"><content name="video">'
            '<description xmlns="urn:xmpp:jingle:apps:rtp:1" media="video">'
            '<source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="12ab"/></description></content></jingle>',
            "not an integer",
        ),
    ],
)
def test_malformed_jingle_is_refused_with_a_reason(
    harness: ChromiumBrowser, stanza: str, message: str
) -> None:
    with pytest.raises(PageError, match=message):
        harness.call("parseJingle", stanza)


def test_session_initiate_without_transport_is_refused(harness: ChromiumBrowser) -> None:
    xml = session_initiate([owner("a11ce0aa", 1000)])
    root = ET.fromstring(xml)
    for c in root.findall(q("content", JINGLE)):
        for t in c.findall(q("transport", ICE)):
            t.attrib.pop("pwd")
    with pytest.raises(PageError, match="lacks ufrag, pwd or fingerprint"):
        harness.call("offer", ET.tostring(root, encoding="unicode"))


def test_recorded_initiate_round_trips(harness: ChromiumBrowser) -> None:
    xml = session_initiate([owner("a11ce0aa", 1000), owner("b0b0b0bb", 2000)])
    model = harness.call("parseJingle", xml)
    again = harness.call("jingleRoundTrip", xml)
    assert harness.call("parseJingle", again) == model
    assert harness.call("jingleRoundTrip", again) == again
    # SDP of the offer read back gives the Jingle descriptions and transport we started from.
    contents = harness.call("sdpToContents", harness.call("offer", xml))
    by_name = {c["name"]: c for c in model["contents"]}
    for c in contents[:2]:
        original = by_name[c["mid"]]
        for key in ("payloadTypes", "extmaps", "extmapAllowMixed", "rtcpMux"):
            assert _norm(c["description"][key]) == _norm(original["description"][key]), key
        for key in ("ufrag", "pwd", "fingerprints", "candidates"):
            assert _norm(c["transport"][key]) == _norm(original["transport"][key]), key


def _norm(v: Any) -> Any:
    """Drops unset/None fields (absent in XML, undefined in JS), so both sides compare equal."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if x is not None and k not in ("id", "network")}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


# ------------------------------------------------------------------------------------ property tests

ssrc_values = st.integers(min_value=1, max_value=2**32 - 1)
endpoint_ids = st.text("0123456789abcdef", min_size=8, max_size=8)


@st.composite
def owners_strategy(draw: st.DrawFn) -> list[Owner]:
    ids = draw(st.lists(endpoint_ids, min_size=0, max_size=4, unique=True))
    ssrcs = draw(st.lists(ssrc_values, min_size=len(ids) * 8, max_size=len(ids) * 8, unique=True))
    out: list[Owner] = []
    for i, e in enumerate(ids):
        s = ssrcs[i * 8 : i * 8 + 8]
        rtx = draw(st.booleans())
        sim = draw(st.booleans())
        video = Src(s[0], f"{e}-v0", f"{e}-video-0 t{s[0]}", rtx=s[1] if rtx else None)
        if sim and rtx:
            video.sim = s[2:6]
        audio = [Src(s[6], f"{e}-a0", f"{e}-audio-0 t{s[6]}")] if draw(st.booleans()) else []
        out.append(Owner(e, audio=audio, video=[video] if draw(st.booleans()) else []))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owners=owners_strategy(), data=st.booleans(), rtx=st.booleans(), jvb=st.booleans())
def test_generated_initiates_are_accepted_and_round_trip(
    harness: ChromiumBrowser, owners: list[Owner], data: bool, rtx: bool, jvb: bool
) -> None:
    xml = session_initiate(owners, data=data, rtx=rtx, jvb=jvb)
    model = harness.call("parseJingle", xml)
    again = harness.call("jingleRoundTrip", xml)
    assert harness.call("parseJingle", again) == model
    out = harness.call("initiate", xml, "c0ffee01", True)
    expected_lines = sum(len(o.audio) + len(o.video) for o in owners)
    assert len(out["transceivers"]) == 2 + expected_lines
    offered = {int(x) for x in re.findall(r"a=ssrc:(\d+) msid", out["offer"])}
    signalled = {
        s for o in owners for x in o.audio + o.video for s in [x.ssrc, x.rtx, *x.sim] if s is not None
    }
    if jvb:
        signalled |= {1863439907, 3191927963}
    assert offered == signalled
    for o in owners:
        for x in o.audio + o.video:
            assert harness.call("ownerOfSsrc", x.ssrc) == o.endpoint
    accept = ET.fromstring(out["accept"])
    assert {c.get("name") for c in accept.findall(q("content", JINGLE))} == {"audio", "video"}


def test_artifacts_of_a_recorded_exchange(harness: ChromiumBrowser, artifact_dir: Path) -> None:
    """Keeps one full exchange (session-initiate, offer, answer, session-accept) for people to read."""
    xml = session_initiate([owner("a11ce0aa", 1000), owner("b0b0b0bb", 2000)])
    out = harness.call("initiate", xml, "c0ffee01", True)
    target = artifact_dir / "web-jingle-exchange.txt"
    target.write_text(
        "\n\n".join(
            [
                f"== session-initiate\n{xml}",
                f"== offer\n{out['offer']}",
                f"== answer\n{out['answer']}",
                f"== session-accept\n{out['accept']}",
            ]
        )
    )
    assert target.stat().st_size > 2000


# ------------------------------------------------------------------ media through the real bridge


def bridge_initiate(transport_desc: TransportDescription, remotes: dict[str, tuple[Source, ...]]) -> str:
    """The session-initiate a focus would send for this bridge endpoint (transport copied from the bridge)."""
    _, j = jingle_iq("session-initiate")
    for media in ("audio", "video"):
        c = el(j, "content", JINGLE, creator="initiator", name=media, senders="both")
        description(c, media, rtx_pt=RTX_PT)
        t = el(c, "transport", ICE, ufrag=transport_desc.ufrag, pwd=transport_desc.pwd)
        el(t, "rtcp-mux", ICE)
        for f in transport_desc.fingerprints:
            el(t, "fingerprint", DTLS, hash=f.hash, setup="actpass").text = f.value
        for i, cand in enumerate(c2 for c2 in transport_desc.candidates if only_loopback(c2)):
            el(
                t,
                "candidate",
                ICE,
                component=1,
                foundation=cand.foundation,
                generation=0,
                id=f"b{i}",
                ip=str(cand.ip),
                network=0,
                port=cand.port,
                priority=cand.priority,
                protocol="udp",
                type=cand.type,
            )
    g = el(j, "group", GROUPING, semantics="BUNDLE")
    for n in ("audio", "video"):
        el(g, "content", GROUPING, name=n)
    sources: dict[str, Any] = {}
    for endpoint, srcs in remotes.items():
        entry: list[list[Any]] = [[], [], [], []]
        for s in srcs:
            base = 0 if s.kind == "video" else 2
            msid = f"{endpoint}-{s.kind} {s.name or s.kind}"
            entry[base] += [{"s": x, "n": s.name or f"{endpoint}-{s.kind[0]}0", "m": msid} for x in s.ssrcs]
            entry[base + 1] += [["f" if grp.semantics == "FID" else "s", *grp.ssrcs] for grp in s.groups]
        sources[endpoint] = entry
    el(j, "json-message", JITMEET).text = json.dumps({"sources": sources})
    return ET.tostring(j, encoding="unicode")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def accept_for_bridge(accept_xml: str) -> tuple[TransportDescription, tuple[Source, ...]]:
    """What a focus passes on to the bridge from a session-accept: transport and sources."""
    accept = ET.fromstring(accept_xml)
    contents = accept.findall(q("content", JINGLE))
    t = contents[0].find(q("transport", ICE))
    assert t is not None
    fps = tuple(
        Fingerprint.parse(f.get("hash", ""), f.text or "", "active")
        for f in t.findall(q("fingerprint", DTLS))
    )
    cands = tuple(
        Candidate(
            ip=ipaddress.ip_address(c.get("ip", "")),
            port=int(c.get("port", "0")),
            priority=int(c.get("priority", "0")),
            type="host",
            foundation=c.get("foundation", "1"),
        )
        for c in t.findall(q("candidate", ICE))
        if c.get("type") == "host" and c.get("protocol") == "udp" and _is_ip(c.get("ip", ""))
    )
    out: list[Source] = []
    for c in contents:
        d = c.find(q("description", RTP))
        assert d is not None
        kind: MediaKind = "audio" if d.get("media") == "audio" else "video"
        ssrcs = [int(s.get("ssrc", "0")) for s in d.findall(q("source", SSMA))]
        groups = tuple(
            SsrcGroup(
                semantics="FID" if g.get("semantics") == "FID" else "SIM",
                ssrcs=tuple(int(x.get("ssrc", "0")) for x in g),
            )
            for g in d.findall(q("ssrc-group", SSMA))
        )
        if ssrcs:
            first = [g.ssrcs[0] for g in groups if g.semantics == "FID"]
            ordered = first + [x for x in ssrcs if x not in first]
            name = d.find(q("source", SSMA))
            out.append(
                Source(
                    kind=kind,
                    ssrcs=tuple(ordered),
                    name=name.get("name", "") if name is not None else "",
                    groups=groups,
                )
            )
    return TransportDescription(
        ufrag=t.get("ufrag", ""), pwd=t.get("pwd", ""), fingerprints=fps, candidates=cands
    ), tuple(out)


async def test_media_flows_through_the_bridge_with_jingle_signalling(
    harness: ChromiumBrowser, bridge: Bridge, aiortc_peers: PeerFactory
) -> None:
    """An aiortc participant and the page, via the real bridge: the page's offer comes from a session-initiate
    built from the bridge's transport, the bridge learns the page's transport and sources from the
    session-accept, and both sides decode each other's video (the page also receives audio)."""
    call = Call(bridge.create_conference(meeting_id="web-jingle"))
    alice = aiortc_peers("alice")
    member = await call.join(alice)
    endpoint = call.conference.create_endpoint("c0ffee01")
    try:
        xml = bridge_initiate(endpoint.local_description(), {"alice": member.sources})
        out = await harness.acall("initiate", xml, "c0ffee01", True)
        transport_desc, sources = accept_for_bridge(out["accept"])
        assert {s.kind for s in sources} == {"audio", "video"}
        assert all(s.name in ("c0ffee01-a0", "c0ffee01-v0") for s in sources)
        endpoint.set_remote_description(transport_desc)
        endpoint.set_sources(sources)
        assert await endpoint.wait_state("connected", "failed", timeout=15) == "connected"
        # alice learns the page's sources (the focus's source-add, here as alice's re-offer).
        member.builder.add(RemoteParticipant("c0ffee01", sources))
        await call._renegotiate(member)

        async def page_receives() -> bool:
            stats = await harness.acall("inbound")
            video = sum(s["framesDecoded"] for s in stats if s["owner"] == "alice" and s["kind"] == "video")
            audio = sum(
                s["totalSamplesReceived"] for s in stats if s["owner"] == "alice" and s["kind"] == "audio"
            )
            return bool(video > 20 and audio > 4800)

        async def page_stats() -> str:
            return json.dumps(await harness.acall("inbound"))

        await wait_until_async(page_receives, within=20, describe=page_stats)
        await wait_until(lambda: alice.frames_from("c0ffee01") > 20, within=20, describe=alice.summary)
    finally:
        endpoint.close()
        await harness.acall("close")
        await call.close()
