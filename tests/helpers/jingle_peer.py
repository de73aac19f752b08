"""A conference participant as lib-jitsi-meet behaves (docs/jitsi-protocol.md 5.2-5.5), on slixmpp + aiortc.

It logs in anonymously, asks `focus.<domain>` for the room (conference IQ, retried until `ready`), joins the
MUC under an 8-hex nick, and answers the focus's Jingle: a session-initiate becomes an SDP offer (the bridge
is the offerer; tests/helpers/sdp.py's layout: one m-line pair per remote participant, `a=ssrc` for every
remote SSRC) for a fresh aiortc peer, whose answer goes back as session-accept with its transport and
sources. source-add/remove re-offer to the same peer; session-terminate closes it.

Limits of this test peer (not of the focus): aiortc cannot take a second source set for a participant it
already had a slot for (sdp.py: slots are never reused), so a source-add for such an owner makes the peer ask
for a fresh session (session-terminate with `<bridge-session restart="true">`), which Jitsi clients also do
when they cannot apply a change. The bridge's `jvb` feedback sources are not put in the SDP (the bridge only
sends RTCP with them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, Protocol, cast

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bridge import Candidate, Fingerprint, Source, SsrcGroup, TransportDescription
from bridge.description import CandidateType, Setup
from colibri2 import model as c2
from signaling.focus import media
from signaling.jingle import (
    JVB_OWNER,
    BridgeSession,
    Content,
    EndpointSources,
    IceTransport,
    Jingle,
    build_jingle,
    parse_jingle,
)
from signaling.jingle import Source as JSource
from signaling.jingle import SsrcGroup as JGroup
from signaling.jingle.model import Parameter
from tests.helpers.call import wait_until
from tests.helpers.peers import AiortcPeer
from tests.helpers.prosody import DOMAIN, FOCUS_COMPONENT, MUC_DOMAIN
from tests.helpers.sdp import OfferBuilder, RemoteParticipant, only_loopback, parse_answer

log = logging.getLogger(__name__)

NS_CLIENT = "jabber:client"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_NICK = "http://jabber.org/protocol/nick"
FEATURES = (
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:apps:rtp:video",
    "urn:xmpp:jingle:transports:ice-udp:1",
    "urn:xmpp:jingle:apps:dtls:0",
    "http://jitsi.org/source-name",
)


class XmppServerAddress(Protocol):
    """Where a peer logs in: Prosody, or `sluice serve`'s embedded server run with `--domain meet.test`."""

    @property
    def c2s_port(self) -> int: ...


