"""XEP-0045 MUC, sans-IO through the server core: join/leave, presence, messages, IQ relay, owner/admin."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from signaling.xmpp.core import Framing
from tests.helpers.xmppd import (
    CLIENT,
    MUC_USER,
    Harness,
    SansIoClient,
    error_condition,
    muc_item,
    status_codes,
)

ROOM = "room1@conference.meet.sluice"
BREWERY = "jvbbrewery@internal.auth.meet.sluice"
OWNER = "http://jabber.org/protocol/muc#owner"
ADMIN = "http://jabber.org/protocol/muc#admin"
DATA = "jabber:x:data"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def presences(stanzas: list[ET.Element], from_: str | None = None) -> list[ET.Element]:
    return [
        s for s in stanzas if s.tag == f"{{{CLIENT}}}presence" and (from_ is None or s.get("from") == from_)
    ]


def focus_in_room(h: Harness, framing: Framing = Framing.TCP) -> SansIoClient:
    focus = h.client(framing)
    focus.login_plain("focus", "focus-pw", resource="focus")
    got = focus.join(ROOM, "focus")
    (self_presence,) = presences(got)
    assert status_codes(self_presence) == {"110", "100", "201"}
    return focus


def participant(h: Harness, nick: str, **join: str) -> tuple[SansIoClient, list[ET.Element]]:
    c = h.client()
    c.login_anonymous()
    return c, c.join(ROOM, nick, **join)


def form(fields: dict[str, str]) -> str:
    body = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (
        f"<query xmlns='{OWNER}'><x xmlns='{DATA}' type='submit'>"
        f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>{body}</x></query>"
    )


def test_admin_creates_room_unlocked_with_subject() -> None:
    h = Harness()
    focus = h.client(Framing.TCP)
    focus.login_plain("focus", "focus-pw", resource="focus")
    got = focus.join(ROOM, "focus")
    (pres,) = presences(got)
    item = muc_item(pres)
    assert item is not None
    assert (item.get("affiliation"), item.get("role")) == ("owner", "moderator")
    assert item.get("jid") == "focus@auth.meet.sluice/focus"
    assert status_codes(pres) == {"110", "100", "201"}
    subject = [s for s in got if s.tag == f"{{{CLIENT}}}message"]
    assert len(subject) == 1 and subject[0].find(f"{{{CLIENT}}}subject") is not None
    assert subject[0].get("from") == ROOM
    assert h.core.stats()["rooms"] == 1


def test_restricted_creation_on_conference_but_not_internal() -> None:
    h = Harness()
    c = h.client()
    c.login_anonymous()
    got = c.join(ROOM, "abcd1234")
    (err,) = presences(got)
    assert err.get("type") == "error" and error_condition(err) == "not-allowed"
    assert err.get("from") == f"{ROOM}/abcd1234"
    assert h.core.stats()["rooms"] == 0
    jvb = h.client()
    jvb.login_plain("jvb", "jvb-pw")
    got = jvb.join(BREWERY, "jvb-1")
    assert status_codes(presences(got)[0]) >= {"110", "201"}


def test_join_sees_occupants_with_real_jids_and_others_see_joiner() -> None:
    h = Harness()
    focus = focus_in_room(h)
    extra = "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>"
    alice, got = participant(h, "aaaa0001", extra=extra)
    focus_pres = presences(got, f"{ROOM}/focus")
    assert len(focus_pres) == 1
    focus_item = muc_item(focus_pres[0])
    assert focus_item is not None and focus_item.get("jid") == "focus@auth.meet.sluice/focus"
    (self_pres,) = presences(got, f"{ROOM}/aaaa0001")
    assert status_codes(self_pres) == {"110", "100"}  # non-anonymous room, not created now
    seen = presences(focus.take(), f"{ROOM}/aaaa0001")
    assert len(seen) == 1
    item = muc_item(seen[0])
    assert item is not None
    assert (item.get("jid"), item.get("affiliation"), item.get("role")) == (alice.jid, "none", "participant")
    assert seen[0].findtext("{http://jabber.org/protocol/nick}nick") == "Alice"
    assert status_codes(seen[0]) == set()
    assert seen[0].find("{http://jabber.org/protocol/muc}x") is None  # the join element is not broadcast


def test_nick_conflict() -> None:
    h = Harness()
    focus_in_room(h)
    participant(h, "aaaa0001")
    _, got = participant(h, "aaaa0001")
    (err,) = presences(got)
    assert err.get("type") == "error" and error_condition(err) == "conflict"
    assert h.core.stats()["occupants"] == 2


def test_presence_update_is_broadcast() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    alice.stanza(
        f"<presence to='{ROOM}/aaaa0001'><audiomuted xmlns='http://jitsi.org/jitmeet/audio'>true</audiomuted>"
        "</presence>"
    )
    (update,) = presences(focus.take(), f"{ROOM}/aaaa0001")
    assert update.findtext("{http://jitsi.org/jitmeet/audio}audiomuted") == "true"
    (own,) = presences(alice.take())
    assert "110" in status_codes(own)


def test_leave_broadcasts_unavailable_and_empty_room_is_destroyed() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    alice.stanza(f"<presence to='{ROOM}/aaaa0001' type='unavailable'><status>bye</status></presence>")
    (gone,) = presences(focus.take())
    assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/aaaa0001"
    item = muc_item(gone)
    assert item is not None and item.get("role") == "none"
    (own,) = presences(alice.take())
    assert own.get("type") == "unavailable" and "110" in status_codes(own)
    focus.stanza(f"<presence to='{ROOM}/focus' type='unavailable'/>")
    assert h.core.stats()["rooms"] == 0
    assert h.core.stats()["muc_rooms_destroyed"] == 1


def test_session_end_removes_occupant() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    alice.send('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>')
    (gone,) = presences(focus.take())
    assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/aaaa0001"
    assert h.core.stats()["occupants"] == 1


def test_groupchat_broadcast_and_non_occupant_refused() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    alice.take()
    alice.stanza(f"<message to='{ROOM}' type='groupchat' id='g1'><body>hello all</body></message>")
    for c in (focus, alice):
        msg = c.take_one("message")
        assert msg.get("from") == f"{ROOM}/aaaa0001"
        assert msg.findtext(f"{{{CLIENT}}}body") == "hello all"
        assert msg.get("id") == "g1"
    outsider = h.client()
    outsider.login_anonymous()
    outsider.stanza(f"<message to='{ROOM}' type='groupchat'><body>let me in</body></message>")
    assert error_condition(outsider.take_one("message")) == "not-acceptable"
    assert focus.take() == []


def test_private_iq_relay_rewrites_from_like_jingle() -> None:
    """focus -> room/nick -> participant's real JID with from = room/focus; the reply goes back alike."""
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    jingle = "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1'/>"
    focus.send(f"<iq to='{ROOM}/aaaa0001' type='set' id='j1'>{jingle}</iq>")
    request = alice.take_one("iq")
    assert request.get("from") == f"{ROOM}/focus"
    assert request.get("to") == alice.jid
    assert request.find("{urn:xmpp:jingle:1}jingle") is not None
    alice.stanza(f"<iq to='{ROOM}/focus' type='result' id='j1'/>")
    reply = focus.take_one("iq")
    assert (reply.get("from"), reply.get("type"), reply.get("id")) == (f"{ROOM}/aaaa0001", "result", "j1")
    focus.send(f"<iq to='{ROOM}/nobody' type='set' id='j2'>{jingle}</iq>")
    assert error_condition(focus.take_one("iq")) == "item-not-found"


