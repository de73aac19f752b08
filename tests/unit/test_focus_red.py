"""RFC 2198 redundant Opus (RED) in the control plane: the focus offers `red/48000/2` (fmtp 111/111) only with
`enable-opus-red` (off, as in Jicofo); a participant whose answer leaves red out has the bridge told so (its
audio payload types without RED), and the bridge's packet path learns per endpoint which audio payload types
are RED and which are codecs a RED primary may be stripped to."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge import _native
from bridge.colibri2_handler import Colibri2Handler
from bridge.seam import to_native_payload_types
from colibri2 import model as c2
from signaling.focus import FocusConfig, media
from signaling.jingle import Jingle
from signaling.jingle.model import Description, Parameter, PayloadType
from signaling.settings import SignalingSettingsError, signaling_settings
from tests.helpers.fake_native import fake_bridge
from tests.unit.test_focus import MEETING_ID, Net, in_call, session_accept

OPUS = media.AUDIO_PAYLOAD_TYPES[0]


def audio_offer(j: Jingle) -> tuple[PayloadType, ...]:
    (d,) = (c.description for c in j.contents if c.description is not None and c.description.media == "audio")
    return d.payload_types


def create_medias(requests: list[c2.ConferenceModify]) -> tuple[c2.Media, ...]:
    (ep,) = (e for r in requests for e in r.endpoints if e.create)
    return ep.medias


def test_red_is_offered_only_when_enabled_after_opus_with_its_fmtp() -> None:
    net = Net()
    net.add_bridge("jvb1")
    init = in_call(net, "aaaa0001", "bbbb0002")["aaaa0001"]
    assert [pt.name for pt in audio_offer(init)] == ["opus"]
    assert [pt.name for pt in create_medias(net.colibri("jvb1")[:1])[0].payload_types] == ["opus"]

    net = Net(enable_opus_red=True)
    net.add_bridge("jvb1")
    init = in_call(net, "aaaa0001", "bbbb0002")["aaaa0001"]
    # Parsed back from the session-initiate's XML: the fmtp without a name survives the round trip.
    assert audio_offer(init) == (OPUS, PayloadType(112, "red", 48000, 2, (Parameter("", "111/111"),)))
    (audio, video) = create_medias(net.colibri("jvb1")[:1])
    assert [pt.name for pt in audio.payload_types] == ["opus", "red"]
    assert video == media.colibri_medias()[1]


def test_the_setting_reads_as_jicofos_name() -> None:
    assert FocusConfig().enable_opus_red is False
    settings = signaling_settings({"signaling": {"focus": {"enable-opus-red": True}}})
    assert settings.focus == {"enable_opus_red": True}
    with pytest.raises(SignalingSettingsError, match="enable-opus-red"):
        signaling_settings({"signaling": {"focus": {"enable-opus-red": "yes"}}})


def answer(nick: str, sid: str, ssrcs: tuple[int, int], audio: tuple[PayloadType, ...]) -> Jingle:
    """`session_accept` with these audio payload types in its audio description."""
    j = session_accept(nick, sid, ssrcs)
    c = j.contents[0]
    assert c.description is not None
    return replace(
        j, contents=(replace(c, description=replace(c.description, payload_types=audio)), *j.contents[1:])
    )


def test_an_answer_without_red_tells_the_bridge_and_its_packet_path_strips_for_that_endpoint() -> None:
    net = Net(enable_opus_red=True)
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    requests = net.colibri("jvb1")
    red = audio_offer(inits["aaaa0001"])[1]

    net.send_jingle("aaaa0001", answer("aaaa0001", inits["aaaa0001"].sid, (100, 200), (OPUS, red)))
    net.send_jingle("bbbb0002", answer("bbbb0002", inits["bbbb0002"].sid, (300, 400), (OPUS,)))
    updates = net.colibri("jvb1")
    (took_red,) = (e for r in updates for e in r.endpoints if e.id == "aaaa0001")
    (no_red,) = (e for r in updates for e in r.endpoints if e.id == "bbbb0002")
    assert took_red.medias == (), "the whole offer answered: nothing new for the bridge"
    assert [(m.type, [pt.name for pt in m.payload_types]) for m in no_red.medias] == [
        ("audio", ["opus"]),
        ("video", [pt.name for pt in media.VIDEO_PAYLOAD_TYPES]),
    ]

    # The bridge's own handler and registry: each endpoint's packet path learns its audio payload types.
    # (The updates' transports are left out: the test's fingerprints are not real ones.)
    bridge, native = fake_bridge()
    handler = Colibri2Handler(bridge)
    for request in requests:
        handler.handle(request)
    for request in updates:
        handler.handle(
            replace(request, endpoints=tuple(replace(e, transport=None) for e in request.endpoints))
        )
    conference = bridge.conference_by_meeting(MEETING_ID)
    assert conference is not None

    def audio_types(nick: str) -> list[tuple[int, _native.VideoCodec]]:
        transport = conference.endpoints[nick].transport_id
        types = [t for tid, t in native.named("set_payload_types") if tid == transport][-1]
        return [(t.pt, t.codec) for t in types if t.pt in (111, 112)]  # type: ignore[attr-defined]

    assert audio_types("aaaa0001") == [(111, _native.VideoCodec.AUDIO), (112, _native.VideoCodec.RED)]
    assert audio_types("bbbb0002") == [(111, _native.VideoCodec.AUDIO)]


def test_an_answer_that_says_nothing_of_audio_codecs_changes_nothing() -> None:
    assert media.answered_medias(True, ()) is None
    assert media.answered_medias(True, (Description("audio"),)) is None
    # An answer cannot add what was not offered: an unknown id is ignored.
    extra = PayloadType(96, "red", 48000, 2)
    assert media.answered_medias(
        True, (Description("audio", payload_types=(OPUS, extra)),)
    ) == media.colibri_medias(audio=(OPUS,))
    assert media.answered_medias(False, (Description("audio", payload_types=(OPUS,)),)) is None


def test_audio_payload_types_cross_the_seam_as_red_or_audio() -> None:
    medias = (
        c2.Media(
            "audio",
            (
                c2.PayloadType(111, "opus", 48000, 2),
                c2.PayloadType(112, "RED", 48000, 2, (c2.Parameter("", "111/111"),)),
                c2.PayloadType(126, "telephone-event", 8000),
                c2.PayloadType(200, "opus"),
            ),
        ),
        c2.Media("video", (c2.PayloadType(100, "VP8", 90000),)),
    )
    codec = _native.VideoCodec
    assert [(t.pt, t.codec) for t in to_native_payload_types(medias)] == [
        (111, codec.AUDIO),
        (112, codec.RED),
        (126, codec.AUDIO),
        (100, codec.VP8),
    ]
