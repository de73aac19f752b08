"""The bridge channel (docs/jitsi-protocol.md section 4), sans-IO: parsing, endpoint settings and routing.

Every message is a JSON object with a `colibriClass`. `parse_message` turns one text frame into a typed
message or raises `ChannelMessageError` (never anything else). A `ConferenceChannel` is the hub of one
registry conference (bridge.Conference): it writes what the allocator will read onto each sender's
bridge.Endpoint (last-n, receiver video constraints, source video types, audio subscription), routes
EndpointMessage / EndpointStats between endpoints, and tells each receiver which video sources it gets
(`ForwardedSources`). Membership and sources are the registry's; the hub keeps only which sockets are open.
It returns `Send` / `Close` actions; whoever owns the sockets (bridge/public_http.py) carries them out. No
sockets, no clock, no aiohttp here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from bridge.bridge import Conference, Endpoint

#: Longest text frame we parse. Jitsi clients send a few kB at most (EndpointStats is the largest).
MAX_MESSAGE_CHARS = 64 * 1024
#: Distinct source names one endpoint may give a video type (bounds memory against a hostile client).
MAX_VIDEO_TYPES = 64

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

VideoType = Literal["camera", "desktop", "desktop_high_fps", "disabled"]
_VIDEO_TYPES: dict[str, VideoType] = {
    "camera": "camera",
    "desktop": "desktop",
    "desktop_high_fps": "desktop_high_fps",
    "disabled": "disabled",
    # lib-jitsi-meet sends "none" for a muted/removed video; JVB treats it as not sending.
    "none": "disabled",
}

#: WebSocket close codes (RFC 6455 7.4.1) the bridge uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001


class ChannelMessageError(ValueError):
    """A frame the bridge cannot use. `reason` is a short key for counters, the message says why."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text


# ---- messages a client sends


@dataclass(frozen=True, slots=True)
class ClientHello:
    pass


@dataclass(frozen=True, slots=True)
class EndpointMessage:
    """`to` is an endpoint id, or "" for everyone else. `body` is the whole object, forwarded as is."""

    to: str
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    body: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LastNChangedEvent:
    last_n: int


@dataclass(frozen=True, slots=True)
class VideoConstraints:
    """-1 is unlimited; `max_height` 0 means the receiver wants no video of that source."""

    max_height: int = -1
    max_frame_rate: float = -1.0


@dataclass(frozen=True, slots=True)
class ReceiverVideoConstraints:
    """Every field is optional: None leaves the stored value alone (the message is incremental).

    Both spellings are kept: `selectedSources`/`onStageSources` (source names, current clients) and
    `selectedEndpoints`/`onStageEndpoints` (endpoint ids, older clients and docs).
    """

    last_n: int | None = None
    selected_sources: tuple[str, ...] | None = None
    on_stage_sources: tuple[str, ...] | None = None
    selected_endpoints: tuple[str, ...] | None = None
    on_stage_endpoints: tuple[str, ...] | None = None
    default_constraints: VideoConstraints | None = None
    constraints: Mapping[str, VideoConstraints] | None = None
    assumed_bandwidth_bps: int | None = None

    def merged(self, update: ReceiverVideoConstraints) -> ReceiverVideoConstraints:
        """This state with every field `update` carries replaced."""
        return replace(
            self,
            **{
                name: getattr(update, name)
                for name in _CONSTRAINT_FIELDS
                if getattr(update, name) is not None
            },
        )


_CONSTRAINT_FIELDS = (
    "last_n",
    "selected_sources",
    "on_stage_sources",
    "selected_endpoints",
    "on_stage_endpoints",
    "default_constraints",
    "constraints",
    "assumed_bandwidth_bps",
)


