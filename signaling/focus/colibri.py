"""Colibri2 with the bridges (docs/jitsi-protocol.md 2.3): each room's request queue, and what each
answer means.

A room's requests wait in its `ColibriQueue` and go out one at a time: the first creates the conference, and
the bridge would refuse a second endpoint for a conference it does not know yet. A job remembers the room's
epoch; once the room has moved to another bridge, the job and any reply to it are stale and dropped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from colibri2 import model as c2
from colibri2 import xml as c2xml
from signaling.focus import media
from signaling.focus.sources import colibri_ice, colibri_sources, feedback_sources
from signaling.jingle.model import IceTransport

if TYPE_CHECKING:
    from signaling.focus.bridges import BridgeInfo
    from signaling.focus.model import Participant, Room, Shared

#: Stanza errors a server returns for a recipient that is gone (RFC 6120 8.3.3): the bridge itself is
#: unreachable, unlike any error the bridge answers about one conference.
UNREACHABLE = frozenset(
    {"service-unavailable", "recipient-unavailable", "remote-server-not-found", "remote-server-timeout"}
)


@dataclass(frozen=True, slots=True)
class Allocation:
    """Creates `p`'s endpoint (and, the room's first, the conference); the request is built when sent."""

    epoch: int
    p: Participant


@dataclass(frozen=True, slots=True)
class Modification:
    """Any other conference-modify of the room."""

    epoch: int
    request: c2.ConferenceModify
    #: Errors are ignored (expiries: the endpoint is gone either way).
    tolerate: bool = False

    @property
    def endpoint(self) -> str | None:
        """The one endpoint the request is about: an unknown_endpoint error re-invites only that one."""
        return self.request.endpoints[0].id if len(self.request.endpoints) == 1 else None


@dataclass(frozen=True, slots=True)
class IceRestart:
    """Has the bridge restart `p`'s ICE in place (section 2.3 item 5); its answer has the new transport."""

    epoch: int
    p: Participant

    @property
    def endpoint(self) -> str:
        return self.p.nick


Job = Allocation | Modification | IceRestart


class ColibriQueue:
    """One room's Colibri2 jobs, in order; `busy` while one is on the wire."""

    __slots__ = ("_jobs", "busy")

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self.busy = False

    def push(self, job: Job) -> None:
        self._jobs.append(job)

    def take(self) -> Job | None:
        """The next job to send (the queue is busy from now on), or None while one is on the wire."""
        if self.busy or not self._jobs:
            return None
        self.busy = True
        return self._jobs.popleft()

    def release(self) -> None:
        self.busy = False

    def clear(self) -> None:
        self._jobs.clear()
        self.busy = False


class ColibriEvents(Protocol):
    """What the rest of the focus does with the bridges' answers."""

    def endpoint_allocated(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport) -> None:
        """The bridge has `p`'s endpoint, reachable at `ice`: time for its session-initiate."""

    def endpoint_lost(self, now: float, room: Room, nick: str) -> None:
        """The bridge no longer knows `nick`'s endpoint (unknown_endpoint)."""

    def ice_restarted(self, now: float, room: Room, p: Participant, ice: c2.IceUdpTransport | None) -> None:
        """The bridge restarted `p`'s ICE and has a new transport `ice` (None: it refused)."""

    def conference_failed(self, now: float, room: Room, why: str) -> None:
        """The room's conference is broken on its bridge (an error, a timeout or a senseless answer)."""

    def bridge_unreachable(self, now: float, jid: str, why: str) -> None:
        """The server says the bridge itself is gone."""


def stats_id(p: Participant) -> str:
    """The display name (free text from the client) cut to what a bridge accepts as `stats-id`."""
    return (p.display_name or p.nick)[: c2.MAX_STATS_ID_LENGTH]