def test_private_message_marked_with_muc_user() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    alice.stanza(f"<message to='{ROOM}/focus' type='chat'><body>psst</body></message>")
    msg = focus.take_one("message")
    assert msg.get("from") == f"{ROOM}/aaaa0001"
    assert msg.find(f"{{{MUC_USER}}}x") is not None


def test_owner_config_password_protected_room() -> None:
    h = Harness()
    focus = focus_in_room(h)
    focus.send(f"<iq to='{ROOM}' type='get' id='cfg'><query xmlns='{OWNER}'/></iq>")
    current = focus.take_one("iq")
    fields = {f.get("var"): f for f in current.iter(f"{{{DATA}}}field")}
    for var in (
        "muc#roomconfig_whois",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_persistentroom",
        "muc#roominfo_meetingId",
    ):
        assert var in fields, var
    assert fields["muc#roomconfig_whois"].findtext(f"{{{DATA}}}value") == "anyone"
    submit = form({"muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": "s3cret"})
    focus.send(f"<iq to='{ROOM}' type='set' id='set'>{submit}</iq>")
    got = focus.take()
    assert [s.get("type") for s in got if s.tag == f"{{{CLIENT}}}iq"] == ["result"]
    (note,) = [s for s in got if s.tag == f"{{{CLIENT}}}message"]
    assert "104" in status_codes(note)

    _, none = participant(h, "aaaa0001")
    assert error_condition(presences(none)[0]) == "not-authorized"
    _, wrong = participant(h, "aaaa0002", password="guess")
    assert error_condition(presences(wrong)[0]) == "not-authorized"
    assert presences(wrong)[0].find(f"{{{CLIENT}}}error").get("type") == "auth"  # type: ignore[union-attr]
    _, right = participant(h, "aaaa0003", password="s3cret")
    assert "110" in status_codes(presences(right, f"{ROOM}/aaaa0003")[0])

    focus.send(f"<iq to='{ROOM}' type='get' id='d'><query xmlns='{DISCO_INFO}'/></iq>")
    features = {f.get("var") for f in focus.take_one("iq").iter(f"{{{DISCO_INFO}}}feature")}
    assert "muc_passwordprotected" in features
    focus.send(
        f"<iq to='{ROOM}' type='set' id='off'>{form({'muc#roomconfig_passwordprotectedroom': '0'})}</iq>"
    )
    focus.take()
    _, open_again = participant(h, "aaaa0004")
    assert "110" in status_codes(presences(open_again, f"{ROOM}/aaaa0004")[0])


