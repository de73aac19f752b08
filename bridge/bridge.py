"""The Python API over the native core: Bridge, Conference, Endpoint.

Python owns policy and bookkeeping; the native core owns every packet. Calls here turn into Commands
(they return at once); the core answers with events that arrive through an eventfd watched by asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bridge import _native
from bridge.config import BridgeConfig
from bridge.description import Candidate, Fingerprint, Source, TransportDescription

log = logging.getLogger(__name__)

TransportState = Literal["new", "checking", "connected", "failed", "closed"]

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


class BridgeError(Exception):
    """A request the bridge cannot satisfy (unknown id, closed object, bad description)."""


def _ice_string(length: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


def _feedback_ssrcs() -> tuple[int, int]:
    """Two distinct non-zero SSRCs, chosen at random as RFC 3550 8.1 asks."""
    audio = secrets.randbits(32) or 1
    video = audio
    while video in (0, audio):
        video = secrets.randbits(32)
    return audio, video


def host_priority(local_preference: int) -> int:
    """RFC 8445 5.1.2.1 priority of a host candidate for component 1."""
    return (126 << 24) | (local_preference << 8) | (256 - 1)


@dataclass(frozen=True, slots=True)
class TransportStateChange:
    endpoint_id: str
    state: TransportState
    detail: str


class Endpoint:
    """One participant on this bridge; owns one native Transport."""

    def __init__(self, conference: Conference, endpoint_id: str, transport_id: int) -> None:
        self.conference = conference
        self.id = endpoint_id
        self.transport_id = transport_id
        self.ufrag = _ice_string(8)
        self.pwd = _ice_string(24)
        self.state: TransportState = "new"
        self.detail = ""
        self.sources: tuple[Source, ...] = ()
        self.remote: TransportDescription | None = None
        #: Colibri2 force-mute: kinds whose media from this endpoint reaches nobody (it still receives).
        self.force_mute_audio = False
        self.force_mute_video = False
        self._state_waiters: list[tuple[frozenset[str], asyncio.Future[TransportState]]] = []
        self.closed = False

    @property
    def _native(self) -> _native.NativeBridge:
        return self.conference.bridge.native

    def local_description(self) -> TransportDescription:
        """Our ICE credentials, one host candidate per advertised address, our fingerprint (actpass)."""
        bridge = self.conference.bridge
        hash_name, value = bridge.fingerprint
        candidates = tuple(
            Candidate(
                ip=ip,
                port=port,
                priority=host_priority(65535 - i),
                type="host",
                foundation=str(i + 1),
            )
            for i, (ip, port) in enumerate(bridge.advertised_addresses())
        )
        return TransportDescription(
            ufrag=self.ufrag,
            pwd=self.pwd,
            fingerprints=(Fingerprint(hash=hash_name, value=value, setup="actpass"),),
            candidates=candidates,
        )

    def set_remote_description(self, remote: TransportDescription) -> None:
        """The peer's credentials, fingerprints (any supported one may match) and candidates."""
        self._check_open()
        if not remote.fingerprints:
            # A trickle update (transport-info) repeats the credentials but not the fingerprints.
            if self.remote is not None and (self.remote.ufrag, self.remote.pwd) == (remote.ufrag, remote.pwd):
                self.add_remote_candidates(remote.candidates)
                self.remote = dataclasses.replace(
                    self.remote, candidates=(*self.remote.candidates, *remote.candidates)
                )
                return
            raise BridgeError("remote transport has no DTLS fingerprint")
        setups = {fp.setup for fp in remote.fingerprints}
        setup = "active" if "active" in setups else next(iter(setups))
        if self.remote is None or (self.remote.ufrag, self.remote.pwd) != (remote.ufrag, remote.pwd):
            self._native.connect_transport(
                self.transport_id,
                remote.ufrag,
                remote.pwd,
                [(fp.hash, fp.value) for fp in remote.fingerprints],
                setup,
            )
        self.add_remote_candidates(remote.candidates)
        self.remote = remote

    def add_remote_candidates(self, candidates: tuple[Candidate, ...] | list[Candidate]) -> None:
        """Trickled candidates (RFC 8838); only UDP ones are usable."""
        self._check_open()
        usable = [
            (c.ip, c.port, c.priority, str(c.type))
            for c in candidates
            if c.protocol.lower() == "udp" and c.component == 1 and _is_ip(c.ip)
        ]
        if usable:
            self._native.add_remote_candidates(self.transport_id, usable)

    def set_sources(self, sources: list[Source] | tuple[Source, ...]) -> None:
        """The full set of sources this endpoint sends; replaces the previous set (never merges)."""
        self._check_open()
        self.sources = tuple(sources)
        self._native.set_sources(
            self.transport_id,
            [(ssrc, s.kind, s.clock_rate()) for s in self.sources for ssrc in s.ssrcs],
        )

    def set_force_mute(self, audio: bool, video: bool) -> None:
        """Stops (or resumes) forwarding what this endpoint sends, per kind; what it receives is untouched.

        Applies at once, also before the endpoint has sources or a connection; unmuting video asks the
        endpoint for a keyframe so receivers can decode it at once.
        """
        self._check_open()
        self.force_mute_audio = audio
        self.force_mute_video = video
        self._native.set_force_mute(self.transport_id, audio, video)

    def request_keyframe(self, ssrc: int) -> None:
        self._check_open()
        self._native.request_keyframe(self.transport_id, ssrc)

    async def wait_state(self, *states: TransportState, timeout: float = 10.0) -> TransportState:
        """Waits until the transport reaches one of `states` (or is closed/failed)."""
        wanted = frozenset(states) | {"failed", "closed"}
        if self.state in wanted:
            return self.state
        fut: asyncio.Future[TransportState] = asyncio.get_running_loop().create_future()
        self._state_waiters.append((wanted, fut))
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the result.
        async with asyncio.timeout(timeout):
            return await fut

    def close(self) -> None:
        """Expires the endpoint: its transport closes and nothing more is forwarded to or from it."""
        if self.closed:
            return
        self.closed = True
        self._native.close_transport(self.transport_id)
        self.conference._forget(self)
        self._set_state("closed", "expired")

    def _set_state(self, state: TransportState, detail: str) -> None:
        if self.state == "closed":
            return
        self.state = state
        self.detail = detail
        for wanted, fut in list(self._state_waiters):
            if state in wanted and not fut.done():
                fut.set_result(state)
        self._state_waiters = [(w, f) for w, f in self._state_waiters if not f.done()]

    def _check_open(self) -> None:
        if self.closed:
            raise BridgeError(f"endpoint {self.id} is expired")


