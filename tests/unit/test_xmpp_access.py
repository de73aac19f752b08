"""Access control in the embedded XMPP server, sans-IO: tokens at SASL, a token's room and moderator claims
in the conference MUC, its name in presence, and the secure domain (who may start a meeting).

Each refusal is checked for its condition, the reason in its text, and its counter.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

from signaling.xmpp import XmppLimits, XmppServerConfig
from signaling.xmpp.token import TokenConfig
from signaling.xmpp.users import UserStore
from tests.helpers.tokens import APP_ID, SECRET, claims, hs256
from tests.helpers.xmppd import CLIENT, SASL, Harness, SansIoClient, b64, error_condition, muc_item

DOMAIN = "meet.sluice"
MUC = f"conference.{DOMAIN}"
FOCUS_DOMAIN = f"focus.{DOMAIN}"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NICK = "http://jabber.org/protocol/nick"
TOKEN = TokenConfig(app_id=APP_ID, secret=SECRET)


def harness(users: UserStore | None = None, **auth: object) -> Harness:
    base = Harness().config
    config: XmppServerConfig = replace(base, **auth)  # type: ignore[arg-type]
    return Harness(config, users)


def sasl_anonymous(c: SansIoClient) -> ET.Element:
    """Opens the stream and tries SASL ANONYMOUS; the server's answer (success or failure)."""
    c.open(DOMAIN)
    c.take()
    c.send(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'/>")
    got = [e for e in c.take() if e.tag in (f"{{{SASL}}}success", f"{{{SASL}}}failure")]
    assert len(got) == 1
    return got[0]


def token_client(h: Harness, token: str | None) -> SansIoClient:
    c = h.client(token=token)
    assert sasl_anonymous(c).tag == f"{{{SASL}}}success"
    c._bind(DOMAIN, None)
    return c


def focus(h: Harness) -> SansIoClient:
    c = h.client()
    c.login_plain("focus", "focus-pw", resource="focus")
    return c


def conference_iq(c: SansIoClient, room: str) -> None:
    c.stanza(
        f"<iq to='{FOCUS_DOMAIN}' type='set' id='c1'>"
        f"<conference xmlns='{NS_FOCUS}' room='{room}@{MUC}' machine-uid='x'/></iq>"
    )


def error_text(elem: ET.Element) -> str:
    return elem.findtext(f"{{{CLIENT}}}error/{{urn:ietf:params:xml:ns:xmpp-stanzas}}text") or ""


def test_a_token_only_server_refuses_no_token_and_bad_tokens_with_their_reason() -> None:
    h = harness(token=TOKEN, allow_anonymous=False)
    now = int(time.time())
    cases = {
        "missing": None,
        "expired": hs256(claims(exp=now - 3600)),
        "bad_signature": hs256(claims(), "a-forged-secret-that-is-long-enough-too"),
        "wrong_audience": hs256(claims(aud="another-app")),
        "malformed": "abc.def.ghi",
    }
    for reason, token in cases.items():
        failure = sasl_anonymous(h.client(token=token))
        assert failure.tag == f"{{{SASL}}}failure"
        assert failure.find(f"{{{SASL}}}not-authorized") is not None
        assert (failure.findtext(f"{{{SASL}}}text") or "").startswith(f"{reason}:"), reason
        assert h.core.stats()[f"token_refused_{reason}"] == 1
    assert h.core.stats()["token_refused"] == len(cases)
    assert h.core.stats()["sessions"] == 0 and h.core.stats()["token_refused_wrong_room"] == 0
    token_client(h, hs256(claims()))
    assert h.core.stats()["token_logins"] == 1 and h.core.stats()["sessions"] == 1
    # Accounts on the auth domain still log in (the focus, users).
    focus(h)


def test_anonymous_stays_allowed_unless_turned_off_and_tokens_are_still_checked() -> None:
    h = harness(token=TOKEN)
    token_client(h, None)
    assert h.core.stats()["anonymous_logins"] == 1
    failure = sasl_anonymous(h.client(token=hs256(claims(iss="someone"))))
    assert (failure.findtext(f"{{{SASL}}}text") or "").startswith("wrong_issuer:")
    # Without tokens, anonymous logins can be turned off: only accounts log in.
    closed = harness(allow_anonymous=False)
    failure = sasl_anonymous(closed.client(token=hs256(claims())))
    assert failure.find(f"{{{SASL}}}not-authorized") is not None
    assert "anonymous logins are not allowed" in (failure.findtext(f"{{{SASL}}}text") or "")
    assert closed.core.stats()["anonymous_refused"] == 1
    focus(closed)


def test_a_token_for_room_a_cannot_ask_for_or_join_room_b() -> None:
    h = harness(token=TOKEN, allow_anonymous=False)
    f = focus(h)
    f.join(f"room-b@{MUC}", "focus")  # the focus created room-b
    c = token_client(h, hs256(claims("room-a")))
    conference_iq(c, "room-b")
    reply = c.take_one("iq")
    assert error_condition(reply) == "not-allowed" and error_text(reply).startswith("wrong_room:")
    assert not [s for s in f.take() if s.tag == f"{{{CLIENT}}}iq"], "the focus got the request"
    (refused,) = c.join(f"room-b@{MUC}", "abcd1234")
    assert refused.get("type") == "error" and error_condition(refused) == "not-allowed"
    assert "room-a" in error_text(refused)
    assert h.core.stats()["token_refused_wrong_room"] == 2
    # Jitsi's clients name the room on the WebSocket URL too (?room=): then a token for another room is
    # refused at login already, with the reason.
    failure = sasl_anonymous(h.client(token=hs256(claims("room-a")), room="room-b"))
    assert (failure.findtext(f"{{{SASL}}}text") or "").startswith("wrong_room:")
    assert h.core.stats()["token_refused_wrong_room"] == 3
    assert sasl_anonymous(h.client(token=hs256(claims("room-a")), room="ROOM-A")).tag == f"{{{SASL}}}success"
    # Its own room is fine (case does not matter).
    conference_iq(c, "Room-A")
    assert [s for s in f.take() if s.tag == f"{{{CLIENT}}}iq"], "the focus did not get the request"


def test_moderator_claim_and_name_come_from_the_token() -> None:
    h = harness(token=TOKEN)
    f = focus(h)
    room = f"team@{MUC}"
    f.join(room, "focus")
    mod = token_client(h, hs256(claims("team", moderator=True, name="Ada Mod")))
    mod.join(room, "mod1", extra=f"<nick xmlns='{NICK}'>I claim another name</nick>")
    plain = token_client(h, hs256(claims("*", moderator=False, name="Bob Token")))
    got = plain.join(room, "bob1", extra=f"<nick xmlns='{NICK}'>Ada Mod</nick>")
    seen = {p.get("from", "").rpartition("/")[2]: p for p in got if p.tag == f"{{{CLIENT}}}presence"}
    mod_item, bob_item = muc_item(seen["mod1"]), muc_item(seen["bob1"])
    assert mod_item is not None and (mod_item.get("affiliation"), mod_item.get("role")) == (
        "owner",
        "moderator",
    )
    assert bob_item is not None and (bob_item.get("affiliation"), bob_item.get("role")) == (
        "member",
        "participant",
    )
    assert seen["mod1"].findtext(f"{{{NICK}}}nick") == "Ada Mod"
    assert seen["bob1"].findtext(f"{{{NICK}}}nick") == "Bob Token"
    assert [n.text for n in seen["bob1"].iter(f"{{{NICK}}}nick")] == ["Bob Token"]
    identity = seen["mod1"].find(f"{{{CLIENT}}}identity/{{{CLIENT}}}user")
    assert identity is not None and identity.findtext(f"{{{CLIENT}}}id") == "u-42"
    assert identity.findtext(f"{{{CLIENT}}}email") is None
    # A token without a name keeps the name its holder chose; nobody passes for a token's holder.
    anon = token_client(h, hs256(claims("*", name=None)))
    got = anon.join(room, "cccc0003", extra=f"<nick xmlns='{NICK}'>Chosen</nick>")
    (own,) = [p for p in got if p.get("from") == f"{room}/cccc0003"]
    assert own.findtext(f"{{{NICK}}}nick") == "Chosen"
    guest = h.client()
    guest.login_anonymous()
    forged = "<identity><user><id>u-42</id><name>Ada Mod</name></user></identity>"
    got = guest.join(room, "dddd0004", extra=forged)
    (own,) = [p for p in got if p.get("from") == f"{room}/dddd0004"]
    assert own.find(f"{{{CLIENT}}}identity") is None
    # Nobody, not even the focus, makes the token's non-moderator an owner.
    f.take()
    f.stanza(
        f"<iq to='{room}' type='set' id='own'><query xmlns='http://jabber.org/protocol/muc#admin'>"
        f"<item affiliation='owner' jid='{plain.jid.split('/')[0]}'/></query></iq>"
    )
    assert error_condition(f.take_one("iq")) == "not-allowed"


def users_store(tmp_path: Path) -> UserStore:
    s = UserStore(tmp_path / "users.json")
    s.add("alice", "alice-secret")
    return s


def test_secure_domain_guests_join_but_do_not_start_meetings(tmp_path: Path) -> None:
    h = harness(
        users_store(tmp_path),
        secure_domain=True,
        accounts={"focus@auth.meet.sluice": "focus-pw", "jvb@auth.meet.sluice": "jvb-pw"},
    )
    f = focus(h)
    guest = token_client(h, None)
    conference_iq(guest, "standup")
    reply = guest.take_one("iq")
    assert error_condition(reply) == "not-authorized"
    assert "authenticated users" in error_text(reply)
    assert h.core.stats()["room_creations_refused_guest"] == 1
    assert not [s for s in f.take() if s.tag == f"{{{CLIENT}}}iq"]
    # A user of the users file may: the request reaches the focus.
    user = h.client()
    user.login_plain("alice", "alice-secret")
    assert h.core.stats()["user_logins"] == 1
    conference_iq(user, "standup")
    assert [s for s in f.take() if s.tag == f"{{{CLIENT}}}iq"]
    # Once asked for by a user (and so when it exists), the guest's request goes through too.
    conference_iq(guest, "standup")
    assert [s for s in f.take() if s.tag == f"{{{CLIENT}}}iq"]
    # A token counts as authenticated.
    h2 = harness(token=TOKEN, secure_domain=True)
    f2 = focus(h2)
    conference_iq(token_client(h2, hs256(claims())), "fresh")
    assert [s for s in f2.take() if s.tag == f"{{{CLIENT}}}iq"]
    # Wrong password: not-authorized at SASL, no session.
    bad = h.client()
    bad.open(f"auth.{DOMAIN}")
    bad.take()
    plain = b64(b"\0alice\0nope")
    bad.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{plain}</auth>")
    assert bad.take_one("failure").find(f"{{{SASL}}}not-authorized") is not None


def test_user_accounts_are_rate_limited_like_guests(tmp_path: Path) -> None:
    """A user is not one of the deployment's accounts: no component rights, no exemption from the limits."""
    h = harness(
        users_store(tmp_path),
        accounts={"focus@auth.meet.sluice": "focus-pw"},
        limits=XmppLimits(stanza_rate=0.001, stanza_burst=5),  # bind and session take 2
    )
    user = h.client()
    user.login_plain("alice", "alice-secret")
    assert user.conn.registered and not user.conn.account and not user.conn.component
    for n in range(4):
        user.stanza(f"<iq to='{DOMAIN}' type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(user.take()[-1]) == "policy-violation"
    assert h.core.stats()["rate_limited"] == 1
