"""bridge.channel: bridge-channel parsing, endpoint settings, routing and ForwardedSources (section 4).

The hubs run over the real registry (a Bridge over a FakeNative, no native core): membership and sources are
the registry's, and what a client's messages set lands on its bridge.Endpoint.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import Conference, Endpoint, Source
from bridge.channel import (
    CLOSE_GOING_AWAY,
    MAX_MESSAGE_CHARS,
    MAX_VIDEO_TYPES,
    BridgeChannels,
    ChannelMessageError,
    ChannelStats,
    ClientHello,
    Close,
    ConferenceChannel,
    EndpointMessage,
    EndpointStats,
    LastNChangedEvent,
    ReceiverAudioSubscription,
    ReceiverVideoConstraints,
    Send,
    SourceVideoTypeMessage,
    VideoConstraints,
    VideoTypeMessage,
    colibri_ws_url,
    parse_message,
)
from tests.helpers.fake_native import fake_bridge


def msg(colibri_class: str, **fields: Any) -> str:
    return json.dumps({"colibriClass": colibri_class, **fields})


def sent(actions: Any) -> dict[str, list[dict[str, Any]]]:
    """Send actions grouped by receiver, decoded."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in actions:
        assert isinstance(a, Send), a
        out.setdefault(a.endpoint_id, []).append(json.loads(a.text))
    return out


def conference_with(*endpoint_ids: str) -> Conference:
    """A registry conference `c0ffee` with these endpoints."""
    bridge, _ = fake_bridge()
    conference = bridge.create_conference("m", "c0ffee")
    for ep in endpoint_ids:
        conference.create_endpoint(ep)
    return conference


def hub_with(
    *endpoint_ids: str, connected: tuple[str, ...] | None = None, version: str | None = None
) -> ConferenceChannel:
    hub = ConferenceChannel(conference_with(*endpoint_ids), ChannelStats(), version=version)
    for ep in endpoint_ids if connected is None else connected:
        assert hub.connect(ep) is not None
    return hub


def sends_video(ep: Endpoint, *names: str) -> None:
    ep.set_sources([Source("video", (1000 + i,), name) for i, name in enumerate(names)])


# ---- parsing


def test_parses_every_client_class() -> None:
    assert parse_message(msg("ClientHello")) == ClientHello()
    em = parse_message(msg("EndpointMessage", to="b", msgPayload={"x": 1}))
    assert isinstance(em, EndpointMessage) and em.to == "b" and em.body["msgPayload"] == {"x": 1}
    assert isinstance(parse_message(msg("EndpointStats", bitrate=5)), EndpointStats)
    assert parse_message(msg("LastNChangedEvent", lastN=3)) == LastNChangedEvent(3)
    assert parse_message(msg("SourceVideoTypeMessage", sourceName="a-v0", videoType="DESKTOP")) == (
        SourceVideoTypeMessage("a-v0", "desktop")
    )
    assert parse_message(msg("VideoTypeMessage", videoType="none")) == VideoTypeMessage("disabled")
    rvc = parse_message(
        msg(
            "ReceiverVideoConstraints",
            lastN=2,
            selectedSources=["a-v0"],
            onStageEndpoints=["a"],
            defaultConstraints={"maxHeight": 180},
            constraints={"a-v0": {"maxHeight": 720, "maxFrameRate": 15}},
            assumedBandwidthBps=2_000_000,
        )
    )
    assert rvc == ReceiverVideoConstraints(
        last_n=2,
        selected_sources=("a-v0",),
        on_stage_endpoints=("a",),
        default_constraints=VideoConstraints(180, -1.0),
        constraints={"a-v0": VideoConstraints(720, 15.0)},
        assumed_bandwidth_bps=2_000_000,
    )


