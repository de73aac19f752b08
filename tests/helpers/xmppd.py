"""Test helpers for the embedded XMPP server.

Sans-IO: `Harness` owns an `XmppCore` and a fake clock and plays any number of clients over either framing,
collecting what the core writes to each. Over the wire: `SlixClient` (slixmpp, the same client library our
bridge and focus use), `RawTcp` (hand-written stream bytes) and `RawWebSocket` (RFC 7395 framing by hand on
aiohttp's client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import slixmpp
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from signaling.xmpp import XmppServer, XmppServerConfig
from signaling.xmpp.core import Close, Connection, Framing, StartTls, XmppCore
from signaling.xmpp.parser import ParseError, Stanza, StreamOpen, StreamParser
from signaling.xmpp.users import UserStore

CLIENT = "jabber:client"
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = f"{MUC}#user"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode() or "="


def error_condition(elem: ET.Element) -> str | None:
    """The defined condition of a stanza error or stream error element (or of the stanza carrying one)."""
    err = (
        elem if elem.tag in (f"{{{CLIENT}}}error", f"{{{STREAMS}}}error") else elem.find(f"{{{CLIENT}}}error")
    )
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{") and not child.tag.endswith("}text"):
            return child.tag.rpartition("}")[2]
    return None


def bridge_stats_presence(to: str) -> ET.Element:
    """A MUC join carrying bridge-shaped colibri stats (what a fake bridge in the brewery would send)."""
    pres = ET.Element(f"{{{CLIENT}}}presence", {"to": to})
    ET.SubElement(pres, f"{{{MUC}}}x")
    stats = ET.SubElement(pres, "{http://jitsi.org/protocol/colibri}stats")
    for name, value in (("stress_level", "0.0"), ("drain", "false"), ("healthy", "true")):
        ET.SubElement(stats, "{http://jitsi.org/protocol/colibri}stat", {"name": name, "value": value})
    return pres


def muc_item(presence: ET.Element) -> ET.Element | None:
    return presence.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")


def status_codes(stanza: ET.Element) -> set[str]:
    return {s.get("code", "") for s in stanza.iterfind(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SansIoClient:
    """One client connection on a `Harness`; `received` holds what the server sent, parsed."""

    def __init__(
        self,
        harness: Harness,
        framing: Framing,
        address: str = "",
        token: str | None = None,
        room: str | None = None,
    ) -> None:
        self.harness = harness
        self.framing = framing
        self.conn: Connection = harness.core.open_connection(
            harness.clock.now, framing, address=address, token=token, room=room
        )
        self.received: list[ET.Element] = []
        self.headers: list[dict[str, str]] = []
        self.closed = False
        self.starttls = False
        self._reader = StreamParser(max_stanza_bytes=1 << 24)
        self.jid = ""
        harness.clients[self.conn.id] = self

    # ---- raw input

    def send(self, xml: str) -> None:
        if self.framing is Framing.TCP:
            self.conn.receive_data(self.harness.clock.now, xml.encode())
        else:
            self.conn.receive_frame(self.harness.clock.now, xml)
        self.harness.pump()

    def open(self, to: str) -> None:
        if self.framing is Framing.TCP:
            self.send(
                f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' "
                f"to='{to}' version='1.0'>"
            )
        else:
            self.send(f'<open xmlns="{FRAMING}" to="{to}" version="1.0"/>')

    def deliver(self, text: str) -> None:
        if self.framing is Framing.WEBSOCKET:
            elem = ET.fromstring(text)
            if elem.tag == f"{{{FRAMING}}}open":
                self.headers.append(dict(elem.attrib))
            elif elem.tag != f"{{{FRAMING}}}close":
                self.received.append(elem)
            return
        for event in self._reader.feed(text.encode()):
            if isinstance(event, StreamOpen):
                self.headers.append(event.attrs)
            elif isinstance(event, Stanza):
                self.received.append(event.element)
                if event.element.tag in (f"{{{SASL}}}success", "{urn:ietf:params:xml:ns:xmpp-tls}proceed"):
                    self._reader.restart()
            elif isinstance(event, ParseError):
                raise AssertionError(f"the server wrote bad XML: {event}")

    # ---- reading what arrived

    def take(self) -> list[ET.Element]:
        out, self.received = self.received, []
        return out

    def take_one(self, tag: str | None = None) -> ET.Element:
        got = self.take()
        if tag is not None:
            got = [e for e in got if e.tag == tag or e.tag.endswith("}" + tag)]
        assert len(got) == 1, f"expected one {tag}, got {[ET.tostring(e) for e in got]}"
        return got[0]

    # ---- negotiation

    def login_anonymous(self, resource: str | None = None) -> str:
        domain = self.harness.config.domain
        self.open(domain)
        self.take()
        self.send(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'/>")
        self.take_one("success")
        return self._bind(domain, resource)

    def login_plain(self, user: str, password: str, resource: str | None = None) -> str:
        domain = self.harness.config.auth_domain
        self.open(domain)
        self.take()
        token = b64(b"\0" + user.encode() + b"\0" + password.encode())
        self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        self.take_one("success")
        return self._bind(domain, resource)

    def _bind(self, domain: str, resource: str | None) -> str:
        self.open(domain)
        self.take()
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq xmlns='{CLIENT}' type='set' id='bind1'><bind xmlns='{BIND}'>{res}</bind></iq>")
        reply = self.take_one("iq")
        jid = reply.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid")
        assert jid, ET.tostring(reply)
        self.send(f"<iq xmlns='{CLIENT}' type='set' id='sess1'><session xmlns='{BIND[:-4]}session'/></iq>")
        assert self.take_one("iq").get("type") == "result"
        self.jid = jid
        return jid

    def stanza(self, xml: str) -> None:
        """Sends a stanza; `xmlns='jabber:client'` is added for WebSocket framing."""
        if self.framing is Framing.WEBSOCKET and "xmlns=" not in xml.split(">", 1)[0]:
            name_end = xml.index(" ") if " " in xml.split(">", 1)[0] else xml.index(">")
            xml = xml[:name_end] + f" xmlns='{CLIENT}'" + xml[name_end:]
        self.send(xml)

    def join(self, room: str, nick: str, extra: str = "", password: str | None = None) -> list[ET.Element]:
        pw = f"<password>{password}</password>" if password is not None else ""
        self.stanza(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{pw}</x>{extra}</presence>")
        return self.take()


class Harness:
    """An XmppCore with a fake clock; routes the core's output to the matching `SansIoClient`."""

    def __init__(self, config: XmppServerConfig | None = None, users: UserStore | None = None) -> None:
        self.config = config or XmppServerConfig(
            accounts={
                "focus@auth.meet.sluice": "focus-pw",
                "jvb@auth.meet.sluice": "jvb-pw",
                "alice@auth.meet.sluice": "alice-pw",  # an ordinary account: not a component
            },
            components=("jvb@auth.meet.sluice",),
        )
        self.clock = FakeClock()
        self.core = XmppCore(self.config, users)
        self.clients: dict[int, SansIoClient] = {}

    def client(
        self,
        framing: Framing = Framing.WEBSOCKET,
        address: str = "",
        token: str | None = None,
        room: str | None = None,
    ) -> SansIoClient:
        return SansIoClient(self, framing, address, token, room)

    def pump(self) -> None:
        for conn in self.core.take_dirty():
            client = self.clients[conn.id]
            for item in conn.take_output():
                if isinstance(item, str):
                    client.deliver(item)
                elif isinstance(item, Close):
                    client.closed = True
                elif isinstance(item, StartTls):
                    client.starttls = True
            if client.closed:
                conn.connection_lost(self.clock.now)
        # Closing may have produced output for others (MUC leave broadcasts).
        if self.core._dirty:
            self.pump()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.core.handle_timer(self.clock.now)
        self.pump()


