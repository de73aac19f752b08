"""The bridge's registry over the native core: Bridge, Conference, Endpoint.

`Bridge` is the one registry of this bridge's conferences (by id and by meeting-id) and their endpoints, and
each fact about an endpoint is stored once, on its `Endpoint`: what Colibri2 said of it, its transport and
sources, what its bridge channel asked for, how long it has been idle. The Colibri2 handler and the idle
expiry plan changes (bridge/changes.py) that `Bridge.apply` makes; the bridge channel writes its endpoints'
settings here. Changes that concern the native core become Commands (they return at once); the core answers
with Events that arrive through an eventfd watched by asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import logging
import os
import secrets
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeGuard

from bridge import _native, stun_mapping
from bridge.changes import (
    Change,
    CreateConference,
    CreateEndpoint,
    ExpireConference,
    ExpireEndpoint,
    UpdateEndpoint,
)
from bridge.channel import ReceiverAudioSubscription, ReceiverVideoConstraints, VideoType
from bridge.config import BridgeConfig
from bridge.description import Candidate, Fingerprint, Source, TransportDescription
from bridge.placement import Placement
from bridge.seam import (
    TRANSPORT_STATES,
    HeaderExtensionIds,
    NativeSeam,
    header_extension_ids,
    local_fingerprint,
    to_native_candidate,
    to_native_fingerprint,
    to_native_payload_types,
    to_native_source,
)
from colibri2.model import Media

log = logging.getLogger(__name__)

TransportState = Literal["new", "checking", "connected", "failed", "closed"]

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


SHARD_THREAD_PREFIX = "sluice-shard"


def process_threads(pid: int | str = "self") -> Iterator[tuple[int, bool]]:
    """Each thread of a process, from /proc: its id and whether it is a shard. A thread that ends while
    this runs is left out."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read()
        except OSError:
            continue
        yield int(tid), name.startswith(SHARD_THREAD_PREFIX)


def keep_threads_off(cpus: Iterable[int]) -> None:
    """Moves this process's threads, shards excepted, off `cpus` (the pinned shards') when another CPU is
    theirs: the control plane must not take the media threads' CPUs. Threads started later inherit it."""
    pinned = set(cpus)
    others = os.sched_getaffinity(0) - pinned
    if not others:
        return
    for tid, shard in process_threads():
        if not shard:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                os.sched_setaffinity(tid, others)
    log.info("shards pinned to CPUs %s; the other threads run on %s", sorted(pinned), sorted(others))


def log_ids(conference: str, endpoint: str | None = None) -> dict[str, str]:
    """`extra` for a log line about a conference (its meeting-id) or an endpoint: JSON logs make them fields
    (sluice/logs.py), as the focus's lines name the same meeting-id."""
    return (
        {"conference": conference} if endpoint is None else {"conference": conference, "endpoint": endpoint}
    )


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


#: RFC 6544 4.2 local preference of a passive TCP host candidate: 2^13 * 4 (direction) + 8191 (the
#: native agent's, so both sides of the seam agree); below UDP's 65535, so UDP wins when both work.
TCP_PASSIVE_PREFERENCE = (4 << 13) | 0x1FFF


def host_priority(local_preference: int) -> int:
    """RFC 8445 5.1.2.1 priority of a host candidate for component 1."""
    return (126 << 24) | (local_preference << 8) | (256 - 1)


def remote_refusal(current: TransportDescription | None, remote: TransportDescription) -> str | None:
    """Why `remote` cannot replace `current` as an endpoint's remote description, or None if it can.

    Without fingerprints it is only a trickle update (transport-info), which repeats the credentials."""
    if remote.fingerprints:
        return None
    if current is not None and (current.ufrag, current.pwd) == (remote.ufrag, remote.pwd):
        return None
    return "remote transport has no DTLS fingerprint"


