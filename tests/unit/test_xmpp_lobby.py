"""The lobby (Jitsi's mod_muc_lobby_rooms), sans-IO through the server core: a moderator turns a room
members-only and a lobby room opens on `lobby.<domain>`; a newcomer is refused with `<lobbyroom>`, knocks
there (moderators see it, knockers see nobody), is admitted by a `member` affiliation (the room's invitation)
or rejected (kicked from the lobby); a password or a moderator token bypasses it; bounds and expiry; what a
non-moderator may not do."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from signaling.xmpp.config import XmppLimits, XmppServerConfig
from signaling.xmpp.token import TokenConfig
from tests.helpers.tokens import APP_ID, SECRET, claims, hs256
from tests.helpers.xmppd import (
    CLIENT,
    MUC_USER,
    Harness,
    SansIoClient,
    error_condition,
    muc_item,
    status_codes,
)
from tests.unit.test_xmpp_access import sasl_anonymous
from tests.unit.test_xmpp_muc import ADMIN, DISCO_INFO, OWNER, ROOM, focus_in_room, form, presences

LOBBY = "room1@lobby.meet.sluice"
JITMEET = "http://jitsi.org/jitmeet"
NICK = "<nick xmlns='http://jabber.org/protocol/nick'>{}</nick>"


def harness(**limits: object) -> Harness:
    base = Harness().config
    config: XmppServerConfig = replace(base, limits=replace(XmppLimits(), **limits))  # type: ignore[arg-type]
    return Harness(config)


def guest(h: Harness) -> SansIoClient:
    c = h.client()
    c.login_anonymous()
    return c


def iq_types(got: list[ET.Element]) -> list[str | None]:
    return [s.get("type") for s in got if s.tag == f"{{{CLIENT}}}iq"]


def moderated_room(h: Harness) -> tuple[SansIoClient, SansIoClient]:
    """The focus and an owner (as the focus makes the first participant) in ROOM."""
    focus = focus_in_room(h)
    owner = guest(h)
    owner.join(ROOM, "owner001", extra=NICK.format("Olga"))
    bare = owner.jid.split("/")[0]
    focus.stanza(f"<iq to='{ROOM}' type='set' id='own'><query xmlns='{ADMIN}'>"
                 f"<item affiliation='owner' jid='{bare}'/></query></iq>")  # fmt: skip
    focus.take()
    owner.take()
    return focus, owner


def set_lobby(c: SansIoClient, on: bool) -> list[ET.Element]:
    c.stanza(
        f"<iq to='{ROOM}' type='set' id='lobby'>{form({'muc#roomconfig_membersonly': str(int(on))})}</iq>"
    )
    return c.take()


def lobby_field(c: SansIoClient) -> str | None:
    c.stanza(f"<iq to='{ROOM}' type='get' id='info'><query xmlns='{DISCO_INFO}'/></iq>")
    reply = c.take_one("iq")
    for field in reply.iter("{jabber:x:data}field"):
        if field.get("var") == "muc#roominfo_lobbyroom":
            return field.findtext("{jabber:x:data}value")
    return None


def knock(h: Harness, nick: str, name: str) -> tuple[SansIoClient, list[ET.Element]]:
    """A newcomer: refused from the room with the lobby's address, then joins the lobby."""
    c = guest(h)
    (refused,) = presences(c.join(ROOM, nick))
    assert refused.get("type") == "error" and error_condition(refused) == "registration-required"
    assert refused.findtext(f"{{{JITMEET}}}lobbyroom") == LOBBY
    return c, c.join(LOBBY, nick, extra=NICK.format(name))


