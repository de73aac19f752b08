"""Mute state from presence `<SourceInfo>` (docs/jitsi-protocol.md 5.3, 9), sans-IO with a fake clock.

Current lib-jitsi-meet clients say whether they are muted only in `<SourceInfo>` JSON, keyed by their own
source names (`<endpoint>-a0`, `<endpoint>-v0`); they no longer send `<audiomuted>`/`<videomuted>`. The JSON
is untrusted: any occupant may write anything there, so only its own sources count, and junk is counted and
ignored. The presences below are in the shape lib-jitsi-meet sends them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from colibri2 import model as c2
from signaling.focus.mute import MAX_SOURCE_INFO_CHARS, SourceInfoError, parse_source_info
from tests.unit.test_focus import CLIENT, DOMAIN, MUC_USER, ROOM, Net, in_call, mute_iq, single_el


def presence(nick: str, source_info: str, extra: str = "") -> ET.Element:
    """An occupant's presence update as lib-jitsi-meet sends it (stats-id, caps, SourceInfo, codecs)."""
    return ET.fromstring(
        f'<presence xmlns="{CLIENT}" from="{ROOM}/{nick}" to="focus@auth.{DOMAIN}/focus">'
        f'<x xmlns="{MUC_USER}">'
        f'<item affiliation="none" role="participant" jid="{nick}-user@{DOMAIN}/res"/></x>'
        "<stats-id>Delphia-hZ2</stats-id>"
        '<c xmlns="http://jabber.org/protocol/caps" hash="sha-1" node="https://jitsi.org/jitsi-meet"'
        ' ver="pVvbz5qMGIQWLVZmGJ7TFeYvAQI="/>'
        f"<SourceInfo>{source_info}</SourceInfo>"
        "<jitsi_participant_codecList>vp9,vp8,h264</jitsi_participant_codecList>"
        f'<nick xmlns="http://jabber.org/protocol/nick">{nick.title()}</nick>{extra}</presence>'
    )


def source_info(nick: str, audio: bool, video: bool) -> str:
    return json.dumps({f"{nick}-a0": {"muted": audio}, f"{nick}-v0": {"muted": video, "videoType": "camera"}})


def force_muted_call() -> Net:
    """aaaa0001 (the owner) has force-muted bbbb0002's audio; bbbb0002's client then shows itself muted."""
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")
    net.colibri("jvb1")
    net.feed(mute_iq("aaaa0001", "bbbb0002"))
    assert single_el(net.replies_to("mute1")).get("type") == "result"
    (force,) = net.colibri("jvb1")
    assert force.endpoints[0].force_mute == c2.ForceMute(audio=True, video=False)
    net.feed(presence("bbbb0002", source_info("bbbb0002", audio=True, video=False)))
    assert not net.colibri("jvb1")
    return net


# ---- parsing


def test_a_clients_source_info_gives_its_mute_state_by_kind() -> None:
    info = parse_source_info(
        "bbbb0002",
        '{"bbbb0002-a0":{"muted":true},"bbbb0002-v0":{"muted":false,"videoType":"camera"}}',
    )
    assert (info.muted, info.ignored) == ({"audio": True, "video": False}, 0)
    # A screen share next to a muted camera: the occupant sends video.
    info = parse_source_info(
        "bbbb0002",
        '{"bbbb0002-v1":{"muted":false,"videoType":"desktop"},"bbbb0002-v0":{"muted":true,"videoType":"camera"}}',
    )
    assert info.muted == {"video": False}
    # Nothing said about mute (a videoType only, or no source at all): no state.
    assert parse_source_info("bbbb0002", '{"bbbb0002-v0":{"videoType":"camera"}}').muted == {}
    assert parse_source_info("bbbb0002", "{}").muted == {}


