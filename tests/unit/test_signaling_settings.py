"""`[signaling.*]` tables: the focus's quotas and the XMPP server's limits from the settings file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bridge.settings import parse_settings
from signaling.focus import FocusConfig
from signaling.settings import SignalingSettingsError, signaling_settings
from signaling.xmpp import XmppLimits, XmppServerConfig
from tests.helpers.tokens import rsa_key

FILE = """
[videobridge.ice.udp]
port = 10000

[signaling.focus]
max-rooms = 50
rooms-per-minute-per-requester = 3
room-join-timeout = 30
strip-simulcast = false
session-accept-timeout = 8
bridge-jid-regexp = "jvb-[0-9]+@auth\\\\.meet\\\\.example/.*"

[signaling.xmpp.limits]
room-creations-per-minute-per-address = 5
max-rooms-per-session = 2
"""


def test_tables_override_only_what_they_name() -> None:
    settings = signaling_settings(tomllib.loads(FILE))
    focus = settings.focus_config(FocusConfig(domain="meet.example", password="pw"))
    assert (focus.max_rooms, focus.rooms_per_minute_per_requester, focus.room_join_timeout) == (50, 3, 30.0)
    assert focus.rooms_per_minute == FocusConfig().rooms_per_minute
    assert (focus.strip_simulcast, focus.session_accept_timeout) == (False, 8.0)
    assert (FocusConfig().strip_simulcast, FocusConfig().session_accept_timeout) == (True, 15.0)
    assert (focus.domain, focus.password) == ("meet.example", "pw")
    assert focus.bridge_jid_pattern().fullmatch("jvb-7@auth.meet.example/r")
    assert not focus.bridge_jid_pattern().fullmatch("jvb@auth.meet.example/r")
    limits = settings.xmpp_limits_config()
    assert (limits.room_creations_per_minute_per_address, limits.max_rooms_per_session) == (5, 2)
    assert limits.max_connections == XmppLimits().max_connections
    # The bridge reads the same file and leaves these tables alone.
    assert parse_settings(FILE).udp_port == 10000


def test_end_to_end_encryption_is_offered_only_when_asked() -> None:
    assert not signaling_settings({}).web_e2ee
    assert signaling_settings(tomllib.loads("[signaling.web]\ne2ee = true")).web_e2ee


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[signaling.focus]\nmax-roomz = 1", "unknown key signaling.focus.max-roomz"),
        ("[signaling.focus]\npassword = 'x'", "unknown key signaling.focus.password"),
        ("[signaling.focus]\nmax-rooms = -1", "bad value for signaling.focus.max-rooms"),
        ("[signaling.focus]\nmax-rooms = true", "bad value for signaling.focus.max-rooms"),
        ("[signaling.focus]\nroom-join-timeout = 'soon'", "bad value for signaling.focus.room-join-timeout"),
        ("[signaling.focus]\nbridge-jid-regexp = '('", "bridge-jid-regexp"),
        ("[signaling.focus]\nstrip-simulcast = 'yes'", "bad value for signaling.focus.strip-simulcast"),
        (
            "[signaling.focus]\nsession-accept-timeout = 0",
            "bad value for signaling.focus.session-accept-timeout",
        ),
        ("[signaling.xmpp.limits]\nstanza-rate = 'fast'", "bad value for signaling.xmpp.limits.stanza-rate"),
        ("[signaling.xmpp]\nlimitz = {}", "only a [signaling.xmpp.limits] table"),
        ("[signaling.other]\nx = 1", "unknown key signaling.other"),
        ("[signaling.web]\ne2ee = 'yes'", "bad value for signaling.web.e2ee"),
        ("[signaling.web]\nchat = true", "signaling.web holds only e2ee"),
    ],
)
def test_bad_tables_name_the_key(text: str, message: str) -> None:
    with pytest.raises(SignalingSettingsError, match=message.replace("[", r"\[").replace(".", r"\.")):
        signaling_settings(tomllib.loads(text))


SECRET = "s" * 32


def test_auth_tables(tmp_path: Path) -> None:
    _, pem = rsa_key()
    (tmp_path / "issuer.pem").write_text(pem)
    text = (
        "[signaling.auth]\nallow-anonymous = false\nsecure-domain = true\nusers-file = 'users.json'\n"
        "[signaling.auth.token]\napp-id = 'app'\npublic-key-file = 'issuer.pem'\n"
        "accepted-audiences = ['app', 'jitsi']\nleeway = 5\nmax-token-bytes = 2048\n"
    )
    auth = signaling_settings(tomllib.loads(text), tmp_path).auth
    assert (auth.allow_anonymous, auth.secure_domain) == (False, True)
    assert auth.users_file == str(tmp_path / "users.json")
    assert auth.token is not None and auth.token.public_key == pem and auth.token.secret is None
    assert (auth.token.audiences, auth.token.leeway, auth.token.max_bytes) == (("app", "jitsi"), 5.0, 2048)
    xmpp = signaling_settings(tomllib.loads(text), tmp_path).xmpp_auth(XmppServerConfig())
    assert xmpp.token == auth.token and xmpp.secure_domain and not xmpp.allow_anonymous
    focus = signaling_settings({"signaling": {"focus": {"owner-needs-login": True}}}).focus_config(
        FocusConfig()
    )
    assert focus.owner_needs_login and not FocusConfig().owner_needs_login
    default = signaling_settings({}).auth
    assert (default.allow_anonymous, default.secure_domain, default.token) == (True, False, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[signaling.auth]\nsecure = true", "unknown key signaling.auth.secure"),
        ("[signaling.auth]\nsecure-domain = 'yes'", "bad value for signaling.auth.secure-domain"),
        ("[signaling.auth.token]\napp-secret = '" + SECRET + "'", "signaling.auth.token.app-id is required"),
        ("[signaling.auth.token]\napp-id = 'a'", "exactly one of app-secret"),
        ("[signaling.auth.token]\napp-id = 'a'\napp-secret = 'short'", "signaling.auth.token.app-secret"),
        (
            "[signaling.auth.token]\napp-id = 'a'\napp-secret = '" + SECRET + "'\nleeway = -1",
            "bad value for signaling.auth.token.leeway",
        ),
        (
            "[signaling.auth.token]\napp-id = 'a'\napp-secret = '" + SECRET + "'\naccepted-audiences = 'a'",
            "bad value for signaling.auth.token.accepted-audiences",
        ),
        ("[signaling.auth.token]\napp-id = 'a'\npublic-key-file = '/nonexistent.pem'", "public-key-file"),
        ("[signaling.auth.token]\napp-id = 'a'\napp-secret = '" + SECRET + "'\nalg = 'none'", "unknown key"),
    ],
)
def test_bad_auth_tables_name_the_key(text: str, message: str) -> None:
    with pytest.raises(SignalingSettingsError, match=message.replace("[", r"\[").replace(".", r"\.")):
        signaling_settings(tomllib.loads(text))


def test_a_public_key_that_does_not_load_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    text = "[signaling.auth.token]\napp-id = 'a'\npublic-key-file = 'bad.pem'\n"
    with pytest.raises(SignalingSettingsError, match="public-key-file"):
        signaling_settings(tomllib.loads(text), tmp_path)