class Colibri:
    """Builds the rooms' Colibri2 requests, sends them through each room's queue and reads the answers."""

    def __init__(self, shared: Shared, events: ColibriEvents) -> None:
        self._shared = shared
        self._events = events

    # ---- requests

    def allocate(self, now: float, room: Room, p: Participant) -> None:
        p.endpoint = "allocating"
        self._enqueue(now, room, Allocation(room.epoch, p))

    def update(
        self,
        now: float,
        room: Room,
        p: Participant,
        *,
        transport: IceTransport | None,
        sources: bool,
        medias: tuple[c2.Media, ...] | None = None,
    ) -> None:
        """The participant's transport and/or sources changed (session-accept, transport-info, sources);
        `medias`: what its answer negotiated, when that differs from the offer (RED left out)."""
        if p.endpoint is None or room.bridge is None:
            return
        c2_transport = c2.Transport(ice=colibri_ice(transport)) if transport is not None else None
        endpoint = c2.Endpoint(
            id=p.nick,
            stats_id=stats_id(p),
            transport=c2_transport,
            sources=colibri_sources(p.nick, p.sources) if sources else None,
            medias=medias or (),
        )
        self._modify(now, room, c2.ConferenceModify(meeting_id=room.meeting_id or "", endpoints=(endpoint,)))

    def ice_restart(self, now: float, room: Room, p: Participant) -> None:
        if p.endpoint != "allocated" or room.bridge is None:
            return
        self._enqueue(now, room, IceRestart(room.epoch, p))

    def force_mute(self, now: float, room: Room, p: Participant) -> None:
        if p.endpoint is None or room.bridge is None:
            return
        force = c2.ForceMute(audio=p.force_muted["audio"], video=p.force_muted["video"])
        request = c2.ConferenceModify(
            meeting_id=room.meeting_id or "", endpoints=(c2.Endpoint(id=p.nick, force_mute=force),)
        )
        self._modify(now, room, request)

    def expire_endpoints(self, now: float, room: Room, nicks: Iterable[str]) -> None:
        if room.bridge is None or not room.conference_created:
            return
        request = c2.ConferenceModify(
            meeting_id=room.meeting_id or "", endpoints=tuple(c2.Endpoint(id=n, expire=True) for n in nicks)
        )
        self._modify(now, room, request, tolerate=True)

    def expire_conference(self, now: float, room: Room) -> None:
        """Fire and forget, past the queue: the conference is dropped whatever the bridge answers."""
        bridge = self._shared.bridges.get(room.bridge or "")
        if bridge is None or not room.conference_created:
            return
        request = c2.ConferenceModify(meeting_id=room.meeting_id or "", expire=True)
        payload = c2xml.build_conference_modify(request)
        self._shared.out.fire(
            now, "get", bridge.real_jid, payload, timeout=self._shared.config.colibri_timeout
        )
        room.conference_created = False

    def _modify(
        self, now: float, room: Room, request: c2.ConferenceModify, *, tolerate: bool = False
    ) -> None:
        self._enqueue(now, room, Modification(room.epoch, request, tolerate))

    # ---- the queue

    def _enqueue(self, now: float, room: Room, job: Job) -> None:
        room.colibri.push(job)
        if not room.colibri.busy:
            self._pump(now, room)

    def _pump(self, now: float, room: Room) -> None:
        while (job := room.colibri.take()) is not None:
            if not self._send(now, room, job):
                room.colibri.release()

    def _finish(self, now: float, room: Room, epoch: int) -> None:
        """The job on the wire got its answer: the next one may go."""
        if room.epoch == epoch and room.colibri.busy:
            room.colibri.release()
            self._pump(now, room)

    def _send(self, now: float, room: Room, job: Job) -> bool:
        """Sends one job; False when it had nothing to send any more (stale, or the room has no bridge)."""
        if room.epoch != job.epoch:
            return False
        bridge = self._shared.bridges.get(room.bridge or "")
        if isinstance(job, Allocation):
            if room.participants.get(job.p.nick) is not job.p:
                return False
            request = self._allocation(room, job.p)
            if bridge is not None:
                bridge.recent.append(now)  # its stress shows this endpoint only later
        elif isinstance(job, IceRestart):
            if room.participants.get(job.p.nick) is not job.p:
                return False
            restart = c2.Endpoint(id=job.p.nick, transport=c2.Transport(ice_restart=True))
            request = c2.ConferenceModify(meeting_id=room.meeting_id or "", endpoints=(restart,))
        else:
            request = job.request
        if bridge is None:
            return False
        self._shared.stats["colibri_requests"] += 1
        self._shared.out.request(
            now,
            "get",
            bridge.real_jid,
            c2xml.build_conference_modify(request),
            on_result=lambda now, reply: self._on_result(now, room, job, reply),
            on_error=lambda now, err: self._on_error(now, room, job, bridge, err),
            timeout=self._shared.config.colibri_timeout,
        )
        return True

    def _allocation(self, room: Room, p: Participant) -> c2.ConferenceModify:
        create = not room.conference_created
        return c2.ConferenceModify(
            meeting_id=room.meeting_id or "",
            name=room.jid if create else None,
            create=create,
            endpoints=(
                c2.Endpoint(
                    id=p.nick,
                    create=True,
                    stats_id=stats_id(p),
                    medias=media.colibri_medias(self._shared.config.enable_opus_red),
                    transport=c2.Transport(ice_controlling=True),
                    sources=colibri_sources(p.nick, p.sources),
                    capabilities=("source-names",),
                    # A moderated meeting: a newcomer's media reaches nobody until it is allowed.
                    force_mute=(
                        c2.ForceMute(audio=p.force_muted["audio"], video=p.force_muted["video"])
                        if any(p.force_muted.values())
                        else None
                    ),
                ),
            ),
        )

    # ---- answers

    def _on_result(self, now: float, room: Room, job: Job, reply: ET.Element) -> None:
        if isinstance(job, Allocation):
            self._on_allocated(now, room, job, reply)
        elif isinstance(job, IceRestart):
            self._on_ice_restarted(now, room, job, reply)
        else:
            self._finish(now, room, job.epoch)

    def _on_ice_restarted(self, now: float, room: Room, job: IceRestart, reply: ET.Element) -> None:
        self._finish(now, room, job.epoch)
        if room.epoch != job.epoch or room.participants.get(job.p.nick) is not job.p:
            return
        try:
            modified = c2xml.parse_conference_modified(reply)
        except c2.Colibri2Error as exc:
            self._failed(now, room, job.epoch, f"bad conference-modified: {exc.text}")
            return
        ep = next((e for e in modified.endpoints if e.id == job.p.nick), None)
        # A bridge that cannot restart answers without a transport (section 2.3 item 5).
        ice = ep.transport.ice if ep is not None and ep.transport is not None else None
        self._events.ice_restarted(now, room, job.p, ice)

    def _on_allocated(self, now: float, room: Room, job: Allocation, reply: ET.Element) -> None:
        epoch, p = job.epoch, job.p
        if room.epoch != epoch:
            return
        room.conference_created = True
        try:
            modified = c2xml.parse_conference_modified(reply)
        except c2.Colibri2Error as exc:
            self._failed(now, room, epoch, f"bad conference-modified: {exc.text}")
            return
        if modified.sources is not None:
            room.feedback = feedback_sources(modified.sources)
        ep = next((e for e in modified.endpoints if e.id == p.nick), None)
        ice = ep.transport.ice if ep is not None and ep.transport is not None else None
        self._finish(now, room, epoch)
        if ice is None:
            self._failed(now, room, epoch, f"no transport for endpoint {p.nick}")
            return
        if room.participants.get(p.nick) is not p:
            self.expire_endpoints(now, room, [p.nick])
            return
        p.endpoint = "allocated"
        self._events.endpoint_allocated(now, room, p, ice)

    def _on_error(self, now: float, room: Room, job: Job, bridge: BridgeInfo, err: ET.Element | None) -> None:
        """A Colibri2 error is about this room's conference: unknown_endpoint re-invites that participant,
        anything else re-creates the conference. A timeout also asks the bridge for a health check now. Only
        the server's word that the bridge is unreachable fails the bridge (docs/jitsi-protocol.md 1.5 lets one
        error fail a bridge; anyone who can make a bridge answer an error could then empty it)."""
        if room.epoch != job.epoch:
            return
        self._finish(now, room, job.epoch)
        if isinstance(job, Modification) and job.tolerate:
            return
        stats = self._shared.stats
        if err is None:
            stats["colibri_timeouts"] += 1
            if bridge.jid in self._shared.bridges and not bridge.health_pending:
                bridge.next_health = now
            self._events.conference_failed(now, room, "colibri2 timeout")
            return
        try:
            reason: c2.Colibri2Error | None = c2xml.parse_error(err)
        except c2.Colibri2Error:
            reason = None
        endpoint = job.endpoint if isinstance(job, Modification | IceRestart) else None
        if reason is not None and reason.reason == c2.Reason.UNKNOWN_ENDPOINT and endpoint is not None:
            self._events.endpoint_lost(now, room, endpoint)
            return
        if reason is not None and reason.reason is None and reason.condition in UNREACHABLE:
            self._events.bridge_unreachable(now, bridge.jid, f"unreachable ({reason.condition})")
            return
        stats["colibri_errors"] += 1
        text = reason.text or reason.condition if reason is not None else "malformed error"
        self._events.conference_failed(now, room, f"colibri2 error: {text}")

    def _failed(self, now: float, room: Room, epoch: int, why: str) -> None:
        """The bridge's answer for this room made no sense: re-create the room's conference."""
        if room.epoch == epoch and room.bridge is not None:
            self._shared.stats["colibri_errors"] += 1
            self._events.conference_failed(now, room, why)
