"""A real Prosody (Debian package) in the foreground on free loopback ports, laid out like a Jitsi deployment.

Hosts: `meet.test` (anonymous), `auth.meet.test` (internal_hashed, with registered `jvb` and `focus`
accounts; `focus` is a Prosody admin), the brewery MUC component `internal.auth.meet.test`, the conference
MUC `conference.meet.test` (only admins may create rooms, as in Jitsi's Debian layout) and `focus.meet.test`,
which forwards the conference IQ to the focus's full JID. Stopped by PID (SIGTERM, then SIGKILL); `restart()`
brings it back on the same ports with the same data, which is how tests make the server "go away".

Jitsi deployments route `focus.<domain>` with mod_client_proxy from prosody-modules, which Debian's prosody
does not ship; `mod_sluice_focus_proxy` below does the part the focus needs: an IQ to the component goes to
the focus (from the component, with a fresh id) and the focus's answer goes back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import slixmpp
from slixmpp.exceptions import IqError

DOMAIN = "meet.test"
AUTH_DOMAIN = "auth.meet.test"
BREWERY_DOMAIN = "internal.auth.meet.test"
BREWERY_JID = f"JvbBrewery@{BREWERY_DOMAIN}"
JVB_USER = "jvb"
FOCUS_USER = "focus"
MUC_DOMAIN = f"conference.{DOMAIN}"
FOCUS_COMPONENT = f"focus.{DOMAIN}"

_FOCUS_PROXY = """\
-- focus.<domain>: IQs from clients go to the focus, and its answers come back (see tests/helpers/prosody.py).
local st = require "util.stanza";
local new_id = require "util.id".short;
local target = module:get_option_string("sluice_focus_jid");
local pending = {};