def test_endpoint_message_without_to_is_a_broadcast() -> None:
    em = parse_message(msg("EndpointMessage", msgPayload={}))
    assert isinstance(em, EndpointMessage) and em.to == ""
    em = parse_message(msg("EndpointMessage", to=None))
    assert isinstance(em, EndpointMessage) and em.to == ""


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"mode": "All"}, ReceiverAudioSubscription(all=True)),
        ({"mode": "None"}, ReceiverAudioSubscription(all=False)),
        ({"mode": "Include", "list": ["a-a0"]}, ReceiverAudioSubscription(False, frozenset({"a-a0"}))),
        ({"mode": "Exclude", "list": ["a-a0"]}, ReceiverAudioSubscription(True, exclude=frozenset({"a-a0"}))),
        ({"all": True, "exclude": ["b-a0"]}, ReceiverAudioSubscription(True, exclude=frozenset({"b-a0"}))),
        ({"include": ["*"], "exclude": []}, ReceiverAudioSubscription(all=True)),
        ({"include": ["a-a0"]}, ReceiverAudioSubscription(False, frozenset({"a-a0"}))),
    ],
)
def test_audio_subscription_forms(fields: dict[str, Any], expected: ReceiverAudioSubscription) -> None:
    assert parse_message(msg("ReceiverAudioSubscription", **fields)) == expected


def test_audio_subscription_wants() -> None:
    sub = ReceiverAudioSubscription(all=True, include=frozenset({"x"}), exclude=frozenset({"x", "y"}))
    assert not sub.wants("x") and not sub.wants("y") and sub.wants("z")
    sub = ReceiverAudioSubscription(all=False, include=frozenset({"x"}))
    assert sub.wants("x") and not sub.wants("z")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "malformed_json"),
        ('{"colibriClass":"ClientHello","a":1,"a":2}', "malformed_json"),
        ('{"colibriClass":"LastNChangedEvent","lastN":NaN}', "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('"ClientHello"', "not_an_object"),
        ("{}", "no_class"),
        ('{"colibriClass": 5}', "no_class"),
        ('{"colibriClass":"ServerHello"}', "unknown_class"),
        ('{"colibriClass":"Bogus"}', "unknown_class"),
        ('{"colibriClass":"LastNChangedEvent"}', "bad_field"),
        ('{"colibriClass":"LastNChangedEvent","lastN":"3"}', "bad_field"),
        ('{"colibriClass":"LastNChangedEvent","lastN":true}', "bad_field"),
        ('{"colibriClass":"LastNChangedEvent","lastN":-2}', "bad_field"),
        ('{"colibriClass":"LastNChangedEvent","lastN":99999999999}', "bad_field"),
        ('{"colibriClass":"EndpointMessage","to":5}', "bad_field"),
        ('{"colibriClass":"ReceiverVideoConstraints","selectedSources":"a"}', "bad_field"),
        ('{"colibriClass":"ReceiverVideoConstraints","selectedSources":[1]}', "bad_field"),
        ('{"colibriClass":"ReceiverVideoConstraints","constraints":[]}', "bad_field"),
        ('{"colibriClass":"ReceiverVideoConstraints","constraints":{"a":{"maxFrameRate":"x"}}}', "bad_field"),
        ('{"colibriClass":"ReceiverVideoConstraints","defaultConstraints":{"maxHeight":1.5}}', "bad_field"),
        ('{"colibriClass":"SourceVideoTypeMessage","videoType":"camera"}', "bad_field"),
        ('{"colibriClass":"SourceVideoTypeMessage","sourceName":"a","videoType":"tv"}', "bad_field"),
        ('{"colibriClass":"VideoTypeMessage"}', "bad_field"),
        ('{"colibriClass":"ReceiverAudioSubscription"}', "bad_field"),
        ('{"colibriClass":"ReceiverAudioSubscription","mode":"Some"}', "bad_field"),
        ('{"colibriClass":"ReceiverAudioSubscription","all":"yes"}', "bad_field"),
        ("[" * 100_000, "too_large"),
        ("[" * 50_000 + "]" * 50_000, "too_large"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ChannelMessageError) as info:
        parse_message(text)
    assert info.value.reason == reason


def test_deep_nesting_within_the_size_limit_is_malformed_not_a_crash() -> None:
    depth = MAX_MESSAGE_CHARS // 2 - 50
    text = '{"colibriClass":"EndpointStats","x":' + "[" * depth + "]" * depth + "}"
    assert len(text) <= MAX_MESSAGE_CHARS
    with pytest.raises(ChannelMessageError) as info:
        parse_message(text)  # RecursionError inside json, reported as malformed
    assert info.value.reason == "malformed_json"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "to",
        "msgPayload",
        "lastN",
        "selectedSources",
        "onStageSources",
        "selectedEndpoints",
        "onStageEndpoints",
        "defaultConstraints",
        "constraints",
        "assumedBandwidthBps",
        "sourceName",
        "videoType",
        "endpointId",
        "mode",
        "list",
        "all",
        "include",
        "exclude",
        "maxHeight",
        "maxFrameRate",
    ]
)
classes = st.sampled_from(
    [
        "ClientHello",
        "EndpointMessage",
        "EndpointStats",
        "LastNChangedEvent",
        "ReceiverVideoConstraints",
        "SourceVideoTypeMessage",
        "VideoTypeMessage",
        "ReceiverAudioSubscription",
        "ServerHello",
        "",
    ]
)
messages = st.builds(
    lambda cls, fields: json.dumps({"colibriClass": cls, **fields}),
    classes,
    st.dictionaries(field_names, json_values | st.dictionaries(field_names, json_values, max_size=3)),
)


