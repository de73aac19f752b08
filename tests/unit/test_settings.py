"""bridge.settings: TOML with jvb.conf names, defaults, environment overrides, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.settings import (
    ENVIRONMENT,
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    parse_settings,
)

REPO = Path(__file__).resolve().parents[2]

XMPP = """
[videobridge.apis.xmpp-client.configs.shard]
hostname = "prosody.internal"
domain = "auth.meet.example"
username = "jvb"
password = "s3cret"
muc_jids = "jvbbrewery@internal.auth.meet.example"
muc_nickname = "jvb-1"
"""


def test_empty_file_gives_jvb_defaults() -> None:
    s = parse_settings("")
    assert s == Settings()
    assert (s.udp_port, s.private_http_host, s.private_http_port, s.public_http_port) == (
        10000,
        "127.0.0.1",
        8080,
        -1,
    )
    assert s.stats_interval == 5.0 and s.load_threshold_pps == 50000 and s.xmpp == ()
    config = s.bridge_config()
    assert (config.udp_port, config.bind_addresses) == (10000, ["0.0.0.0"])


def test_example_file_documents_every_default() -> None:
    s = load_settings(REPO / "docs" / "bridge.example.toml", environ={})
    (x,) = s.xmpp
    assert s == Settings(xmpp=s.xmpp)
    assert (x.name, x.port, x.use_tls, x.disable_certificate_verification) == ("shard", 5222, True, False)
    text = (REPO / "docs" / "bridge.example.toml").read_text()
    for var in ENVIRONMENT:
        assert var in text, f"{var} is not documented in the example"


def test_full_file_maps_to_bridge_and_xmpp_configs() -> None:
    s = parse_settings(
        """
