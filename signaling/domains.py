"""The XMPP layout of a Debian Jitsi install, derived from one base domain (docs/jitsi-protocol.md 5.1).

Shared by the embedded server's and the focus's configurations and by the web client's `/config.json`, so
the three cannot disagree about where anything lives.
"""

from __future__ import annotations


class JitsiDomains:
    """Mixin for a (frozen, slotted) dataclass with a `domain` field."""

    __slots__ = ()
    domain: str

    @property
    def auth_domain(self) -> str:
        """Accounts of the focus and bridges (SASL PLAIN/SCRAM)."""
        return f"auth.{self.domain}"

    @property
    def muc_domain(self) -> str:
        """Conference rooms."""
        return f"conference.{self.domain}"

    @property
    def lobby_muc_domain(self) -> str:
        """Lobby rooms, one a members-only conference room (Jitsi's `lobby.<domain>`)."""
        return f"lobby.{self.domain}"

    @property
    def internal_muc_domain(self) -> str:
        """The brewery's MUC service."""
        return f"internal.auth.{self.domain}"

    @property
    def focus_domain(self) -> str:
        """Clients send the conference IQ here; the server hands it to the focus (Prosody client_proxy)."""
        return f"focus.{self.domain}"

    @property
    def default_brewery_jid(self) -> str:
        return f"jvbbrewery@{self.internal_muc_domain}"
