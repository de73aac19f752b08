"""Proves the Chromium harness without the bridge: a loopback RTCPeerConnection pair inside the page."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from aiortc.rtcdtlstransport import RTCCertificate

from bridge import Candidate, Fingerprint, Source, SsrcGroup, TransportDescription
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.sdp import OfferBuilder, RemoteParticipant, only_loopback, parse_answer

pytestmark = pytest.mark.e2e


def test_chromium_loopback_decodes_fake_camera(chromium: ChromiumBrowser, artifact_dir: Path) -> None:
    result = chromium.call("loopback", 15)
    video = [s for s in result["inbound"] if s["kind"] == "video"]
    audio = [s for s in result["inbound"] if s["kind"] == "audio"]
    assert result["connectionState"] == "connected", result
    assert video and video[0]["framesDecoded"] > 0, result
    assert video[0]["frameWidth"] == 320, video
    # totalSamplesReceived stays 0 unless the audio is played out; packets prove the audio path.
    assert audio and audio[0]["packetsReceived"] > 0, result
    shot = chromium.screenshot(artifact_dir / "chromium-loopback.png")
    assert shot.stat().st_size > 1000
    chromium.call("closeLoopback")


def test_chromium_fixture_stops_every_process(tmp_path: Path, page_server: str) -> None:
    browser = ChromiumBrowser.start(tmp_path / "profile", page_server + "/peer.html")
    assert len(browser.alive_pids()) >= 2  # chromedriver and at least the browser process
    assert browser.call("connectionState") == "none"
    browser.stop()
    assert browser.alive_pids() == []


def _bridge_like_transport() -> TransportDescription:
    """What a bridge endpoint would offer (a real certificate's fingerprint; nobody listens on the port)."""
    fp = next(f for f in RTCCertificate.generateCertificate().getFingerprints() if f.algorithm == "sha-256")
    return TransportDescription(
        ufrag="brUf",
        pwd="bridgebridgebridgebridge",
        fingerprints=(Fingerprint.parse("sha-256", fp.value, "actpass"),),
        candidates=(Candidate(ipaddress.ip_address("127.0.0.1"), 9, 2130706431, "host"),),
    )


def _remote(name: str, base: int) -> RemoteParticipant:
    group = SsrcGroup("FID", (base + 1, base + 2))
    return RemoteParticipant(
        name,
        (
            Source("audio", (base,), f"{name}-a0"),
            Source("video", (base + 1, base + 2), f"{name}-v0", (group,)),
        ),
    )


def test_chromium_answers_bridge_offers_and_reoffers(chromium: ChromiumBrowser) -> None:
    """Chromium takes the test offers (first, re-offers with more participants, a leave) and answers them."""
    builder = OfferBuilder(_bridge_like_transport())
    first = parse_answer(chromium.call("answer", builder.offer().sdp), "chrome")
    assert {fp.setup for fp in first.transport.fingerprints} == {"active"}
    assert [s.kind for s in first.sources] == ["audio", "video"]
    video = first.sources[1]
    assert len(video.ssrcs) == 2 and video.groups == (SsrcGroup("FID", video.ssrcs),), video
    assert any(only_loopback(c) for c in first.transport.candidates), first.transport.candidates

    builder.add(_remote("alice", 1000))
    builder.add(_remote("bob", 2000))
    second = parse_answer(chromium.call("answer", builder.offer().sdp), "chrome")
    assert (second.transport.ufrag, second.transport.pwd) == (first.transport.ufrag, first.transport.pwd)
    assert second.sources == first.sources
    assert second.directions == {"0": "sendrecv", "1": "sendrecv", "2": "recvonly", "3": "recvonly"}

    builder.remove("bob")
    third = parse_answer(chromium.call("answer", builder.offer().sdp), "chrome")
    assert third.directions["2"] == third.directions["3"] == "inactive"
    assert third.sources == first.sources