def test_lobby_knock_admit_and_reject() -> None:
    h = harness()
    focus, owner = moderated_room(h)
    assert lobby_field(owner) is None
    assert iq_types(set_lobby(owner, True)) == ["result"]
    assert lobby_field(owner) == LOBBY
    assert h.core.stats()["lobby_enabled"] == 1
    # The moderator waits in the lobby to see knocks (as Jitsi's moderators do); it is the lobby's owner.
    (mod_self,) = presences(owner.join(LOBBY, "owner001"))
    assert muc_item(mod_self) is not None and muc_item(mod_self).get("role") == "moderator"  # type: ignore[union-attr]

    ann, got = knock(h, "ann00001", "Ann")
    (ann_self,) = presences(got)  # she sees herself only, not the moderator
    assert "110" in status_codes(ann_self)
    (seen,) = presences(owner.take(), f"{LOBBY}/ann00001")
    assert seen.findtext("{http://jabber.org/protocol/nick}nick") == "Ann"
    assert muc_item(seen).get("jid") == ann.jid  # type: ignore[union-attr]
    bob, got = knock(h, "bob00001", "Bob")
    assert [p.get("from") for p in presences(got)] == [f"{LOBBY}/bob00001"]  # not Ann, not the moderator
    assert presences(ann.take()) == []  # Ann is not told about Bob
    owner.take()
    assert h.core.stats()["lobby_knocks"] == 2
    # A knocker may not talk to the others in the lobby.
    ann.stanza(f"<message to='{LOBBY}' type='groupchat'><body>let me in</body></message>")
    assert error_condition(ann.take_one("message")) == "forbidden"
    assert presences(owner.take()) == [] and h.core.stats()["lobby_refused"] == 1

    # Admit Ann: the member affiliation on the main room; she gets the room's invitation and then joins.
    ann_bare = ann.jid.split("/")[0]
    owner.stanza(f"<iq to='{ROOM}' type='set' id='admit'><query xmlns='{ADMIN}'>"
                 f"<item affiliation='member' jid='{ann_bare}'/></query></iq>")  # fmt: skip
    assert iq_types(owner.take()) == ["result"]
    invite = ann.take_one("message")
    assert invite.get("from") == ROOM
    assert invite.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite") is not None
    assert h.core.stats()["lobby_admitted"] == 1
    ann.stanza(f"<presence to='{LOBBY}/ann00001' type='unavailable'/>")
    (joined,) = presences(ann.join(ROOM, "ann00001"), f"{ROOM}/ann00001")
    assert joined.get("type") is None and muc_item(joined).get("affiliation") == "member"  # type: ignore[union-attr]
    assert presences(focus.take(), f"{ROOM}/ann00001")  # the focus sees her only now

    # Reject Bob: kicked from the lobby with the reason; the room still refuses him; the focus never saw him.
    owner.take()
    owner.stanza(f"<iq to='{LOBBY}' type='set' id='deny'><query xmlns='{ADMIN}'><item nick='bob00001' "
                 f"role='none'><reason>Not today</reason></item></query></iq>")  # fmt: skip
    assert iq_types(owner.take()) == ["result"]
    (gone,) = presences(bob.take())
    assert gone.get("type") == "unavailable" and {"110", "307"} <= status_codes(gone)
    assert muc_item(gone).findtext(f"{{{MUC_USER}}}reason") == "Not today"  # type: ignore[union-attr]
    assert h.core.stats()["lobby_rejected"] == 1
    (again,) = presences(bob.join(ROOM, "bob00001"))
    assert error_condition(again) == "registration-required"
    assert not [p for p in presences(focus.take()) if "bob00001" in (p.get("from") or "")]


def test_password_and_moderator_token_bypass_the_lobby() -> None:
    base = Harness().config
    h = Harness(replace(base, token=TokenConfig(app_id=APP_ID, secret=SECRET)))
    _, owner = moderated_room(h)
    owner.stanza(f"<iq to='{ROOM}' type='set' id='pw'>{form({'muc#roomconfig_roomsecret': 'sesame'})}</iq>")
    set_lobby(owner, True)
    # The room's password lets a guest in past the lobby (and makes it a member).
    c = guest(h)
    (wrong,) = presences(c.join(ROOM, "pass0001", password="nope"))
    assert error_condition(wrong) == "registration-required"
    (ok,) = presences(c.join(ROOM, "pass0001", password="sesame"), f"{ROOM}/pass0001")
    assert ok.get("type") is None and muc_item(ok).get("affiliation") == "member"  # type: ignore[union-attr]
    assert h.core.stats()["lobby_bypassed_password"] == 1
    # A token with `moderator` goes straight in; one without waits like anyone.
    mod = h.client(token=hs256(claims("room1", moderator=True)))
    assert sasl_anonymous(mod).tag.endswith("success")
    mod._bind("meet.sluice", None)
    (in_room,) = presences(mod.join(ROOM, "tokn0001"), f"{ROOM}/tokn0001")
    assert muc_item(in_room).get("affiliation") == "owner"  # type: ignore[union-attr]
    assert h.core.stats()["lobby_bypassed_token"] == 1
    plain = h.client(token=hs256(claims("room1", moderator=False)))
    sasl_anonymous(plain)
    plain._bind("meet.sluice", None)
    (refused,) = presences(plain.join(ROOM, "tokn0002", password="wrong"))
    assert error_condition(refused) == "registration-required"


