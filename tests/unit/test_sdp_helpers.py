"""The test-side SDP glue: bridge offers as SDP, peers' answers parsed back (no bridge needed)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from aiortc.rtcdtlstransport import RTCCertificate
from hypothesis import given
from hypothesis import strategies as st

from bridge import Candidate, Fingerprint, Source, SsrcGroup, TransportDescription
from tests.helpers.peers import AiortcPeer
from tests.helpers.sdp import (
    OfferBuilder,
    RemoteParticipant,
    build_offer,
    candidate_from_sdp,
    candidate_to_sdp,
    only_loopback,
    parse_answer,
)

BRIDGE_FP = Fingerprint.parse("sha-256", ":".join(["AB"] * 32), "actpass")
BRIDGE = TransportDescription(
    ufrag="brUf",
    pwd="bridgepasswordbridgepass",
    fingerprints=(BRIDGE_FP,),
    candidates=(
        Candidate(ip_address("127.0.0.1"), 10000, 2130706431, "host", foundation="1"),
        Candidate(ip_address("127.0.0.2"), 10000, 2130706175, "host", foundation="2"),
    ),
)


def participant(name: str, base: int, *, rtx: bool = True, video: bool = True) -> RemoteParticipant:
    sources = [Source("audio", (base,), f"{name}-a0")]
    if video:
        if rtx:
            group = SsrcGroup("FID", (base + 1, base + 2))
            sources.append(Source("video", (base + 1, base + 2), f"{name}-v0", (group,)))
        else:
            sources.append(Source("video", (base + 1,), f"{name}-v0"))
    return RemoteParticipant(name, tuple(sources))


BOB = participant("bob", 1000)
CAROL = participant("carol", 2000)
DAVE = participant("dave", 3000)


def media_sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            sections.append([line])
        elif sections and line:
            sections[-1].append(line)
    return sections


def session_lines(sdp: str) -> list[str]:
    return sdp.split("\r\nm=", maxsplit=1)[0].split("\r\n")


def attr(section: list[str], name: str) -> list[str]:
    out = []
    for line in section:
        if line == f"a={name}":
            out.append("")
        elif line.startswith(f"a={name}:"):
            out.append(line.split(":", 1)[1])
    return out


# --- offer -----------------------------------------------------------------------------------------


def test_first_offer_without_remote_participants() -> None:
    offer = build_offer(BRIDGE)
    sdp = offer.sdp
    assert sdp.endswith("\r\n") and "\n" not in sdp.replace("\r\n", "")
    assert "a=group:BUNDLE 0 1" in session_lines(sdp)
    assert "a=ice-lite" not in sdp, "the bridge is a full controlling agent"
    assert "extmap" not in sdp, "no header extensions: the bridge forwards packets unchanged"
    audio, video = media_sections(sdp)
    assert audio[0] == "m=audio 10000 UDP/TLS/RTP/SAVPF 111"
    assert video[0] == "m=video 10000 UDP/TLS/RTP/SAVPF 100 101"
    for section, mid in ((audio, "0"), (video, "1")):
        assert attr(section, "mid") == [mid]
        assert "a=sendrecv" in section
        assert "a=rtcp-mux" in section
        assert "c=IN IP4 127.0.0.1" in section
        assert attr(section, "ice-ufrag") == ["brUf"]
        assert attr(section, "ice-pwd") == ["bridgepasswordbridgepass"]
        assert attr(section, "fingerprint") == [f"sha-256 {BRIDGE_FP.value}"]
        assert attr(section, "setup") == ["actpass"]
        assert attr(section, "candidate") == [
            "1 1 udp 2130706431 127.0.0.1 10000 typ host generation 0",
            "2 1 udp 2130706175 127.0.0.2 10000 typ host generation 0",
        ]
        assert "a=end-of-candidates" in section
        assert attr(section, "ssrc") == []
    assert "a=rtpmap:111 opus/48000/2" in audio
    assert attr(video, "rtpmap") == ["100 VP8/90000", "101 rtx/90000"]
    assert attr(video, "rtcp-fb") == ["100 nack", "100 nack pli", "100 ccm fir"]
    assert "a=fmtp:101 apt=100" in video
    assert offer.mids == ("0", "1")
    assert offer.participant_of("0") is None


def test_offer_with_three_remote_participants() -> None:
    offer = build_offer(BRIDGE, [BOB, CAROL, DAVE])
    sections = media_sections(offer.sdp)
    assert [attr(s, "mid")[0] for s in sections] == ["0", "1", "2", "3", "4", "5"]
    assert "a=group:BUNDLE 0 1 2 3 4 5" in session_lines(offer.sdp)
    assert [s[0].split()[0] for s in sections] == ["m=audio", "m=video"] * 3
    directions = [next(line[2:] for line in s if line[2:] in ("sendrecv", "sendonly")) for s in sections]
    assert directions == ["sendrecv", "sendrecv", "sendonly", "sendonly", "sendonly", "sendonly"]
    assert [offer.participant_of(m) for m in offer.mids] == ["bob", "bob", "carol", "carol", "dave", "dave"]
    assert offer.mids_of("carol", "video") == ("3",)
    assert offer.participant_of_ssrc(3002) == "dave"

    bob_video = sections[1]
    assert attr(bob_video, "ssrc-group") == ["FID 1001 1002"]
    assert attr(bob_video, "ssrc") == [
        "1001 cname:bob",
        "1001 msid:bob bob-v0",
        "1002 cname:bob",
        "1002 msid:bob bob-v0",
    ]
    assert attr(bob_video, "msid") == ["bob bob-v0"]
    carol_audio = sections[2]
    assert attr(carol_audio, "ssrc") == ["2000 cname:carol", "2000 msid:carol carol-a0"]
    assert attr(carol_audio, "ssrc-group") == []
    # The same payload types everywhere: the bridge does not rewrite them.
    assert {s[0].split(" ", 3)[3] for s in sections[1::2]} == {"100 101"}


def test_primary_ssrc_is_listed_first_even_if_the_source_lists_rtx_first() -> None:
    source = Source("video", (7, 6), "x-v0", (SsrcGroup("FID", (6, 7)),))
    offer = build_offer(BRIDGE, [RemoteParticipant("x", (source,))])
    ssrc_ids = [line.split()[0] for line in attr(media_sections(offer.sdp)[1], "ssrc")]
    assert ssrc_ids == ["6", "6", "7", "7"]


def test_offer_without_rtx() -> None:
    offer = build_offer(BRIDGE, [BOB], rtx=False)
    video = media_sections(offer.sdp)[1]
    assert video[0] == "m=video 10000 UDP/TLS/RTP/SAVPF 100"
    assert "rtx" not in offer.sdp and "ssrc-group" not in offer.sdp
    assert [line.split()[0] for line in attr(video, "ssrc")] == ["1001", "1001"]


def test_reoffer_appends_and_keeps_existing_sections() -> None:
    builder = OfferBuilder(BRIDGE)
    builder.add(BOB)
    first = builder.offer()
    builder.add(CAROL)
    second = builder.offer()
    o1 = session_lines(first.sdp)[1].split()
    o2 = session_lines(second.sdp)[1].split()
    assert o1[1] == o2[1], "same session id"
    assert (int(o1[2]), int(o2[2])) == (1, 2), "session version increments"
    s1, s2 = media_sections(first.sdp), media_sections(second.sdp)
    assert s2[: len(s1)] == s1, "existing m-lines unchanged and in the same order"
    assert second.mids == ("0", "1", "2", "3")
    assert "a=group:BUNDLE 0 1 2 3" in session_lines(second.sdp)


def test_first_participant_fills_the_sendrecv_pair_on_a_reoffer() -> None:
    builder = OfferBuilder(BRIDGE)
    alone = builder.offer()
    builder.add(BOB)
    after = builder.offer()
    assert alone.mids == after.mids == ("0", "1")
    assert after.participant_of("1") == "bob"
    assert "a=ssrc:1001 cname:bob" in after.sdp


def test_leaving_participant_keeps_its_slot() -> None:
    builder = OfferBuilder(BRIDGE)
    for p in (BOB, CAROL, DAVE):
        builder.add(p)
    builder.remove("bob")
    builder.remove("carol")
    offer = builder.offer()
    sections = media_sections(offer.sdp)
    assert offer.mids == ("0", "1", "2", "3", "4", "5")
    assert "a=sendrecv" in sections[0] and "a=sendrecv" in sections[1], "the peer still sends on mid 0/1"
    assert "a=inactive" in sections[2] and "a=inactive" in sections[3]
    assert attr(sections[0], "ssrc") == attr(sections[3], "ssrc") == []
    assert "a=ssrc:3000 cname:dave" in offer.sdp
    assert builder.participants == ("dave",)
    builder.add(participant("erin", 4000))
    assert builder.offer().mids_of("erin") == ("6", "7"), "a slot is never reused"


def test_participant_without_video_gets_an_inactive_video_section() -> None:
    offer = build_offer(BRIDGE, [BOB, participant("voice", 5000, video=False)])
    sections = media_sections(offer.sdp)
    assert "a=sendonly" in sections[2]
    assert "a=inactive" in sections[3] and attr(sections[3], "ssrc") == []


def test_adding_a_participant_twice_is_an_error() -> None:
    builder = OfferBuilder(BRIDGE)
    builder.add(BOB)
    with pytest.raises(ValueError, match="already"):
        builder.add(BOB)


def test_ipv6_candidate_sets_an_ip6_connection_line() -> None:
    transport = TransportDescription("u", "p" * 22, (BRIDGE_FP,), (Candidate(ip_address("::1"), 4000, 100),))
    assert "c=IN IP6 ::1" in build_offer(transport).sdp


# --- answer ----------------------------------------------------------------------------------------

# Shaped like Chromium's answer: transport at media level of the first m-line only, one fingerprint,
# TCP, IPv6 and non-loopback candidates, msid lines, a recvonly m-line without ssrc lines.
CHROMIUM_LIKE_ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1 2 3",
        "a=msid-semantic: WMS stream",
        "m=audio 50000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 127.0.0.1",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0 network-id 1",
        "a=candidate:2 1 udp 2122194687 192.0.2.2 50001 typ host generation 0 network-id 2",
        "a=candidate:3 1 udp 2122129151 ::1 50002 typ host generation 0 network-id 3",
        "a=candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 network-id 1",
        "a=ice-ufrag:Ch1m",
        "a=ice-pwd:chromiumchromiumchromium",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 " + ":".join(["cd"] * 32),
        "a=setup:active",
        "a=mid:0",
        "a=sendrecv",
        "a=msid:stream audiotrack",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=ssrc:111111 cname:chromecname",
        "a=ssrc:111111 msid:stream audiotrack",
        "m=video 9 UDP/TLS/RTP/SAVPF 100 101",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Ch1m",
        "a=ice-pwd:chromiumchromiumchromium",
        "a=fingerprint:sha-256 " + ":".join(["cd"] * 32),
        "a=setup:active",
        "a=mid:1",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtpmap:100 VP8/90000",
        "a=rtpmap:101 rtx/90000",
        "a=fmtp:101 apt=100",
        "a=ssrc-group:FID 222222 333333",
        "a=ssrc:222222 cname:chromecname",
        "a=ssrc:333333 cname:chromecname",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=mid:2",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 100 101",
        "c=IN IP4 0.0.0.0",
        "a=mid:3",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:100 VP8/90000",
        "",
    ]
)


def test_parse_chromium_like_answer() -> None:
    answer = parse_answer(CHROMIUM_LIKE_ANSWER, "chrome")
    t = answer.transport
    assert (t.ufrag, t.pwd) == ("Ch1m", "chromiumchromiumchromium")
    assert t.fingerprints == (Fingerprint("sha-256", bytes([0xCD] * 32), "active"),)
    # The TCP candidate is not one the bridge can use: parsing drops it.
    assert [(str(c.ip), c.port) for c in t.candidates] == [
        ("127.0.0.1", 50000),
        ("192.0.2.2", 50001),
        ("::1", 50002),
    ]
    assert answer.sources == (
        Source("audio", (111111,), "chrome-a0"),
        Source("video", (222222, 333333), "chrome-v0", (SsrcGroup("FID", (222222, 333333)),)),
    )
    assert answer.directions == {"0": "sendrecv", "1": "sendrecv", "2": "recvonly", "3": "recvonly"}


def test_candidate_filter_keeps_loopback_udp_only() -> None:
    answer = parse_answer(CHROMIUM_LIKE_ANSWER, "chrome", candidate_filter=only_loopback)
    assert [(str(c.ip), c.port) for c in answer.transport.candidates] == [("127.0.0.1", 50000)]


def test_session_level_transport_attributes() -> None:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "a=ice-ufrag:sess\r\na=ice-pwd:sessionpasswordsession\r\n"
        "a=fingerprint:SHA-256 " + ":".join(["0a"] * 32) + "\r\na=setup:passive\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ssrc:5 cname:x\r\n"
    )
    answer = parse_answer(sdp, "p")
    assert answer.transport.ufrag == "sess"
    assert answer.transport.fingerprints == (Fingerprint("sha-256", bytes([0x0A] * 32), "passive"),)
    assert answer.sources == (Source("audio", (5,), "p-a0"),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("a=setup:active", "a=setup:actpass"), "setup"),
        (("a=ice-ufrag:Ch1m", "a=x:y"), "ICE credentials"),
        (("a=fingerprint:", "a=x-fingerprint:"), "fingerprint"),
        ((" 50000 UDP", " 0 UDP"), "no accepted m-line"),
    ],
)
def test_parse_answer_rejects_unusable_answers(change: tuple[str, str], message: str) -> None:
    sdp = CHROMIUM_LIKE_ANSWER.replace(*change)
    if change[1] == " 0 UDP":
        sdp = sdp.replace(" 9 UDP", " 0 UDP")
    with pytest.raises(ValueError, match=message):
        parse_answer(sdp, "chrome")


def test_rejected_sections_carry_no_sources() -> None:
    answer = parse_answer(
        CHROMIUM_LIKE_ANSWER.replace("m=video 9 UDP/TLS/RTP/SAVPF 100 101", "m=video 0 x 1"), "c"
    )
    assert [s.kind for s in answer.sources] == ["audio"]


@given(
    ip=st.ip_addresses(),
    port=st.integers(1, 65535),
    priority=st.integers(0, 2**32 - 1),
    ctype=st.sampled_from(["host", "srflx", "prflx", "relay"]),
    foundation=st.text("abcdef0123456789", min_size=1, max_size=32),
)
def test_candidate_round_trip(
    ip: IPv4Address | IPv6Address, port: int, priority: int, ctype: str, foundation: str
) -> None:
    c = Candidate(ip, port, priority, ctype, foundation=foundation)  # type: ignore[arg-type]
    assert candidate_from_sdp(candidate_to_sdp(c)) == c
    assert candidate_from_sdp("candidate:" + candidate_to_sdp(c)) == c


def test_malformed_candidate() -> None:
    with pytest.raises(ValueError):
        candidate_from_sdp("1 1 udp 1 127.0.0.1 9 host")
    # Well-formed but unusable by the bridge: TCP, RTCP's component, an mDNS name.
    for value in (
        "1 1 tcp 1 127.0.0.1 9 typ host",
        "1 2 udp 1 127.0.0.1 9 typ host",
        "1 1 udp 1 a.local 9 typ host",
    ):
        assert candidate_from_sdp(value) is None


# --- against a real aiortc RTCPeerConnection ---------------------------------------------------------


@pytest.fixture
async def pc(loopback_ice: None) -> AsyncIterator[AiortcPeer]:
    peer = AiortcPeer("alice")
    yield peer
    await peer.close()


def real_bridge_transport() -> TransportDescription:
    """A transport with a real certificate's fingerprint (aiortc checks the format, not the peer)."""
    fp = next(f for f in RTCCertificate.generateCertificate().getFingerprints() if f.algorithm == "sha-256")
    return TransportDescription(
        "bRuf",
        "bridgebridgebridgebridge",
        (Fingerprint.parse("sha-256", fp.value, "actpass"),),
        BRIDGE.candidates[:1],
    )


