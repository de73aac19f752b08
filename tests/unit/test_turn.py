"""TURN credentials (TURN REST scheme), the service list, XEP-0215 in the embedded XMPP server, and the
`[signaling.turn]` table. Sans-IO, with a fake monotonic clock and a fixed wall clock."""

from __future__ import annotations

import tomllib
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from signaling.settings import SignalingSettingsError, signaling_settings
from signaling.turn import (
    ManagedTurn,
    TurnConfig,
    TurnConfigError,
    rest_credentials,
    services,
    turn_user,
    xep0082,
)
from signaling.xmpp import XmppLimits
from signaling.xmpp.extdisco import NS_EXTDISCO, ExtDiscoError, answer
from sluice.coturn import bridge_peers, coturn_config
from tests.helpers.xmppd import CLIENT, Harness, SansIoClient, error_condition

SECRET = "north-wind-and-the-sun-secret"
NEW_YEAR = 1767225600  # 2026-01-01T00:00:00Z
DOMAIN = "meet.sluice"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def config(**changes: object) -> TurnConfig:
    base = TurnConfig(secret=SECRET, hosts=("turn.meet.example",))
    return replace(base, **changes)  # type: ignore[arg-type]


# ---- credentials


def test_credentials_match_an_independently_computed_vector() -> None:
    # printf '%s' '1767225600:alice' |
    #   openssl dgst -sha1 -hmac 'north-wind-and-the-sun-secret' -binary | base64
    assert rest_credentials(SECRET, "alice", NEW_YEAR) == ("1767225600:alice", "jApcdkTLBpU5RIdDqXZj1ZBwqnc=")


def test_credentials_differ_by_user_expiry_and_secret() -> None:
    base = rest_credentials(SECRET, "alice", NEW_YEAR)[1]
    assert rest_credentials(SECRET, "bob", NEW_YEAR)[1] != base
    assert rest_credentials(SECRET, "alice", NEW_YEAR + 1)[1] != base
    assert rest_credentials(SECRET + "x", "alice", NEW_YEAR)[1] != base


@pytest.mark.parametrize("user", ["", "a:b", "a b", "x" * 65, "é"])
def test_a_user_that_would_confuse_coturn_is_refused(user: str) -> None:
    with pytest.raises(ValueError, match="bad TURN user"):
        rest_credentials(SECRET, user, NEW_YEAR)


def test_turn_user_keeps_plain_names_and_digests_the_rest() -> None:
    assert turn_user("0a1b2c3d4e5f6a7b") == "0a1b2c3d4e5f6a7b"
    odd = turn_user("name:with:colons")
    assert len(odd) == 16 and ":" not in odd
    assert turn_user("x" * 200) != turn_user("x" * 201)


# ---- the service list


def test_services_expire_ttl_after_now_and_only_turn_is_restricted() -> None:
    got = services(config(ttl=3600, turns=True), "alice", NEW_YEAR + 0.7)
    assert [(s.type, s.transport, s.port) for s in got] == [
        ("stun", "udp", 3478),
        ("turn", "udp", 3478),
        ("turn", "tcp", 3478),
        ("turns", "tcp", 5349),
    ]
    stun, *relays = got
    assert not stun.restricted and stun.username is None and stun.expires is None
    expiry = NEW_YEAR + 3600
    for s in relays:
        assert s.restricted and s.expires == expiry
        assert (s.username, s.password) == rest_credentials(SECRET, "alice", expiry)
    assert xep0082(expiry) == "2026-01-01T01:00:00Z"


def test_services_per_host_and_without_stun() -> None:
    got = services(config(hosts=("192.0.2.10", "turn.example"), stun=False), "u", NEW_YEAR)
    assert [(s.host, s.type, s.transport) for s in got] == [
        ("192.0.2.10", "turn", "udp"),
        ("192.0.2.10", "turn", "tcp"),
        ("turn.example", "turn", "udp"),
        ("turn.example", "turn", "tcp"),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"secret": "short"}, "at least 16"),
        ({"hosts": ()}, "at least one host"),
        ({"hosts": ("bad host",)}, "bad TURN host"),
        ({"hosts": ("a..b",)}, "bad TURN host"),
        ({"port": 0}, "bad TURN port"),
        ({"tls_port": 70000}, "bad TURN tls-port"),
        ({"ttl": 10}, "bad TURN ttl"),
        ({"ttl": 30 * 86400}, "bad TURN ttl"),
    ],
)
def test_a_config_that_cannot_work_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(TurnConfigError, match=message):
        config(**changes)