@dataclass(frozen=True, slots=True)
class TransportStateChange:
    endpoint_id: str
    state: TransportState
    detail: str


class Endpoint:
    """One participant on this bridge, and every fact about it; owns one native Transport."""

    def __init__(self, conference: Conference, endpoint_id: str, transport_id: int) -> None:
        self.conference = conference
        self.id = endpoint_id
        self.transport_id = transport_id
        self.ufrag = _ice_string(8)
        self.pwd = _ice_string(24)
        #: The bridge channel's password (in its WebSocket URL): the first ICE pwd, kept across ICE
        #: restarts so that the URL the client already has still opens the channel.
        self.channel_pwd = self.pwd
        #: ICE restarts so far (Colibri2 `ice-generation`).
        self.ice_generation = 0
        self.state: TransportState = "new"
        self.detail = ""
        self.closed = False
        self.remote: TransportDescription | None = None
        self.sources: tuple[Source, ...] = ()
        #: What Colibri2 said of it.
        self.stats_id: str | None = None
        self.muc_role: str | None = None
        self.capabilities: tuple[str, ...] = ()
        self.medias: tuple[Media, ...] = ()
        #: The video payload types last sent to the packet path.
        self._payload_types: list[_native.PayloadType] = []
        self._extension_ids = HeaderExtensionIds(None, None, None, None)
        #: Colibri2 force-mute: kinds whose media from this endpoint reaches nobody (it still receives).
        self.force_mute_audio = False
        self.force_mute_video = False
        #: How many video streams it wants (-1: any; None: never said): Colibri2's initial-last-n, then
        #: what its bridge channel says (LastNChangedEvent, ReceiverVideoConstraints.lastN).
        self.last_n: int | None = None
        #: What its bridge channel said: receiver constraints merged so far (their lastN is `last_n`), the
        #: video type of each of its sources and of the deprecated single one, its audio subscription.
        self.video_constraints = ReceiverVideoConstraints()
        #: What the allocation last gave it: per other video source, (spatial, temporal) (None: nothing), as
        #: sent to the packet path; and the sources it gets (None: no allocation yet, every source).
        self.allocation: list[tuple[str, tuple[int, int] | None]] | None = None
        #: What the packet path was last told to probe towards (bit/s; 0: no probing).
        self.probe_target_bps = 0
        self.forwarded_sources: frozenset[str] | None = None
        #: What this endpoint was last told (SenderSourceConstraints) of the largest height anyone wants of
        #: each of its video sources.
        self.sender_max_heights: dict[str, int] = {}
        self.video_types: dict[str, VideoType] = {}
        self.video_type: VideoType | None = None
        self.audio_subscription = ReceiverAudioSubscription()
        #: Idle expiry (bridge/lifecycle.py): the transport's packets_in at the last check, and when it last
        #: changed (None: not observed yet).
        self.last_packets_in = -1
        self.last_activity: float | None = None
        self._state_waiters: list[tuple[frozenset[str], asyncio.Future[TransportState]]] = []

    @property
    def _native(self) -> NativeSeam:
        return self.conference.shard.native

    @property
    def transport_cc(self) -> bool:
        """Whether its RTP carries transport-wide sequence numbers: the packet path then estimates what it can
        receive from its feedback."""
        return self._extension_ids.transport_cc is not None

    def local_description(self) -> TransportDescription:
        """Our ICE credentials, one host candidate per advertised address, our fingerprint (actpass)."""
        bridge, shard = self.conference.bridge, self.conference.shard
        udp = bridge.advertised_addresses(shard)
        candidates = tuple(
            Candidate(ip=ip, port=port, priority=host_priority(65535 - i), foundation=str(i + 1))
            for i, (ip, port) in enumerate(udp)
        ) + tuple(
            Candidate(
                ip=ip,
                port=port,
                priority=host_priority(TCP_PASSIVE_PREFERENCE - i),
                foundation=str(len(udp) + i + 1),
                protocol="tcp",
                tcptype="passive",
            )
            for i, (ip, port) in enumerate(bridge.advertised_tcp_addresses(shard))
        )
        return TransportDescription(
            ufrag=self.ufrag, pwd=self.pwd, fingerprints=(bridge.fingerprint,), candidates=candidates
        )

    def set_remote_description(self, remote: TransportDescription) -> None:
        """The peer's credentials, fingerprints (any of them may match) and candidates; without fingerprints,
        a trickle update of the same credentials (see `remote_refusal`)."""
        self._check_open()
        refusal = remote_refusal(self.remote, remote)
        if refusal is not None:
            raise BridgeError(refusal)
        if self.remote is not None and not remote.fingerprints:
            self.add_remote_candidates(remote.candidates)
            self.remote = dataclasses.replace(
                self.remote, candidates=(*self.remote.candidates, *remote.candidates)
            )
            return
        if self.remote is None or (self.remote.ufrag, self.remote.pwd) != (remote.ufrag, remote.pwd):
            self._native.connect_transport(
                self.transport_id,
                remote.ufrag,
                remote.pwd,
                [to_native_fingerprint(fp) for fp in remote.fingerprints],
            )
        self.add_remote_candidates(remote.candidates)
        self.remote = remote

    def restart_ice(self) -> None:
        """ICE restart (Colibri2 `ice-restart`): new local credentials. DTLS, SRTP and the path media takes
        stay until the client's new generation connects; its new credentials come as a remote description."""
        self._check_open()
        self.ufrag, self.pwd = _ice_string(8), _ice_string(24)
        self.ice_generation += 1
        self._native.restart_ice(self.transport_id, self.ufrag, self.pwd)
        log.info(
            "ICE restart, generation %d",
            self.ice_generation,
            extra=log_ids(self.conference.meeting_id, self.id),
        )

    def add_remote_candidates(self, candidates: Iterable[Candidate]) -> None:
        """Trickled candidates (RFC 8838)."""
        self._check_open()
        native = [to_native_candidate(c) for c in candidates]
        if native:
            self._native.add_remote_candidates(self.transport_id, native)

    def set_sources(self, sources: Iterable[Source]) -> None:
        """The full set of sources this endpoint sends, groups and all; replaces the previous set."""
        self._check_open()
        self.sources = tuple(sources)
        self._native.set_sources(self.transport_id, [to_native_source(s) for s in self.sources])
        self.conference.bridge._changed(self.conference)

    def set_force_mute(self, audio: bool, video: bool) -> None:
        """Stops (or resumes) forwarding what this endpoint sends, per kind; what it receives is untouched.

        Applies at once, also before the endpoint has sources or a connection; unmuting video asks the
        endpoint for a keyframe so receivers can decode it at once.
        """
        self._check_open()
        self.force_mute_audio = audio
        self.force_mute_video = video
        self._native.set_force_mute(self.transport_id, audio, video)

    def set_medias(self, medias: tuple[Media, ...]) -> None:
        """What Colibri2 says this endpoint sends with; the packet path learns its video payload types."""
        self.medias = medias
        self._check_open()
        types = to_native_payload_types(medias)
        if types != self._payload_types:
            self._payload_types = types
            self._native.set_payload_types(self.transport_id, types)
        ids = header_extension_ids(medias)
        if ids != self._extension_ids:
            self._extension_ids = ids
            self._native.set_header_extensions(self.transport_id, *ids)

    def set_allocation(self, targets: list[tuple[str, tuple[int, int] | None]]) -> None:
        """What this endpoint receives of each named video source, (spatial, temporal) as
        `selection.native_target` gives it (None: nothing); replaces the last."""
        self._check_open()
        self.allocation = targets
        self.forwarded_sources = frozenset(name for name, layer in targets if layer is not None)
        self._native.set_allocation(self.transport_id, targets)

    def set_probe_target(self, bps: int) -> None:
        """What the allocation would send this endpoint if its bandwidth estimate allowed (0: no more than it
        is sent): the packet path probes its link towards it."""
        self._check_open()
        self.probe_target_bps = bps
        self._native.set_probe_target(self.transport_id, bps)

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
    """One meeting's forwarding domain (a native Router) and its endpoints."""

    def __init__(
        self,
        bridge: Bridge,
        conference_id: str,
        router_id: int,
        meeting_id: str,
        feedback_ssrcs: tuple[int, int],
        *,
        shard: Shard,
        name: str | None = None,
    ) -> None:
        self.bridge = bridge
        #: The shard whose thread forwards all of this conference's media: its endpoints' transports live
        #: there and their candidates carry that shard's ports.
        self.shard = shard
        self.id = conference_id
        self.meeting_id = meeting_id
        #: The Colibri2 conference name (the MUC's JID), if the focus gave one.
        self.name = name
        self.router_id = router_id
        #: The SSRCs the bridge sends all its own RTCP from in this conference, for audio and for video
        #: streams: chosen here once, given to the native Router when it is created, and signalled as the
        #: `jvb-a0` and `jvb-v0` sources of every Colibri2 answer.
        self.feedback_audio_ssrc, self.feedback_video_ssrc = feedback_ssrcs
        self.endpoints: dict[str, Endpoint] = {}
        self.closed = False
        #: Idle expiry: the last check that saw an endpoint here (None: not observed yet).
        self.last_activity: float | None = None

    def create_endpoint(self, endpoint_id: str) -> Endpoint:
        if self.closed:
            raise BridgeError(f"conference {self.id} is expired")
        if endpoint_id in self.endpoints:
            raise BridgeError(f"endpoint {endpoint_id} already exists")
        transport_id = next(self.bridge._ids)
        ep = Endpoint(self, endpoint_id, transport_id)
        self.shard.native.create_transport(self.router_id, transport_id, ep.ufrag, ep.pwd, True)
        self.endpoints[endpoint_id] = ep
        self.bridge._transports[transport_id] = ep
        self.bridge._changed(self)
        return ep

    def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self.endpoints.get(endpoint_id)

    def close(self) -> None:
        if self.closed:
            return
        with self.bridge.batch():
            for ep in list(self.endpoints.values()):
                ep.close()
            self.closed = True
            self.shard.native.close_router(self.router_id)
            self.bridge._forget(self)

    def _forget(self, ep: Endpoint) -> None:
        self.endpoints.pop(ep.id, None)
        self.bridge._transports.pop(ep.transport_id, None)
        self.bridge._changed(self)