class JinglePeer:
    """One participant: `await join()`, then watch `frames_from(other_nick)`; `await leave()` at the end."""

    def __init__(
        self,
        prosody: XmppServerAddress,
        room: str,
        *,
        json_sources: bool = True,
        nick: str | None = None,
    ) -> None:
        self.prosody = prosody
        self.room = f"{room}@{MUC_DOMAIN}"
        self.nick = nick or secrets.token_hex(4)
        self.json_sources = json_sources
        self.xmpp = slixmpp.ClientXMPP(DOMAIN, "")
        self.xmpp.enable_starttls = False
        self.xmpp.enable_direct_tls = False
        self.xmpp.enable_plaintext = True
        self.peer: AiortcPeer | None = None
        self.peers: list[AiortcPeer] = []
        self.builder: OfferBuilder | None = None
        self.sid: str | None = None
        self.bridge_session: str | None = None
        self.initiates: list[Jingle] = []
        self.jingles: list[Jingle] = []
        #: What each session-accept announced of ours: SSRCs per session, for a failing test's trace.
        self.sent_ssrcs: list[tuple[str, tuple[int, ...]]] = []
        self.mutes: list[ET.Element] = []
        self.focus_presence: ET.Element | None = None
        self.errors: list[str] = []
        self._session = asyncio.Event()
        self._joined = asyncio.Event()
        self._changed = asyncio.Event()
        self._queue: asyncio.Queue[ET.Element] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.xmpp.add_event_handler("session_start", lambda _e: self._session.set())
        self.xmpp.add_event_handler("presence", self._on_presence)
        self.xmpp.register_handler(Callback("peer iq", MatchXPath(f"{{{NS_CLIENT}}}iq"), self._on_iq))

    # ---- joining and leaving

    async def join(self, timeout: float = 20.0) -> None:
        self.xmpp.connect("127.0.0.1", self.prosody.c2s_port)
        await asyncio.wait_for(self._session.wait(), timeout)
        self._worker = asyncio.create_task(self._work(), name=f"peer-{self.nick}")
        await asyncio.wait_for(self._request_conference(), timeout)
        pres = self.xmpp.make_presence(pto=f"{self.room}/{self.nick}")
        pres.append(ET.Element(f"{{{NS_MUC}}}x"))
        ET.SubElement(pres.xml, f"{{{NS_NICK}}}nick").text = f"peer {self.nick}"
        if not self.json_sources:
            # Caps make the focus ask for our features (without json-encoded-sources).
            caps = {"hash": "sha-1", "node": "https://sluice.test/jingle-peer", "ver": "inline-sources-1"}
            ET.SubElement(pres.xml, f"{{{NS_CAPS}}}c", caps)
        pres.send()
        await asyncio.wait_for(self._joined.wait(), timeout)

    async def _request_conference(self) -> None:
        """5.2: the conference IQ to focus.<domain>, repeated until the focus says ready."""
        while True:
            iq = self.xmpp.make_iq_set(ito=FOCUS_COMPONENT)
            conference = ET.Element(
                f"{{{NS_FOCUS}}}conference", {"room": self.room, "machine-uid": self.nick}
            )
            ET.SubElement(conference, f"{{{NS_FOCUS}}}property", {"name": "visitors-version", "value": "1"})
            iq.append(conference)
            try:
                reply = await iq.send(timeout=10)  # type: ignore[no-untyped-call]
            except (IqError, IqTimeout) as exc:
                log.info("%s: conference request failed (%s), retrying", self.nick, exc)
                await asyncio.sleep(0.5)
                continue
            answer = reply.xml.find(f"{{{NS_FOCUS}}}conference")
            if answer is not None and answer.get("ready") == "true":
                self.focusjid = answer.get("focusjid")
                return
            await asyncio.sleep(0.5)

    async def leave(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        if self.xmpp.transport is not None:
            self.xmpp.send_presence(pto=f"{self.room}/{self.nick}", ptype="unavailable")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 2.0)
            self.xmpp.abort()
        for peer in self.peers:
            await peer.close()

    # ---- what the tests look at

    def frames_from(self, nick: str) -> int:
        """Video frames decoded from `nick` in the current session."""
        return self.peer.frames_from(nick) if self.peer is not None else 0

    def audio_frames_from(self, nick: str) -> int:
        return self.peer.audio_frames_from(nick) if self.peer is not None else 0

    def summary(self) -> str:
        state = self.peer.summary() if self.peer is not None else "no session"
        return f"{self.nick}: {state}"

    def trace(self) -> str:
        """The Jingle this peer applied (action, sid, each owner's SSRCs) and what it announced: what a
        failing media test prints to tell a signalling race from a forwarding fault."""
        steps = []
        for j in self.jingles:
            owners = ", ".join(
                f"{owner}={sorted(x for s in sources for x in s.ssrcs)}"
                for owner, sources in remote_sources(j, self.json_sources)
            )
            steps.append(f"{j.action}({(j.sid or '')[:6]}: {owners})")
        sent = ", ".join(f"{sid[:6]}={list(ssrcs)}" for sid, ssrcs in self.sent_ssrcs)
        return f"{self.nick}: sessions={len(self.peers)} sent {sent}; got " + " ".join(steps)

    async def wait_for(self, what: Callable[[], bool], timeout: float = 20.0) -> None:
        async def wait() -> None:
            while not what():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    async def send_iq(self, payload: ET.Element, to: str | None = None, timeout: float = 10.0) -> ET.Element:
        """A raw IQ set (to the focus in the room unless told), returning the reply, result or error."""
        iq = self.xmpp.make_iq_set(ito=to or f"{self.room}/focus")
        iq.append(payload)
        try:
            reply = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
        except IqError as exc:
            return cast(ET.Element, exc.iq.xml)
        return cast(ET.Element, reply.xml)

    # ---- incoming stanzas

    def _on_presence(self, pres: Any) -> None:
        sender = str(pres["from"])
        if sender.partition("/")[0].lower() != self.room:
            return
        nick = sender.partition("/")[2]
        if nick == "focus":
            self.focus_presence = pres.xml
        codes = {s.get("code") for s in pres.xml.iterfind(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}status")}
        if nick == self.nick and "110" in codes and pres["type"] != "unavailable":
            self._joined.set()
        self._changed.set()

    def _on_iq(self, iq: Any) -> None:
        if iq["type"] not in ("get", "set"):
            return
        payload: ET.Element | None = next(iter(iq.xml), None)
        if payload is None:
            return
        tag = payload.tag
        if tag == f"{{{NS_DISCO_INFO}}}query" and iq["type"] == "get":
            reply = iq.reply(clear=True)
            query = ET.SubElement(reply.xml, f"{{{NS_DISCO_INFO}}}query", dict(payload.attrib))
            features = (
                FEATURES if not self.json_sources else (*FEATURES, "http://jitsi.org/json-encoded-sources")
            )
            for var in features:
                ET.SubElement(query, f"{{{NS_DISCO_INFO}}}feature", {"var": var})
            reply.send()
            return
        if tag.endswith("}mute"):
            self.mutes.append(payload)
            iq.reply(clear=True).send()
            self._changed.set()
            return
        if tag != f"{{{NS_JINGLE}}}jingle":
            if tag != "{jabber:iq:roster}query":
                iq.reply(clear=True).error().send()
            return
        # lib-jitsi-meet acks at once and applies the change afterwards, in order.
        iq.reply(clear=True).send()
        self._queue.put_nowait(iq.xml)

    async def _work(self) -> None:
        while True:
            stanza = await self._queue.get()
            try:
                await self._apply(parse_jingle(stanza))
            except Exception as exc:
                log.exception("%s: cannot apply Jingle", self.nick)
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._changed.set()

    async def _apply(self, j: Jingle) -> None:
        self.jingles.append(j)
        if j.action == "session-initiate":
            await self._on_initiate(j)
        elif j.action == "session-terminate":
            if j.sid == self.sid:
                self.sid = None
                self.builder = None
                if self.peer is not None:
                    await self.peer.close()
                self.peer = None
        elif j.action in ("source-add", "source-remove") and j.sid == self.sid:
            await self._on_sources(j)

    async def _on_initiate(self, j: Jingle) -> None:
        if self.peer is not None:
            await self.peer.close()
        self.initiates.append(j)
        self.sid = j.sid
        self.bridge_session = j.bridge_session.id if j.bridge_session is not None else None
        transport = j.transport()
        assert transport is not None, "session-initiate without a transport"
        self.builder = OfferBuilder(bridge_transport(transport))
        for owner, sources in remote_sources(j, self.json_sources):
            self.builder.add(RemoteParticipant(owner, sources))
        self.peer = AiortcPeer(self.nick)
        self.peers.append(self.peer)
        answer = parse_answer(
            await self.peer.answer(self.builder.offer()), self.nick, candidate_filter=only_loopback
        )
        self.sent_ssrcs.append((j.sid, tuple(x for s in answer.sources for x in s.ssrcs)))
        accept = Jingle(
            action="session-accept",
            sid=j.sid,
            initiator=j.initiator,
            responder=str(self.xmpp.boundjid),
            contents=accept_contents(answer.transport, answer.sources),
        )
        reply = await self.send_iq(build_jingle(accept))
        if reply.get("type") != "result":
            self.errors.append(f"session-accept refused: {ET.tostring(reply, encoding='unicode')}")

    async def _on_sources(self, j: Jingle) -> None:
        assert self.builder is not None and self.peer is not None
        changes = remote_sources(j, self.json_sources)
        if j.action == "source-remove":
            for owner, _ in changes:
                with contextlib.suppress(KeyError):
                    self.builder.remove(owner)
        else:
            known = set(self.builder.participants) | {
                s.participant for o in self.peer.offers for s in o.sections if s.participant
            }
            if any(owner in known for owner, _ in changes):
                await self.request_restart()
                return
            for owner, sources in changes:
                self.builder.add(RemoteParticipant(owner, sources))
        await self.peer.answer(self.builder.offer())

    async def request_restart(self) -> ET.Element:
        """session-terminate with `<bridge-session restart="true">` (what a client sends on ICE failure)."""
        assert self.sid is not None
        terminate = Jingle(
            action="session-terminate",
            sid=self.sid,
            bridge_session=BridgeSession(id=self.bridge_session, restart=True),
        )
        return await self.send_iq(build_jingle(terminate))


# ---- Jingle <-> the SDP helpers' values


def bridge_transport(t: IceTransport) -> TransportDescription:
    return TransportDescription(
        ufrag=t.ufrag or "",
        pwd=t.pwd or "",
        fingerprints=tuple(
            Fingerprint.parse(f.hash, f.value, cast(Setup, f.setup or "actpass")) for f in t.fingerprints
        ),
        candidates=tuple(
            Candidate(
                ip=ipaddress.ip_address(c.ip),
                port=c.port,
                priority=c.priority,
                type=cast(CandidateType, c.type),
                foundation=c.foundation,
                generation=c.generation or 0,
            )
            for c in t.candidates
            if c.protocol.lower() == "udp" and c.component == 1
        ),
    )


def _as_sources(owner: str, es: EndpointSources) -> tuple[Source, ...]:
    out: list[Source] = []
    for kind in ("audio", "video"):
        srcs, groups = es.of(kind)
        if not srcs:
            continue
        fid = tuple(
            SsrcGroup(cast(Literal["FID", "SIM"], g.semantics), g.ssrcs)
            for g in groups
            if g.semantics in ("FID", "SIM")
        )
        name = srcs[0].name or f"{owner}-{kind[0]}0"
        out.append(Source(kind=kind, ssrcs=tuple(s.ssrc for s in srcs), name=name, groups=fid))
    return tuple(out)


def remote_sources(j: Jingle, json: bool) -> list[tuple[str, tuple[Source, ...]]]:
    """Per owner (not `jvb`), the sources a Jingle message carries, from JSON or inline ssrc-info."""
    if json and j.json_sources is not None:
        owned = list(j.json_sources)
    else:
        by_owner: dict[str, EndpointSources] = {}
        for kind in ("audio", "video"):
            content = j.content(kind)
            if content is None or content.description is None:
                continue
            d = content.description
            for s in d.sources:
                owner = s.owner or "unknown"
                es = by_owner.get(owner, EndpointSources())
                mine = {x.ssrc for x in d.sources if x.owner == owner}
                groups = tuple(g for g in d.ssrc_groups if set(g.ssrcs) <= mine)
                if kind == "audio":
                    es = EndpointSources((*es.audio, s), groups, es.video, es.video_groups)
                else:
                    es = EndpointSources(es.audio, es.audio_groups, (*es.video, s), groups)
                by_owner[owner] = es
        owned = list(by_owner.items())
    return [(owner, _as_sources(owner, es)) for owner, es in owned if owner != JVB_OWNER]


def accept_contents(transport: TransportDescription, sources: tuple[Source, ...]) -> tuple[Content, ...]:
    ice = IceTransport(
        ufrag=transport.ufrag,
        pwd=transport.pwd,
        candidates=tuple(
            c2.Candidate(
                component=1,
                foundation=c.foundation,
                generation=c.generation,
                id=None,
                ip=str(c.ip),
                network=0,
                port=c.port,
                priority=c.priority,
                protocol="udp",
                type=c.type,
            )
            for c in transport.candidates
        ),
        rtcp_mux=True,
        fingerprints=tuple(c2.Fingerprint(f.hash, f.value, f.setup) for f in transport.fingerprints),
    )
    contents = []
    for kind in ("audio", "video"):
        description = media.description(kind)
        srcs: list[JSource] = []
        groups: list[JGroup] = []
        for s in sources:
            if s.kind != kind:
                continue
            msid = (Parameter("msid", f"{s.name}-stream {s.name}-track"),)
            srcs.extend(JSource(ssrc, s.name, parameters=msid) for ssrc in s.ssrcs)
            groups.extend(JGroup(g.semantics, g.ssrcs) for g in s.groups)
        contents.append(
            Content(
                kind,
                creator="initiator",
                senders="both",
                description=replace(description, sources=tuple(srcs), ssrc_groups=tuple(groups)),
                transport=ice,
            )
        )
    return tuple(contents)


async def keeps_decoding(peers: list[JinglePeer], *, frames: int = 15, within: float = 15.0) -> float:
    """Waits until every peer decoded `frames` more video frames from every other, counted from now;
    returns the seconds it took."""
    start = {(p, o.nick): p.frames_from(o.nick) for p in peers for o in peers if o is not p}
    return await wait_until(
        lambda: all(p.frames_from(o) >= n + frames for (p, o), n in start.items()),
        within=within,
        describe=lambda: "; ".join(p.summary() for p in peers),
    )