module:hook("iq/host", function(event)
    local stanza = event.stanza;
    local kind = stanza.attr.type;
    if kind == "get" or kind == "set" then
        local id = new_id();
        pending[id] = { from = stanza.attr.from, id = stanza.attr.id };
        local forward = st.clone(stanza);
        forward.attr.from = module.host;
        forward.attr.to = target;
        forward.attr.id = id;
        module:send(forward);
        return true;
    end
    local waiting = pending[stanza.attr.id];
    if waiting == nil then return true; end
    pending[stanza.attr.id] = nil;
    local back = st.clone(stanza);
    back.attr.from = module.host;
    back.attr.to = waiting.from;
    back.attr.id = waiting.id;
    module:send(back);
    return true;
end, 10);
"""

_CONFIG = """\
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ info = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
s2s_ports = {{ }}
legacy_ssl_ports = {{ }}
c2s_direct_tls_ports = {{ }}
certificates = "{dir}/certs"
http_ports = {{ {http_ports} }}
http_interfaces = {{ "127.0.0.1" }}
http_default_host = "{domain}"
https_ports = {{ }}
component_ports = {{ }}
modules_enabled = {{ "disco"; "saslauth"; "roster"; "ping"{extra_modules} }}
consider_websocket_secure = true
plugin_paths = {{ "{dir}/plugins" }}
{settings}
admins = {{ "{focus_jid}" }}
modules_disabled = {{ "s2s"; "offline" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

VirtualHost "{domain}"
    authentication = "anonymous"

VirtualHost "{auth_domain}"
    authentication = "internal_hashed"

-- The brewery, closed as docs/security.md says: only the focus and bridge accounts (its admins, so owners
-- of every room) may create or join rooms there; anonymous and other accounts are refused.
Component "{brewery_domain}" "muc"
    storage = "memory"
    admins = {{ "{focus_jid}"; "{jvb_jid}" }}
    restrict_room_creation = true
    muc_room_default_members_only = true
    muc_room_default_public_jids = false
    muc_room_locking = false

Component "{muc_domain}" "muc"
    storage = "memory"
    restrict_room_creation = true
    muc_room_locking = false
    muc_room_default_public_jids = true

Component "{focus_component}" "sluice_focus_proxy"
    sluice_focus_jid = "{focus_jid}/focus"
"""


def free_tcp_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prosody:
    """One Prosody process; `start()`/`stop()` may be called repeatedly (same dir, same ports)."""

    directory: Path
    c2s_port: int
    jvb_password: str
    process: subprocess.Popen[bytes] | None = None
    focus_password: str = "focus-secret"
    #: mod_websocket's HTTP port (RFC 7395 at /xmpp-websocket), when created with `websocket=True`.
    http_port: int | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "prosody.cfg.lua"

    @property
    def jvb_jid(self) -> str:
        return f"{JVB_USER}@{AUTH_DOMAIN}"

    @property
    def focus_jid(self) -> str:
        return f"{FOCUS_USER}@{AUTH_DOMAIN}"

    @property
    def websocket_url(self) -> str:
        if self.http_port is None:
            raise RuntimeError("this Prosody was created without websocket=True")
        return f"ws://127.0.0.1:{self.http_port}/xmpp-websocket"

    @classmethod
    def create(
        cls,
        directory: Path,
        jvb_password: str = "jvb-secret",
        focus_password: str = "focus-secret",
        *,
        websocket: bool = False,
        modules: tuple[str, ...] = (),
        settings: str = "",
    ) -> Prosody:
        """Writes the config and registers the `jvb` and `focus` accounts; does not start the server.
        `modules` are enabled besides the usual ones, `settings` (Lua) go in the global section."""
        if shutil.which("prosody") is None:
            raise RuntimeError("prosody is not installed: run scripts/bootstrap.sh")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        (directory / "certs").mkdir(exist_ok=True)
        (directory / "plugins").mkdir(exist_ok=True)
        (directory / "plugins" / "mod_sluice_focus_proxy.lua").write_text(_FOCUS_PROXY)
        server = cls(directory, free_tcp_port(), jvb_password, focus_password=focus_password)
        server.http_port = free_tcp_port() if websocket else None
        server.config_file.write_text(
            _CONFIG.format(
                dir=directory,
                http_ports=server.http_port or "",
                extra_modules="".join(f'; "{m}"' for m in (("websocket",) if websocket else ()) + modules),
                settings=settings,
                c2s_port=server.c2s_port,
                domain=DOMAIN,
                auth_domain=AUTH_DOMAIN,
                brewery_domain=BREWERY_DOMAIN,
                muc_domain=MUC_DOMAIN,
                focus_component=FOCUS_COMPONENT,
                focus_jid=server.focus_jid,
                jvb_jid=server.jvb_jid,
            )
        )
        server.register(JVB_USER, jvb_password)
        server.register(FOCUS_USER, focus_password)
        return server

    def register(self, user: str, password: str, host: str = AUTH_DOMAIN) -> None:
        """Registers (or re-keys) an account, e.g. one more bridge account; works while the server runs."""
        subprocess.run(
            ["prosodyctl", "--config", str(self.config_file), "register", user, host, password],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self, timeout: float = 15.0) -> None:
        """Starts Prosody in the foreground and waits until c2s accepts TCP connections."""
        if self.process is not None:
            raise RuntimeError("prosody is already running")
        out = (self.directory / "prosody.out").open("ab")
        try:
            self.process = subprocess.Popen(
                ["prosody", "--config", str(self.config_file), "-F"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"prosody exited with {code}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.c2s_port), 0.2):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prosody c2s did not open within {timeout}s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to our PID, SIGKILL if it has not exited within `timeout`."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("prosody.out", "prosody.log"):
            path = self.directory / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class MucObserver:
    """A plain slixmpp client playing Jicofo: the focus account (`focus@auth.meet.test`, the only sender our
    bridge takes Colibri2 from by default), present in the brewery, sends IQs to the bridge's occupant JID
    as Jicofo does. `anonymous=True` logs in anonymously instead (an outsider).

    Records the last presence of every occupant so tests can wait for a bridge's stats.
    """

    def __init__(
        self, server: Prosody, room: str = BREWERY_JID, nickname: str = "focus", *, anonymous: bool = False
    ) -> None:
        self.server = server
        self.room = room.lower()
        self.nickname = nickname
        if anonymous:
            self.xmpp = slixmpp.ClientXMPP(DOMAIN, "")
        else:
            self.xmpp = slixmpp.ClientXMPP(
                server.focus_jid,
                server.focus_password,
                plugin_config={"feature_mechanisms": {"unencrypted_plain": True, "unencrypted_scram": True}},
            )
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        self.presences: dict[str, ET.Element] = {}
        self._changed = asyncio.Event()
        self._session = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _e: self._session.set())
        self.xmpp.add_event_handler("presence", self._on_presence)

    async def start(self, timeout: float = 10.0, *, join: bool = True) -> None:
        self.xmpp.connect("127.0.0.1", self.server.c2s_port)
        await asyncio.wait_for(self._session.wait(), timeout)
        if join:
            self.join()
            await self.wait_presence(self.nickname, timeout=timeout)

    def join(self) -> None:
        pres = self.xmpp.make_presence(pto=f"{self.room}/{self.nickname}")
        pres.append(ET.Element("{http://jabber.org/protocol/muc}x"))
        pres.send()

    async def stop(self) -> None:
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 2.0)
            self.xmpp.abort()

    def _on_presence(self, pres: Any) -> None:
        sender = pres["from"]
        if str(sender.bare).lower() != self.room:
            return
        if pres["type"] == "unavailable":
            self.presences.pop(sender.resource, None)
        else:
            self.presences[sender.resource] = pres.xml
        self._changed.set()

    async def wait_presence(
        self, nickname: str, timeout: float = 10.0, where: Callable[[ET.Element], bool] = lambda _p: True
    ) -> ET.Element:
        """The next (or current) presence of `nickname` for which `where` holds."""

        async def wait() -> ET.Element:
            while True:
                self._changed.clear()
                pres = self.presences.get(nickname)
                if pres is not None and where(pres):
                    return pres
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def wait_gone(self, nickname: str, timeout: float = 10.0) -> None:
        async def wait() -> None:
            while nickname in self.presences:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def iq(
        self, to: str, payload: ET.Element, iq_type: Literal["get", "set"] = "get", timeout: float = 5.0
    ) -> ET.Element:
        """Sends an IQ and returns the reply's XML, whether a result or an error."""
        iq = self.xmpp.make_iq(ito=to, itype=iq_type)
        iq.append(payload)
        try:
            reply = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
        except IqError as exc:
            return exc.iq.xml  # type: ignore[no-any-return]
        return reply.xml  # type: ignore[no-any-return]
