"""`FocusConfig`: where the focus logs in and the JIDs it derives from one base domain (issue 5 contract)."""

from __future__ import annotations

from dataclasses import dataclass

from signaling.domains import JitsiDomains


@dataclass(frozen=True, slots=True)
class FocusConfig(JitsiDomains):
    """The focus's XMPP account and policy knobs; JIDs follow the Debian Jitsi layout (jitsi-protocol.md 5.1).

    Defaults are Jicofo's (reference.conf) where Jicofo has one.
    """

    xmpp_host: str = "127.0.0.1"
    xmpp_port: int = 5222
    domain: str = "meet.sluice"
    username: str = "focus"
    password: str = ""
    resource: str = "focus"
    #: STARTTLS on the c2s connection (plain TCP only for loopback setups).
    use_tls: bool = True
    disable_certificate_verification: bool = False
    #: Overrides `jvbbrewery@internal.auth.<domain>`.
    brewery: str | None = None
    #: The focus's nickname in conference rooms and in the brewery (lib-jitsi-meet expects "focus").
    nickname: str = "focus"
    #: jicofo.conference.min-participants: Jingle starts once this many participants are in the room.
    min_participants: int = 2
    #: jicofo.bridge.health-checks: interval, and the reply timeout of one check.
    health_interval: float = 10.0
    health_timeout: float = 15.0
    #: jicofo.bridge.failure-reset-threshold: a failed bridge may be chosen again after this long.
    failure_reset: float = 60.0
    #: Reply timeout of a Colibri2 request; a timeout fails the bridge.
    colibri_timeout: float = 15.0
    #: Reply timeout of requests to clients and the MUC service (session-initiate, config, disco).
    iq_timeout: float = 15.0
    #: jicofo.bridge.participant-rampup-interval and average-participant-stress (the default until a
    #: bridge reports its own).
    participant_rampup: float = 20.0
    average_participant_stress: float = 0.01
    #: jicofo.bridge.stress-threshold: bridges at or above are used only when nothing else is left.
    stress_threshold: float = 0.8
    #: jicofo.conference.restart-request-rate-limits.
    restart_min_interval: float = 5.0
    restart_max_per_minute: int = 5
    #: jicofo.conference.max-ssrcs-per-user.
    max_ssrcs_per_user: int = 20
    #: jicofo.conference.use-json-encoded-sources (for clients that advertise the feature).
    use_json_sources: bool = True
    #: Reconnect backoff of the c2s connection (seconds).
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    @property
    def focus_jid(self) -> str:
        """The bare JID clients see as `focusjid` (`focus@auth.<domain>`)."""
        return f"{self.username}@{self.auth_domain}"

    @property
    def focus_full_jid(self) -> str:
        return f"{self.focus_jid}/{self.resource}"

    @property
    def brewery_jid(self) -> str:
        return (self.brewery or self.default_brewery_jid).lower()