@given(st.one_of(st.text(max_size=200), messages, json_values.map(json.dumps)))
@settings(max_examples=300, deadline=None)
def test_fuzz_parser_raises_only_its_own_error(text: str) -> None:
    try:
        parse_message(text)
    except ChannelMessageError as exc:
        assert exc.reason and exc.text


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), messages | st.text(max_size=50)), max_size=20))
@settings(max_examples=100, deadline=None)
def test_fuzz_hub_never_raises_and_only_sends_to_connected_endpoints(frames: list[tuple[str, str]]) -> None:
    hub = hub_with("a", "b", "c", connected=("a", "b"))
    for sender, text in frames:
        result = hub.receive(sender, text)
        assert result.error is not None or result.message is not None
        if result.error is not None:
            assert result.actions == ()
        for action in result.actions:
            assert isinstance(action, Send) and action.endpoint_id in ("a", "b")
            json.loads(action.text)
    assert hub.stats.messages_received == len(frames)


# ---- routing


def test_connect_greets_with_server_hello_and_forwarded_sources() -> None:
    hub = hub_with("a", "b", connected=())
    sends_video(hub.conference.endpoints["a"], "a-v0")
    sends_video(hub.conference.endpoints["b"], "b-v0", "b-v1")
    connected = hub.connect("a")
    assert connected is not None
    _generation, actions = connected
    assert sent(actions) == {
        "a": [
            {"colibriClass": "ServerHello"},
            {"colibriClass": "ForwardedSources", "forwardedSources": ["b-v0", "b-v1"]},
        ]
    }
    assert hub.connect("nobody") is None


def test_server_hello_announces_the_version_only_when_configured() -> None:
    hub = hub_with("a", version="1.2.3")
    assert sent(hub.receive("a", msg("ClientHello")).actions) == {
        "a": [{"colibriClass": "ServerHello", "version": "1.2.3"}]
    }
    quiet = hub_with("a")
    assert sent(quiet.receive("a", msg("ClientHello")).actions) == {"a": [{"colibriClass": "ServerHello"}]}


def test_unicast_adds_from_and_keeps_every_other_field() -> None:
    hub = hub_with("a", "b", "c")
    result = hub.receive(
        "a", msg("EndpointMessage", to="b", msgPayload={"k": [1, 2]}, extra="kept", **{"from": "x"})
    )
    assert result.error is None
    assert sent(result.actions) == {
        "b": [
            {
                "colibriClass": "EndpointMessage",
                "to": "b",
                "msgPayload": {"k": [1, 2]},
                "extra": "kept",
                "from": "a",
            }
        ]
    }


def test_broadcast_reaches_every_other_connected_endpoint() -> None:
    hub = hub_with("a", "b", "c", "d", connected=("a", "b", "c"))
    for to in ("", None):
        fields = {"msgPayload": {"hi": True}} if to is None else {"to": to, "msgPayload": {"hi": True}}
        result = hub.receive("a", msg("EndpointMessage", **fields))
        got = sent(result.actions)
        assert set(got) == {"b", "c"}
        assert all(m[0]["from"] == "a" and m[0]["msgPayload"] == {"hi": True} for m in got.values())
    # d has no socket: one drop per broadcast, like JVB.
    assert hub.stats.dropped["no_socket"] == 2


def test_messages_to_unknown_or_unconnected_endpoints_are_dropped_and_counted() -> None:
    hub = hub_with("a", "b", connected=("a",))
    assert hub.receive("a", msg("EndpointMessage", to="b", msgPayload={})).actions == ()
    assert hub.receive("a", msg("EndpointMessage", to="zz", msgPayload={})).actions == ()
    assert hub.stats.dropped == {"no_socket": 1, "unknown_endpoint": 1}


