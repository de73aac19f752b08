"""The focus (docs/jitsi-protocol.md section 5): rooms, bridge choice, Colibri2 allocation, Jingle with
clients."""

from signaling.focus.config import FocusConfig
from signaling.focus.core import FocusCore
from signaling.focus.service import Focus

__all__ = ["Focus", "FocusConfig", "FocusCore"]
