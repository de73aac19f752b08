"""The XMPP c2s client that the focus (signaling) and the bridge share: neither may import the other."""

from xmppclient.client import Account, Backoff, Reconnect, ReconnectingClient, make_slixmpp

__all__ = ["Account", "Backoff", "Reconnect", "ReconnectingClient", "make_slixmpp"]