def test_endpoint_stats_go_to_the_others_with_from() -> None:
    hub = hub_with("a", "b", "c")
    got = sent(hub.receive("b", msg("EndpointStats", bitrate={"upload": 10})).actions)
    assert set(got) == {"a", "c"}
    assert got["a"] == [{"colibriClass": "EndpointStats", "bitrate": {"upload": 10}, "from": "b"}]


def test_bad_frame_is_counted_and_leaves_the_others_alone() -> None:
    hub = hub_with("a", "b")
    result = hub.receive("a", "{oops")
    assert result.message is None and result.error is not None and result.actions == ()
    assert hub.stats.errors == {"malformed_json": 1}
    # The same sender and everyone else carry on.
    assert set(sent(hub.receive("a", msg("EndpointMessage", msgPayload={})).actions)) == {"b"}
    assert hub.stats.messages_received == 2


def test_a_frame_from_an_expired_endpoint_is_an_error_not_a_crash() -> None:
    hub = hub_with("a", "b")
    hub.conference.endpoints["a"].close()
    result = hub.receive("a", msg("EndpointMessage", msgPayload={}))
    assert result.error is not None and result.error.reason == "endpoint_gone" and result.actions == ()


# ---- per-endpoint state


def test_video_constraints_merge_incrementally() -> None:
    hub = hub_with("a")
    hub.receive("a", msg("ReceiverVideoConstraints", lastN=3, selectedSources=["b-v0"], onStageSources=[]))
    hub.receive("a", msg("ReceiverVideoConstraints", defaultConstraints={"maxHeight": 180}))
    hub.receive("a", msg("ReceiverVideoConstraints", selectedEndpoints=["b"], constraints={"b-v0": {}}))
    # Stored on the registry's endpoint; lastN is its one last-n, not a second copy in the constraints.
    ep = hub.conference.endpoints["a"]
    assert ep.last_n == 3
    assert ep.video_constraints == ReceiverVideoConstraints(
        selected_sources=("b-v0",),
        on_stage_sources=(),
        selected_endpoints=("b",),
        default_constraints=VideoConstraints(180),
        constraints={"b-v0": VideoConstraints()},
    )
    # A later message replaces only what it carries; LastNChangedEvent is the legacy way to set lastN.
    hub.receive("a", msg("ReceiverVideoConstraints", selectedSources=[]))
    hub.receive("a", msg("LastNChangedEvent", lastN=-1))
    assert ep.video_constraints.selected_sources == () and ep.last_n == -1
    assert ep.video_constraints.default_constraints == VideoConstraints(180)


def test_video_types_and_audio_subscription_are_kept_per_endpoint() -> None:
    hub = hub_with("a", "b")
    hub.receive("a", msg("SourceVideoTypeMessage", sourceName="a-v0", videoType="desktop"))
    hub.receive("a", msg("SourceVideoTypeMessage", sourceName="a-v0", videoType="Camera"))
    hub.receive("a", msg("VideoTypeMessage", videoType="desktop_high_fps"))
    hub.receive("b", msg("ReceiverAudioSubscription", mode="Exclude", list=["a-a0"]))
    a, b = hub.conference.endpoints["a"], hub.conference.endpoints["b"]
    assert a.video_types == {"a-v0": "camera"}
    assert a.video_type == "desktop_high_fps"
    assert b.audio_subscription == ReceiverAudioSubscription(True, exclude=frozenset({"a-a0"}))
    assert a.audio_subscription == ReceiverAudioSubscription(all=True)  # default


def test_video_types_are_bounded() -> None:
    hub = hub_with("a")
    for i in range(MAX_VIDEO_TYPES):
        assert (
            hub.receive("a", msg("SourceVideoTypeMessage", sourceName=f"s{i}", videoType="camera")).error
            is None
        )
    result = hub.receive("a", msg("SourceVideoTypeMessage", sourceName="one-more", videoType="camera"))
    assert result.error is not None and result.error.reason == "too_many_sources"
    # Updating a known name is still fine.
    assert hub.receive("a", msg("SourceVideoTypeMessage", sourceName="s0", videoType="desktop")).error is None


# ---- ForwardedSources and membership