[videobridge.ice.udp]
port = 0
bind-addresses = ["127.0.0.1"]
advertised-addresses = ["198.51.100.7"]
[videobridge.stats]
interval = "500ms"
[videobridge.relay]
region = "eu-1"
relay-id = "jvb-eu-1"
[videobridge.load-management]
average-participant-stress = 0.02
[videobridge.load-management.load-measurements.packet-rate]
load-threshold = 1000
"""
        + XMPP
    )
    config = s.bridge_config()
    assert (config.udp_port, config.bind_addresses, config.advertised_addresses) == (
        0,
        ["127.0.0.1"],
        ["198.51.100.7"],
    )
    (client,) = s.xmpp_client_configs()
    assert (client.hostname, client.port, client.domain, client.username, client.password) == (
        "prosody.internal",
        5222,
        "auth.meet.example",
        "jvb",
        "s3cret",
    )
    assert client.muc_jids == ["jvbbrewery@internal.auth.meet.example"] and client.muc_nickname == "jvb-1"
    assert client.presence_interval == 0.5 and client.region == "eu-1"
    assert client.relay_id is None, "relay_id advertised while relays are disabled"
    assert (client.average_participant_stress, client.capacity_pps) == (0.02, 1000.0)
    assert "s3cret" not in repr(s), "the password leaks into logs through repr"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("5 seconds", 5.0),
        ("5s", 5.0),
        ("500ms", 0.5),
        ("500 milliseconds", 0.5),
        ("1min", 60.0),
        ("1 minute", 60.0),
        ("2 hours", 7200.0),
        ("1d", 86400.0),
        ("10", 10.0),
    ],
)
def test_durations_in_jvb_spelling_or_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["five seconds", "5 fortnights", "-1s", 0, "", True, [5]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_environment_overrides_file() -> None:
    env = {
        "SLUICE_UDP_PORT": "10001",
        "SLUICE_BIND_ADDRESSES": "127.0.0.1, ::1",
        "SLUICE_STATS_INTERVAL": "2 seconds",
        "SLUICE_REGION": "us-2",
        "SLUICE_XMPP_HOST": "10.0.0.5",
        "SLUICE_XMPP_PORT": "6222",
        "SLUICE_XMPP_PASSWORD": "from-env",
        "SLUICE_XMPP_USE_TLS": "false",
        "UNRELATED": "x",
    }
    s = parse_settings("[videobridge.ice.udp]\nport = 10000\n" + XMPP, env)
    assert (s.udp_port, s.bind_addresses, s.stats_interval, s.region) == (
        10001,
        ("127.0.0.1", "::1"),
        2.0,
        "us-2",
    )
    (x,) = s.xmpp
    assert (x.hostname, x.port, x.password, x.use_tls, x.domain) == (
        "10.0.0.5",
        6222,
        "from-env",
        False,
        "auth.meet.example",
    )


def test_ice_tcp_keys_file_environment_and_a_port_of_its_own() -> None:
    assert Settings().bridge_config().ice_tcp_port is None, "off by default, as in jvb"
    s = parse_settings("[videobridge.ice.tcp]\nenabled = true\nport = 4444\nmax-connections = 10\n")
    config = s.bridge_config()
    assert (config.ice_tcp_port, config.ice_tcp_mapped_port, config.ice_tcp_max_connections) == (
        4444,
        None,
        10,
    )
    env = {
        "SLUICE_ICE_TCP_ENABLED": "true",
        "SLUICE_ICE_TCP_PORT": "5555",
        "SLUICE_ICE_TCP_MAPPED_PORT": "443",
    }
    config = parse_settings("", env).bridge_config()
    assert (config.ice_tcp_port, config.ice_tcp_mapped_port) == (5555, 443)
    # Disabled, the port is not used at all.
    assert parse_settings("[videobridge.ice.tcp]\nport = 4444\n").bridge_config().ice_tcp_port is None
    with pytest.raises(SettingsError, match="ICE-TCP needs ports of its own"):
        parse_settings("[videobridge.ice.udp]\nport = 4443\n[videobridge.ice.tcp]\nenabled = true\n")
    with pytest.raises(SettingsError, match=r"videobridge\.ice\.tcp\.port"):
        parse_settings("[videobridge.ice.tcp]\nport = 0\n")


def test_environment_alone_defines_an_xmpp_config() -> None:
    env = {
        "SLUICE_XMPP_HOST": "127.0.0.1",
        "SLUICE_XMPP_DOMAIN": "auth.meet.test",
        "SLUICE_XMPP_USERNAME": "jvb",
        "SLUICE_XMPP_PASSWORD": "pw",
        "SLUICE_XMPP_MUC_JIDS": "a@internal.auth.meet.test,b@internal.auth.meet.test",
    }
    (x,) = parse_settings("", env).xmpp
    assert x.name == "env" and x.muc_jids == ("a@internal.auth.meet.test", "b@internal.auth.meet.test")
    with pytest.raises(SettingsError, match=r"configs\.env lacks domain, username, password, muc-jids"):
        parse_settings("", {"SLUICE_XMPP_HOST": "127.0.0.1"})


def test_load_settings_reads_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("[videobridge.ice.udp]\nport = 10000\n")
    monkeypatch.setenv("SLUICE_UDP_PORT", "10002")
    assert load_settings(path).udp_port == 10002
    assert load_settings(None).udp_port == 10002


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[videobridge.ice.udp]\nprot = 1", "unknown key videobridge.ice.udp.prot"),
        ("[videobridge.foo]\nx = 1", "unknown key videobridge.foo"),
        ("[videobrige]\nregion = 'x'", "unknown key videobrige"),
        ("[videobridge.stats]\ninterval = 5\njitter = true", "unknown key videobridge.stats.jitter"),
        (
            XMPP + "passwrd = 'x'\n",
            "unknown key videobridge.apis.xmpp-client.configs.shard.passwrd",
        ),
    ],
)
def test_unknown_keys_are_named(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[videobridge.ice.udp]\nport = 70000", "videobridge.ice.udp.port", "70000"),
        ("[videobridge.ice.udp]\nport = '10000'", "videobridge.ice.udp.port", "'10000'"),
        ("[videobridge.ice.udp]\nport = true", "videobridge.ice.udp.port", "True"),
        ("[videobridge.ice.udp]\nbind-addresses = ['localhost']", "bind-addresses", "['localhost']"),
        ("[videobridge.ice.udp]\nbind-addresses = []", "bind-addresses", "[]"),
        ("[videobridge.stats]\ninterval = 'soon'", "videobridge.stats.interval", "'soon'"),
        ("[videobridge.stats]\ninterval = -5", "videobridge.stats.interval", "-5"),
        ("[videobridge.relay]\nenabled = 'yes'", "videobridge.relay.enabled", "'yes'"),
        ("[videobridge.relay]\nenabled = true", "videobridge.relay.enabled", "True"),
        (
            "[videobridge.load-management.load-measurements.packet-rate]\nload-threshold = 0",
            "load-threshold",
            "0",
        ),
        (XMPP.replace('"jvb"', "7"), "configs.shard.username", "7"),
        (XMPP + "port = 0\n", "configs.shard.port", "0"),
        (XMPP.replace('"jvbbrewery@internal.auth.meet.example"', "[]"), "configs.shard.muc-jids", "[]"),
    ],
)
def test_bad_values_name_key_and_value(text: str, key: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text)
    message = str(info.value)
    assert key in message and value in message, message


def test_shard_cpu_from_file_or_environment_and_only_a_usable_one() -> None:
    usable = sorted(os.sched_getaffinity(0))
    assert parse_settings("").shard_cpus is None
    assert parse_settings("[videobridge.shard]\ncpu = -1").shard_cpus is None
    # One CPU is one pinned shard unless a count says otherwise.
    s = parse_settings(f"[videobridge.shard]\ncpu = {usable[-1]}")
    config = s.bridge_config()
    assert (s.shard_cpus, config.shard_cpus, config.shards) == ((usable[-1],), [usable[-1]], 1)
    assert parse_settings("", {"SLUICE_SHARD_CPU": str(usable[0])}).shard_cpus == (usable[0],)
    for bad in ("1023", "-2"):
        refused = f"videobridge.shard.cpu.*{bad}.*not one this process may run on"
        with pytest.raises(SettingsError, match=refused):
            parse_settings(f"[videobridge.shard]\ncpu = {bad}")
    with pytest.raises(SettingsError, match="SLUICE_SHARD_CPU"):
        parse_settings("", {"SLUICE_SHARD_CPU": "first"})


def test_shards_one_per_usable_cpu_by_default_each_pinned_to_its_own_cpu_and_ports_of_their_own() -> None:
    usable = sorted(os.sched_getaffinity(0))
    assert parse_settings("").shard_count == len(usable) == Settings().shard_count
    s = parse_settings("[videobridge.shard]\ncount = 3", {})
    assert (s.shard_count, s.bridge_config().shards) == (3, 3)
    assert parse_settings("", {"SLUICE_SHARD_COUNT": "2"}).shard_count == 2
    for bad in ("0", "65"):
        with pytest.raises(SettingsError, match=r"videobridge.shard.count.*1\.\.64 shards"):
            parse_settings(f"[videobridge.shard]\ncount = {bad}")
    if len(usable) >= 2:
        pair = f"{usable[0]},{usable[1]}"
        s = parse_settings("", {"SLUICE_SHARD_CPU": pair})
        assert (s.shard_count, s.bridge_config().shard_cpus) == (2, usable[:2])
        assert parse_settings(f"[videobridge.shard]\ncpu = [{pair}]").shard_cpus == tuple(usable[:2])
        with pytest.raises(SettingsError, match="names 2 CPUs for 3 shards"):
            parse_settings(f"[videobridge.shard]\ncpu = [{pair}]\ncount = 3")
    with pytest.raises(SettingsError, match="a CPU of its own"):
        parse_settings(f"[videobridge.shard]\ncpu = [{usable[0]}, {usable[0]}]")
    # Shard i binds udp port + i: the range must fit, and stay clear of ICE-TCP's.
    with pytest.raises(SettingsError, match=r"need ports 65535\.\.65536"):
        parse_settings("[videobridge.shard]\ncount = 2\n[videobridge.ice.udp]\nport = 65535")
    with pytest.raises(SettingsError, match=r"among the UDP ports \(10000\.\.10003"):
        parse_settings("[videobridge.shard]\ncount = 4\n[videobridge.ice.tcp]\nenabled = true\nport = 10003")
    ok = parse_settings("[videobridge.shard]\ncount = 4\n[videobridge.ice.tcp]\nenabled = true\nport = 10004")
    assert ok.bridge_config().ice_tcp_port == 10004


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings("", {"SLUICE_UDP_PORT": "ten thousand"})
    message = str(info.value)
    assert "videobridge.ice.udp.port" in message and "SLUICE_UDP_PORT" in message
    assert "'ten thousand'" in message


def test_missing_xmpp_keys_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"configs\.shard lacks password"):
        parse_settings(XMPP.replace('password = "s3cret"', ""))
    with pytest.raises(SettingsError, match="not valid TOML"):
        parse_settings("[videobridge\n")
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    path = tmp_path / "bad.toml"
    path.write_text("[videobridge.ice.udp]\nport = -2\n")
    with pytest.raises(SettingsError, match=r"bad\.toml: bad value for videobridge\.ice\.udp\.port"):
        load_settings(path, environ={})


def test_expiry_shutdown_and_drain_keys() -> None:
    s = parse_settings(
        """