async def test_aiortc_answers_a_built_offer(pc: AiortcPeer) -> None:
    offer = build_offer(real_bridge_transport(), [BOB])
    answer = parse_answer(await pc.answer(offer), "alice")
    local = pc.pc.localDescription.sdp

    ice = pc.pc.getTransceivers()[0].receiver.transport.transport
    assert ice.role == "controlled", "no a=ice-lite: aiortc must leave the controlling role to the bridge"
    assert "a=setup:active" in local, "aiortc answers actpass with active: the bridge is the DTLS server"
    assert {fp.hash for fp in answer.transport.fingerprints} == {"sha-256", "sha-384", "sha-512"}
    assert {fp.setup for fp in answer.transport.fingerprints} == {"active"}
    assert answer.transport.ufrag == re.findall(r"a=ice-ufrag:(\S+)", local)[0]
    assert answer.transport.candidates and all(str(c.ip) == "127.0.0.1" for c in answer.transport.candidates)
    audio, video = answer.sources
    assert (audio.kind, len(audio.ssrcs), audio.name) == ("audio", 1, "alice-a0")
    assert (video.kind, len(video.ssrcs), video.name) == ("video", 2, "alice-v0")
    assert video.groups == (SsrcGroup("FID", video.ssrcs),), "RTX offered: aiortc signals its FID group"
    assert answer.directions == {"0": "sendrecv", "1": "sendrecv"}
    assert "a=rtpmap:100 VP8/90000" in local and "a=rtpmap:111 opus/48000/2" in local