# ---- over the wire


class SlixClient:
    """A slixmpp client (plain TCP, or STARTTLS without certificate checks) with a presence log."""

    def __init__(
        self,
        jid: str,
        password: str = "",
        *,
        tls: bool = False,
        mechanism: str | None = None,
    ) -> None:
        mech_config: dict[str, Any] = {"unencrypted_plain": True, "unencrypted_scram": True}
        if mechanism:
            mech_config["use_mech"] = mechanism
        self.xmpp = slixmpp.ClientXMPP(jid, password, plugin_config={"feature_mechanisms": mech_config})
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_starttls = tls
        self.xmpp.enable_plaintext = not tls
        if tls:
            self.xmpp.ssl_context.check_hostname = False
            self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.register_plugin("xep_0045")
        self.xmpp.register_plugin("xep_0199")
        self.presences: list[ET.Element] = []
        self.messages: list[ET.Element] = []
        self._changed = asyncio.Event()
        self._session = asyncio.Event()
        self._failed = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _e: self._session.set())
        self.xmpp.add_event_handler("failed_all_auth", lambda _e: self._failed.set())
        # A raw handler: slixmpp's "presence" event is muted for rooms joined through xep_0045.
        self.xmpp.register_handler(
            Callback("log presence", MatchXPath(f"{{{CLIENT}}}presence"), self._on_presence)
        )
        self.xmpp.register_handler(
            Callback("log message", MatchXPath(f"{{{CLIENT}}}message"), self._on_message)
        )

    def _on_presence(self, pres: Any) -> None:
        self.presences.append(pres.xml)
        self._changed.set()

    def _on_message(self, msg: Any) -> None:
        self.messages.append(msg.xml)
        self._changed.set()

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid)

    async def connect(self, port: int, timeout: float = 10.0) -> None:
        self.xmpp.connect("127.0.0.1", port)
        waits = [asyncio.ensure_future(self._session.wait()), asyncio.ensure_future(self._failed.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not self._session.is_set():
            raise ConnectionError(f"{self.xmpp.boundjid.bare}: no session")

    async def disconnect(self) -> None:
        await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 3.0)
        self.xmpp.abort()

    async def join(self, room: str, nick: str, password: str | None = None) -> Any:
        muc = self.xmpp.plugin["xep_0045"]
        return await muc.join_muc_wait(slixmpp.JID(room), nick, password=password, timeout=10)

    async def wait_for(
        self, where: Callable[[ET.Element], bool], *, messages: bool = False, timeout: float = 10.0
    ) -> ET.Element:
        log = self.messages if messages else self.presences

        async def find() -> ET.Element:
            seen = 0
            while True:
                for elem in log[seen:]:
                    if where(elem):
                        return elem
                seen = len(log)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def iq(
        self, to: str, payload: ET.Element, iq_type: Literal["get", "set"] = "get", timeout: float = 10.0
    ) -> ET.Element:
        """Sends an IQ and returns the reply, result or error."""
        iq = self.xmpp.make_iq(ito=to, itype=iq_type)
        iq.append(payload)
        try:
            reply = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
        except slixmpp.exceptions.IqError as exc:
            return exc.iq.xml  # type: ignore[no-any-return]
        return reply.xml  # type: ignore[no-any-return]


def small_receive_buffer(rcvbuf: int) -> Callable[[int, int, int], socket.socket]:
    """A socket factory for a client that reads slowly or never: little fits in its kernel buffer."""

    def make(family: int, kind: int, proto: int) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock

    return make


class RawTcp:
    """Hand-written XMPP over TCP: for bytes no well-behaved client library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(max_stanza_bytes=1 << 24)
        self.elements: list[ET.Element] = []
        self.eof = False

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawTcp:
        """`rcvbuf` shrinks the socket's receive buffer (before connecting, so the window is small too)."""
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            return cls(reader, writer)
        sock = small_receive_buffer(rcvbuf)(socket.AF_INET, socket.SOCK_STREAM, 0)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def write(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def open(self, to: str) -> list[ET.Element]:
        self.write(
            f"<?xml version='1.0'?><stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' "
            f"to='{to}' version='1.0'>"
        )
        return [await self.read_until(lambda e: e.tag == f"{{{STREAMS}}}features")]

    async def read_until(self, where: Callable[[ET.Element], bool], timeout: float = 5.0) -> ET.Element:
        async def loop() -> ET.Element:
            while True:
                for i, elem in enumerate(self.elements):
                    if where(elem):
                        del self.elements[: i + 1]
                        return elem
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    raise EOFError("the server closed the connection")
                for event in self.parser.feed(data):
                    if isinstance(event, Stanza):
                        self.elements.append(event.element)
                        if event.element.tag == f"{{{SASL}}}success":
                            self.parser.restart()

        return await asyncio.wait_for(loop(), timeout)

    async def read_to_eof(self, timeout: float = 5.0) -> list[ET.Element]:
        async def loop() -> None:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    return
                for event in self.parser.feed(data):
                    if isinstance(event, Stanza):
                        self.elements.append(event.element)

        await asyncio.wait_for(loop(), timeout)
        out, self.elements = self.elements, []
        return out

    async def login_anonymous(self, domain: str) -> str:
        await self.open(domain)
        self.write(f"<auth xmlns='{SASL}' mechanism='ANONYMOUS'/>")
        await self.read_until(lambda e: e.tag == f"{{{SASL}}}success")
        await self.open(domain)
        self.write(f"<iq type='set' id='b'><bind xmlns='{BIND}'/></iq>")
        reply = await self.read_until(lambda e: e.get("id") == "b")
        return reply.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid") or ""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class RawWebSocket:
    """RFC 7395 by hand on aiohttp's WebSocket client: one XML document per text message."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws

    @classmethod
    async def connect(
        cls, url: str, protocols: tuple[str, ...] = ("xmpp",), *, rcvbuf: int | None = None
    ) -> RawWebSocket:
        """`rcvbuf` shrinks the socket's receive buffer (before connecting, so the window is small too)."""
        if rcvbuf is None:
            session = aiohttp.ClientSession()
        else:
            factory = small_receive_buffer(rcvbuf)
            connector = aiohttp.TCPConnector(socket_factory=lambda info: factory(info[0], info[1], info[2]))
            session = aiohttp.ClientSession(connector=connector)
        try:
            ws = await session.ws_connect(url, protocols=protocols)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, xml: str) -> None:
        await self.ws.send_str(xml)

    async def recv(self, timeout: float = 5.0) -> ET.Element:
        msg = await self.ws.receive(timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise EOFError(f"websocket message {msg.type}: {msg.data!r}")
        return ET.fromstring(msg.data)

    async def recv_until(self, where: Callable[[ET.Element], bool], timeout: float = 5.0) -> ET.Element:
        async def loop() -> ET.Element:
            while True:
                elem = await self.recv(timeout)
                if where(elem):
                    return elem

        return await asyncio.wait_for(loop(), timeout)

    async def open(self, to: str) -> ET.Element:
        await self.send(f'<open xmlns="{FRAMING}" to="{to}" version="1.0"/>')
        opened = await self.recv()
        assert opened.tag == f"{{{FRAMING}}}open", ET.tostring(opened)
        features = await self.recv()
        assert features.tag == f"{{{STREAMS}}}features", ET.tostring(features)
        return features

    async def login_anonymous(self, domain: str) -> str:
        features = await self.open(domain)
        mechs = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert mechs == ["ANONYMOUS"], mechs
        await self.send(f'<auth xmlns="{SASL}" mechanism="ANONYMOUS"/>')
        assert (await self.recv()).tag == f"{{{SASL}}}success"
        features = await self.open(domain)
        assert features.find(f"{{{BIND}}}bind") is not None
        await self.send(f'<iq xmlns="{CLIENT}" type="set" id="bind"><bind xmlns="{BIND}"/></iq>')
        reply = await self.recv()
        jid = reply.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid") or ""
        await self.send(
            f'<iq xmlns="{CLIENT}" type="set" id="sess">'
            '<session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>'
        )
        assert (await self.recv()).get("type") == "result"
        return jid

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def make_self_signed(directory: Path, domain: str) -> tuple[str, str]:
    """A self-signed certificate for `domain` and its key, as PEM files in `directory` (for STARTTLS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


@dataclass
class Xmppd:
    """A real `XmppServer` on loopback: c2s on `port`, WebSocket (RFC 7395) at `ws_url`."""

    server: XmppServer
    ws_url: str

    @property
    def port(self) -> int:
        return self.server.tcp_port


async def serve_xmpp(config: XmppServerConfig) -> AsyncIterator[Xmppd]:
    """Starts the server with its WebSocket on an aiohttp test server; stops both after the one yield."""
    server = XmppServer(config)
    await server.start()
    app = web.Application()
    app.router.add_get("/xmpp-websocket", server.websocket_handler)
    http = TestServer(app, host="127.0.0.1")
    await http.start_server()
    try:
        yield Xmppd(server, str(http.make_url("/xmpp-websocket")).replace("http://", "ws://"))
    finally:
        await server.stop()
        await http.close()
