"""`FocusConfig`: where the focus logs in and the JIDs it derives from one base domain (issue 5 contract)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from signaling.domains import JitsiDomains


@dataclass(frozen=True, slots=True)
class FocusConfig(JitsiDomains):
    """The focus's XMPP account and policy knobs; JIDs follow the Debian Jitsi layout
    (docs/jitsi-protocol.md 5.1).

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
    #: jicofo.conference.enable-ice-restart: a client's `<bridge-session ice-restart="true">` has the bridge
    #: restart its endpoint's ICE in place (Colibri2 `ice-restart`) instead of a new session. Rate-limited
    #: like restart requests.
    enable_ice_restart: bool = True
    #: jicofo.conference.max-ssrcs-per-user.
    max_ssrcs_per_user: int = 20
    #: jicofo.conference.use-json-encoded-sources (for clients that advertise the feature).
    use_json_sources: bool = True
    #: jicofo.conference.strip-simulcast: receivers are told only each SIM group's primary SSRC and its RTX
    #: (FID); the bridge always gets every layer. Off, stock Chrome clients refuse late joiners' offers.
    strip_simulcast: bool = True
    #: jicofo.codec.audio.opus.red.enabled (Jitsi Meet's `enable-opus-red`): the audio offer also carries
    #: RFC 2198 redundant Opus (red/48000/2, fmtp 111/111); off as in Jicofo.
    enable_opus_red: bool = False
    #: A session-initiate the client acknowledged (or left unanswered past `iq_timeout`) but did not answer
    #: with session-accept within this long is retried once with a new session, then given up and reported.
    session_accept_timeout: float = 15.0
    #: Reconnect backoff of the c2s connection (seconds).
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Real JIDs (full JID, a regular expression matched whole, case-insensitive) whose brewery presence
    #: makes a bridge; None: the bridge account `jvb@auth.<domain>` with any resource. Any other occupant
    #: that publishes stats is ignored and counted: the brewery's MUC is not trusted to be closed.
    bridge_jid_regexp: str | None = None
    #: Quotas on rooms (each refusal a `resource-constraint` error and a counter): rooms alive at once, and
    #: rooms created per minute in total and per requester (the JID the conference request came from).
    max_rooms: int = 200
    rooms_per_minute: int = 60
    rooms_per_minute_per_requester: int = 10
    #: Participants put on a bridge per room (Colibri2 endpoints of one conference); more wait.
    max_endpoints_per_conference: int = 100
    #: Conferences the focus places on one bridge; with every bridge full, rooms get bridgeNotAvailable.
    max_conferences_per_bridge: int = 200
    #: A room whose conference request was answered but that nobody joins within this long is left (the
    #: MUC destroys it) and its bridge conference expired; Jicofo waits about as long.
    room_join_timeout: float = 20.0
    #: Colibri2 errors restart one room's conference; more restarts than this within a minute and the room
    #: avoids that bridge for `failure_reset` (the bridge itself is failed only by health checks).
    max_conference_restarts: int = 3
    #: A secure domain: only participants logged in on the auth domain are made owner when the room has none
    #: (Jicofo's authentication role manager); guests never become owner that way. The conference answer
    #: says `authentication` true.
    owner_needs_login: bool = False

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

    def bridge_jid_pattern(self) -> re.Pattern[str]:
        pattern = self.bridge_jid_regexp or re.escape(f"jvb@{self.auth_domain}") + "(?:/.*)?"
        return re.compile(pattern, re.IGNORECASE | re.DOTALL)
