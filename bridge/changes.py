"""The changes `Bridge.apply` makes to its registry: typed, already validated, in the order given.

The Colibri2 handler plans them from a request, the lifecycle's idle expiry from the native counters; the
Bridge applies them (and sends the native Commands they imply). Conferences are named by meeting-id, the
name every signalling request uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.description import Source, TransportDescription
from colibri2.model import Media


@dataclass(frozen=True, slots=True)
class CreateConference:
    meeting_id: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ExpireConference:
    meeting_id: str


@dataclass(frozen=True, slots=True)
class CreateEndpoint:
    """A new endpoint and what Colibri2 said of it once (its transport and sources follow as an update)."""

    meeting_id: str
    endpoint_id: str
    stats_id: str | None = None
    muc_role: str | None = None
    capabilities: tuple[str, ...] = ()
    medias: tuple[Media, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateEndpoint:
    """What changes of one endpoint; None leaves a fact as it is. Applied in field order after the ids:
    force-mute first, so the native core mutes before it learns new sources."""

    meeting_id: str
    endpoint_id: str
    #: The whole new force-mute, (audio, video).
    force_mute: tuple[bool, bool] | None = None
    stats_id: str | None = None
    medias: tuple[Media, ...] | None = None
    #: Colibri2 `ice-restart`: new local ICE credentials, before any new `remote`.
    ice_restart: bool = False
    remote: TransportDescription | None = None
    #: The complete set: replaces the previous one.
    sources: tuple[Source, ...] | None = None
    last_n: int | None = None


@dataclass(frozen=True, slots=True)
class ExpireEndpoint:
    meeting_id: str
    endpoint_id: str


Change = CreateConference | ExpireConference | CreateEndpoint | UpdateEndpoint | ExpireEndpoint