[videobridge]
initial-drain-mode = true
[videobridge.entity-expiration]
timeout = "30s"
check-interval = "5 seconds"
[videobridge.shutdown]
graceful-shutdown-max-duration = "2h"
graceful-shutdown-min-participants = 3
shutting-down-delay = "10s"
""",
        environ={},
    )
    assert (s.entity_expiration_timeout, s.entity_expiration_check_interval) == (30.0, 5.0)
    assert (s.graceful_shutdown_max_duration, s.graceful_shutdown_min_participants) == (7200.0, 3)
    assert (s.shutting_down_delay, s.initial_drain_mode) == (10.0, True)
    assert parse_settings("", environ={"SLUICE_INITIAL_DRAIN_MODE": "yes"}).initial_drain_mode
    with pytest.raises(SettingsError, match="graceful-shutdown-min-participants"):
        parse_settings("[videobridge.shutdown]\ngraceful-shutdown-min-participants = -1\n", environ={})
    with pytest.raises(SettingsError, match=r"entity-expiration\.timeout"):
        parse_settings('[videobridge.entity-expiration]\ntimeout = "0s"\n', environ={})


WEBSOCKETS = """
[videobridge.http-servers.public]
port = 9090

[videobridge.websockets]
enabled = true
server-id = "jvb-1"
domains = ["meet.example:443"]
tls = true
enable-compression = false
send-keepalive-pings = false
keepalive-ping-interval = "30 seconds"