async def test_aiortc_accepts_reoffers_with_more_participants(pc: AiortcPeer) -> None:
    builder = OfferBuilder(real_bridge_transport())
    first = parse_answer(await pc.answer(builder.offer()), "alice")
    builder.add(BOB)
    builder.add(CAROL)
    second = parse_answer(await pc.answer(builder.offer()), "alice")
    builder.add(DAVE)
    third = parse_answer(await pc.answer(builder.offer()), "alice")

    assert first.transport == second.transport == third.transport, "no ICE restart, same DTLS"
    assert first.sources == second.sources == third.sources, "aiortc keeps its sending SSRCs"
    assert third.directions == {
        "0": "sendrecv",
        "1": "sendrecv",
        "2": "recvonly",
        "3": "recvonly",
        "4": "recvonly",
        "5": "recvonly",
    }
    assert [t.mid for t in pc.pc.getTransceivers()] == ["0", "1", "2", "3", "4", "5"]
    assert pc.mids_of("bob") == ["0", "1"] and pc.mids_of("dave") == ["4", "5"]
    # aiortc lists its idle sender SSRC on recvonly m-lines too; the parser must not take it as a source.
    local = pc.pc.localDescription.sdp
    assert len(re.findall(r"a=ssrc:(\d+) cname", local)) > sum(len(s.ssrcs) for s in third.sources)