class Conference:
    """One meeting's forwarding domain (a native Router)."""

    def __init__(
        self,
        bridge: Bridge,
        conference_id: str,
        router_id: int,
        meeting_id: str,
        feedback_ssrcs: tuple[int, int],
    ) -> None:
        self.bridge = bridge
        self.id = conference_id
        self.meeting_id = meeting_id
        self.router_id = router_id
        #: The SSRCs the bridge sends all its own RTCP from in this conference, for audio and for video
        #: streams: chosen here once, given to the native Router when it is created, and signalled as the
        #: `jvb-a0` and `jvb-v0` sources of every Colibri2 answer.
        self.feedback_audio_ssrc, self.feedback_video_ssrc = feedback_ssrcs
        self.endpoints: dict[str, Endpoint] = {}
        self.closed = False

    def create_endpoint(self, endpoint_id: str) -> Endpoint:
        if self.closed:
            raise BridgeError(f"conference {self.id} is expired")
        if endpoint_id in self.endpoints:
            raise BridgeError(f"endpoint {endpoint_id} already exists")
        transport_id = next(self.bridge._ids)
        ep = Endpoint(self, endpoint_id, transport_id)
        self.bridge.native.create_transport(self.router_id, transport_id, ep.ufrag, ep.pwd, True)
        self.endpoints[endpoint_id] = ep
        self.bridge._transports[transport_id] = ep
        return ep

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self.endpoints.get(endpoint_id)

    def close(self) -> None:
        if self.closed:
            return
        for ep in list(self.endpoints.values()):
            ep.close()
        self.closed = True
        self.bridge.native.close_router(self.router_id)
        self.bridge._conferences.pop(self.id, None)

    def _forget(self, ep: Endpoint) -> None:
        self.endpoints.pop(ep.id, None)
        self.bridge._transports.pop(ep.transport_id, None)