def forwarded(actions: Any) -> dict[str, list[str]]:
    return {
        ep: m["forwardedSources"]
        for ep, ms in sent(actions).items()
        for m in ms
        if m["colibriClass"] == "ForwardedSources"
    }


def test_forwarded_sources_follow_sources_and_membership() -> None:
    hub = hub_with("a", "b", connected=())
    conference = hub.conference
    assert forwarded(hub.connect("a")[1]) == {"a": []}  # type: ignore[index]
    assert forwarded(hub.connect("b")[1]) == {"b": []}  # type: ignore[index]
    # b starts sending video: only a's set changes.
    sends_video(conference.endpoints["b"], "b-v0")
    assert forwarded(hub.refresh()) == {"a": ["b-v0"]}
    # Nothing changed: nothing sent.
    assert hub.refresh() == []
    # c joins with a source; c has no socket yet so only a and b hear of it.
    sends_video(conference.create_endpoint("c"), "c-v0")
    assert forwarded(hub.refresh()) == {"a": ["b-v0", "c-v0"], "b": ["c-v0"]}
    # c's socket opens: it is told about b's source.
    assert forwarded(hub.connect("c")[1]) == {"c": ["b-v0"]}  # type: ignore[index]
    # b expires: its socket closes; a and c stop getting b-v0.
    conference.endpoints["b"].close()
    actions = hub.refresh()
    assert Close("b", CLOSE_GOING_AWAY, "endpoint expired") in actions
    assert forwarded([a for a in actions if isinstance(a, Send)]) == {"a": ["c-v0"], "c": []}


def test_reconnect_replaces_the_socket_and_resends_forwarded_sources() -> None:
    hub = hub_with("a", "b", connected=())
    sends_video(hub.conference.endpoints["b"], "b-v0")
    first = hub.connect("a")
    second = hub.connect("a")
    assert first is not None and second is not None and first[0] != second[0]
    assert forwarded(second[1]) == {"a": ["b-v0"]}
    # The old socket's close must not mark the endpoint disconnected.
    hub.disconnect("a", first[0])
    assert hub.socket("a") == second[0]
    hub.disconnect("a", second[0])
    assert hub.socket("a") is None
    assert hub.stats.connections == 2


def test_conference_close_closes_every_open_socket() -> None:
    bridge, _ = fake_bridge()
    conference = bridge.create_conference("m", "c")
    for ep in ("a", "b", "x"):
        conference.create_endpoint(ep)
    channels = BridgeChannels(bridge)
    assert channels.connect("c", "a") is not None and channels.connect("c", "b") is not None
    conference.close()
    actions = channels.sync("c")
    assert sorted(a.endpoint_id for a in actions if isinstance(a, Close)) == ["a", "b"]
    assert channels.conference("c") is None and channels.sync("c") == []
    result = channels.receive("c", "a", msg("ClientHello"))
    assert result.error is not None and result.error.reason == "conference_gone"
    assert channels.stats.errors == {"conference_gone": 1}


def test_registry_changes_reach_the_channel_once_per_batch() -> None:
    """Bridge.on_change is how the channel follows the registry: one call per conference and batch."""
    bridge, _ = fake_bridge()
    channels = BridgeChannels(bridge)
    conference = bridge.create_conference("m", "c")
    a = conference.create_endpoint("a")
    assert channels.connect("c", "a") is not None
    pushed: list[object] = []
    bridge.on_change = lambda conf: pushed.extend(channels.sync(conf.id))
    with bridge.batch():
        b = conference.create_endpoint("b")
        sends_video(b, "b-v0")
        sends_video(a, "a-v0")
        assert pushed == []
    assert forwarded(pushed) == {"a": ["b-v0"]}


def test_reject_counts_binary_frames() -> None:
    channels = BridgeChannels(fake_bridge()[0])
    result = channels.reject("binary", "text frames only")
    assert result.error is not None and result.error.reason == "binary"
    assert channels.stats.messages_received == 1 and channels.stats.errors == {"binary": 1}


def test_url_escapes_every_part() -> None:
    url = colibri_ws_url("wss://meet.example/colibri-ws/default-id", "c0", "ep 1", "a+b/c=")
    assert url == "wss://meet.example/colibri-ws/default-id/c0/ep%201?pwd=a%2Bb%2Fc%3D"