@dataclass(frozen=True, slots=True)
class SourceVideoTypeMessage:
    source_name: str
    video_type: VideoType
    #: Set only between bridges (relays); a client's channel names its own endpoint.
    endpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class VideoTypeMessage:
    """Deprecated: the video type of the endpoint's (single) video source."""

    video_type: VideoType
    endpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReceiverAudioSubscription:
    """Which audio sources a receiver wants: excluded beats included, anything else follows `all`."""

    all: bool = True
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    def wants(self, source_name: str) -> bool:
        if source_name in self.exclude:
            return False
        return source_name in self.include or self.all


Message = (
    ClientHello
    | EndpointMessage
    | EndpointStats
    | LastNChangedEvent
    | ReceiverVideoConstraints
    | SourceVideoTypeMessage
    | VideoTypeMessage
    | ReceiverAudioSubscription
)


# ---- parsing


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JVB's Jackson has strict duplicate detection: {"to":"a","to":"b"} is refused, not last-one-wins.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ChannelMessageError("malformed_json", f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ChannelMessageError("malformed_json", f"{name} is not JSON")


def _int(obj: Mapping[str, Any], key: str, bounds: tuple[int, int], minimum: int = -1) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChannelMessageError("bad_field", f"{key} must be an integer, not {value!r:.40}")
    if not max(bounds[0], minimum) <= value <= bounds[1]:
        raise ChannelMessageError("bad_field", f"{key} {value} is out of range ({minimum} is the least)")
    return value


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ChannelMessageError("bad_field", f"{key} must be a string, not {value!r:.40}")
    return value


def _names(obj: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ChannelMessageError("bad_field", f"{key} must be a list of strings")
    return tuple(value)


def _video_type(obj: Mapping[str, Any]) -> VideoType:
    value = _str(obj, "videoType")
    if value is None:
        raise ChannelMessageError("bad_field", "videoType is required")
    video_type = _VIDEO_TYPES.get(value.lower())  # Jackson reads JVB's enums case-insensitively
    if video_type is None:
        raise ChannelMessageError("bad_field", f"unknown videoType {value!r:.40}")
    return video_type


def _constraints(value: object, where: str) -> VideoConstraints:
    if not isinstance(value, dict):
        raise ChannelMessageError("bad_field", f"{where} must be an object")
    height = _int(value, "maxHeight", _INT32)
    rate = value.get("maxFrameRate")
    if rate is None:
        rate = -1.0
    elif isinstance(rate, bool) or not isinstance(rate, int | float) or not -1 <= rate <= 1e6:
        raise ChannelMessageError("bad_field", f"{where}.maxFrameRate must be a number >= -1")
    return VideoConstraints(max_height=-1 if height is None else height, max_frame_rate=float(rate))


def _receiver_video_constraints(obj: Mapping[str, Any]) -> ReceiverVideoConstraints:
    default = obj.get("defaultConstraints")
    per_source = obj.get("constraints")
    constraints: dict[str, VideoConstraints] | None = None
    if per_source is not None:
        if not isinstance(per_source, dict):
            raise ChannelMessageError("bad_field", "constraints must be an object of source names")
        constraints = {name: _constraints(c, f"constraints[{name!r:.40}]") for name, c in per_source.items()}
    return ReceiverVideoConstraints(
        last_n=_int(obj, "lastN", _INT32),
        selected_sources=_names(obj, "selectedSources"),
        on_stage_sources=_names(obj, "onStageSources"),
        selected_endpoints=_names(obj, "selectedEndpoints"),
        on_stage_endpoints=_names(obj, "onStageEndpoints"),
        default_constraints=None if default is None else _constraints(default, "defaultConstraints"),
        constraints=constraints,
        assumed_bandwidth_bps=_int(obj, "assumedBandwidthBps", _INT64),
    )


def _audio_subscription(obj: Mapping[str, Any]) -> ReceiverAudioSubscription:
    mode = _str(obj, "mode")
    if mode is not None:
        # The older form: {"mode": "All" | "None" | "Include" | "Exclude", "list": [...]}.
        names = frozenset(_names(obj, "list") or ())
        match mode.lower():
            case "all":
                return ReceiverAudioSubscription(all=True)
            case "none":
                return ReceiverAudioSubscription(all=False)
            case "include":
                return ReceiverAudioSubscription(all=False, include=names)
            case "exclude":
                return ReceiverAudioSubscription(all=True, exclude=names)
        raise ChannelMessageError("bad_field", f"unknown mode {mode!r:.40}")
    everything = obj.get("all")
    if everything is not None and not isinstance(everything, bool):
        raise ChannelMessageError("bad_field", "all must be true or false")
    include, exclude = _names(obj, "include"), _names(obj, "exclude")
    if everything is None and include is None and exclude is None:
        raise ChannelMessageError("bad_field", "needs mode, or all/include/exclude")
    included = frozenset(include or ())
    # An include of "*" is the newer spelling of "everything".
    return ReceiverAudioSubscription(
        all=bool(everything) or "*" in included,
        include=included - {"*"},
        exclude=frozenset(exclude or ()),
    )


def _endpoint_message(obj: Mapping[str, Any]) -> EndpointMessage:
    return EndpointMessage(to=_str(obj, "to") or "", body=obj)


def _last_n(obj: Mapping[str, Any]) -> LastNChangedEvent:
    last_n = _int(obj, "lastN", _INT32)
    if last_n is None:
        raise ChannelMessageError("bad_field", "lastN is required")
    return LastNChangedEvent(last_n)


def _source_video_type(obj: Mapping[str, Any]) -> SourceVideoTypeMessage:
    name = _str(obj, "sourceName")
    if not name:
        raise ChannelMessageError("bad_field", "sourceName is required")
    return SourceVideoTypeMessage(name, _video_type(obj), _str(obj, "endpointId"))


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "ClientHello": lambda obj: ClientHello(),
    "EndpointMessage": _endpoint_message,
    "EndpointStats": EndpointStats,
    "LastNChangedEvent": _last_n,
    "ReceiverVideoConstraints": _receiver_video_constraints,
    "SourceVideoTypeMessage": _source_video_type,
    "VideoTypeMessage": lambda obj: VideoTypeMessage(_video_type(obj), _str(obj, "endpointId")),
    "ReceiverAudioSubscription": _audio_subscription,
}