[videobridge.version]
announce = true
"""


def test_websockets_keys_and_defaults() -> None:
    d = Settings()
    assert (d.websockets_enabled, d.websockets_server_id, d.websockets_domains, d.websockets_tls) == (
        False,
        "default-id",
        (),
        False,
    )
    assert d.websockets_compression and d.websockets_keepalive_pings and d.websockets_keepalive_interval == 15
    assert not d.version_announce
    s = parse_settings(WEBSOCKETS, environ={})
    assert (s.public_http_port, s.websockets_enabled, s.websockets_server_id, s.websockets_domains) == (
        9090,
        True,
        "jvb-1",
        ("meet.example:443",),
    )
    assert s.websockets_tls and not s.websockets_compression and not s.websockets_keepalive_pings
    assert s.websockets_keepalive_interval == 30.0 and s.version_announce


def test_websockets_environment_overrides() -> None:
    s = parse_settings(
        "[videobridge.http-servers.public]\nport = 9090\n",
        {"SLUICE_WEBSOCKETS_ENABLED": "true", "SLUICE_WEBSOCKETS_DOMAINS": "a.example:443, b.example"},
    )
    assert s.websockets_enabled and s.websockets_domains == ("a.example:443", "b.example")
    s = parse_settings(WEBSOCKETS, {"SLUICE_WEBSOCKETS_DOMAINS": "", "SLUICE_WEBSOCKETS_ENABLED": "0"})
    assert not s.websockets_enabled and s.websockets_domains == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[videobridge.websockets]\nenabled = true", "videobridge.http-servers.public.port is -1"),
        ("[videobridge.websockets]\nserver-id = 'a/b'", "videobridge.websockets.server-id"),
        ("[videobridge.websockets]\nserver-id = ''", "videobridge.websockets.server-id"),
        ("[videobridge.websockets]\ndomains = ['wss://meet.example']", "videobridge.websockets.domains"),
        ("[videobridge.websockets]\ndomains = ['meet.example/x']", "videobridge.websockets.domains"),
        ("[videobridge.websockets]\ntls = 'yes'", "videobridge.websockets.tls"),
        ("[videobridge.websockets]\nrelay-domains = []", "unknown key videobridge.websockets.relay-domains"),
    ],
)
def test_bad_websockets_settings(text: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, environ={})
    assert message in str(info.value)


TOKEN = "0123456789abcdef0123456789abcdef"


def test_private_api_guard_keys_defaults_file_and_environment() -> None:
    d = Settings()
    assert d.private_http_allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert d.private_http_token is None
    s = parse_settings(
        f"""
