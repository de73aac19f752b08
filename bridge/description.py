"""Transport and source descriptions exchanged between the bridge and whoever signals it.

Plain values, already checked: a `Candidate` holds a parsed address, a `Fingerprint` the digest's bytes of a
hash the native DTLS supports. Whoever builds them from the wire (the Colibri2 handler, test helpers) does
that once; bridge/seam.py then hands them to the native core field by field. Names follow the wire (RFC 8445
candidates, RFC 8122 fingerprints, Jitsi sources).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

MediaKind = Literal["audio", "video"]
CandidateType = Literal["host", "srflx", "prflx", "relay"]
Protocol = Literal["udp", "tcp"]
Setup = Literal["actpass", "active", "passive"]
HashName = Literal["sha-1", "sha-256", "sha-384", "sha-512"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CANDIDATE_TYPES: tuple[CandidateType, ...] = ("host", "srflx", "prflx", "relay")
SETUPS: tuple[Setup, ...] = ("actpass", "active", "passive")
#: The hash functions the native DTLS supports (RFC 8122 5), with their digest lengths in bytes.
DIGEST_LENGTHS: dict[HashName, int] = {"sha-1": 20, "sha-256": 32, "sha-384": 48, "sha-512": 64}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ICE candidate for component 1 (RFC 8445 5.1; BUNDLE with rtcp-mux): over UDP, or for the bridge's
    own ICE-TCP listener a passive TCP one (RFC 6544). A peer's TCP candidates are never used: the bridge
    learns them from the connection the peer opens."""

    ip: IpAddress
    port: int
    priority: int
    type: CandidateType = "host"
    foundation: str = "1"
    generation: int = 0
    protocol: Protocol = "udp"
    #: "passive" for the bridge's TCP candidates; None over UDP.
    tcptype: Literal["passive"] | None = None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A DTLS certificate fingerprint (RFC 8122) with the a=setup role that goes with it."""

    hash: HashName
    digest: bytes
    setup: Setup = "actpass"

    @property
    def value(self) -> str:
        """As SDP and Jingle write it: upper-case hex pairs joined by ':'."""
        return self.digest.hex(":").upper()

    @classmethod
    def parse(cls, hash_name: str, value: str, setup: Setup = "actpass") -> Fingerprint:
        """`("sha-256", "AB:CD:...")` as SDP or Jingle carry it. ValueError for a hash the native DTLS does
        not support or a value that is not its digest (callers skip those: any supported one may match)."""
        name = hash_name.strip().lower()
        if name not in DIGEST_LENGTHS:
            raise ValueError(f"unsupported fingerprint hash {hash_name!r:.40}")
        pairs = value.strip().split(":")
        if not all(len(p) == 2 for p in pairs):
            raise ValueError(f"fingerprint is not colon-separated hex pairs: {value!r:.40}")
        digest = bytes.fromhex("".join(pairs))
        if len(digest) != DIGEST_LENGTHS[name]:
            raise ValueError(f"{name} fingerprint of {len(digest)} bytes")
        return cls(name, digest, setup)


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
    """An ssrc-group (RFC 5576): FID (a stream and its RTX, RFC 4588) or SIM (simulcast layers)."""

    semantics: Literal["FID", "SIM"]
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """A signalled media source: its SSRCs and groups, named like Jitsi (`abcd1234-v0`)."""

    kind: MediaKind
    ssrcs: tuple[int, ...]
    name: str = ""
    groups: tuple[SsrcGroup, ...] = field(default=())
    #: The video type its Colibri2 `<source videoType>` gave ("camera", "desktop", ...), None when none did;
    #: the bridge channel's SourceVideoTypeMessage for the same name overrides it.
    video_type: str | None = None