def parse_message(text: str) -> Message:
    """One text frame -> a typed message. Raises ChannelMessageError and nothing else."""
    if len(text) > MAX_MESSAGE_CHARS:
        raise ChannelMessageError("too_large", f"{len(text)} characters, at most {MAX_MESSAGE_CHARS}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ChannelMessageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ChannelMessageError("malformed_json", str(exc) or type(exc).__name__) from None
    if not isinstance(obj, dict):
        raise ChannelMessageError("not_an_object", "a message is a JSON object")
    colibri_class = obj.get("colibriClass")
    if not isinstance(colibri_class, str):
        raise ChannelMessageError("no_class", "colibriClass (a string) is required")
    parser = _PARSERS.get(colibri_class)
    if parser is None:
        raise ChannelMessageError("unknown_class", f"unknown colibriClass {colibri_class!r:.60}")
    return parser(obj)


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def server_hello(version: str | None = None) -> str:
    body: dict[str, Any] = {"colibriClass": "ServerHello"}
    if version is not None:
        body["version"] = version
    return _dumps(body)


def forwarded_sources(names: Iterable[str]) -> str:
    return _dumps({"colibriClass": "ForwardedSources", "forwardedSources": sorted(names)})


def sender_source_constraints(source_name: str, max_height: int) -> str:
    """SenderSourceConstraints: the largest height any receiver wants of the sender's source."""
    return _dumps(
        {"colibriClass": "SenderSourceConstraints", "sourceName": source_name, "maxHeight": max_height}
    )


def dominant_speaker_changed(dominant: str | None, previous: Iterable[str], silence: bool) -> str:
    """DominantSpeakerEndpointChangeEvent as lib-jitsi-meet reads it."""
    return _dumps(
        {
            "colibriClass": "DominantSpeakerEndpointChangeEvent",
            "dominantSpeakerEndpoint": dominant,
            "previousSpeakers": list(previous),
            "silence": silence,
        }
    )


def colibri_ws_url(base: str, conference_id: str, endpoint_id: str, pwd: str) -> str:
    """`<base>/<conf-id>/<endpoint-id>?pwd=<pwd>` with each part escaped (our ICE pwd may hold + and /)."""
    return f"{base}/{quote(conference_id, safe='')}/{quote(endpoint_id, safe='')}?pwd={quote(pwd, safe='')}"


# ---- what the hub returns


@dataclass(frozen=True, slots=True)
class Send:
    endpoint_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Close:
    endpoint_id: str
    code: int
    reason: str


Action = Send | Close


#: Messages that change what a receiver gets: the allocation follows them.
ASKING = (ReceiverVideoConstraints, LastNChangedEvent, SourceVideoTypeMessage, VideoTypeMessage)


@dataclass(frozen=True, slots=True)
class Received:
    """The result of one incoming frame: the parsed message or the error, and what to send."""

    message: Message | None
    error: ChannelMessageError | None
    actions: tuple[Action, ...] = ()


@dataclass(slots=True)
class ChannelStats:
    """Counters of every bridge channel on this bridge (jvb `total_colibri_web_socket_messages_*`)."""

    messages_received: int = 0
    messages_sent: int = 0
    #: Frames refused, by `ChannelMessageError.reason`.
    errors: Counter[str] = field(default_factory=Counter)
    #: Messages not delivered, by why: no_socket (the target has no channel open), unknown_endpoint,
    #: queue_full (a slow receiver), send_failed (the socket went away).
    dropped: Counter[str] = field(default_factory=Counter)
    #: Sockets opened, and how many of them replaced an older socket of the same endpoint.
    connections: int = 0
    replaced: int = 0
    #: Upgrade requests refused, by why: unknown_server_id, unknown_conference, unknown_endpoint, bad_pwd,
    #: not_websocket.
    refused: Counter[str] = field(default_factory=Counter)


# ---- per conference


@dataclass(slots=True)
class _Socket:
    """An endpoint's open socket: its generation and the ForwardedSources last sent on it (None: none yet)."""

    generation: int
    forwarded: frozenset[str] | None = None


class Registry(Protocol):
    """Where the hubs find conferences: the Bridge."""

    def get_conference(self, conference_id: str) -> Conference | None: ...


class ConferenceChannel:
    """The hub of one registry conference: its endpoints' open sockets and routing between them."""

    def __init__(self, conference: Conference, stats: ChannelStats, *, version: str | None = None) -> None:
        self.conference = conference
        self.stats = stats
        self.version = version
        self._sockets: dict[str, _Socket] = {}
        self._generations = 0

    @property
    def id(self) -> str:
        return self.conference.id

    def socket(self, endpoint_id: str) -> int | None:
        """The generation of the endpoint's open socket, None while none is open."""
        sock = self._sockets.get(endpoint_id)
        return sock.generation if sock is not None else None

    # -- membership and sources

    def refresh(self) -> list[Action]:
        """Follows the registry after the conference's endpoints or sources changed.

        Sockets of endpoints that left close; every open socket whose forwarded set changed gets a new
        ForwardedSources.
        """
        if self.conference.closed:
            return self.close()
        actions: list[Action] = []
        for gone in [ep_id for ep_id in self._sockets if ep_id not in self.conference.endpoints]:
            del self._sockets[gone]
            actions.append(Close(gone, CLOSE_GOING_AWAY, "endpoint expired"))
        actions += self._refresh_forwarded()
        return actions

    def close(self) -> list[Action]:
        """The conference expired: every open socket closes."""
        actions: list[Action] = [
            Close(ep_id, CLOSE_GOING_AWAY, "conference expired") for ep_id in self._sockets
        ]
        self._sockets.clear()
        return actions

    def forwarded_to(self, endpoint_id: str) -> frozenset[str]:
        """The video sources the endpoint's allocation gives it; before it has one, every other endpoint's
        (the packet path forwards each source's top layer until then)."""
        ep = self.conference.endpoints.get(endpoint_id)
        if ep is not None and ep.forwarded_sources is not None:
            return ep.forwarded_sources
        return frozenset(
            s.name
            for ep in self.conference.endpoints.values()
            if ep.id != endpoint_id
            for s in ep.sources
            if s.kind == "video" and s.name
        )

    def _refresh_forwarded(self) -> list[Action]:
        actions: list[Action] = []
        for ep_id, sock in self._sockets.items():
            names = self.forwarded_to(ep_id)
            if names != sock.forwarded:
                sock.forwarded = names
                actions.append(Send(ep_id, forwarded_sources(names)))
        return actions

    # -- sockets

    def connect(self, endpoint_id: str) -> tuple[int, list[Action]] | None:
        """A socket opened for the endpoint (replacing any earlier one): its generation and the greeting.

        None if the endpoint is not (or no longer) in the conference.
        """
        if self.conference.closed or endpoint_id not in self.conference.endpoints:
            return None
        self._generations += 1
        # The new socket has not been told anything yet.
        self._sockets[endpoint_id] = _Socket(self._generations)
        self.stats.connections += 1
        actions: list[Action] = [Send(endpoint_id, server_hello(self.version))]
        actions += self._refresh_forwarded()
        return self._generations, actions

    def disconnect(self, endpoint_id: str, generation: int) -> None:
        """The socket of `generation` closed; a newer socket of the same endpoint stays."""
        sock = self._sockets.get(endpoint_id)
        if sock is not None and sock.generation == generation:
            del self._sockets[endpoint_id]

    # -- incoming

    def receive(self, endpoint_id: str, text: str) -> Received:
        """One text frame from `endpoint_id`. Bad input is counted and reported, never raised."""
        self.stats.messages_received += 1
        try:
            message = parse_message(text)
        except ChannelMessageError as exc:
            self.stats.errors[exc.reason] += 1
            return Received(None, exc)
        sender = self.conference.endpoints.get(endpoint_id)
        if sender is None:
            # The endpoint expired while its frame was in flight; its socket is closing.
            error = ChannelMessageError("endpoint_gone", f"endpoint {endpoint_id} is not in the conference")
            self.stats.errors[error.reason] += 1
            return Received(message, error)
        try:
            actions = self._handle(sender, message)
        except ChannelMessageError as exc:
            self.stats.errors[exc.reason] += 1
            return Received(message, exc)
        return Received(message, None, tuple(actions))

    def _others(self, sender: Endpoint) -> list[str]:
        return [ep_id for ep_id in self.conference.endpoints if ep_id != sender.id]

    def _handle(self, sender: Endpoint, message: Message) -> list[Action]:
        match message:
            case ClientHello():
                return self._send(sender.id, server_hello(self.version))
            case EndpointMessage(to=to, body=body):
                text = _dumps({**body, "from": sender.id})
                if to:
                    return self._send(to, text)
                return [a for ep_id in self._others(sender) for a in self._send(ep_id, text)]
            case EndpointStats(body=body):
                # JVB filters stats to interested receivers only above 20 endpoints; everyone is interested
                # while every source is forwarded to everyone.
                text = _dumps({**body, "from": sender.id})
                return [a for ep_id in self._others(sender) for a in self._send(ep_id, text)]
            case LastNChangedEvent(last_n=last_n):
                sender.last_n = last_n
            case ReceiverVideoConstraints():
                # Its lastN is the endpoint's one last-n; the rest merges into what was said before.
                if message.last_n is not None:
                    sender.last_n = message.last_n
                sender.video_constraints = sender.video_constraints.merged(replace(message, last_n=None))
            case SourceVideoTypeMessage(source_name=name, video_type=video_type):
                if name not in sender.video_types and len(sender.video_types) >= MAX_VIDEO_TYPES:
                    raise ChannelMessageError(
                        "too_many_sources", f"more than {MAX_VIDEO_TYPES} source names given a video type"
                    )
                sender.video_types[name] = video_type
            case VideoTypeMessage(video_type=video_type):
                sender.video_type = video_type
            case ReceiverAudioSubscription():
                sender.audio_subscription = message
        return []

    def _send(self, endpoint_id: str, text: str) -> list[Action]:
        if endpoint_id not in self.conference.endpoints:
            self.stats.dropped["unknown_endpoint"] += 1
            return []
        if endpoint_id not in self._sockets:
            # JVB drops a message for an endpoint whose channel is not open, and so do we.
            self.stats.dropped["no_socket"] += 1
            return []
        return [Send(endpoint_id, text)]


class BridgeChannels:
    """The hubs of every conference of one registry (the Bridge), sharing one ChannelStats."""

    def __init__(
        self, registry: Registry, *, version: str | None = None, stats: ChannelStats | None = None
    ) -> None:
        self.registry = registry
        #: Put in ServerHello (jvb `videobridge.version.announce`); None leaves it out.
        self.version = version
        self.stats = stats or ChannelStats()
        self._hubs: dict[str, ConferenceChannel] = {}

    def conference(self, conference_id: str) -> ConferenceChannel | None:
        """The hub of a live conference (made on first use)."""
        conference = self.registry.get_conference(conference_id)
        if conference is None or conference.closed:
            return None
        hub = self._hubs.get(conference_id)
        if hub is None or hub.conference is not conference:
            hub = self._hubs[conference_id] = ConferenceChannel(conference, self.stats, version=self.version)
        return hub

    def send_to(self, conference_id: str, endpoint_id: str, text: str) -> list[Action]:
        """`text` to one endpoint, if its channel is open."""
        hub = self.conference(conference_id)
        return hub._send(endpoint_id, text) if hub is not None else []

    def broadcast(self, conference_id: str, text: str) -> list[Action]:
        """`text` to every endpoint of the conference whose channel is open."""
        hub = self.conference(conference_id)
        if hub is None:
            return []
        return [a for ep_id in list(hub.conference.endpoints) for a in hub._send(ep_id, text)]

    def sync(self, conference_id: str) -> list[Action]:
        """Follow the registry after the conference changed (see `ConferenceChannel.refresh`); once it is
        gone, close its sockets."""
        hub = self.conference(conference_id)
        if hub is None:
            stale = self._hubs.pop(conference_id, None)
            return stale.close() if stale is not None else []
        return hub.refresh()

    def connect(self, conference_id: str, endpoint_id: str) -> tuple[int, list[Action]] | None:
        hub = self.conference(conference_id)
        return hub.connect(endpoint_id) if hub is not None else None

    def disconnect(self, conference_id: str, endpoint_id: str, generation: int) -> None:
        hub = self._hubs.get(conference_id)
        if hub is not None:
            hub.disconnect(endpoint_id, generation)

    def receive(self, conference_id: str, endpoint_id: str, text: str) -> Received:
        hub = self.conference(conference_id)
        if hub is None:
            # The conference closed while the frame was in flight; the socket is closing.
            return self.reject("conference_gone", f"conference {conference_id} is closed")
        return hub.receive(endpoint_id, text)

    def reject(self, reason: str, text: str) -> Received:
        """A frame refused before parsing (a binary frame, say): counted like any bad frame."""
        self.stats.messages_received += 1
        self.stats.errors[reason] += 1
        return Received(None, ChannelMessageError(reason, text))
