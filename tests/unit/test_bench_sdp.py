"""bench/sdp.py: the load generator's side of SDP against Janus, checked on descriptions Janus 1.1.2 sent (a
publisher's answer and a multistream subscriber's offer, captured from the bench) and on its own output."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import sdp

DATA = Path(__file__).parent / "data"
ENDPOINT: dict[str, Any] = {
    "index": 7,
    "ufrag": "abcd",
    "pwd": "p" * 24,
    "fingerprint_hash": "sha-256",
    "fingerprint": "AA:" * 31 + "AA",
    "setup": "active",
    "candidates": [
        {"ip": "10.77.0.1", "port": 40000, "priority": 2130706431, "type": "host", "foundation": "1"}
    ],
}


def test_janus_publisher_answer() -> None:
    remote = sdp.parse((DATA / "janus-publisher-answer.sdp").read_text())
    assert (remote.ufrag, remote.setup) == ("0STs", "passive")
    assert remote.fingerprints[0][0] == "sha-256" and remote.fingerprints[0][1].startswith("5A:2E")
    # Each m-line repeats the candidate: one (BUNDLE) transport, one candidate.
    assert remote.candidates == (("10.77.0.2", 39407, 2015363327, "host"),)
    assert [(m.kind, m.mid, m.direction) for m in remote.media] == [
        ("audio", "0", "recvonly"),
        ("video", "1", "recvonly"),
    ]
    assert sdp.rtx_payload_type(remote) is None


def test_janus_subscriber_offer_and_our_answer() -> None:
    offer = sdp.parse((DATA / "janus-subscriber-offer.sdp").read_text())
    assert offer.setup == "actpass" and offer.bundle == ("0", "1")
    # Janus numbers VP8 96 and its RTX 97 in what it offers, whatever the publisher used.
    assert sdp.rtx_payload_type(offer) == 97
    answer = sdp.parse(sdp.subscriber_answer(offer, ENDPOINT))
    assert (answer.ufrag, answer.setup) == ("abcd", "active")
    assert [(m.kind, m.mid, m.direction, m.formats) for m in answer.media] == [
        ("audio", "0", "recvonly", ("111",)),
        ("video", "1", "recvonly", ("96", "97")),
    ]
    assert "rtpmap:97 rtx/90000" in answer.media[1].codec_lines
    assert answer.candidates == (("10.77.0.1", 40000, 2130706431, "host"),)


def test_data_channel_is_rejected_and_left_out_of_the_bundle() -> None:
    text = (
        (DATA / "janus-subscriber-offer.sdp")
        .read_text()
        .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    )
    text += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n"
    answer = sdp.subscriber_answer(sdp.parse(text), ENDPOINT)
    assert "a=group:BUNDLE 0 1\r\n" in answer
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel" in answer


def test_publisher_offer_signals_a_simulcast_group() -> None:
    offer = sdp.publisher_offer(ENDPOINT, 11, [21, 22, 23])
    assert "a=ssrc-group:SIM 21 22 23" in offer
    parsed = sdp.parse(offer)
    assert [(m.kind, m.direction) for m in parsed.media] == [("audio", "sendonly"), ("video", "sendonly")]
    assert parsed.setup == "active" and parsed.fingerprints == (("sha-256", ENDPOINT["fingerprint"]),)
    only_video = sdp.parse(sdp.publisher_offer(ENDPOINT, None, [21]))
    assert [m.kind for m in only_video.media] == ["video"]
    assert "ssrc-group" not in sdp.publisher_offer(ENDPOINT, None, [21])
    with pytest.raises(sdp.SdpError):
        sdp.publisher_offer(ENDPOINT, None, [])


def test_publisher_offer_signals_rid_simulcast_for_livekit() -> None:
    offer = sdp.publisher_offer(ENDPOINT, 11, [21, 22, 23], track_ids=("a", "v"), stream="s", rid_ext=(9, 10))
    video = offer[offer.index("m=video") :]
    for line in (
        "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=rid:q send",
        "a=rid:f send",
        "a=simulcast:send q;h;f",
        "a=msid:s v",
    ):
        assert line in video, line
    # No SSRC lines for the video: pion would read three on one m-line as Plan B.
    assert "a=ssrc" not in video and "a=ssrc:11 msid:s a" in offer


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=0\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\na=fingerprint:sha-256 AA\r\n", "no m-line"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 AA\r\n", "no ICE credentials"),
        ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\n", "no DTLS fingerprint"),
        ("v=0\r\nm=audio\r\n", "bad m-line"),
    ],
)
def test_unusable_descriptions_are_refused(text: str, why: str) -> None:
    with pytest.raises(sdp.SdpError, match=why):
        sdp.parse(text)


def test_tcp_and_malformed_candidates_are_skipped() -> None:
    base = (DATA / "janus-publisher-answer.sdp").read_text()
    extra = (
        "a=candidate:2 1 tcp 1 10.0.0.9 9 typ host tcptype passive\r\n"
        "a=candidate:3 1 udp x 10.0.0.9 9 typ host\r\n"
    )
    assert sdp.parse(base + extra).candidates == (("10.77.0.2", 39407, 2015363327, "host"),)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=400))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(sdp.SdpError):
        sdp.parse(text)
