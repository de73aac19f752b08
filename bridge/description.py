"""Transport and source descriptions exchanged between the bridge and whoever signals it.

These are plain values: the Colibri2 handler (bridge/colibri2_handler.py) and tests convert to and from them.
Names follow the wire (RFC 8445 candidates, RFC 8122 fingerprints, Jitsi sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MediaKind = Literal["audio", "video"]
CandidateType = Literal["host", "srflx", "prflx", "relay"]
Setup = Literal["actpass", "active", "passive"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ICE candidate (RFC 8445 5.1; component 1, UDP: BUNDLE with rtcp-mux)."""

    ip: str
    port: int
    priority: int
    type: CandidateType = "host"
    foundation: str = "1"
    component: int = 1
    protocol: str = "udp"
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A DTLS certificate fingerprint (RFC 8122) with the a=setup role that goes with it."""

    hash: str  # "sha-256"
    value: str  # "AB:CD:..."
    setup: Setup = "actpass"


@dataclass(frozen=True, slots=True)
class TransportDescription:
    """ICE credentials, candidates and DTLS fingerprints of one side of a Transport."""

    ufrag: str
    pwd: str
    fingerprints: tuple[Fingerprint, ...]
    candidates: tuple[Candidate, ...] = ()
    rtcp_mux: bool = True


@dataclass(frozen=True, slots=True)
class SsrcGroup:
    """An ssrc-group (RFC 5576): FID (RTX, RFC 4588) or SIM (simulcast)."""

    semantics: Literal["FID", "SIM"]
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """A signalled media source: its SSRCs and groups, named like Jitsi (`abcd1234-v0`)."""

    kind: MediaKind
    ssrcs: tuple[int, ...]
    name: str = ""
    groups: tuple[SsrcGroup, ...] = field(default=())

    def clock_rate(self) -> int:
        return 48000 if self.kind == "audio" else 90000