[videobridge.http-servers.private]
host = "10.0.0.7"
allowed-hosts = ["localhost", "[::1]", "jvb1.internal", "10.0.0.7"]
token = "{TOKEN}"
""",
        environ={},
    )
    assert s.private_http_allowed_hosts == ("localhost", "[::1]", "jvb1.internal", "10.0.0.7")
    assert s.private_http_token == TOKEN
    assert TOKEN not in repr(s), "the token leaks into logs through repr"
    env = {
        "SLUICE_PRIVATE_HTTP_ALLOWED_HOSTS": "jvb2.internal, 127.0.0.1",
        "SLUICE_PRIVATE_HTTP_TOKEN": "t" * 16,
    }
    s = parse_settings(f'[videobridge.http-servers.private]\ntoken = "{TOKEN}"\n', env)
    assert (s.private_http_allowed_hosts, s.private_http_token) == (("jvb2.internal", "127.0.0.1"), "t" * 16)
    # docker-style: a variable set but empty means no token.
    s = parse_settings(
        f'[videobridge.http-servers.private]\ntoken = "{TOKEN}"\n', {"SLUICE_PRIVATE_HTTP_TOKEN": ""}
    )
    assert s.private_http_token is None
    # A concrete host needs no list; a wildcard host with an empty list could answer nobody.
    s = parse_settings(
        '[videobridge.http-servers.private]\nhost = "127.0.0.1"\nallowed-hosts = []\n', environ={}
    )
    assert s.private_http_allowed_hosts == ()
    with pytest.raises(SettingsError, match="allowed-hosts is empty"):
        parse_settings(
            '[videobridge.http-servers.private]\nhost = "0.0.0.0"\nallowed-hosts = []\n', environ={}
        )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("allowed-hosts = ['evil.example:8080']", "'evil.example:8080' is not a host name"),
        ("allowed-hosts = ['http://localhost']", "'http://localhost' is not a host name"),
        ("allowed-hosts = ['*']", "'*' is not a host name"),
        ("allowed-hosts = ['[::1']", "'[::1' is not a host name"),
        ("allowed-hosts = 'a b'", "'a b' is not a host name"),
        ("token = 'short'", "at least 16 characters"),
        ("token = 'has a space in it, quite long'", "RFC 6750"),
        ("token = ''", "RFC 6750"),
        ('token = "0123456789abcdef0123\\n"', "RFC 6750"),  # a newline could never match a header
        ("token = 12345678901234567890", "expected a string"),
    ],
)
def test_bad_private_api_guard_values(line: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(f"[videobridge.http-servers.private]\n{line}\n", environ={})
    text = str(info.value)
    assert message in text and "videobridge.http-servers.private." in text, text
    if line.startswith("token"):
        assert "(hidden)" in text and "space in it" not in text and "short'" not in text, text
