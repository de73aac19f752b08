"""Sluice media bridge: the Python control plane over the native packet path."""

from bridge.bridge import Bridge, BridgeError, Conference, Endpoint, TransportStateChange
from bridge.config import BridgeConfig
from bridge.description import Candidate, Fingerprint, Source, SsrcGroup, TransportDescription

__all__ = [
    "Bridge",
    "BridgeConfig",
    "BridgeError",
    "Candidate",
    "Conference",
    "Endpoint",
    "Fingerprint",
    "Source",
    "SsrcGroup",
    "TransportDescription",
    "TransportStateChange",
]
