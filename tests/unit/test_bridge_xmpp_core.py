"""The bridge's XMPP decisions, sans-IO with a fake clock: presence and its stats, joins, occupants' real
JIDs, who may drive the bridge, and which answer each IQ gets (docs/jitsi-protocol.md 1.3-1.4)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bridge.load import LoadSample
from bridge.xmpp_core import (
    NS_COLIBRI,
    NS_COLIBRI2,
    NS_DISCO_INFO,
    NS_HEALTHCHECK,
    NS_MUC,
    NS_MUC_USER,
    NS_PING,
    NS_STANZAS,
    NS_VERSION,
    BridgeState,
    BridgeXmppCore,
    RunColibri2,
    RunHealthCheck,
    XmppClientConfig,
)

CLIENT = "jabber:client"
DOMAIN = "auth.meet.test"
BREWERY = "JvbBrewery@internal.auth.meet.test"  # as configured; the server writes it in lower case
OTHER_BREWERY = "second@internal.auth.meet.test"
NICK = "jvb-1"
FOCUS = f"focus@{DOMAIN}/focus"
#: Where the focus sits in the brewery (lower case, as the MUC writes the room).
FOCUS_OCCUPANT = f"{BREWERY.lower()}/focus"
#: A fixed wall clock, in seconds.
NOW = 1_700_000_000.25
LOAD = LoadSample(
    packet_rate_download=1200.4,
    packet_rate_upload=2400.6,
    bit_rate_download=800.0,
    bit_rate_upload=1600.0,
    stress_level=0.0725,
)


def make_core(**config: object) -> BridgeXmppCore:
    settings: dict[str, object] = {
        "hostname": "127.0.0.1",
        "domain": DOMAIN,
        "username": "jvb",
        "password": "secret",
        "muc_jids": [BREWERY, OTHER_BREWERY],
        "muc_nickname": NICK,
        "version": "9.9.9",
        "region": "eu-test",
    }
    settings.update(config)
    return BridgeXmppCore(XmppClientConfig(**settings), BridgeState())  # type: ignore[arg-type]


def drain(core: BridgeXmppCore) -> list[ET.Element]:
    out = []
    while (el := core.poll_transmit()) is not None:
        out.append(el)
    return out


def stats_of(presence: ET.Element) -> dict[str, str]:
    stats = presence.find(f"{{{NS_COLIBRI}}}stats")
    assert stats is not None, ET.tostring(presence)
    return {s.get("name", ""): s.get("value", "") for s in stats}


def presence(
    sender: str, ptype: str | None = None, *, real: str | None = None, codes: tuple[str, ...] = ()
) -> ET.Element:
    el = ET.Element(f"{{{CLIENT}}}presence", {"from": sender})
    if ptype is not None:
        el.set("type", ptype)
    x = ET.SubElement(el, f"{{{NS_MUC_USER}}}x")
    item = ET.SubElement(x, f"{{{NS_MUC_USER}}}item", {"affiliation": "none", "role": "participant"})
    if real is not None:
        item.set("jid", real)
    for code in codes:
        ET.SubElement(x, f"{{{NS_MUC_USER}}}status", {"code": code})
    return el


def self_presence(room: str = BREWERY, ptype: str | None = None) -> ET.Element:
    return presence(f"{room.lower()}/{NICK}", ptype, real=f"jvb@{DOMAIN}/r", codes=("110",))


def iq(
    payload: ET.Element | None, *, sender: str = FOCUS_OCCUPANT, iq_type: str = "get", iq_id: str = "q1"
) -> ET.Element:
    el = ET.Element(
        f"{{{CLIENT}}}iq", {"type": iq_type, "id": iq_id, "from": sender, "to": f"jvb@{DOMAIN}/r"}
    )
    if payload is not None:
        el.append(payload)
    return el


def with_focus(core: BridgeXmppCore) -> BridgeXmppCore:
    """The focus is in the brewery and its real JID shows."""
    core.handle_presence(NOW, presence(FOCUS_OCCUPANT, real=FOCUS))
    return core


def single(out: list[ET.Element]) -> ET.Element:
    assert len(out) == 1, [ET.tostring(e) for e in out]
    return out[0]


def error_of(reply: ET.Element) -> tuple[str, str | None]:
    """(defined condition, text) of an IQ error reply."""
    assert reply.get("type") == "error", ET.tostring(reply)
    err = reply.find(f"{{{CLIENT}}}error")
    assert err is not None
    condition = next(c.tag.rpartition("}")[2] for c in err if c.tag != f"{{{NS_STANZAS}}}text")
    return condition, err.findtext(f"{{{NS_STANZAS}}}text")


# ---- presence and its stats (1.3)


def test_join_presence_goes_to_every_brewery_with_the_stats() -> None:
    core = make_core()
    core.state.drain = True
    core.publish(NOW, LOAD, conferences=2, endpoints=5, join=True)
    out = drain(core)
    assert [p.get("to") for p in out] == [f"{BREWERY}/{NICK}", f"{OTHER_BREWERY}/{NICK}"]
    for pres in out:
        assert pres.tag == f"{{{CLIENT}}}presence" and pres.get("type") is None
        assert pres.find(f"{{{NS_MUC}}}x") is not None, "a join carries <x xmlns=muc>"
    stats = stats_of(out[0])
    assert list(stats)[:3] == ["stress_level", "average_participant_stress", "healthy"], "section 1.3 order"
    assert stats["stress_level"] == "0.0725" and stats["healthy"] == "true" and stats["drain"] == "true"
    assert stats["version"] == "9.9.9" and stats["region"] == "eu-test" and "release" not in stats
    assert stats["conferences"] == "2" and stats["endpoints"] == "5" and stats["local_endpoints"] == "5"
    assert stats["packet_rate_download"] == "1200" and stats["packet_rate_upload"] == "2401"
    assert stats["current_timestamp"] == "1700000000250", "the timestamp is the `now` passed in, in ms"


def test_updates_rejoin_only_the_rooms_not_joined_and_the_timestamp_follows_the_clock() -> None:
    core = make_core()
    assert core.handle_presence(NOW, self_presence(BREWERY))
    core.publish(NOW + 5, LOAD, conferences=0, endpoints=0, join=False)
    joined, not_joined = drain(core)
    assert joined.find(f"{{{NS_MUC}}}x") is None, "a plain update to a room we are in"
    assert not_joined.find(f"{{{NS_MUC}}}x") is not None, "a fresh join attempt for the other"
    assert stats_of(joined)["current_timestamp"] == "1700000005250"


def test_the_health_verdict_shows_in_the_next_presence() -> None:
    core = with_focus(make_core())
    work = core.handle_iq(NOW, iq(ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck")))
    assert isinstance(work, RunHealthCheck) and not drain(core), "answered once the check has run"
    core.handle_health_result(work, "shard 0 is stuck")
    assert error_of(single(drain(core))) == ("internal-server-error", "health check failed: shard 0 is stuck")
    assert core.healthy is False
    core.publish(NOW, LOAD, conferences=0, endpoints=0, join=False)
    assert {stats_of(p)["healthy"] for p in drain(core)} == {"false"}
    core.handle_health_result(work, None)
    reply = single(drain(core))
    assert reply.get("type") == "result" and len(reply) == 0
    assert core.healthy is True


# ---- joins


def test_self_presence_with_status_110_is_a_join_counted_once_and_unavailable_leaves() -> None:
    core = make_core()
    assert core.handle_presence(NOW, self_presence(BREWERY)), "the server writes the room in lower case"
    assert core.joined == {BREWERY}, "joined holds the room as configured"
    assert not core.handle_presence(NOW, self_presence(BREWERY)), "no change the second time"
    assert core.handle_presence(NOW, self_presence(BREWERY, "unavailable"))
    assert core.joined == set()
    assert not core.handle_presence(NOW, self_presence(BREWERY, "unavailable"))


def test_presence_without_110_an_error_or_from_elsewhere_is_no_join() -> None:
    core = make_core()
    assert not core.handle_presence(NOW, presence(f"{BREWERY.lower()}/{NICK}", real=f"jvb@{DOMAIN}/r"))
    error = self_presence(BREWERY, "error")
    ET.SubElement(ET.SubElement(error, f"{{{CLIENT}}}error", {"type": "cancel"}), f"{{{NS_STANZAS}}}conflict")
    assert not core.handle_presence(NOW, error)
    assert not core.handle_presence(NOW, self_presence("elsewhere@internal.auth.meet.test"))
    assert core.joined == set()


def test_reset_forgets_joins_and_occupants() -> None:
    core = with_focus(make_core())
    core.handle_presence(NOW, self_presence(BREWERY))
    assert core.reset() and core.joined == set()
    assert not core.reset(), "nothing left to forget"
    assert core.sender_real_jid(FOCUS_OCCUPANT) is None


def test_leave_sends_unavailable_to_the_rooms_joined_only() -> None:
    core = make_core()
    core.handle_presence(NOW, self_presence(OTHER_BREWERY))
    core.leave()
    pres = single(drain(core))
    assert pres.get("to") == f"{OTHER_BREWERY}/{NICK}" and pres.get("type") == "unavailable"


# ---- occupants and who may drive the bridge


def test_occupants_real_jids_are_tracked_until_they_leave() -> None:
    core = with_focus(make_core())
    assert core.sender_real_jid(FOCUS_OCCUPANT) == FOCUS
    assert core.sender_real_jid(FOCUS_OCCUPANT.upper().replace("/FOCUS", "/focus")) == FOCUS, "room case"
    assert core.sender_real_jid(f"{BREWERY.lower()}/nobody") is None
    assert core.sender_real_jid(FOCUS) == FOCUS, "outside the breweries a sender is its own account"
    core.handle_presence(NOW, presence(FOCUS_OCCUPANT, "unavailable", real=FOCUS))
    assert core.sender_real_jid(FOCUS_OCCUPANT) is None
    core.handle_presence(NOW, presence(FOCUS_OCCUPANT, real=FOCUS))
    core.handle_presence(NOW, presence(FOCUS_OCCUPANT))  # the room stopped showing its real JID
    assert core.sender_real_jid(FOCUS_OCCUPANT) is None


@pytest.mark.parametrize(
    ("sender", "occupant_real", "authorized"),
    [
        (FOCUS_OCCUPANT, FOCUS, True),
        (FOCUS_OCCUPANT, None, False),  # the MUC hides its real JID: refused
        (FOCUS_OCCUPANT, f"visitor@meet.test/{NICK}", False),
        (f"{BREWERY.lower()}/focus2", FOCUS, False),  # nobody with that nickname
        (FOCUS, None, True),  # directly from the focus account, any resource
        (f"FOCUS@{DOMAIN.upper()}/other", None, True),
        (f"focus@{DOMAIN}.evil.example/x", None, False),
        (f"jvb@{DOMAIN}/r", None, False),
        ("", None, False),
    ],
)
def test_only_the_focus_account_is_an_authorized_source(
    sender: str, occupant_real: str | None, authorized: bool
) -> None:
    core = make_core()
    core.handle_presence(NOW, presence(FOCUS_OCCUPANT, real=occupant_real))
    assert core.is_authorized(sender) is authorized
    work = core.handle_iq(NOW, iq(ET.Element(f"{{{NS_VERSION}}}query"), sender=sender))
    assert work is None
    reply = single(drain(core))
    if authorized:
        assert reply.get("type") == "result" and core.state.xmpp_iqs_refused == 0
    else:
        assert error_of(reply) == ("forbidden", "Not an authorized source")
        assert core.state.xmpp_iqs_refused == 1


def test_a_custom_pattern_decides_who_is_authorized() -> None:
    core = make_core(authorized_source_regexp=r"jicofo@auth\.meet\.test/.*")
    assert core.is_authorized("jicofo@auth.meet.test/abc")
    assert not core.is_authorized(FOCUS)


def test_refused_requests_never_reach_the_colibri2_handler() -> None:
    core = make_core()
    request = iq(
        ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": "m"}), sender="x@meet.test/y"
    )
    assert core.handle_iq(NOW, request) is None
    assert error_of(single(drain(core)))[0] == "forbidden"


# ---- which answer each IQ gets (1.4)


def test_anyone_may_ping_and_replies_go_back_to_the_sender_with_its_id() -> None:
    core = make_core()
    request = iq(ET.Element(f"{{{NS_PING}}}ping"), sender="stranger@meet.test/r", iq_id="p-7")
    assert core.handle_iq(NOW, request) is None
    reply = single(drain(core))
    assert reply.tag == f"{{{CLIENT}}}iq" and reply.get("type") == "result" and len(reply) == 0
    assert (
        reply.get("to") == "stranger@meet.test/r" and reply.get("id") == "p-7" and reply.get("from") is None
    )
    assert core.state.xmpp_iqs_refused == 0


def test_replies_roster_pushes_and_messages_of_other_types_are_left_alone() -> None:
    core = make_core()
    for iq_type in ("result", "error"):
        assert core.handle_iq(NOW, iq(None, iq_type=iq_type)) is None
    roster = ET.Element("{jabber:iq:roster}query")
    assert core.handle_iq(NOW, iq(roster, sender="", iq_type="set")) is None
    assert drain(core) == [] and core.state.xmpp_iqs_refused == 0


def test_conference_modify_goes_to_the_colibri2_handler_and_its_answer_back() -> None:
    core = with_focus(make_core())
    payload = ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": "m1", "create": "true"})
    for iq_type in ("get", "set"):  # Jicofo sends get; either is taken
        request = iq(payload, iq_type=iq_type, iq_id=f"c-{iq_type}")
        work = core.handle_iq(NOW, request)
        assert isinstance(work, RunColibri2) and work.payload is payload and work.iq is request
        assert drain(core) == []
        core.handle_colibri2_answer(
            work, ET.Element(f"{{{NS_COLIBRI2}}}conference-modified", {"meeting-id": "m1"})
        )
        reply = single(drain(core))
        assert reply.get("type") == "result" and reply.get("id") == f"c-{iq_type}"
        assert reply.get("to") == FOCUS_OCCUPANT
        assert reply[0].tag == f"{{{NS_COLIBRI2}}}conference-modified"


@pytest.mark.parametrize("tag", [f"{{{CLIENT}}}error", "error"])
def test_an_error_from_the_colibri2_handler_makes_an_error_reply(tag: str) -> None:
    core = with_focus(make_core())
    work = core.handle_iq(NOW, iq(ET.Element(f"{{{NS_COLIBRI2}}}conference-modify")))
    assert isinstance(work, RunColibri2)
    error = ET.Element(tag, {"type": "cancel"})
    ET.SubElement(error, f"{{{NS_STANZAS}}}item-not-found")
    ET.SubElement(error, f"{{{NS_COLIBRI2}}}error", {"reason": "conference_not_found"})
    core.handle_colibri2_answer(work, error)
    reply = single(drain(core))
    assert error_of(reply) == ("item-not-found", None)
    colibri_error = reply.find(f"{{{CLIENT}}}error/{{{NS_COLIBRI2}}}error")
    assert colibri_error is not None and colibri_error.get("reason") == "conference_not_found"


def test_work_that_raised_is_an_internal_server_error() -> None:
    core = with_focus(make_core())
    work = core.handle_iq(NOW, iq(ET.Element(f"{{{NS_COLIBRI2}}}conference-modify")))
    assert work is not None
    core.handle_failure(work, "RuntimeError")
    assert error_of(single(drain(core))) == ("internal-server-error", "RuntimeError")


def test_version_and_disco_are_answered_at_once() -> None:
    core = with_focus(make_core())
    assert core.handle_iq(NOW, iq(ET.Element(f"{{{NS_VERSION}}}query"))) is None
    version = single(drain(core))[0]
    assert version.findtext(f"{{{NS_VERSION}}}name") == "Sluice"
    assert version.findtext(f"{{{NS_VERSION}}}version") == "9.9.9"
    assert version.findtext(f"{{{NS_VERSION}}}os")
    assert core.handle_iq(NOW, iq(ET.Element(f"{{{NS_DISCO_INFO}}}query"))) is None
    disco = single(drain(core))[0]
    identity = disco.find(f"{{{NS_DISCO_INFO}}}identity")
    assert identity is not None and identity.get("type") == "bridge"
    features = {f.get("var") for f in disco.iterfind(f"{{{NS_DISCO_INFO}}}feature")}
    assert {NS_HEALTHCHECK, NS_VERSION, "urn:xmpp:jingle:transports:ice-udp:1"} <= features


@pytest.mark.parametrize(
    "payload",
    [
        ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck"),  # a set: health checks are gets
        ET.Element(f"{{{NS_VERSION}}}query"),
        ET.Element("{urn:example:unknown}thing"),
        None,
    ],
)
def test_anything_else_from_the_focus_is_service_unavailable(payload: ET.Element | None) -> None:
    core = with_focus(make_core())
    assert core.handle_iq(NOW, iq(payload, iq_type="set")) is None
    assert error_of(single(drain(core))) == ("service-unavailable", "Unsupported IQ request")
