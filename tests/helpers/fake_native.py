"""A stand-in for `_native.NativeBridge` (bridge.seam.NativeSeam): records every Command, runs no core.

Unit tests drive the real registry (`Bridge(native=FakeNative())`) with it and read back exactly what would
have crossed the seam. There is no shard behind it: the Events a test queues (`push_event`) are what the
registry's next drain gets.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge import Bridge, _native
from bridge.seam import NativeEvent

#: The bridge certificate's fake sha-256 digest.
DIGEST = bytes(range(32))


class FakeNative:
    def __init__(self, addresses: Sequence[tuple[str, int]] = (("127.0.0.1", 10000),)) -> None:
        self.addresses = list(addresses)
        #: (method, arguments) of every Command, in order.
        self.commands: list[tuple[str, tuple[object, ...]]] = []
        #: The typed values of the Commands that carry them, in order.
        self.connected: list[tuple[int, str, str, list[_native.Fingerprint]]] = []
        self.candidates: list[tuple[int, list[_native.Candidate]]] = []
        self.sources: list[tuple[int, list[_native.Source]]] = []
        self.shut_down = False
        self.events: list[NativeEvent] = []

    def clear(self) -> None:
        """Forgets every Command recorded so far."""
        self.commands.clear()
        self.connected.clear()
        self.candidates.clear()
        self.sources.clear()

    def named(self, name: str) -> list[tuple[object, ...]]:
        """The arguments of every Command sent by method `name`."""
        return [args for method, args in self.commands if method == name]

    def local_addresses(self) -> list[tuple[str, int]]:
        return list(self.addresses)

    def tcp_local_address(self) -> tuple[str, int] | None:
        return None

    def fingerprint(self) -> tuple[_native.HashFunction, bytes]:
        return _native.HashFunction.SHA_256, DIGEST

    def event_fd(self) -> int:
        return -1

    def push_event(self, event: NativeEvent) -> None:
        self.events.append(event)

    def drain_events(self) -> list[NativeEvent]:
        events, self.events = self.events, []
        return events

    def create_router(self, router_id: int, feedback_audio_ssrc: int, feedback_video_ssrc: int) -> None:
        self.commands.append(("create_router", (router_id, feedback_audio_ssrc, feedback_video_ssrc)))

    def close_router(self, router_id: int) -> None:
        self.commands.append(("close_router", (router_id,)))

    def create_transport(
        self, router_id: int, transport_id: int, ufrag: str, pwd: str, controlling: bool
    ) -> None:
        self.commands.append(("create_transport", (router_id, transport_id, ufrag, pwd, controlling)))

    def connect_transport(
        self, transport_id: int, ufrag: str, pwd: str, fingerprints: Sequence[_native.Fingerprint]
    ) -> None:
        self.connected.append((transport_id, ufrag, pwd, list(fingerprints)))
        self.commands.append(("connect_transport", self.connected[-1]))

    def restart_ice(self, transport_id: int, ufrag: str, pwd: str) -> None:
        self.commands.append(("restart_ice", (transport_id, ufrag, pwd)))

    def add_remote_candidates(self, transport_id: int, candidates: Sequence[_native.Candidate]) -> None:
        self.candidates.append((transport_id, list(candidates)))
        self.commands.append(("add_remote_candidates", self.candidates[-1]))

    def set_sources(self, transport_id: int, sources: Sequence[_native.Source]) -> None:
        self.sources.append((transport_id, list(sources)))
        self.commands.append(("set_sources", self.sources[-1]))

    def set_payload_types(self, transport_id: int, types: Sequence[_native.PayloadType]) -> None:
        self.commands.append(("set_payload_types", (transport_id, list(types))))

    def set_allocation(
        self, transport_id: int, targets: Sequence[tuple[str, tuple[int, int] | None]]
    ) -> None:
        self.commands.append(("set_allocation", (transport_id, list(targets))))

    def set_probe_target(self, transport_id: int, bps: int) -> None:
        self.commands.append(("set_probe_target", (transport_id, bps)))

    def set_header_extensions(
        self,
        transport_id: int,
        audio_level: int | None = None,
        dependency_descriptor: int | None = None,
        transport_cc: int | None = None,
        abs_send_time: int | None = None,
    ) -> None:
        ids: tuple[int | None, ...] = (audio_level, dependency_descriptor, transport_cc)
        if abs_send_time is not None:
            ids += (abs_send_time,)
        self.commands.append(("set_header_extensions", (transport_id, ids)))

    def request_keyframe(self, transport_id: int, ssrc: int) -> None:
        self.commands.append(("request_keyframe", (transport_id, ssrc)))

    def set_force_mute(self, transport_id: int, audio: bool, video: bool) -> None:
        self.commands.append(("set_force_mute", (transport_id, audio, video)))

    def close_transport(self, transport_id: int) -> None:
        self.commands.append(("close_transport", (transport_id,)))

    def get_stats(self, request_id: int) -> None:
        self.commands.append(("get_stats", (request_id,)))

    def shutdown(self) -> None:
        self.shut_down = True


def fake_bridge() -> tuple[Bridge, FakeNative]:
    """A registry over a FakeNative, ready to use (nothing to start)."""
    native = FakeNative()
    return Bridge(native=native), native