@dataclass(eq=False, slots=True)
class Shard:
    """One shard of the packet path: a thread with its own sockets (its own UDP port, and TCP port with
    ICE-TCP) that forwards every packet of the conferences placed on it."""

    index: int
    native: NativeSeam


class Bridge:
    """The media-bridge process's core: starts the shards (each binds its own UDP port) and is the registry of
    Conferences, each placed on one shard."""

    def __init__(
        self, config: BridgeConfig | None = None, *, native: NativeSeam | Sequence[NativeSeam] | None = None
    ) -> None:
        """`native`: a seam (or one per shard) to use instead of starting the native core (tests drive the
        registry so)."""
        self.config = config or BridgeConfig()
        self._shards: list[Shard] = []
        self.placement = Placement(1)
        self._ids = itertools.count(1)
        self._conferences: dict[str, Conference] = {}
        self._by_meeting: dict[str, Conference] = {}
        self._by_router: dict[int, Conference] = {}
        self._transports: dict[int, Endpoint] = {}
        self._stats_waiters: dict[int, asyncio.Future[dict[str, object]]] = {}
        #: Public addresses STUN mapping found at start (`stun_mapping_servers`), advertised too.
        self.mappings: list[stun_mapping.Mapping] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fingerprint: Fingerprint | None = None
        self.on_transport_state: Callable[[TransportStateChange], None] | None = None
        #: Called once for each conference whose endpoints or sources changed (or that closed), after the
        #: change (after the whole batch, inside `batch()`), so the bridge channel can follow.
        self.on_change: Callable[[Conference], None] | None = None
        #: Each conference's RFC 6464 audio levels over the last native tick: endpoint id -> (loudness
        #: 0..127, voice).
        self.on_audio_levels: Callable[[Conference, dict[str, tuple[int, bool]]], None] | None = None
        #: An endpoint's send-side estimate fell (bit/s), between stats snapshots.
        self.on_estimate_fell: Callable[[Endpoint, int], None] | None = None
        #: A probe raised an endpoint's send-side estimate (bit/s), between stats snapshots.
        self.on_estimate_rose: Callable[[Endpoint, int], None] | None = None
        self._batch_depth = 0
        self._changed_conferences: dict[str, Conference] = {}
        if native is not None:
            self._attach(list(native) if isinstance(native, Sequence) else [native])

    @property
    def shards(self) -> list[Shard]:
        if not self._shards:
            raise BridgeError("bridge is not started")
        return list(self._shards)

    @property
    def fingerprint(self) -> Fingerprint:
        """The fingerprint of the bridge's DTLS certificate (one per bridge), with a=setup:actpass."""
        if self._fingerprint is None:
            raise BridgeError("bridge is not started")
        return self._fingerprint

    def _attach(self, natives: list[NativeSeam]) -> None:
        fingerprints = {local_fingerprint(n) for n in natives}
        if len(fingerprints) != 1:
            raise BridgeError("the shards of one bridge must present one DTLS certificate")
        self._shards = [Shard(i, n) for i, n in enumerate(natives)]
        self.placement = Placement(len(natives))
        (self._fingerprint,) = fingerprints

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        cpus = cfg.shard_cpus
        if cpus is not None and len(cpus) != cfg.shards:
            raise BridgeError(f"{cfg.shards} shards need {cfg.shards} CPUs to pin to, not {len(cpus)}")
        natives: list[_native.NativeBridge] = []
        try:
            for i in range(cfg.shards):
                natives.append(
                    _native.NativeBridge(
                        cfg.bind_addresses,
                        _shard_port(cfg.udp_port, i),
                        None if cpus is None else cpus[i],
                        cfg.cc_trace_dir,
                        cfg.cc_initial_estimate_bps,
                        cfg.cc_pacing,
                        None if cfg.ice_tcp_port is None else _shard_port(cfg.ice_tcp_port, i),
                        cfg.ice_tcp_max_connections,
                        cfg.gso,
                        shard_index=i,
                        certificate_of=natives[0] if natives else None,
                    )
                )
        except BaseException:
            for started in natives:
                started.shutdown()
            raise
        if cpus is not None:
            keep_threads_off(cpus)
        self._attach(list(natives))
        for shard in self._shards:
            self._loop.add_reader(shard.native.event_fd(), self._drain_events, shard)
            log.info("shard %d started on %s", shard.index, shard.native.local_addresses())
            if (tcp := shard.native.tcp_local_address()) is not None:
                log.info("shard %d: ICE-TCP (passive candidates) on %s:%s", shard.index, *tcp)
        if self.config.stun_mapping_servers:
            self.mappings = await stun_mapping.discover(
                self.config.bind_addresses, self.config.stun_mapping_servers
            )

    async def stop(self) -> None:
        if not self._shards:
            return
        for conf in list(self._conferences.values()):
            conf.close()
        for shard in self._shards:
            if self._loop is not None:
                self._loop.remove_reader(shard.native.event_fd())
            shard.native.shutdown()
        self._shards = []
        for fut in self._stats_waiters.values():
            if not fut.done():
                fut.cancel()

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def local_addresses(self) -> list[tuple[str, int]]:
        """Every shard's bound (address, port) pairs, shard by shard."""
        return [a for shard in self.shards for a in shard.native.local_addresses()]

    def advertised_tcp_addresses(
        self, shard: Shard
    ) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        """(address, port) of a shard's ICE-TCP candidates: its UDP ones' addresses on its TCP port (or the
        mapped one, plus the shard's index); none without ICE-TCP."""
        tcp = shard.native.tcp_local_address()
        if tcp is None:
            return []
        port = _shard_port(self.config.ice_tcp_mapped_port or 0, shard.index) or tcp[1]
        return [(ip, port) for ip, _ in self.advertised_addresses(shard)]

    def advertised_addresses(
        self, shard: Shard
    ) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        """(address, port) pairs to put in a shard's candidates: the configured addresses, else the bound ones
        (a wildcard becomes loopback); then the public addresses STUN mapping found; all on the shard's
        port."""
        bound = shard.native.local_addresses()
        out: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
        if self.config.advertised_addresses:
            out = [(ipaddress.ip_address(ip), bound[0][1]) for ip in self.config.advertised_addresses]
        else:
            for ip, port in bound:
                addr = ipaddress.ip_address(ip)
                if addr.is_unspecified:
                    addr = ipaddress.ip_address("127.0.0.1" if addr.version == 4 else "::1")
                out.append((addr, port))
        for m in self.mappings:
            public = (ipaddress.ip_address(m.public), bound[0][1])
            if public not in out:
                out.append(public)
        return out

    # -- the registry

    def create_conference(
        self, meeting_id: str, conference_id: str | None = None, *, name: str | None = None
    ) -> Conference:
        conference_id = conference_id or secrets.token_hex(8)
        if conference_id in self._conferences:
            raise BridgeError(f"conference {conference_id} already exists")
        if meeting_id in self._by_meeting:
            raise BridgeError(f"a conference for meeting {meeting_id} already exists")
        shards = self.shards
        router_id = next(self._ids)
        feedback = _feedback_ssrcs()
        if len(shards) > 1:
            shard = shards[self.placement.choose(time.monotonic(), self.conferences_per_shard())]
        else:
            shard = shards[0]
        shard.native.create_router(router_id, *feedback)
        conf = Conference(self, conference_id, router_id, meeting_id, feedback, shard=shard, name=name)
        self._conferences[conference_id] = conf
        self._by_meeting[meeting_id] = conf
        self._by_router[router_id] = conf
        return conf

    def get_conference(self, conference_id: str) -> Conference | None:
        return self._conferences.get(conference_id)

    def conference_by_meeting(self, meeting_id: str) -> Conference | None:
        return self._by_meeting.get(meeting_id)

    @property
    def conferences(self) -> dict[str, Conference]:
        return dict(self._conferences)

    def conferences_per_shard(self) -> list[int]:
        """How many conferences each shard holds, by shard index."""
        held = [0] * len(self.shards)
        for conference in self._conferences.values():
            held[conference.shard.index] += 1
        return held

    def _forget(self, conference: Conference) -> None:
        self._conferences.pop(conference.id, None)
        if self._by_meeting.get(conference.meeting_id) is conference:
            del self._by_meeting[conference.meeting_id]
        self._by_router.pop(conference.router_id, None)
        self._changed(conference)

    # -- changes

    def apply(self, changes: Iterable[Change]) -> None:
        """Makes `changes`, in order (they were validated when planned); `on_change` runs once per conference
        at the end, also when a change fails (BridgeError) half-way."""
        with self.batch():
            for change in changes:
                self._apply(change)

    def _apply(self, change: Change) -> None:
        match change:
            case CreateConference(meeting_id=meeting_id, name=name):
                self.create_conference(meeting_id, name=name)
                log.info("conference created (%s)", name, extra=log_ids(meeting_id))
            case ExpireConference(meeting_id=meeting_id):
                self._conference(meeting_id).close()
                log.info("conference expired", extra=log_ids(meeting_id))
            case CreateEndpoint():
                ep = self._conference(change.meeting_id).create_endpoint(change.endpoint_id)
                ep.stats_id, ep.muc_role = change.stats_id, change.muc_role
                ep.capabilities = change.capabilities
                ep.set_medias(change.medias)
                log.info("endpoint created", extra=log_ids(change.meeting_id, change.endpoint_id))
            case UpdateEndpoint():
                self._update(self._endpoint(change.meeting_id, change.endpoint_id), change)
            case ExpireEndpoint(meeting_id=meeting_id, endpoint_id=endpoint_id):
                self._endpoint(meeting_id, endpoint_id).close()
                log.info("endpoint expired", extra=log_ids(meeting_id, endpoint_id))

    def _update(self, ep: Endpoint, change: UpdateEndpoint) -> None:
        if change.force_mute is not None:
            ep.set_force_mute(*change.force_mute)
        if change.stats_id is not None:
            ep.stats_id = change.stats_id
        if change.medias is not None:
            ep.set_medias(change.medias)
        if change.ice_restart:
            ep.restart_ice()
        if change.remote is not None:
            ep.set_remote_description(change.remote)
        if change.sources is not None:
            ep.set_sources(change.sources)
        if change.last_n is not None:
            ep.last_n = change.last_n

    def _conference(self, meeting_id: str) -> Conference:
        conference = self._by_meeting.get(meeting_id)
        if conference is None:
            raise BridgeError(f"no conference for meeting {meeting_id}")
        return conference

    def _endpoint(self, meeting_id: str, endpoint_id: str) -> Endpoint:
        ep = self._conference(meeting_id).get_endpoint(endpoint_id)
        if ep is None:
            raise BridgeError(f"no endpoint {endpoint_id} in meeting {meeting_id}")
        return ep

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Holds `on_change` calls until the outermost batch ends, then makes one per changed conference."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                changed, self._changed_conferences = self._changed_conferences, {}
                for conference in changed.values():
                    if self.on_change is not None:
                        self.on_change(conference)

    def _changed(self, conference: Conference) -> None:
        with self.batch():
            self._changed_conferences[conference.id] = conference

    # -- the native core's answers

    async def get_stats(self, timeout: float = 5.0) -> dict[str, object]:
        """A stats snapshot of every shard, merged (`merge_snapshots`): totals, drops by reason, per
        transport, and each shard's own figures under "shards". Also what placement measures shards by."""
        loop = asyncio.get_running_loop()
        waits: list[tuple[Shard, int, asyncio.Future[dict[str, object]]]] = []
        for shard in self.shards:
            request_id = next(self._ids)
            fut: asyncio.Future[dict[str, object]] = loop.create_future()
            self._stats_waiters[request_id] = fut
            waits.append((shard, request_id, fut))
            shard.native.get_stats(request_id)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races the result.
            async with asyncio.timeout(timeout):
                snapshots = [await fut for _, _, fut in waits]
        finally:
            for _, request_id, _ in waits:
                self._stats_waiters.pop(request_id, None)
        now = time.monotonic()
        for (shard, _, _), snapshot in zip(waits, snapshots, strict=True):
            cpu = snapshot.get("cpu_seconds")
            self.placement.observe(shard.index, now, float(cpu) if isinstance(cpu, int | float) else 0.0)
        return merge_snapshots(snapshots)

    def _drain_events(self, shard: Shard) -> None:
        if shard not in self._shards:
            return
        for ev in shard.native.drain_events():
            match ev:
                case _native.TransportStateEvent():
                    ep = self._transports.get(ev.transport_id)
                    if ep is None:
                        continue
                    state = TRANSPORT_STATES[ev.state]
                    ep._set_state(state, ev.detail)
                    log.info(
                        "transport %s%s",
                        state,
                        f": {ev.detail}" if ev.detail else "",
                        extra=log_ids(ep.conference.meeting_id, ep.id),
                    )
                    if self.on_transport_state is not None:
                        self.on_transport_state(TransportStateChange(ep.id, state, ev.detail))
                case _native.StatsEvent():
                    fut = self._stats_waiters.get(ev.request_id)
                    if fut is not None and not fut.done():
                        fut.set_result(ev.stats)
                case _native.AudioLevelsEvent():
                    conference = self._by_router.get(ev.router_id)
                    if conference is None or self.on_audio_levels is None:
                        continue
                    levels: dict[str, tuple[int, bool]] = {}
                    for transport_id, _ssrc, loudness, voice, _packets in ev.levels:
                        ep = self._transports.get(transport_id)
                        if ep is not None and ep.conference is conference:
                            # An endpoint with several audio SSRCs speaks as loud as its loudest.
                            prior = levels.get(ep.id)
                            if prior is None or loudness > prior[0]:
                                levels[ep.id] = (loudness, voice)
                    self.on_audio_levels(conference, levels)
                case _native.EstimateFellEvent():
                    fell = self._transports.get(ev.transport_id)
                    if fell is not None and not fell.closed and self.on_estimate_fell is not None:
                        self.on_estimate_fell(fell, ev.bps)
                case _native.EstimateRoseEvent():
                    rose = self._transports.get(ev.transport_id)
                    if rose is not None and not rose.closed and self.on_estimate_rose is not None:
                        self.on_estimate_rose(rose, ev.bps)
                case _native.CommandFailedEvent():
                    failed = self._transports.get(ev.transport_id)
                    log.warning(
                        "bridge refused a request for endpoint %s: %s",
                        failed.id if failed is not None else ev.transport_id,
                        ev.detail,
                        extra=log_ids(failed.conference.meeting_id, failed.id)
                        if failed is not None
                        else None,
                    )


