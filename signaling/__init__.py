"""Sluice signaling: XMPP, Jingle, the focus (later issues)."""
