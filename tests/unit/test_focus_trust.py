"""The focus at its trust boundaries, sans-IO with a fake clock.

A brewery occupant is a bridge only when its real JID is a bridge account; replies count only from where
the request went; a Colibri2 error costs one conference a restart, never a bridge its rooms; rooms are
bounded (alive at once, created per minute in total and per requester, endpoints per conference,
conferences per bridge), and a room nobody joins is given up.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from colibri2 import model as c2
from tests.unit.test_focus import (
    BREWERY,
    CLIENT,
    DOMAIN,
    MEETING_ID,
    ROOM,
    STANZAS,
    Net,
    _error,
    bridge_presence,
    in_call,
    single,
)

NS_COLIBRI2 = "jitsi:colibri2"


def colibri_sent(net: Net, to: str) -> list[ET.Element]:
    return [el for el in net.sent if el.get("to") == to and el.find(f"{{{NS_COLIBRI2}}}conference-modify")]


def join_room(net: Net, room: str, nick: str) -> None:
    net.feed(
        ET.fromstring(
            f'<presence xmlns="{CLIENT}" from="{room}/{nick}"><x xmlns="http://jabber.org/protocol/muc#user">'
            f'<item affiliation="none" role="participant" jid="{nick}@meet.test/r"/></x></presence>'
        )
    )


def error_condition(reply: ET.Element) -> str | None:
    err = reply.find(f"{{{CLIENT}}}error")
    assert err is not None, ET.tostring(reply)
    return next(c.tag.rpartition("}")[2] for c in err if c.tag.startswith(f"{{{STANZAS}}}"))


# ---- who is a bridge


def test_stats_presence_from_an_account_that_is_not_a_bridge_is_ignored() -> None:
    net = Net()
    # An anonymous visitor (or any account but the bridges') publishing bridge-shaped stats, and one whose
    # real JID the MUC hides from us: neither becomes a bridge.
    net.add_bridge("evil", real="visitor1@meet.test/x", stress_level="0.0")
    net.feed(bridge_presence(f"{BREWERY}/hidden", "", stress_level="0.0"))
    net.add_bridge("lookalike", real=f"jvb@auth.{DOMAIN}.evil.example/x")
    assert net.core.bridges == {}
    assert net.core.stats["brewery_untrusted_presences"] == 3
    in_call_nicks = ("aaaa0001", "bbbb0002")
    net.open_room()
    for nick in in_call_nicks:
        net.join(nick)
    assert not net.jingles("aaaa0001"), "nobody may be allocated on an untrusted occupant"
    assert net.core.stats["no_bridge"] >= 1
    # The real bridge arrives: the room goes there, with the session-initiate carrying its transport.
    net.add_bridge("jvb1")
    init = single(net.jingles("aaaa0001", "session-initiate"))
    assert init.contents[0].transport is not None and init.contents[0].transport.ufrag == "1-aaaa0001"
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1"
    assert colibri_sent(net, f"jvb@auth.{DOMAIN}/jvb1"), "Colibri2 goes to the bridge's account"


def test_a_custom_bridge_pattern_admits_other_accounts() -> None:
    net = Net(bridge_jid_regexp=rf"jvb-[a-z]+@auth\.{DOMAIN}/.*")
    net.add_bridge("a", real=f"jvb-east@auth.{DOMAIN}/r1")
    net.add_bridge("b", real=f"jvb@auth.{DOMAIN}/r1")
    assert list(net.core.bridges) == [f"{BREWERY}/a"]


def test_a_nickname_taken_over_by_another_account_is_no_longer_that_bridge() -> None:
    net = Net()
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb1"
    net.feed(bridge_presence(f"{BREWERY}/jvb1", "visitor1@meet.test/x"))
    assert net.core.bridges == {}
    assert net.core.rooms[ROOM].bridge is None


def test_replies_count_only_from_where_the_request_went() -> None:
    net = Net()
    jvb1 = net.add_bridge("jvb1")
    jvb1.answer = False
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    (create,) = colibri_sent(net, jvb1.real)
    # A forged error for the pending request, from anyone else (another bridge's nick, a visitor).
    for forger in (f"{BREWERY}/jvb1", "visitor1@meet.test/x", f"jvb@auth.{DOMAIN}/other"):
        forged = _error(create, "item-not-found", c2.Reason.CONFERENCE_NOT_FOUND)
        forged.set("from", forger)
        net.feed(forged)
    assert net.core.stats["iq_replies_from_elsewhere"] == 3
    assert net.core.stats["conference_restarts"] == 0
    # The real answer still counts.
    jvb1.answer = True
    reply = jvb1.handle(create)
    assert reply is not None
    net.feed(reply)
    assert single(net.jingles("aaaa0001", "session-initiate"))


# ---- Colibri2 errors cost a conference a restart, not a bridge its rooms


def test_conference_not_found_recreates_the_conference_on_the_same_bridge() -> None:
    net = Net(health_interval=1000.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    jvb1.conferences.pop(MEETING_ID)  # someone expired it (the attack this issue closes on the bridge)
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))  # the update gets conference_not_found
    assert net.core.stats["conference_restarts"] == 1
    assert net.core.stats["bridges_failed"] == 0
    assert net.core.bridges[jvb1.jid].operational
    assert net.core.rooms[ROOM].bridge == jvb1.jid, "the room stays on its (healthy) bridge"
    for nick in ("aaaa0001", "bbbb0002"):
        assert single(net.jingles(nick, "session-terminate"))
        assert single(net.jingles(nick, "session-initiate"))
    assert MEETING_ID in jvb1.conferences and jvb1.conferences[MEETING_ID] == {"aaaa0001", "bbbb0002"}


def test_repeated_errors_make_one_room_avoid_that_bridge_for_a_while() -> None:
    net = Net(health_interval=1000.0, max_conference_restarts=3, failure_reset=60.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    jvb2 = net.add_bridge("jvb2", stress_level="0.5")
    jvb1.refuse = c2.Reason.UNSPECIFIED  # refuses every request, for whatever reason
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    # Three restarts on jvb1, then the fourth error sends the room to jvb2; jvb1 is not failed.
    assert net.core.stats["conference_restarts"] == 4
    assert net.core.stats["conference_bridges_avoided"] == 1
    assert net.core.rooms[ROOM].bridge == jvb2.jid
    assert net.core.bridges[jvb1.jid].operational and net.core.stats["bridges_failed"] == 0
    assert single(net.jingles("aaaa0001", "session-initiate")).contents[0].transport.ufrag == "2-aaaa0001"  # type: ignore[union-attr]
    # Other rooms still go to jvb1, the least stressed.
    jvb1.refuse = None
    second = f"room2@conference.{DOMAIN}"
    net.conference_iq(second, "c2", requester="u@meet.test/1")
    net.focus_joined(second)
    for nick in ("cccc0003", "dddd0004"):
        join_room(net, second, nick)
    assert net.core.rooms[second].bridge == jvb1.jid


def test_the_servers_word_that_the_bridge_is_gone_fails_it() -> None:
    net = Net(health_interval=1000.0)
    jvb1 = net.add_bridge("jvb1", stress_level="0.1")
    net.add_bridge("jvb2", stress_level="0.5")
    jvb1.answer = False
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    (create,) = colibri_sent(net, jvb1.real)
    bounce = ET.Element(f"{{{CLIENT}}}iq", {"type": "error", "id": create.get("id", ""), "from": jvb1.real})
    err = ET.SubElement(bounce, f"{{{CLIENT}}}error", {"type": "cancel"})
    ET.SubElement(err, f"{{{STANZAS}}}service-unavailable")
    net.feed(bounce)
    assert not net.core.bridges[jvb1.jid].operational
    assert net.core.rooms[ROOM].bridge == f"{BREWERY}/jvb2"


# ---- quotas


def test_rooms_per_requester_per_minute_and_in_total() -> None:
    net = Net(rooms_per_minute_per_requester=2, rooms_per_minute=3, max_rooms=100)
    for i in range(3):
        net.conference_iq(f"a{i}@conference.{DOMAIN}", f"a{i}", requester="mallory@meet.test/1")
    (refused,) = net.replies_to("a2")
    assert error_condition(refused) == "resource-constraint"
    assert net.core.stats["rooms_refused_requester"] == 1
    net.conference_iq(f"b0@conference.{DOMAIN}", "b0", requester="alice@meet.test/1")
    net.conference_iq(f"c0@conference.{DOMAIN}", "c0", requester="bob@meet.test/1")
    (refused,) = net.replies_to("c0")
    assert error_condition(refused) == "resource-constraint"
    assert net.core.stats["rooms_refused_total"] == 1
    assert len(net.core.rooms) == 3
    # An existing room is never refused; a minute later there is budget again.
    net.conference_iq(f"a0@conference.{DOMAIN}", "again", requester="mallory@meet.test/1")
    assert net.core.stats["rooms_refused"] == 2
    net.advance(61.0)  # (the unjoined rooms are given up meanwhile)
    net.conference_iq(f"c0@conference.{DOMAIN}", "c0-later", requester="bob@meet.test/1")
    assert f"c0@conference.{DOMAIN}" in net.core.rooms


def test_rooms_alive_at_once_are_bounded() -> None:
    net = Net(max_rooms=2)
    for i in range(3):
        net.conference_iq(f"r{i}@conference.{DOMAIN}", f"r{i}", requester=f"u{i}@meet.test/1")
    (refused,) = net.replies_to("r2")
    assert error_condition(refused) == "resource-constraint"
    assert net.core.stats["rooms_refused_concurrent"] == 1


def test_a_room_nobody_joins_is_given_up_and_its_conference_expired() -> None:
    net = Net(room_join_timeout=20.0, health_interval=1000.0)
    net.add_bridge("jvb1")
    net.open_room()
    assert net.replies_to("conf1")[0].get("type") == "result"
    net.advance(19.0)
    assert ROOM in net.core.rooms
    net.advance(2.0)
    assert ROOM not in net.core.rooms
    assert net.core.stats["rooms_expired_unjoined"] == 1
    assert any(el.get("to") == f"{ROOM}/focus" and el.get("type") == "unavailable" for el in net.sent)
    # A room somebody joined is kept, even alone (waiting for others is normal).
    net.sent.clear()
    net.open_room()
    net.join("aaaa0001")
    net.advance(100.0)
    assert ROOM in net.core.rooms


def test_a_room_the_muc_never_lets_us_into_is_given_up_and_the_request_answered() -> None:
    net = Net(room_join_timeout=20.0)
    net.conference_iq()  # the MUC never answers our join
    net.advance(21.0)
    (reply,) = net.replies_to("conf1")
    assert error_condition(reply) == "remote-server-timeout"
    assert ROOM not in net.core.rooms


def test_endpoints_per_conference_are_bounded_and_freed_on_leave() -> None:
    net = Net(max_endpoints_per_conference=2)
    net.add_bridge("jvb1")
    in_call(net, "aaaa0001", "bbbb0002")
    net.join("cccc0003")
    net.join("cccc0003")  # a presence update: still one participant waiting, counted once
    assert not net.jingles("cccc0003"), "the third waits"
    assert net.core.stats["endpoints_over_quota"] == 1
    assert len(net.bridges[f"{BREWERY}/jvb1"].conferences[MEETING_ID]) == 2
    net.leave("aaaa0001")
    assert single(net.jingles("cccc0003", "session-initiate"))


def test_conferences_per_bridge_are_bounded() -> None:
    net = Net(max_conferences_per_bridge=1, health_interval=1000.0)
    net.add_bridge("jvb1", stress_level="0.1")
    in_call(net, "aaaa0001", "bbbb0002")
    second = f"room2@conference.{DOMAIN}"
    net.conference_iq(second, "c2", requester="u@meet.test/1")
    net.focus_joined(second)
    for nick in ("cccc0003", "dddd0004"):
        join_room(net, second, nick)
    assert net.core.rooms[second].bridge is None and net.core.rooms[second].bridge_not_available
    assert net.core.stats["bridges_full"] >= 1
    net.add_bridge("jvb2", stress_level="0.9")
    assert net.core.rooms[second].bridge == f"{BREWERY}/jvb2"


def test_a_nick_that_cannot_be_an_endpoint_id_gets_no_allocation_and_long_names_are_cut() -> None:
    net = Net()
    jvb1 = net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    join_room(net, ROOM, "Alice Smith")  # another XMPP client's nick: a space is not allowed in an id
    assert not net.jingles("Alice Smith")
    assert net.core.stats["participants_unallocatable_nick"] == 1
    assert jvb1.conferences[MEETING_ID] == {"aaaa0001", "bbbb0002"}
    name = "x" * 1000
    net.feed(
        ET.fromstring(
            f'<presence xmlns="{CLIENT}" from="{ROOM}/cccc0003"><x xmlns="http://jabber.org/protocol/muc#user">'
            f'<item affiliation="none" role="participant" jid="c@meet.test/r"/></x>'
            f'<nick xmlns="http://jabber.org/protocol/nick">{name}</nick></presence>'
        )
    )
    (create,) = [e for r in net.colibri("jvb1") for e in r.endpoints if e.id == "cccc0003"]
    assert create.stats_id == "x" * c2.MAX_STATS_ID_LENGTH