def _shard_port(base: int, index: int) -> int:
    """Shard `index`'s port from the configured one: the next ones up, or 0 (any free port) for 0."""
    return base + index if base else 0


#: Top-level entries of a snapshot that are keyed by id rather than summed.
_BY_ID = frozenset({"transports"})


def _summable(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge_into(into: dict[str, object], snapshot: Mapping[str, object]) -> None:
    for key, value in snapshot.items():
        prior = into.get(key)
        if isinstance(value, Mapping):
            if not isinstance(prior, dict):
                prior = into[key] = {}
            if key in _BY_ID:
                prior.update(value)
            else:
                _merge_into(prior, value)
        elif isinstance(value, list):
            if not isinstance(prior, list):
                prior = into[key] = []
            prior.extend(value)
        elif _summable(value) and _summable(prior):
            into[key] = prior + value
        elif key not in into:
            into[key] = value


def merge_snapshots(snapshots: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """One snapshot of the whole bridge from its shards': counters summed (totals, drops, failures, I/O, seam
    crossings, routers, CPU seconds), transports (ids are unique across shards) joined, layers and waiting
    receivers listed together; each shard's own packets, routers, transports and CPU under "shards"."""
    merged: dict[str, object] = {}
    shards: list[dict[str, object]] = []
    for index, snapshot in enumerate(snapshots):
        _merge_into(merged, snapshot)
        total = snapshot.get("total")
        transports = snapshot.get("transports")
        shards.append(
            {
                "index": index,
                "cpu_seconds": snapshot.get("cpu_seconds", 0.0),
                "routers": snapshot.get("routers", 0),
                "transports": len(transports) if isinstance(transports, Mapping) else 0,
                "packets_in": total.get("packets_in", 0) if isinstance(total, Mapping) else 0,
                "packets_out": total.get("packets_out", 0) if isinstance(total, Mapping) else 0,
            }
        )
    merged["shards"] = shards
    return merged