@pytest.mark.parametrize(
    "entry",
    [
        '"aaaa0001-a0":{"muted":false}',  # another occupant's source
        '"bbbb0002":{"muted":false}',  # no source part
        '"bbbb0002-x0":{"muted":false}',
        '"bbbb0002-a00":{"muted":false}',
        '"bbbb0002-a0 ":{"muted":false}',
        '"bbbb0002-a1000":{"muted":false}',
        '"xbbbb0002-a0":{"muted":false}',
        '"bbbb0002-a0":{"muted":"false"}',  # not a boolean
        '"bbbb0002-a0":{"muted":0}',
        '"bbbb0002-a0":{"muted":null}',
        '"bbbb0002-a0":false',  # not an object
        '"bbbb0002-a0":[{"muted":false}]',
    ],
)
def test_entries_that_are_not_the_occupants_own_or_not_well_typed_are_ignored(entry: str) -> None:
    info = parse_source_info("bbbb0002", f'{{{entry},"bbbb0002-v0":{{"muted":true}}}}')
    assert info.muted == {"video": True} and info.ignored == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"bbbb0002-a0":{"muted":false}',
        '[{"bbbb0002-a0":{"muted":false}}]',
        '"bbbb0002-a0"',
        "[" * 1000 + "]" * 1000,  # nested past the parser's recursion limit
        '{"bbbb0002-a0":{"muted":false},"pad":"' + "x" * MAX_SOURCE_INFO_CHARS + '"}',
    ],
)
def test_source_info_that_is_not_a_bounded_json_object_is_refused(text: str) -> None:
    with pytest.raises(SourceInfoError):
        parse_source_info("bbbb0002", text)


# ---- in the focus


def test_unmuting_in_source_info_lifts_the_force_mute() -> None:
    net = force_muted_call()
    net.feed(presence("bbbb0002", source_info("bbbb0002", audio=False, video=False)))
    (lift,) = net.colibri("jvb1")
    assert lift.endpoints[0].id == "bbbb0002"
    assert lift.endpoints[0].force_mute == c2.ForceMute(audio=False, video=False)
    assert net.core.rooms[ROOM].participants["bbbb0002"].audio_muted is False
    assert net.core.stats["source_info_invalid"] == 0 and net.core.stats["source_info_entries_ignored"] == 0


def test_another_occupant_cannot_unmute_someone_through_its_own_source_info() -> None:
    net = force_muted_call()
    # aaaa0001 claims that bbbb0002's audio source is unmuted (next to its own, which counts).
    net.feed(
        presence("aaaa0001", json.dumps({"bbbb0002-a0": {"muted": False}, "aaaa0001-a0": {"muted": False}}))
    )
    assert not net.colibri("jvb1")
    bbbb = net.core.rooms[ROOM].participants["bbbb0002"]
    assert bbbb.force_muted["audio"] and bbbb.audio_muted is True
    assert net.core.stats["source_info_entries_ignored"] == 1
    # bbbb0002 itself unmuting still works.
    net.feed(presence("bbbb0002", source_info("bbbb0002", audio=False, video=False)))
    assert [r.endpoints[0].force_mute for r in net.colibri("jvb1")] == [
        c2.ForceMute(audio=False, video=False)
    ]


@pytest.mark.parametrize(
    "junk",
    ["{not json", "[" * 1000 + "]" * 1000, "x" * (MAX_SOURCE_INFO_CHARS + 1), '["bbbb0002-a0"]'],
)
def test_junk_source_info_is_counted_and_changes_nothing(junk: str) -> None:
    net = force_muted_call()
    net.feed(presence("bbbb0002", junk))
    assert net.core.stats["source_info_invalid"] == 1
    assert not net.colibri("jvb1")
    assert net.core.rooms[ROOM].participants["bbbb0002"].force_muted["audio"]
    # The legacy element next to the junk is still read, and the focus carries on.
    legacy = '<audiomuted xmlns="http://jitsi.org/jitmeet/audio">false</audiomuted>'
    net.feed(presence("bbbb0002", junk, extra=legacy))
    (lift,) = net.colibri("jvb1")
    assert lift.endpoints[0].force_mute == c2.ForceMute(audio=False, video=False)
    assert net.core.stats["internal_errors"] == 0


def test_source_info_wins_over_a_legacy_element_that_says_otherwise() -> None:
    net = force_muted_call()
    # A stale legacy element says unmuted; SourceInfo, what current clients keep up to date, says muted.
    legacy = '<audiomuted xmlns="http://jitsi.org/jitmeet/audio">false</audiomuted>'
    net.feed(presence("bbbb0002", source_info("bbbb0002", audio=True, video=False), extra=legacy))
    assert not net.colibri("jvb1")
    assert net.core.rooms[ROOM].participants["bbbb0002"].force_muted["audio"]
