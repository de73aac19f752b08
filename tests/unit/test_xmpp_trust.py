"""The embedded XMPP server's trust boundaries and quotas, sans-IO with a fake clock.

Attacks from the trust-boundaries issue, as an anonymous (or ordinary) session would try them: join the
brewery and read the bridge's JID there; address the focus's or a bridge's account directly; use
`focus.<domain>` for more than the conference request; create rooms without bound; open connections without
bound. Each is refused with an XMPP error and counted, and the components keep working.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from signaling.xmpp import XmppLimits, XmppServerConfig
from signaling.xmpp.core import Framing
from tests.helpers.xmppd import (
    CLIENT,
    MUC_USER,
    STREAM_ERRORS,
    STREAMS,
    Harness,
    SansIoClient,
    error_condition,
    muc_item,
    status_codes,
)

DOMAIN = "meet.sluice"
BREWERY = f"jvbbrewery@internal.auth.{DOMAIN}"
FOCUS = f"focus@auth.{DOMAIN}/focus"
FOCUS_DOMAIN = f"focus.{DOMAIN}"
MUC = f"conference.{DOMAIN}"
NS_FOCUS = "http://jitsi.org/protocol/focus"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
STATS = "<stats xmlns='http://jitsi.org/protocol/colibri'><stat name='stress_level' value='0.1'/></stats>"


def presences(stanzas: list[ET.Element], from_: str | None = None) -> list[ET.Element]:
    return [
        s for s in stanzas if s.tag == f"{{{CLIENT}}}presence" and (from_ is None or s.get("from") == from_)
    ]


def harness(**limits: int) -> Harness:
    base = Harness().config
    return Harness(replace(base, limits=XmppLimits(**limits)))  # type: ignore[arg-type]


def focus(h: Harness) -> SansIoClient:
    c = h.client(Framing.TCP)
    c.login_plain("focus", "focus-pw", resource="focus")
    return c


def bridge(h: Harness, nick: str = "jvb-1") -> SansIoClient:
    c = h.client(Framing.TCP)
    c.login_plain("jvb", "jvb-pw", resource=nick)
    got = c.join(BREWERY, nick, extra=STATS)
    assert "110" in status_codes(presences(got, f"{BREWERY}/{nick}")[0])
    return c


def conference_iq(c: SansIoClient, room: str, iq_id: str = "c1") -> None:
    c.stanza(
        f"<iq to='{FOCUS_DOMAIN}' type='set' id='{iq_id}'>"
        f"<conference xmlns='{NS_FOCUS}' room='{room}@{MUC}' machine-uid='x'/></iq>"
    )


def test_anonymous_and_ordinary_sessions_cannot_join_or_query_the_brewery() -> None:
    h = Harness()
    bridge(h)
    for login in ("anonymous", "alice"):
        c = h.client()
        if login == "anonymous":
            c.login_anonymous()
        else:
            c.login_plain("alice", "alice-pw")
        (refused,) = presences(c.join(BREWERY, "focus", extra=STATS))
        assert refused.get("type") == "error" and error_condition(refused) == "forbidden"
        # The bridge's presence (and so its real JID) never reached the outsider.
        assert not presences(c.take(), f"{BREWERY}/jvb-1")
        c.stanza(f"<iq to='internal.auth.{DOMAIN}' type='get' id='d'><query xmlns='{DISCO_ITEMS}'/></iq>")
        assert error_condition(c.take_one("iq")) == "forbidden"
        c.stanza(f"<iq to='{BREWERY}' type='get' id='i'><query xmlns='{DISCO_ITEMS}'/></iq>")
        assert error_condition(c.take_one("iq")) == "forbidden"
        # The auth domain's items do not even name the internal MUC to an outsider.
        c.stanza(f"<iq to='auth.{DOMAIN}' type='get' id='a'><query xmlns='{DISCO_ITEMS}'/></iq>")
        assert c.take_one("iq").find(f"{{{DISCO_ITEMS}}}query/{{{DISCO_ITEMS}}}item") is None
    assert h.core.stats()["muc_outsiders_refused"] == 6
    room = h.core.mucs[f"internal.auth.{DOMAIN}"].rooms
    assert [o.nick for r in room.values() for o in r.occupants.values()] == ["jvb-1"]


def test_brewery_real_jids_are_for_the_focus_only() -> None:
    h = Harness()
    first = bridge(h, "jvb-1")
    f = focus(h)
    got = f.join(BREWERY, "focus")
    item = muc_item(presences(got, f"{BREWERY}/jvb-1")[0])
    assert item is not None and item.get("jid") == "jvb@auth.meet.sluice/jvb-1"
    first.take()
    second = h.client(Framing.TCP)
    second.login_plain("jvb", "jvb-pw", resource="jvb-2")
    got = second.join(BREWERY, "jvb-2", extra=STATS)
    for nick in ("jvb-1", "focus"):
        item = muc_item(presences(got, f"{BREWERY}/{nick}")[0])
        assert item is not None and item.get("jid") is None, f"a bridge saw {nick}'s real JID"
    # The focus (the service's only admin) owns the room; the bridge that created it does not.
    brewery = h.core.mucs[f"internal.auth.{DOMAIN}"].rooms
    (room,) = brewery.values()
    assert {str(j): a for j, a in room.affiliations.items()} == {f"focus@auth.{DOMAIN}": "owner"}
    # The focus still sees the newcomer's real JID.
    item = muc_item(presences(f.take(), f"{BREWERY}/jvb-2")[0])
    assert item is not None and item.get("jid") == "jvb@auth.meet.sluice/jvb-2"


def test_outsiders_cannot_address_component_accounts() -> None:
    h = Harness()
    f = focus(h)
    jvb = bridge(h)
    f.take()
    attacker = h.client()
    attacker.login_anonymous()
    colibri = "<conference-modify xmlns='jitsi:colibri2' meeting-id='m' expire='true'/>"
    for to in (FOCUS, f"focus@auth.{DOMAIN}", "jvb@auth.meet.sluice/jvb-1", "jvb@auth.meet.sluice"):
        attacker.stanza(f"<iq to='{to}' type='set' id='x'>{colibri}</iq>")
        assert error_condition(attacker.take_one("iq")) == "service-unavailable"
        attacker.stanza(f"<message to='{to}' id='m'><body>hi</body></message>")
        assert error_condition(attacker.take_one("message")) == "service-unavailable"
        attacker.stanza(f"<presence to='{to}'/>")
        assert attacker.take() == []
    assert f.take() == [] and jvb.take() == []
    assert h.core.stats()["component_stanzas_refused"] == 12
    # An ordinary account is an outsider too.
    alice = h.client()
    alice.login_plain("alice", "alice-pw")
    alice.stanza(f"<iq to='jvb@auth.meet.sluice/jvb-1' type='get' id='h'>{colibri}</iq>")
    assert error_condition(alice.take_one("iq")) == "service-unavailable"
    # Components reach each other: the focus's Colibri2 and health checks, the bridge's answers.
    f.stanza(f"<iq to='jvb@auth.meet.sluice/jvb-1' type='get' id='h1'>{colibri}</iq>")
    request = jvb.take_one("iq")
    assert request.get("from") == FOCUS
    jvb.stanza(f"<iq to='{FOCUS}' type='result' id='h1'/>")
    assert f.take_one("iq").get("type") == "result"


def test_focus_domain_takes_only_the_conference_request_from_clients() -> None:
    h = Harness()
    f = focus(h)
    c = h.client()
    c.login_anonymous()
    conference_iq(c, "room1")
    forwarded = f.take_one("iq")
    assert forwarded.get("to") == FOCUS_DOMAIN and forwarded.find(f"{{{NS_FOCUS}}}conference") is not None
    c.stanza(f"<iq to='{FOCUS_DOMAIN}' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert f.take_one("iq").get("id") == "p"
    jingle = "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'/>"
    c.stanza(f"<iq to='{FOCUS_DOMAIN}' type='set' id='j'>{jingle}</iq>")
    assert error_condition(c.take_one("iq")) == "service-unavailable"
    c.stanza(f"<iq to='{FOCUS_DOMAIN}' type='result' id='r'/>")
    c.stanza(f"<message to='{FOCUS_DOMAIN}'><body>x</body></message>")
    assert error_condition(c.take_one("message")) == "service-unavailable"
    assert f.take() == []
    assert h.core.stats()["focus_requests_refused"] == 3


def test_room_creations_per_address_per_minute_fake_clock() -> None:
    h = harness(room_creations_per_minute_per_address=3, max_rooms_per_address=100)
    f = focus(h)
    clients = [h.client(address="192.0.2.7") for _ in range(2)]
    for c in clients:
        c.login_anonymous()
    for i in range(3):
        conference_iq(clients[i % 2], f"r{i}", f"c{i}")  # two sessions, one address: one budget
    assert len([s for s in f.take() if s.get("type") == "set"]) == 3
    conference_iq(clients[1], "r3", "c3")
    refused = clients[1].take_one("iq")
    assert error_condition(refused) == "resource-constraint"
    assert refused.find(f"{{{CLIENT}}}error").get("type") == "wait"  # type: ignore[union-attr]
    assert f.take() == []
    # Another address has its own budget; asking again for a room being created is not a creation.
    other = h.client(address="198.51.100.9")
    other.login_anonymous()
    conference_iq(other, "r4")
    conference_iq(clients[0], "r0", "again")
    assert len(f.take()) == 2
    h.tick(61)
    conference_iq(clients[1], "r5", "c5")
    assert len(f.take()) == 1
    stats = h.core.stats()
    assert stats["room_creations_refused"] == stats["room_creations_refused_rate"] == 1


def test_rooms_alive_per_address_are_bounded_and_freed_when_destroyed() -> None:
    h = harness(room_creations_per_minute_per_address=100, max_rooms_per_address=2)
    f = focus(h)
    c = h.client(address="192.0.2.7")
    c.login_anonymous()
    for name in ("a", "b"):
        conference_iq(c, name, name)
        f.join(f"{name}@{MUC}", "focus")  # the focus creates the room it was asked for
    conference_iq(c, "c", "c")
    assert error_condition(c.take_one("iq")) == "resource-constraint"
    assert h.core.stats()["room_creations_refused_concurrent"] == 1
    f.stanza(f"<presence to='a@{MUC}/focus' type='unavailable'/>")  # room a ends (destroyed when empty)
    conference_iq(c, "c", "c2")
    assert [s.get("id") for s in f.take() if s.tag == f"{{{CLIENT}}}iq"] == ["c2"]
    # c was asked for but the focus never created it: it counts (d is refused) for a grace period only.
    conference_iq(c, "d", "d")
    assert error_condition(c.take_one("iq")) == "resource-constraint"
    h.tick(31)
    conference_iq(c, "d", "d2")
    assert [s.get("id") for s in f.take() if s.tag == f"{{{CLIENT}}}iq"] == ["d2"]


def test_connections_per_address_are_bounded() -> None:
    h = harness(max_connections_per_address=2)
    ok = [h.client(address="203.0.113.5") for _ in range(2)]
    for c in ok:
        c.login_anonymous()
    extra = h.client(address="203.0.113.5")
    extra.open(DOMAIN)
    err = extra.received[-1] if extra.received else None
    assert extra.closed
    assert err is not None and err.tag == f"{{{STREAMS}}}error"
    assert err.find(f"{{{STREAM_ERRORS}}}resource-constraint") is not None
    assert h.core.stats()["connections_refused_per_address"] == 1
    ok[0].conn.connection_lost(h.clock.now)
    again = h.client(address="203.0.113.5")
    again.login_anonymous()
    assert not again.closed


def test_rooms_per_session_are_bounded() -> None:
    h = harness(max_rooms_per_session=2)
    f = focus(h)
    for name in ("a", "b", "c"):
        f.join(f"{name}@{MUC}", "focus")
    c = h.client()
    c.login_anonymous()
    for name in ("a", "b"):
        assert "110" in status_codes(presences(c.join(f"{name}@{MUC}", "abcd1234"))[-1])
    (refused,) = presences(c.join(f"c@{MUC}", "abcd1234"))
    assert refused.get("type") == "error" and error_condition(refused) == "resource-constraint"
    assert refused.find(f"{{{MUC_USER}}}x") is None
    assert h.core.stats()["muc_rooms_per_occupant_refused"] == 1


def test_defaults_suit_a_small_company() -> None:
    limits = XmppServerConfig().limits
    assert 10 <= limits.room_creations_per_minute_per_address <= 60
    assert limits.max_rooms_per_session >= 1
    assert limits.max_connections_per_address >= 50  # an office behind one NAT