# ---- XEP-0215 answers (pure)


def q(xml: str) -> ET.Element:
    return ET.fromstring(xml.replace("<services", f"<services xmlns='{NS_EXTDISCO}'").replace(
        "<credentials", f"<credentials xmlns='{NS_EXTDISCO}'"
    ))  # fmt: skip


def test_services_query_lists_everything_or_one_type() -> None:
    listed = services(config(turns=True), "alice", NEW_YEAR)
    whole = answer(q("<services/>"), listed)
    assert whole.tag == f"{{{NS_EXTDISCO}}}services" and len(whole) == 4
    turn_udp = whole[1].attrib
    username, password = rest_credentials(SECRET, "alice", NEW_YEAR + 86400)
    assert turn_udp == {
        "type": "turn", "host": "turn.meet.example", "port": "3478", "transport": "udp",
        "username": username, "password": password, "expires": "2026-01-02T00:00:00Z", "restricted": "1",
    }  # fmt: skip
    assert whole[0].attrib == {
        "type": "stun",
        "host": "turn.meet.example",
        "port": "3478",
        "transport": "udp",
    }
    only = answer(q("<services type='turns'/>"), listed)
    assert [(s.get("type"), s.get("port")) for s in only] == [("turns", "5349")]
    with pytest.raises(ExtDiscoError, match="unknown service type"):
        answer(q("<services type='ftp'/>"), listed)


def test_credentials_query_answers_the_named_restricted_services() -> None:
    listed = services(config(), "alice", NEW_YEAR)
    S = f"{{{NS_EXTDISCO}}}service"
    got = answer(q("<credentials><service type='turn' host='turn.meet.example'/></credentials>"), listed)
    assert [(s.tag, s.get("transport")) for s in got] == [(S, "udp"), (S, "tcp")]
    assert all(s.get("password") for s in got)
    by_port = answer(
        q("<credentials><service type='turn' host='turn.meet.example' port='3478'/></credentials>"), listed
    )
    assert len(by_port) == 2
    for miss in (
        "<service type='turn' host='other.example'/>",
        "<service type='stun' host='turn.meet.example'/>",
        "<service type='turn' host='turn.meet.example' port='3479'/>",
    ):
        assert len(answer(q(f"<credentials>{miss}</credentials>"), listed)) == 0


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<service host='turn.meet.example'/>",
        "<service type='turn'/>",
        "<service type='turn' host='h' port='0'/>",
        "<service type='turn' host='h' port='x'/>",
        "<service type='turn' host='h'/>" * 17,
    ],
)
def test_a_bad_credentials_query_is_a_bad_request(body: str) -> None:
    with pytest.raises(ExtDiscoError) as info:
        answer(q(f"<credentials>{body}</credentials>"), services(config(), "u", NEW_YEAR))
    assert info.value.condition == "bad-request"


# ---- the embedded XMPP server


def harness(turn: TurnConfig | None, **limits: int) -> Harness:
    h = Harness()
    h = Harness(replace(h.config, turn=turn, limits=replace(XmppLimits(), **limits)))  # type: ignore[arg-type]
    h.core.wall_clock = lambda: float(NEW_YEAR)
    return h


def ask(c: SansIoClient, payload: str, iq_id: str = "x1", to: str = DOMAIN) -> ET.Element:
    c.stanza(f"<iq to='{to}' type='get' id='{iq_id}'>{payload}</iq>")
    return c.take_one("iq")


