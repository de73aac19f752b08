"""The embedded XMPP server: c2s over TCP (STARTTLS) and WebSocket (RFC 7395), SASL, MUC (XEP-0045).

Sans-IO core (`core`, `muc`, `parser`, `sasl`) with asyncio adapters (`server`). Focus and bridges connect
to it over c2s exactly as they would to Prosody laid out like a Debian Jitsi install.
"""

from signaling.xmpp.config import XmppLimits, XmppServerConfig
from signaling.xmpp.server import XmppServer

__all__ = ["XmppLimits", "XmppServer", "XmppServerConfig"]
