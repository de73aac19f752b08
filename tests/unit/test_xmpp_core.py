"""The sans-IO server core: stream negotiation transcripts, SASL, binding, routing, server IQs, limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.xmpp import XmppLimits, XmppServerConfig
from signaling.xmpp.core import Framing
from tests.helpers.xmppd import (
    BIND,
    CLIENT,
    SASL,
    STREAMS,
    Harness,
    SansIoClient,
    b64,
    error_condition,
)

TLS = "urn:ietf:params:xml:ns:xmpp-tls"
PLAIN_WRONG = b64(b"\0focus\0wrong")
PLAIN_NOBODY = b64(b"\0nobody\0focus-pw")
PLAIN_FOCUS = b64(b"\0focus\0focus-pw")
ACCOUNTS = {"focus@auth.meet.sluice": "focus-pw", "jvb@auth.meet.sluice": "jvb-pw"}


def mechanisms(features: ET.Element) -> list[str]:
    return [m.text or "" for m in features.iter(f"{{{SASL}}}mechanism")]


def stream_error(client: SansIoClient) -> str | None:
    errors = [e for e in client.received if e.tag == f"{{{STREAMS}}}error"]
    return error_condition(errors[-1]) if errors else None


@pytest.fixture(params=[Framing.TCP, Framing.WEBSOCKET], ids=["tcp", "ws"])
def framing(request: pytest.FixtureRequest) -> Framing:
    return request.param  # type: ignore[no-any-return]


# ---- negotiation


def test_anonymous_negotiation_transcript_rfc6120(framing: Framing) -> None:
    h = Harness()
    c = h.client(framing)
    c.open("meet.sluice")
    assert c.headers[-1]["from"] == "meet.sluice"
    assert c.headers[-1]["version"] == "1.0"
    assert c.headers[-1]["id"]
    features = c.take_one("features")
    assert mechanisms(features) == ["ANONYMOUS"]  # the login domain offers only ANONYMOUS
    c.send(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'>{b64(b'trace')}</auth>")
    c.take_one("success")
    c.open("meet.sluice")
    assert len(c.headers) == 2 and c.headers[0]["id"] != c.headers[1]["id"]
    features = c.take_one("features")
    assert features.find(f"{{{BIND}}}bind") is not None
    assert (
        features.find(
            "{urn:ietf:params:xml:ns:xmpp-session}session/{urn:ietf:params:xml:ns:xmpp-session}optional"
        )
        is not None
    )
    assert features.find("{urn:xmpp:sm:3}sm") is None  # XEP-0198 is not advertised
    c.stanza(f"<iq type='set' id='b1'><bind xmlns='{BIND}'/></iq>")
    reply = c.take_one("iq")
    assert reply.get("type") == "result" and reply.get("id") == "b1"
    jid = reply.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid") or ""
    local, _, rest = jid.partition("@")
    domain, _, resource = rest.partition("/")
    assert local and domain == "meet.sluice" and resource  # server-generated resource
    c.stanza("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    assert c.take_one("iq").get("type") == "result"
    assert h.core.stats()["sessions"] == 1
    assert h.core.stats()["anonymous_logins"] == 1


def test_two_anonymous_logins_get_different_jids() -> None:
    h = Harness()
    assert h.client().login_anonymous() != h.client().login_anonymous()


def test_accounts_domain_offers_scram_and_plain() -> None:
    h = Harness()
    c = h.client(Framing.TCP)
    c.open("auth.meet.sluice")
    assert mechanisms(c.take_one("features")) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    c.send(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'/>")
    assert c.take_one("failure").find(f"{{{SASL}}}invalid-mechanism") is not None


def test_plain_login_and_requested_resource() -> None:
    h = Harness()
    assert h.client().login_plain("focus", "focus-pw", resource="focus") == "focus@auth.meet.sluice/focus"


def test_plain_wrong_password_is_not_authorized_and_attempts_are_limited() -> None:
    h = Harness()
    c = h.client(Framing.TCP)
    c.open("auth.meet.sluice")
    c.take()
    for attempt in range(3):
        c.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{PLAIN_WRONG}</auth>")
        failure = [e for e in c.take() if e.tag == f"{{{SASL}}}failure"]
        assert failure and failure[0].find(f"{{{SASL}}}not-authorized") is not None
        assert c.closed == (attempt == 2)
    assert h.core.stats()["auth_failure"] == 3
    assert h.core.stats()["stream_error_policy_violation"] == 1


def test_plain_unknown_user_and_bad_base64() -> None:
    h = Harness()
    c = h.client()
    c.open("auth.meet.sluice")
    c.take()
    c.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{PLAIN_NOBODY}</auth>")
    assert c.take_one("failure").find(f"{{{SASL}}}not-authorized") is not None
    c.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>!!!notbase64</auth>")
    assert c.take_one("failure").find(f"{{{SASL}}}incorrect-encoding") is not None


def _scram_client(h: Harness, c: SansIoClient, hash_name: str, mech: str, password: str) -> ET.Element:
    """RFC 5802 §3 client side, written out here so the server is checked against the RFC, not itself."""
    c.open("auth.meet.sluice")
    c.take()
    cnonce = "fyko+d2lbbFgONRv9qkxdawL"
    first_bare = f"n=jvb,r={cnonce}"
    c.send(f"<auth xmlns='{SASL}' mechanism='{mech}'>{b64(('n,,' + first_bare).encode())}</auth>")
    challenge = c.take_one("challenge")
    server_first = base64.b64decode(challenge.text or "").decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    assert attrs["r"].startswith(cnonce) and len(attrs["r"]) > len(cnonce)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    without_proof = f"c={b64(b'n,,')},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    c.send(f"<response xmlns='{SASL}'>{b64(f'{without_proof},p={b64(proof)}'.encode())}</response>")
    reply = c.take()[0]
    if reply.tag == f"{{{SASL}}}success":
        server_key = hmac.digest(salted, b"Server Key", hash_name)
        expected = "v=" + b64(hmac.digest(server_key, auth_message, hash_name))
        assert base64.b64decode(reply.text or "").decode() == expected  # mutual authentication
    return reply


@pytest.mark.parametrize(("hash_name", "mech"), [("sha1", "SCRAM-SHA-1"), ("sha256", "SCRAM-SHA-256")])
def test_scram_rfc5802_rfc7677(hash_name: str, mech: str) -> None:
    h = Harness()
    assert _scram_client(h, h.client(Framing.TCP), hash_name, mech, "jvb-pw").tag == f"{{{SASL}}}success"
    bad = _scram_client(h, h.client(Framing.TCP), hash_name, mech, "not-the-password")
    assert bad.tag == f"{{{SASL}}}failure"
    assert bad.find(f"{{{SASL}}}not-authorized") is not None


def test_host_unknown_and_unsupported_version(framing: Framing) -> None:
    h = Harness()
    c = h.client(framing)
    c.open("example.org")
    assert stream_error(c) == "host-unknown"
    assert c.closed
    c2 = h.client(framing)
    if framing is Framing.TCP:
        c2.send(f"<stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' to='meet.sluice'>")
    else:
        c2.send('<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="meet.sluice"/>')
    assert stream_error(c2) == "unsupported-version"


def test_stanza_before_authentication_is_not_authorized(framing: Framing) -> None:
    h = Harness()
    c = h.client(framing)
    c.open("meet.sluice")
    c.stanza("<message to='x@meet.sluice'><body>hi</body></message>")
    assert stream_error(c) == "not-authorized"
    assert c.closed


def test_stream_close_ends_session_rfc6120_4_4() -> None:
    h = Harness()
    c = h.client(Framing.TCP)
    c.login_anonymous()
    c.send("</stream:stream>")
    assert c.closed
    assert h.core.stats()["sessions"] == 0 and h.core.stats()["connections"] == 0


def test_resource_conflict_new_session_replaces_old() -> None:
    h = Harness()
    old = h.client(Framing.TCP)
    old.login_plain("focus", "focus-pw", resource="focus")
    new = h.client()
    assert new.login_plain("focus", "focus-pw", resource="focus") == "focus@auth.meet.sluice/focus"
    assert stream_error(old) == "conflict"
    assert old.closed and not new.closed
    other = h.client()
    other.login_plain("jvb", "jvb-pw")
    other.stanza("<message to='focus@auth.meet.sluice/focus' id='m'><body>to the new one</body></message>")
    assert new.take_one("message").findtext(f"{{{CLIENT}}}body") == "to the new one"
    assert h.core.stats()["sessions_replaced"] == 1


# ---- STARTTLS


def test_starttls_offered_and_required_when_configured() -> None:
    h = Harness(XmppServerConfig(accounts=ACCOUNTS, tls_cert="/x/cert.pem", tls_key="/x/key.pem"))
    c = h.client(Framing.TCP)
    c.open("auth.meet.sluice")
    features = c.take_one("features")
    assert features.find(f"{{{TLS}}}starttls/{{{TLS}}}required") is not None
    assert mechanisms(features) == []  # no SASL before TLS
    c.send(f"<starttls xmlns='{TLS}'/>")
    assert c.take_one("proceed") is not None
    assert c.starttls
    c.conn.tls_established(h.clock.now)
    c.open("auth.meet.sluice")
    assert "PLAIN" in mechanisms(c.take_one("features"))

    plain = h.client(Framing.TCP)
    plain.open("auth.meet.sluice")
    plain.take()
    plain.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{PLAIN_FOCUS}</auth>")
    assert stream_error(plain) == "policy-violation"


def test_websocket_needs_no_starttls() -> None:
    h = Harness(XmppServerConfig(accounts=ACCOUNTS, tls_cert="/x/cert.pem", tls_key="/x/key.pem"))
    assert h.client(Framing.WEBSOCKET).login_anonymous()


# ---- routing


def test_message_to_full_jid_with_stamped_from(framing: Framing) -> None:
    h = Harness()
    a, b = h.client(framing), h.client(Framing.TCP)
    a_jid, b_jid = a.login_anonymous(), b.login_anonymous()
    a.stanza(f"<message to='{b_jid}' type='chat' id='m1'><body>hello</body></message>")
    msg = b.take_one("message")
    assert msg.get("from") == a_jid
    assert msg.findtext(f"{{{CLIENT}}}body") == "hello"


def test_spoofed_from_is_invalid_from() -> None:
    h = Harness()
    a = h.client()
    a.login_anonymous()
    a.stanza("<message from='focus@auth.meet.sluice/focus' to='x@meet.sluice'><body>x</body></message>")
    assert stream_error(a) == "invalid-from"


def test_iq_to_absent_full_jid_is_service_unavailable_but_errors_are_not_bounced() -> None:
    h = Harness()
    a = h.client()
    a.login_anonymous()
    a.stanza("<iq to='ghost@meet.sluice/r' type='get' id='q1'><query xmlns='urn:x'/></iq>")
    reply = a.take_one("iq")
    assert reply.get("type") == "error" and reply.get("id") == "q1"
    assert error_condition(reply) == "service-unavailable"
    assert reply.get("from") == "ghost@meet.sluice/r"
    # Never answer an error (or a result) with an error.
    a.stanza("<iq to='ghost@meet.sluice/r' type='error' id='q2'><error type='cancel'/></iq>")
    a.stanza("<iq to='ghost@meet.sluice/r' type='result' id='q3'/>")
    a.stanza("<message to='ghost@meet.sluice/r' type='error'><body>x</body></message>")
    assert a.take() == []


def test_message_to_offline_user_bounces_and_presence_is_dropped() -> None:
    h = Harness()
    a = h.client()
    a.login_anonymous()
    a.stanza("<message to='ghost@meet.sluice' type='chat'><body>x</body></message>")
    assert error_condition(a.take_one("message")) == "service-unavailable"
    a.stanza("<presence to='ghost@meet.sluice'/>")
    assert a.take() == []


def test_directed_presence_routes() -> None:
    h = Harness()
    a, b = h.client(), h.client()
    a.login_anonymous()
    b_jid = b.login_anonymous()
    a.stanza(f"<presence to='{b_jid}'><status>hi</status></presence>")
    assert b.take_one("presence").findtext(f"{{{CLIENT}}}status") == "hi"


def test_remote_domains_are_not_federated() -> None:
    h = Harness()
    a = h.client()
    a.login_anonymous()
    a.stanza("<iq to='example.org' type='get' id='r'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(a.take_one("iq")) == "remote-server-not-found"


def test_malformed_iqs_get_bad_request() -> None:
    h = Harness()
    a = h.client()
    a.login_anonymous()
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    a.stanza(f"<iq to='meet.sluice' type='get' id='two'>{ping}{ping}</iq>")
    assert error_condition(a.take_one("iq")) == "bad-request"
    a.stanza("<iq to='meet.sluice' type='fetch' id='t'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(a.take_one("iq")) == "bad-request"
    a.stanza("<presence to='not a jid@@x'/>")
    assert error_condition(a.take_one("presence")) == "jid-malformed"


def test_focus_proxy_routes_to_the_focus_and_its_answer_comes_from_the_proxy() -> None:
    h = Harness()
    client = h.client()
    client_jid = client.login_anonymous()
    conference = "<conference xmlns='http://jitsi.org/protocol/focus' room='r@conference.meet.sluice'/>"
    client.stanza(f"<iq to='focus.meet.sluice' type='set' id='c1'>{conference}</iq>")
    assert error_condition(client.take_one("iq")) == "service-unavailable"  # no focus connected yet

    focus = h.client(Framing.TCP)
    focus.login_plain("focus", "focus-pw", resource="focus")
    client.stanza(f"<iq to='focus.meet.sluice' type='set' id='c2'>{conference}</iq>")
    request = focus.take_one("iq")
    assert request.get("to") == "focus.meet.sluice"
    assert request.get("from") == client_jid
    focus.send(f"<iq to='{client_jid}' type='result' id='c2'/>")
    reply = client.take_one("iq")
    # As Prosody's client_proxy: the answer comes from where the request went (clients check that).
    assert reply.get("from") == "focus.meet.sluice" and reply.get("type") == "result"
    # Only the answer to a forwarded request is rewritten: the focus's own stanzas keep its JID.
    focus.send(f"<iq to='{client_jid}' type='result' id='c2'/>")
    assert client.take_one("iq").get("from") == "focus@auth.meet.sluice/focus"


# ---- server-handled IQs


def test_server_iqs_ping_disco_version_roster(framing: Framing) -> None:
    h = Harness()
    a = h.client(framing)
    jid = a.login_anonymous()
    a.stanza("<iq to='meet.sluice' type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = a.take_one("iq")
    assert pong.get("type") == "result" and pong.get("from") == "meet.sluice" and pong.get("to") == jid

    a.stanza(
        "<iq to='meet.sluice' type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
    info = a.take_one("iq")
    features = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {"urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#info"} <= features
    identity = info.find(".//{http://jabber.org/protocol/disco#info}identity")
    assert identity is not None and identity.get("category") == "server"

    a.stanza(
        "<iq to='meet.sluice' type='get' id='i'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
    )
    items = {i.get("jid") for i in a.take_one("iq").iter("{http://jabber.org/protocol/disco#items}item")}
    assert "conference.meet.sluice" in items

    a.stanza("<iq to='meet.sluice' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>")
    assert a.take_one("iq").findtext(".//{jabber:iq:version}name") == "Sluice"

    a.stanza("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    roster = a.take_one("iq")
    assert roster.get("type") == "result"
    query = roster.find("{jabber:iq:roster}query")
    assert query is not None and len(query) == 0
    a.stanza("<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>")
    assert error_condition(a.take_one("iq")) == "not-allowed"

    a.stanza("<iq to='meet.sluice' type='get' id='u'><vCard xmlns='vcard-temp'/></iq>")
    assert error_condition(a.take_one("iq")) == "service-unavailable"


# ---- limits and bad input


def test_rate_limit_with_fake_clock() -> None:
    limits = XmppLimits(stanza_rate=10.0, stanza_burst=5.0)
    h = Harness(XmppServerConfig(accounts=ACCOUNTS, limits=limits))
    a, b = h.client(), h.client()
    a.login_anonymous()  # bind + session spent 2 tokens
    b_jid = b.login_anonymous()
    for i in range(3):
        a.stanza(f"<message to='{b_jid}' id='ok{i}'><body>{i}</body></message>")
    assert len(b.take()) == 3 and a.take() == []
    a.stanza(f"<message to='{b_jid}' id='over'><body>x</body></message>")
    error = a.take_one("message")
    assert error_condition(error) == "policy-violation"
    assert error.find(f"{{{CLIENT}}}error") is not None
    assert "rate" in (error.findtext(".//{urn:ietf:params:xml:ns:xmpp-stanzas}text") or "")
    assert b.take() == []
    assert h.core.stats()["rate_limited"] == 1
    h.clock.advance(0.25)  # 2.5 tokens back
    a.stanza(f"<message to='{b_jid}' id='later'><body>y</body></message>")
    assert len(b.take()) == 1
    assert not a.closed  # the session stays


def test_accounts_are_not_rate_limited_by_default() -> None:
    limits = XmppLimits(stanza_rate=1.0, stanza_burst=2.0)
    h = Harness(XmppServerConfig(accounts=ACCOUNTS, limits=limits))
    focus = h.client()
    focus.login_plain("focus", "focus-pw", resource="focus")
    for i in range(20):
        focus.stanza(f"<iq to='meet.sluice' type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert [e.get("type") for e in focus.take()] == ["result"] * 20


def test_max_connections_resource_constraint() -> None:
    h = Harness(XmppServerConfig(limits=XmppLimits(max_connections=2)))
    a, b, c = h.client(), h.client(), h.client()
    a.login_anonymous()
    b.login_anonymous()
    c.open("meet.sluice")
    assert stream_error(c) == "resource-constraint"
    assert h.core.stats()["connections_refused"] == 1
    assert not a.closed and not b.closed


def test_unauthenticated_timeout() -> None:
    h = Harness(XmppServerConfig(limits=XmppLimits(unauthenticated_timeout=10.0)))
    idle, bound = h.client(Framing.TCP), h.client()
    idle.open("meet.sluice")
    bound.login_anonymous()
    assert h.core.poll_timeout() == pytest.approx(h.clock.now + 10.0)
    h.tick(9.0)
    assert not idle.closed
    h.tick(1.5)
    assert idle.closed and stream_error(idle) == "connection-timeout"
    assert not bound.closed
    assert h.core.poll_timeout() is None
    assert h.core.stats()["unauthenticated_timeouts"] == 1


def test_malformed_and_oversized_input_close_only_their_stream(framing: Framing) -> None:
    h = Harness(XmppServerConfig(limits=XmppLimits(max_stanza_bytes=1024)))
    a, b = h.client(), h.client()
    a.login_anonymous()
    b_jid = b.login_anonymous()
    bad = h.client(framing)
    bad.login_anonymous()
    bad.send("<message><body>unclosed</bod></message>" if framing is Framing.TCP else "<message><body>")
    assert stream_error(bad) == "not-well-formed" and bad.closed
    big = h.client(framing)
    big.login_anonymous()
    big.stanza(f"<message to='{b_jid}'><body>{'x' * 2000}</body></message>")
    assert stream_error(big) == "policy-violation" and big.closed
    assert b.take() == []  # nothing of the oversized stanza was delivered
    dtd = h.client(Framing.TCP)
    dtd.send("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream>")
    assert stream_error(dtd) == "restricted-xml"
    a.stanza(f"<message to='{b_jid}'><body>still here</body></message>")
    assert b.take_one("message").findtext(f"{{{CLIENT}}}body") == "still here"
    stats = h.core.stats()
    assert stats["malformed_xml"] == 1
    assert stats["stanza_too_large"] == 1
    assert stats["restricted_xml"] == 1
    assert stats["sessions"] == 2


def test_unknown_top_level_element_is_unsupported_stanza_type() -> None:
    h = Harness()
    a = h.client(Framing.TCP)
    a.login_anonymous()
    a.send("<enable xmlns='urn:xmpp:sm:3'/>")
    assert stream_error(a) == "unsupported-stanza-type"


# ---- fuzz: arbitrary stanzas from one session never break the core or other sessions

_ROOM = "room1@conference.meet.sluice"
_targets = st.sampled_from(
    [
        None,
        _ROOM,
        f"{_ROOM}/focus",
        f"{_ROOM}/obs",
        f"{_ROOM}/fuzz",
        f"{_ROOM}/other",
        "other@conference.meet.sluice/x",
        "conference.meet.sluice",
        "jvbbrewery@internal.auth.meet.sluice/j",
        "meet.sluice",
        "auth.meet.sluice",
        "focus.meet.sluice",
        "focus@auth.meet.sluice",
        "focus@auth.meet.sluice/focus",
        "ghost@meet.sluice/r",
        "x@example.org",
        "@@bad",
        "",
    ]
)
_types = st.sampled_from(
    [None, "get", "set", "result", "error", "groupchat", "chat", "unavailable", "subscribe", "bogus"]
)
_payloads = st.sampled_from(
    [
        "",
        "<x xmlns='http://jabber.org/protocol/muc'><password>p</password></x>",
        "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner'/></x>",
        "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query>",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='muc#roomconfig_whois'><value>anyone</value></field></x></query>",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='owner' jid='a@b'/></query>",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item role='none' nick='focus'/></query>",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member'/></query>",
        "<query xmlns='http://jabber.org/protocol/muc#admin'/>",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        "<ping xmlns='urn:xmpp:ping'/>",
        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind>",
        "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>",
        "<query xmlns='jabber:iq:roster'/>",
        "<body>hi</body>",
        "<subject>s</subject>",
        "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
        "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate'/>",
    ]
)


@st.composite
def fuzz_stanzas(draw: st.DrawFn) -> str:
    tag = draw(st.sampled_from(["iq", "message", "presence"]))
    attrs = ""
    to = draw(_targets)
    if to is not None:
        attrs += f" to='{to}'"
    kind = draw(_types)
    if kind is not None:
        attrs += f" type='{kind}'"
    if draw(st.booleans()):
        attrs += " id='f1'"
    body = "".join(draw(st.lists(_payloads, max_size=3)))
    return f"<{tag}{attrs}>{body}</{tag}>"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fuzz_stanzas(), min_size=1, max_size=12))
def test_fuzzed_stanzas_never_break_the_core(batch: list[str]) -> None:
    h = Harness()
    focus = h.client(Framing.TCP)
    focus.login_plain("focus", "focus-pw", resource="focus")
    focus.join(_ROOM, "focus")
    observer = h.client()
    observer.login_anonymous()
    observer.join(_ROOM, "obs")
    fuzz = h.client()
    fuzz.login_anonymous()
    fuzz.join(_ROOM, "fuzz")
    for stanza in batch:
        fuzz.stanza(stanza)  # must not raise
    h.core.stats()
    focus.take()
    observer.take()
    focus.send(f"<message to='{_ROOM}' type='groupchat'><body>still fine</body></message>")
    bodies = [m.findtext(f"{{{CLIENT}}}body") for m in observer.take() if m.tag.endswith("message")]
    assert "still fine" in bodies