def test_an_anonymous_session_gets_stun_and_turn_with_fresh_credentials() -> None:
    h = harness(config())
    c = h.client()
    jid = c.login_anonymous()
    reply = ask(c, f"<services xmlns='{NS_EXTDISCO}'/>")
    assert reply.get("type") == "result" and reply.get("from") == DOMAIN and reply.get("to") == jid
    listed = reply.find(f"{{{NS_EXTDISCO}}}services")
    assert listed is not None
    turn_udp = next(s for s in listed if s.get("type") == "turn" and s.get("transport") == "udp")
    user = jid.split("@", 1)[0]
    expiry = NEW_YEAR + 86400
    assert (turn_udp.get("username"), turn_udp.get("password")) == rest_credentials(SECRET, user, expiry)
    assert h.core.counters["turn_credentials_issued"] == 1
    # The server says it answers XEP-0215.
    info = ask(c, f"<query xmlns='{DISCO_INFO}'/>", "d1")
    features = {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    assert NS_EXTDISCO in features


def test_an_account_session_asks_its_own_domain_too() -> None:
    h = harness(config())
    c = h.client()
    c.login_plain("alice", "alice-pw")
    reply = ask(c, f"<credentials xmlns='{NS_EXTDISCO}'><service type='turn' host='turn.meet.example'/>"
                   "</credentials>", to=f"auth.{DOMAIN}")  # fmt: skip
    got = reply.find(f"{{{NS_EXTDISCO}}}credentials")
    assert got is not None and len(got) == 2
    assert all(s.get("username", "").endswith(":alice") for s in got)


def test_without_turn_configured_the_query_is_service_unavailable() -> None:
    h = harness(None)
    c = h.client()
    c.login_anonymous()
    reply = ask(c, f"<services xmlns='{NS_EXTDISCO}'/>")
    assert reply.get("type") == "error" and error_condition(reply) == "service-unavailable"
    info = ask(c, f"<query xmlns='{DISCO_INFO}'/>", "d1")
    assert NS_EXTDISCO not in {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    assert h.core.counters["turn_credentials_issued"] == 0


def test_credential_requests_are_rate_limited_per_session_and_counted() -> None:
    h = harness(config(), external_service_requests_per_minute=3)
    a, b = h.client(), h.client()
    a.login_anonymous()
    b.login_anonymous()
    for i in range(3):
        assert ask(a, f"<services xmlns='{NS_EXTDISCO}'/>", f"a{i}").get("type") == "result"
    refused = ask(a, f"<services xmlns='{NS_EXTDISCO}'/>", "a3")
    assert refused.get("type") == "error" and error_condition(refused) == "resource-constraint"
    err = refused.find(f"{{{CLIENT}}}error")
    assert err is not None and err.get("type") == "wait"
    assert h.core.counters["extdisco_rate_limited"] == 1
    assert h.core.counters["turn_credentials_issued"] == 3
    # Another session is not affected; the first may ask again a minute later.
    assert ask(b, f"<services xmlns='{NS_EXTDISCO}'/>", "b0").get("type") == "result"
    h.tick(60.5)
    assert ask(a, f"<services xmlns='{NS_EXTDISCO}'/>", "a4").get("type") == "result"


def test_zero_requests_a_minute_refuses_every_query() -> None:
    h = harness(config(), external_service_requests_per_minute=0)
    c = h.client()
    c.login_anonymous()
    assert error_condition(ask(c, f"<services xmlns='{NS_EXTDISCO}'/>")) == "resource-constraint"
    assert h.core.counters["extdisco_rate_limited"] == 1


def test_a_bad_query_is_answered_bad_request_and_counted() -> None:
    h = harness(config())
    c = h.client()
    c.login_anonymous()
    reply = ask(c, f"<credentials xmlns='{NS_EXTDISCO}'><service type='turn'/></credentials>")
    assert error_condition(reply) == "bad-request"
    assert h.core.counters["extdisco_bad_requests"] == 1
    # A set is not a query: the server answers it like any IQ it does not serve.
    c.stanza(f"<iq to='{DOMAIN}' type='set' id='s1'><services xmlns='{NS_EXTDISCO}'/></iq>")
    assert error_condition(c.take_one("iq")) == "service-unavailable"


# ---- [signaling.turn]


def parse(text: str) -> object:
    return signaling_settings(tomllib.loads(text)).turn


def test_turn_table_for_an_operators_coturn(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    turn = signaling_settings(tomllib.loads(
        f"[signaling.turn]\nsecret-file = '{secret}'\nhosts = ['turn.meet.example']\n"
        "ttl = 3600\nturns = true\n"
    )).turn  # fmt: skip
    assert turn is not None and turn.managed is None
    cfg = turn.turn_config()
    assert (cfg.secret, cfg.hosts, cfg.port, cfg.tls_port, cfg.turns, cfg.ttl) == (
        SECRET, ("turn.meet.example",), 3478, 5349, True, 3600.0,
    )  # fmt: skip


def test_managed_turn_needs_no_secret_and_defaults_listen_to_address_hosts() -> None:
    turn = signaling_settings(tomllib.loads(
        "[signaling.turn]\nmanaged = true\nhosts = ['192.0.2.7', 'turn.example']\nmin-port = 40000\n"
        "max-port = 40100\nallowed-peers = ['198.51.100.0/24']\n"
    )).turn  # fmt: skip
    assert turn is not None and turn.managed is not None
    assert len(turn.secret) >= 32
    assert turn.managed.listen == ("192.0.2.7",)
    assert (turn.managed.min_port, turn.managed.max_port) == (40000, 40100)
    assert turn.managed.allowed_peers == ("198.51.100.0/24",)
    # Managed without hosts: `sluice serve` fills them from the bridge's addresses.
    bare = signaling_settings(tomllib.loads("[signaling.turn]\nmanaged = true\n")).turn
    assert bare is not None and bare.hosts == () and bare.turn_config(("10.0.0.1",)).hosts == ("10.0.0.1",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'red'", "unknown key signaling.turn.colour"),
        ("hosts = ['h']", "secret or secret-file is needed"),
        (f"secret = '{SECRET}'", "hosts is needed"),
        (f"secret = '{SECRET}'\nhosts = []", "bad value for signaling.turn.hosts"),
        (f"secret = '{SECRET}'\nhosts = ['h']\nport = 0", "a port is 1..65535"),
        (f"secret = '{SECRET}'\nhosts = ['h']\nttl = 5", "bad TURN ttl"),
        (f"secret = '{SECRET}'\nhosts = ['h']\nmin-port = 40000", "min-port applies only with managed"),
        ("secret = 'short'\nhosts = ['h']", "at least 16"),
        (f"secret = '{SECRET}'\nsecret-file = '/x'\nhosts = ['h']", "not both"),
        ("secret-file = '/nonexistent/turn-secret'\nhosts = ['h']", "secret-file"),
        ("managed = true\nturns = true", "needs tls-cert and tls-key"),
        ("managed = true\nallowed-peers = ['everything']", "bad TURN peer"),
        ("managed = true\nlisten = ['turn.example']", "bad TURN listen address"),
        ("managed = true\nmin-port = 50000\nmax-port = 40000", "bad TURN relay ports"),
        ("managed = 'yes'", "bad value for signaling.turn.managed"),
    ],
)
def test_turn_table_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(SignalingSettingsError, match=message):
        parse(f"[signaling.turn]\n{text}\n")


# ---- the managed coturn's configuration (sluice/coturn.py), pure


def test_the_bridge_peers_leave_out_the_wildcard_and_loopback_when_there_is_more() -> None:
    assert bridge_peers(("0.0.0.0", "192.0.2.5", "127.0.0.1", "192.0.2.5", "meet.example")) == ("192.0.2.5",)
    assert bridge_peers(("127.0.0.1", "0.0.0.0")) == ("127.0.0.1",)
    assert bridge_peers(("::",)) == ()


def test_the_coturn_configuration_relays_only_to_the_bridge_and_allowed_peers(tmp_path: Path) -> None:
    turn = config(hosts=("192.0.2.5",))
    managed = ManagedTurn(listen=("192.0.2.5",), allowed_peers=("198.51.100.0/30", "203.0.113.9"))
    lines = coturn_config(turn, managed, realm="meet.example", peers=("192.0.2.5",), directory=tmp_path)
    conf = lines.splitlines()
    assert conf.index("denied-peer-ip=0.0.0.0-255.255.255.255") < conf.index("allowed-peer-ip=192.0.2.5")
    assert [c for c in conf if c.startswith("allowed-peer-ip")] == [
        "allowed-peer-ip=192.0.2.5",
        "allowed-peer-ip=198.51.100.0-198.51.100.3",
        "allowed-peer-ip=203.0.113.9",
    ]
    assert "allow-loopback-peers" not in conf and "no-tls" in conf and "no-tcp-relay" in conf
    assert f"static-auth-secret={SECRET}" in conf and "realm=meet.example" in conf
    assert {"listening-ip=192.0.2.5", "relay-ip=192.0.2.5", "listening-port=3478"} <= set(conf)
    on_loopback = coturn_config(turn, managed, realm="r", peers=("127.0.0.1",), directory=tmp_path)
    assert "allow-loopback-peers" in on_loopback.splitlines()
    tls = ManagedTurn(listen=("192.0.2.5",), tls_cert="/c.pem", tls_key="/k.pem")
    with_tls = coturn_config(
        replace(turn, turns=True), tls, realm="r", peers=("192.0.2.5",), directory=tmp_path
    )
    assert {"tls-listening-port=5349", "cert=/c.pem", "pkey=/k.pem"} <= set(with_tls.splitlines())
    assert "no-tls" not in with_tls.splitlines()
    with pytest.raises(TurnConfigError, match="listen"):
        coturn_config(turn, ManagedTurn(), realm="r", peers=("192.0.2.5",), directory=tmp_path)
    with pytest.raises(TurnConfigError, match="relay to"):
        coturn_config(turn, ManagedTurn(listen=("192.0.2.5",)), realm="r", peers=(), directory=tmp_path)