async def test_aiortc_accepts_a_reoffer_after_a_participant_left(pc: AiortcPeer) -> None:
    builder = OfferBuilder(real_bridge_transport())
    builder.add(BOB)
    builder.add(CAROL)
    await pc.answer(builder.offer())
    builder.remove("carol")
    answer = parse_answer(await pc.answer(builder.offer()), "alice")
    assert answer.directions["2"] == answer.directions["3"] == "inactive"
    assert pc.mids_of("carol") == ["2", "3"], "frames stay attributed to whoever the mid carried"


async def test_aiortc_peer_keeps_every_section_on_the_bundle_transport(pc: AiortcPeer) -> None:
    """A first offer with two m-lines per kind: every transceiver must end up on the one BUNDLE transport.

    With aiortc's default bundlePolicy ("balanced") the second video m-line stays on a per-kind transport
    that BUNDLE processing then stops, so it never receives; AiortcPeer uses "max-bundle" for this reason.
    """
    await pc.answer(build_offer(real_bridge_transport(), [BOB, CAROL]))
    transports = {id(t.receiver.transport) for t in pc.pc.getTransceivers()}
    transports |= {id(t.sender.transport) for t in pc.pc.getTransceivers()}
    assert len(transports) == 1
    assert pc.pc.getTransceivers()[3].receiver.transport.state != "closed"
