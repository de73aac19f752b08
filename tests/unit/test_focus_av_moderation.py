"""A moderated meeting ("AV moderation"), sans-IO in the focus: a moderator turns it on, each non-moderator is
told, muted and force-muted on the bridge (newcomers from their allocation on); a self-unmute does not lift
the force-mute until a moderator allows it; non-moderators and malformed requests are refused and counted."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from colibri2 import model as c2
from signaling.focus.stanzas import NS_AV_MODERATION
from tests.unit.test_focus import (
    CLIENT,
    DOMAIN,
    FOCUS_FULL,
    MUC_USER,
    ROOM,
    Net,
    error_of,
    in_call,
    mute_iq,
    single_el,
    x,
)

AUDIO_MUTE = "{http://jitsi.org/jitmeet/audio}mute"


def moderation(actor: str, iq_id: str, **attrs: str) -> ET.Element:
    attributes = " ".join(f'{k}="{v}"' for k, v in attrs.items())
    return x(
        f'<iq xmlns="{CLIENT}" type="set" id="{iq_id}" from="{ROOM}/{actor}" to="{FOCUS_FULL}">'
        f'<av-moderation xmlns="{NS_AV_MODERATION}" {attributes}/></iq>'
    )


def says_muted(nick: str, muted: bool) -> ET.Element:
    return x(
        f'<presence xmlns="{CLIENT}" from="{ROOM}/{nick}"><x xmlns="{MUC_USER}">'
        f'<item affiliation="none" role="participant" jid="{nick}-user@{DOMAIN}/res"/></x>'
        f'<audiomuted xmlns="http://jitsi.org/jitmeet/audio">{str(muted).lower()}</audiomuted></presence>'
    )


def pushes(net: Net, nick: str, tag: str) -> list[ET.Element]:
    return [p for el in net.client_iqs if el.get("to") == f"{ROOM}/{nick}" for p in el if p.tag == tag]


def moderated_call() -> Net:
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")  # aaaa0001 was made owner
    net.colibri("jvb1")
    net.client_iqs.clear()
    net.feed(moderation("aaaa0001", "on", kind="audio", enable="true"))
    assert single_el(net.replies_to("on")).get("type") == "result"
    return net


def test_turning_it_on_mutes_and_force_mutes_every_non_moderator() -> None:
    net = moderated_call()
    (force,) = net.colibri("jvb1")
    assert force.endpoints[0].id == "bbbb0002"
    assert force.endpoints[0].force_mute == c2.ForceMute(audio=True, video=False)
    (told,) = pushes(net, "bbbb0002", f"{{{NS_AV_MODERATION}}}av-moderation")
    assert (told.get("kind"), told.get("enabled"), told.get("allowed")) == ("audio", "true", "false")
    (mute,) = pushes(net, "bbbb0002", AUDIO_MUTE)
    assert mute.text == "true" and mute.get("actor") == f"{ROOM}/aaaa0001"
    assert not pushes(net, "aaaa0001", AUDIO_MUTE)  # the moderator is not muted
    assert net.core.stats["av_moderation_enabled"] == 1


def test_a_self_unmute_is_refused_until_a_moderator_allows_it() -> None:
    net = moderated_call()
    net.colibri("jvb1")
    net.feed(says_muted("bbbb0002", True))
    net.client_iqs.clear()
    # A client that unmutes anyway: the bridge keeps its audio dropped and the client is told to mute again.
    net.feed(says_muted("bbbb0002", False))
    assert not net.colibri("jvb1")
    assert net.core.rooms[ROOM].participants["bbbb0002"].force_muted["audio"]
    (again,) = pushes(net, "bbbb0002", AUDIO_MUTE)
    assert again.text == "true" and again.get("actor") is None
    net.feed(mute_iq("bbbb0002", "bbbb0002", value="false", iq_id="unmute"))
    assert error_of(single_el(net.replies_to("unmute")))[0] == "not-allowed"
    assert net.core.stats["unmute_refused_av_moderation"] == 2
    # A moderator allows it: told, and its next unmute lifts the force-mute.
    net.feed(says_muted("bbbb0002", True))
    net.client_iqs.clear()
    net.feed(moderation("aaaa0001", "allow", kind="audio", allow="bbbb0002"))
    assert single_el(net.replies_to("allow")).get("type") == "result"
    (told,) = pushes(net, "bbbb0002", f"{{{NS_AV_MODERATION}}}av-moderation")
    assert told.get("allowed") == "true"
    net.feed(says_muted("bbbb0002", False))
    (lift,) = net.colibri("jvb1")
    assert lift.endpoints[0].force_mute == c2.ForceMute(audio=False, video=False)


def test_a_newcomer_starts_force_muted_and_turning_it_off_frees_self_unmute() -> None:
    net = moderated_call()
    net.colibri("jvb1")
    net.join("cccc0003")
    allocations = [ep for req in net.colibri("jvb1") for ep in req.endpoints if ep.id == "cccc0003"]
    assert allocations and allocations[0].create
    assert allocations[0].force_mute == c2.ForceMute(audio=True, video=False)
    (mute,) = pushes(net, "cccc0003", AUDIO_MUTE)
    assert mute.text == "true"
    net.feed(moderation("aaaa0001", "off", kind="audio", enable="false"))
    assert single_el(net.replies_to("off")).get("type") == "result"
    net.feed(says_muted("bbbb0002", True))
    net.feed(says_muted("bbbb0002", False))
    (lift,) = net.colibri("jvb1")
    assert lift.endpoints[0].id == "bbbb0002" and lift.endpoints[0].force_mute == c2.ForceMute(False, False)


def test_non_moderators_and_bad_requests_are_refused_and_counted() -> None:
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")
    net.colibri("jvb1")
    net.feed(moderation("bbbb0002", "m1", kind="audio", enable="true"))
    net.feed(moderation("bbbb0002", "m2", kind="audio", allow="bbbb0002"))
    for iq_id in ("m1", "m2"):
        assert error_of(single_el(net.replies_to(iq_id)))[0] == "not-allowed"
    assert net.core.stats["av_moderation_not_allowed"] == 2
    for iq_id, attrs in (("b1", {"kind": "smell", "enable": "true"}), ("b2", {"kind": "audio"}),
                         ("b3", {"kind": "audio", "enable": "yes"}),
                         ("b4", {"kind": "audio", "enable": "true", "allow": "x"})):  # fmt: skip
        net.feed(moderation("aaaa0001", iq_id, **attrs))
        assert error_of(single_el(net.replies_to(iq_id)))[0] == "bad-request", iq_id
    assert net.core.stats["av_moderation_bad_requests"] == 4
    assert not net.core.rooms[ROOM].av_moderation["audio"]
    assert not net.colibri("jvb1")
