"""Jingle as Jitsi speaks it: a typed model, its XML codec, the compact JSON sources (protocol 5)."""

from signaling.jingle.model import (
    JVB_OWNER,
    BridgeSession,
    Content,
    Description,
    EndpointSources,
    Group,
    IceTransport,
    Jingle,
    JingleError,
    Reason,
    SctpMap,
    Source,
    SourcesMap,
    SsrcGroup,
    StartMuted,
)
from signaling.jingle.xml import build_jingle, find_jingle, parse_jingle, unknown_session_error

__all__ = [
    "JVB_OWNER",
    "BridgeSession",
    "Content",
    "Description",
    "EndpointSources",
    "Group",
    "IceTransport",
    "Jingle",
    "JingleError",
    "Reason",
    "SctpMap",
    "Source",
    "SourcesMap",
    "SsrcGroup",
    "StartMuted",
    "build_jingle",
    "find_jingle",
    "parse_jingle",
    "unknown_session_error",
]