def test_lobby_bound_expiry_and_turning_it_off() -> None:
    h = harness(max_lobby_occupants_per_room=2, lobby_knock_timeout=120.0)
    _, owner = moderated_room(h)
    set_lobby(owner, True)
    first, _ = knock(h, "knck0001", "One")
    h.tick(60)
    second, _ = knock(h, "knck0002", "Two")
    third = guest(h)
    (full,) = presences(third.join(LOBBY, "knck0003"))
    assert error_condition(full) == "service-unavailable"
    assert "lobby is full" in (
        full.findtext(f"{{{CLIENT}}}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}text") or ""
    )
    assert h.core.stats()["lobby_full"] == 1
    # The room's moderator still gets into a full lobby (and does not count against the bound).
    (mod_self,) = presences(owner.join(LOBBY, "owner001"), f"{LOBBY}/owner001")
    assert mod_self.get("type") is None
    assert h.core.poll_timeout() == h.clock.now + 60  # the first knock's expiry
    h.tick(61)
    (expired,) = presences(first.take())
    assert expired.get("type") == "unavailable" and "307" in status_codes(expired)
    assert "Nobody let you in within 2 minutes" in (muc_item(expired).findtext(f"{{{MUC_USER}}}reason") or "")  # type: ignore[union-attr]
    assert h.core.stats()["lobby_knocks_expired"] == 1 and presences(second.take()) == []
    owner.take()
    # Off: the lobby room closes and sends who waited to the main room (<destroy jid=room>), who now may join.
    assert iq_types(set_lobby(owner, False)) == ["result"]
    (closed,) = presences(second.take())
    destroy = closed.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
    assert closed.get("type") == "unavailable" and destroy is not None and destroy.get("jid") == ROOM
    assert lobby_field(owner) is None and h.core.stats()["lobby_disabled"] == 1
    (joined,) = presences(second.join(ROOM, "knck0002"), f"{ROOM}/knck0002")
    assert joined.get("type") is None


def test_non_moderators_cannot_run_the_lobby_or_moderate() -> None:
    h = harness()
    _, owner = moderated_room(h)
    mallory = guest(h)
    mallory.join(ROOM, "mall0001")
    owner.take()
    # Turning the lobby on, admitting someone (a forged affiliation change), kicking, ending the meeting.
    assert error_condition(set_lobby(mallory, True)[0]) == "forbidden"
    mallory.stanza(f"<iq to='{ROOM}' type='set' id='a'><query xmlns='{ADMIN}'>"
                   f"<item affiliation='member' jid='someone@meet.sluice'/></query></iq>")  # fmt: skip
    assert error_condition(mallory.take_one("iq")) == "not-allowed"
    mallory.stanza(f"<iq to='{ROOM}' type='set' id='k'><query xmlns='{ADMIN}'>"
                   f"<item nick='owner001' role='none'/></query></iq>")  # fmt: skip
    assert error_condition(mallory.take_one("iq")) == "not-allowed"
    mallory.stanza(f"<iq to='{ROOM}' type='set' id='d'><query xmlns='{OWNER}'><destroy/></query></iq>")
    assert error_condition(mallory.take_one("iq")) == "forbidden"
    assert h.core.stats()["muc_moderation_refused"] == 4
    assert presences(owner.take()) == []  # nothing happened to the owner
    # Nobody creates lobby rooms by joining them: they exist while their room's lobby is on.
    (refused,) = presences(mallory.join("other@lobby.meet.sluice", "mall0001"))
    assert error_condition(refused) == "not-allowed"


def test_ending_the_meeting_closes_its_lobby() -> None:
    h = harness()
    focus, owner = moderated_room(h)
    set_lobby(owner, True)
    waiting, _ = knock(h, "wait0001", "Wendy")
    focus.take()
    owner.stanza(f"<iq to='{ROOM}' type='set' id='end'><query xmlns='{OWNER}'>"
                 "<destroy><reason>The meeting has ended</reason></destroy></query></iq>")  # fmt: skip
    assert "result" in iq_types(owner.take())
    (focus_gone,) = presences(focus.take())
    assert focus_gone.get("type") == "unavailable"
    assert focus_gone.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
    (closed,) = presences(waiting.take())
    destroy = closed.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
    assert destroy is not None and destroy.get("jid") is None
    assert h.core.stats()["rooms"] == 0