class Bridge:
    """The media-bridge process's core: binds the shared UDP port and hosts Conferences."""

    def __init__(self, config: BridgeConfig | None = None) -> None:
        self.config = config or BridgeConfig()
        self._native: _native.NativeBridge | None = None
        self._ids = itertools.count(1)
        self._conferences: dict[str, Conference] = {}
        self._transports: dict[int, Endpoint] = {}
        self._stats_waiters: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fingerprint: tuple[str, str] = ("", "")
        self.on_transport_state: Callable[[TransportStateChange], None] | None = None

    @property
    def native(self) -> _native.NativeBridge:
        if self._native is None:
            raise BridgeError("bridge is not started")
        return self._native

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._native = _native.NativeBridge(self.config.bind_addresses, self.config.udp_port)
        self.fingerprint = self._native.fingerprint()
        self._loop.add_reader(self._native.event_fd(), self._drain_events)
        log.info("bridge started on %s", self._native.local_addresses())

    async def stop(self) -> None:
        if self._native is None:
            return
        for conf in list(self._conferences.values()):
            conf.close()
        assert self._loop is not None
        self._loop.remove_reader(self._native.event_fd())
        self._native.shutdown()
        self._native = None
        for fut in self._stats_waiters.values():
            if not fut.done():
                fut.cancel()

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def local_addresses(self) -> list[tuple[str, int]]:
        return self.native.local_addresses()

    def advertised_addresses(self) -> list[tuple[str, int]]:
        """(ip, port) pairs to put in candidates."""
        bound = self.local_addresses()
        if self.config.advertised_addresses:
            port = bound[0][1]
            return [(ip, port) for ip in self.config.advertised_addresses]
        out = []
        for ip, port in bound:
            addr = ipaddress.ip_address(ip)
            if addr.is_unspecified:
                out.append(("127.0.0.1" if addr.version == 4 else "::1", port))
            else:
                out.append((ip, port))
        return out

    def create_conference(self, meeting_id: str, conference_id: str | None = None) -> Conference:
        conference_id = conference_id or secrets.token_hex(8)
        if conference_id in self._conferences:
            raise BridgeError(f"conference {conference_id} already exists")
        router_id = next(self._ids)
        feedback = _feedback_ssrcs()
        self.native.create_router(router_id, *feedback)
        conf = Conference(self, conference_id, router_id, meeting_id, feedback)
        self._conferences[conference_id] = conf
        return conf

    def get_conference(self, conference_id: str) -> Conference | None:
        return self._conferences.get(conference_id)

    @property
    def conferences(self) -> dict[str, Conference]:
        return dict(self._conferences)

    async def get_stats(self, timeout: float = 5.0) -> dict[str, object]:
        """A stats snapshot from the native core: totals, drops by reason, per transport."""
        request_id = next(self._ids)
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._stats_waiters[request_id] = fut
        self.native.get_stats(request_id)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the result.
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._stats_waiters.pop(request_id, None)

    def _drain_events(self) -> None:
        if self._native is None:
            return
        for ev in self._native.drain_events():
            if ev.kind == "transport_state":
                ep = self._transports.get(ev.transport_id)
                if ep is None:
                    continue
                state: TransportState = ev.state  # type: ignore[assignment]
                ep._set_state(state, ev.detail)
                if self.on_transport_state is not None:
                    self.on_transport_state(TransportStateChange(ep.id, state, ev.detail))
            elif ev.kind == "stats":
                fut = self._stats_waiters.get(ev.request_id)
                if fut is not None and not fut.done():
                    fut.set_result(ev.stats)
            elif ev.kind == "command_failed":
                ep = self._transports.get(ev.transport_id)
                log.warning(
                    "bridge refused a request for endpoint %s: %s",
                    ep.id if ep is not None else ev.transport_id,
                    ev.detail,
                )
            else:
                log.debug("native event %s", ev.kind)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