def test_config_by_non_owner_is_forbidden_and_bad_values_change_nothing() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    alice.stanza(f"<iq to='{ROOM}' type='get' id='cfg'><query xmlns='{OWNER}'/></iq>")
    assert error_condition(alice.take_one("iq")) == "forbidden"
    bad = form({"muc#roomconfig_roomsecret": "x", "muc#roomconfig_whois": "nobody"})
    focus.send(f"<iq to='{ROOM}' type='set' id='bad'>{bad}</iq>")
    assert error_condition(focus.take_one("iq")) == "not-acceptable"
    _, joined = participant(h, "aaaa0002")  # the secret in the rejected form was not applied
    assert "110" in status_codes(presences(joined, f"{ROOM}/aaaa0002")[0])


def test_disco_info_of_room_has_meeting_id_uuid() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    ids = []
    for c in (focus, alice):
        c.stanza(f"<iq to='{ROOM}' type='get' id='d'><query xmlns='{DISCO_INFO}'/></iq>")
        info = c.take_one("iq")
        identity = info.find(f".//{{{DISCO_INFO}}}identity")
        assert identity is not None and identity.get("category") == "conference"
        features = {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
        assert {"http://jabber.org/protocol/muc", "muc_nonanonymous", "muc_temporary", "muc_open"} <= features
        fields = {f.get("var"): f.findtext(f"{{{DATA}}}value") for f in info.iter(f"{{{DATA}}}field")}
        ids.append(fields["muc#roominfo_meetingId"])
        assert fields["FORM_TYPE"] == "http://jabber.org/protocol/muc#roominfo"
        assert fields["muc#roominfo_occupants"] == "2"
    assert ids[0] == ids[1]
    assert uuid.UUID(ids[0] or "").version == 4
    alice.stanza(f"<iq to='nope@conference.meet.sluice' type='get' id='n'><query xmlns='{DISCO_INFO}'/></iq>")
    assert error_condition(alice.take_one("iq")) == "item-not-found"


def test_focus_grants_owner_to_first_participant() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    bob, _ = participant(h, "bbbb0002")
    for c in (focus, alice, bob):
        c.take()
    bare = alice.jid.split("/")[0]
    grant = f"<query xmlns='{ADMIN}'><item affiliation='owner' jid='{bare}'/></query>"
    focus.send(f"<iq to='{ROOM}' type='set' id='own'>{grant}</iq>")
    assert focus.take_one("iq").get("type") == "result"
    (seen_by_bob,) = presences(bob.take(), f"{ROOM}/aaaa0001")
    item = muc_item(seen_by_bob)
    assert item is not None and (item.get("affiliation"), item.get("role")) == ("owner", "moderator")
    # Now alice may configure the room (the client sets the password this way).
    alice.stanza(f"<iq to='{ROOM}' type='set' id='pw'>{form({'muc#roomconfig_roomsecret': 'pw'})}</iq>")
    assert [s.get("type") for s in alice.take() if s.tag == f"{{{CLIENT}}}iq"] == ["result"]
    # A participant cannot grant affiliations.
    bob.stanza(f"<iq to='{ROOM}' type='set' id='own2'>{grant}</iq>")
    assert error_condition(bob.take_one("iq")) == "not-allowed"


def test_last_owner_cannot_be_removed() -> None:
    h = Harness()
    focus = focus_in_room(h)
    drop = f"<query xmlns='{ADMIN}'><item affiliation='none' jid='focus@auth.meet.sluice'/></query>"
    focus.send(f"<iq to='{ROOM}' type='set' id='x'>{drop}</iq>")
    assert error_condition(focus.take_one("iq")) == "conflict"


def test_kick_and_ban() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    bob, _ = participant(h, "bbbb0002")
    for c in (focus, alice, bob):
        c.take()
    kick = f"<query xmlns='{ADMIN}'><item nick='aaaa0001' role='none'><reason>bye</reason></item></query>"
    focus.send(f"<iq to='{ROOM}' type='set' id='k'>{kick}</iq>")
    (kicked,) = presences(alice.take())
    assert kicked.get("type") == "unavailable" and {"110", "307"} <= status_codes(kicked)
    item = muc_item(kicked)
    assert item is not None and item.findtext(f"{{{MUC_USER}}}reason") == "bye"
    (seen,) = presences(bob.take())
    assert "307" in status_codes(seen)

    bare = bob.jid.split("/")[0]
    ban = f"<query xmlns='{ADMIN}'><item affiliation='outcast' jid='{bare}'/></query>"
    focus.send(f"<iq to='{ROOM}' type='set' id='b'>{ban}</iq>")
    (banned,) = presences(bob.take())
    assert "301" in status_codes(banned)
    again = bob.join(ROOM, "bbbb0002")
    assert error_condition(presences(again)[0]) == "forbidden"


def test_semi_anonymous_room_hides_jids_from_participants() -> None:
    h = Harness()
    focus = focus_in_room(h)
    focus.send(f"<iq to='{ROOM}' type='set' id='w'>{form({'muc#roomconfig_whois': 'moderators'})}</iq>")
    note = [s for s in focus.take() if s.tag == f"{{{CLIENT}}}message"]
    assert {"104", "173"} <= status_codes(note[0])
    alice, got = participant(h, "aaaa0001")
    focus_item = muc_item(presences(got, f"{ROOM}/focus")[0])
    assert focus_item is not None and focus_item.get("jid") is None
    assert status_codes(presences(got, f"{ROOM}/aaaa0001")[0]) == {"110"}
    alice_item = muc_item(presences(focus.take(), f"{ROOM}/aaaa0001")[0])
    assert alice_item is not None and alice_item.get("jid") == alice.jid  # moderators still see it


def test_nick_change_303() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    focus.take()
    alice.stanza(f"<presence to='{ROOM}/alice'/>")
    got = presences(focus.take())
    assert got[0].get("type") == "unavailable" and "303" in status_codes(got[0])
    item = muc_item(got[0])
    assert item is not None and item.get("nick") == "alice"
    assert got[1].get("from") == f"{ROOM}/alice" and got[1].get("type") is None


def test_owner_destroys_room() -> None:
    h = Harness()
    focus = focus_in_room(h)
    alice, _ = participant(h, "aaaa0001")
    alice.take()
    destroy = f"<query xmlns='{OWNER}'><destroy><reason>over</reason></destroy></query>"
    focus.send(f"<iq to='{ROOM}' type='set' id='d'>{destroy}</iq>")
    (gone,) = presences(alice.take())
    assert gone.get("type") == "unavailable"
    marker = gone.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
    assert marker is not None and marker.findtext(f"{{{MUC_USER}}}reason") == "over"
    assert h.core.stats()["rooms"] == 0


def test_brewery_presence_with_stats_reaches_observer() -> None:
    h = Harness()
    jvb = h.client(Framing.TCP)
    jvb.login_plain("jvb", "jvb-pw")
    stats = "<stats xmlns='http://jitsi.org/protocol/colibri'><stat name='stress_level' value='0.1'/></stats>"
    jvb.join(BREWERY, "jvb-1", extra=stats)
    focus = h.client(Framing.TCP)
    focus.login_plain("focus", "focus-pw", resource="focus")
    got = focus.join(BREWERY, "focus")
    (bridge,) = presences(got, f"{BREWERY}/jvb-1")
    stat = bridge.find("{http://jitsi.org/protocol/colibri}stats/{http://jitsi.org/protocol/colibri}stat")
    assert stat is not None and stat.get("value") == "0.1"


def test_self_presence_reflects_the_join_id() -> None:
    h = Harness()
    focus_in_room(h)
    alice = h.client()
    alice.login_anonymous()
    alice.stanza(
        f"<presence to='{ROOM}/aaaa0001' id='join-1'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    )
    (own,) = presences(alice.take(), f"{ROOM}/aaaa0001")
    assert own.get("id") == "join-1"
