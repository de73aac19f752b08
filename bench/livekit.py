"""LiveKit as a bench target (`sluice bench --target livekit`): the same scenario and load generator as
Sluice's own run, through LiveKit server v1.13.5 (built once with `go install` into ~/.cache/sluice; newer
tags carry `replace` directives the module proxy refuses).

It runs in a network namespace of its own like Janus (bench/peerlab.py), with a generated configuration:
one UDP port for all ICE (its UDP mux) on the veth only, signalling on the namespace's loopback reached
through a TCP forwarder, rooms created on join, logging at warnings, and congestion control off: the
emulated receivers sit on a veth with room to spare, and Sluice's bench bridge likewise allocates by what
receivers ask rather than by its estimate (`trust-bwe` off), so both forward what the scenario asks.

Each participant is a signalling WebSocket (protobuf messages, a JWT from the API key) and two
PeerConnections, as LiveKit's SDKs make them: a publisher, offered by the load generator after LiveKit
accepted its tracks (`AddTrackRequest`; ICE-controlling, sendonly), and a subscriber, offered by LiveKit
(it controls ICE) and answered recvonly, renegotiated each time a track is added. LiveKit's ICE candidates
come trickled. LiveKit makes a published track only once its first packet arrived, so the load generator
starts sending before the subscriptions exist, and the run's figures are taken over a window that opens
once every subscriber has every track (`window`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import jwt

from bench import sdp
from bench.peerlab import PeerLab, PeerLabError, PeerProcess, running_peer

if TYPE_CHECKING:
    from bench._native import LoadGen, LoadGenEndpoint
    from bench.scenario import Scenario

T = TypeVar("T")
VERSION = "v1.13.5"
MODULE = "github.com/livekit/livekit-server/cmd/server"
SIGNAL_PORT = 7880
RTC_UDP_PORT = 7882
RTC_TCP_PORT = 7881
#: One-byte extension ids of MID and RID in a publisher's RID simulcast (not the load generator's others: 1
#: audio level, 5 transport-wide sequence numbers).
MID_EXT_ID = 9
RID_EXT_ID = 10
#: Seconds LiveKit gets to answer one signalling step (a published track, an SDP answer, a candidate).
STEP_TIMEOUT = 20.0


class LiveKitError(RuntimeError):
    """LiveKit could not be built or started, or refused a step."""


class Unsupported(LiveKitError):
    """The scenario asks what the bench cannot give LiveKit in the same form as Sluice."""


def binary_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sluice" / f"livekit-server-{VERSION}" / "server"


def ensure_binary() -> Path:
    """LiveKit's server binary, built with `go install` the first time (a few minutes)."""
    path = binary_path()
    if path.exists():
        return path
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise LiveKitError("building LiveKit needs Go (`go install`); none is on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(path.parent), "GOFLAGS": "-mod=mod"}
    result = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0 or not path.exists():
        raise LiveKitError(f"go install {MODULE}@{VERSION} failed: {result.stderr.strip()[-2000:]}")
    return path


def write_config(folder: Path, *, node_ip: str, iface: str, key: str, secret: str) -> Path:
    config = folder / "livekit.yaml"
    config.write_text(
        f"port: {SIGNAL_PORT}\n"
        'bind_addresses: ["127.0.0.1"]\n'
        "rtc:\n"
        f"  udp_port: {RTC_UDP_PORT}\n"
        f"  tcp_port: {RTC_TCP_PORT}\n"
        "  use_external_ip: false\n"
        f"  node_ip: {node_ip}\n"
        # Without it LiveKit tells clients to use public STUN servers (the load generator uses none).
        f'  stun_servers: ["{node_ip}:3478"]\n'
        f"  interfaces:\n    includes: [{iface}]\n"
        "  congestion_control:\n    enabled: false\n"
        f"keys:\n  {key}: {secret}\n"
        "logging:\n  level: warn\n"
        "room:\n  auto_create: true\n  empty_timeout: 600\n"
    )
    return config


def token(key: str, secret: str, room: str, identity: str) -> str:
    """An access token (HS256 JWT) that lets `identity` join `room`, publish and subscribe."""
    now = int(time.time())
    claims = {
        "iss": key,
        "sub": identity,
        "name": identity,
        "nbf": now - 10,
        "exp": now + 3600,
        "video": {"room": room, "roomJoin": True, "canPublish": True, "canSubscribe": True},
    }
    return jwt.encode(claims, secret, algorithm="HS256")


class LiveKitServer(PeerProcess):
    """LiveKit in its namespace, pinned to `cpu` when given; stopped by PID."""

    def __init__(self, lab: PeerLab, folder: Path, cpu: int | None) -> None:
        exe = ensure_binary()
        self.key, self.secret = "sluicebench", secrets.token_hex(24)
        config = write_config(
            folder, node_ip=lab.peer_ip, iface=lab.peer_iface, key=self.key, secret=self.secret
        )
        cmd = lab.peer.exec_args(str(exe), "--config", str(config))
        super().__init__("livekit-server", cmd, folder / "livekit.log", cpu)

    async def ready(self, url: str, http: aiohttp.ClientSession) -> None:
        async def answers() -> bool:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200

        await self.wait_ready(answers)


@contextlib.asynccontextmanager
async def started_livekit(
    http: aiohttp.ClientSession, cpu: int | None
) -> AsyncIterator[tuple[str, LiveKitServer, PeerLab]]:
    """LiveKit in a namespace of its own; yields its signalling URL (http://...), the server and the lab."""
    ensure_binary()  # before the namespaces: the first build takes minutes

    def start(lab: PeerLab, folder: Path) -> LiveKitServer:
        return LiveKitServer(lab, folder, cpu)

    async def ready(server: LiveKitServer, base: str) -> None:
        await server.ready(base, http)

    try:
        async with running_peer("livekit", start, SIGNAL_PORT, ready) as peer:
            yield peer
    except PeerLabError as exc:
        raise LiveKitError(str(exc)) from exc


async def _within(waitable: Awaitable[T], what: str) -> T:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await waitable
    except TimeoutError:
        raise LiveKitError(f"{what} within {STEP_TIMEOUT:.0f} s") from None


# ---- a participant: its signalling connection and its two PeerConnections


Create = Callable[..., "list[LoadGenEndpoint]"]


@dataclass
class Participant:
    """One emulated participant's signalling state; its reader task answers LiveKit's subscriber offers."""

    index: int  # position in its conference
    group: int
    ws: aiohttp.ClientWebSocketResponse
    lg: LoadGen
    create: Create
    #: Its publisher endpoint, made before it joins (its subscriber, made on LiveKit's first offer, names it
    #: as the peer whose streams it does not expect).
    publisher_ep: LoadGenEndpoint | None = None
    subscriber: LoadGenEndpoint | None = None
    #: Media m-lines LiveKit offered the subscriber so far (audio and video tracks of the others).
    offered_tracks: int = 0
    joined: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    published: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    answer: asyncio.Future[str] | None = None
    #: Trickled candidates per target (0 publisher, 1 subscriber) as (ip, port, priority, type).
    candidates: dict[int, list[tuple[str, int, int, str]]] = field(default_factory=lambda: {0: [], 1: []})
    candidate_seen: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    #: Its published video track's sid (what others' track settings name).
    video_sid: str | None = None
    reader: asyncio.Task[None] | None = None
    pinger: asyncio.Task[None] | None = None

    @property
    def publisher(self) -> int | None:
        return None if self.publisher_ep is None else self.publisher_ep["index"]

    async def send(self, **request: Any) -> None:
        from livekit.protocol import rtc  # noqa: PLC0415

        await self.ws.send_bytes(rtc.SignalRequest(**request).SerializeToString())

    async def read(self) -> None:
        from livekit.protocol import rtc  # noqa: PLC0415

        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue
            try:
                await self._on(rtc.SignalResponse.FromString(msg.data))
            except (sdp.SdpError, ValueError, OSError) as exc:
                self.error = f"participant {self.group}/{self.index}: {exc}"
                self.changed.set()
        if not self.joined.done():
            self.joined.set_exception(LiveKitError(f"signalling closed: {self.ws.close_code}"))

    async def _on(self, resp: Any) -> None:
        kind = resp.WhichOneof("message")
        if kind == "join":
            if not self.joined.done():
                self.joined.set_result(resp.join)
        elif kind == "track_published":
            waiter = self.published.get(resp.track_published.cid)
            if waiter is not None and not waiter.done():
                waiter.set_result(resp.track_published.track)
        elif kind == "answer":
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(resp.answer.sdp)
        elif kind == "trickle":
            init = json.loads(resp.trickle.candidateInit or "{}")
            cand = sdp.candidate_from_attribute(str(init.get("candidate", "")))
            if cand is not None:
                self.candidates[int(resp.trickle.target)].append(cand)
                self.candidate_seen.set()
        elif kind == "offer":
            await self._answer_subscriber(resp.offer)
        elif kind == "leave":
            self.error = f"participant {self.group}/{self.index}: LiveKit asked it to leave"
            self.changed.set()

    async def _answer_subscriber(self, offer: Any) -> None:
        remote = sdp.parse(offer.sdp)
        first = self.subscriber is None
        if self.subscriber is None:
            self.subscriber = self.create(
                1,
                self.group,
                ice_controlling=False,
                receives=True,
                peer=self.publisher,
                rtx_pt=sdp.rtx_payload_type(remote),
            )[0]
        answer = sdp.subscriber_answer(remote, self.subscriber, accept_data=True)
        await self.send(answer={"type": "answer", "sdp": answer, "id": offer.id})
        if first:
            self.lg.connect(
                self.subscriber["index"],
                remote.ufrag,
                remote.pwd,
                list(self.candidates[1]),
                list(remote.fingerprints),
                remote.setup,
            )
        self.offered_tracks = sum(
            1
            for m in remote.media
            if m.kind in ("audio", "video") and m.port != 0 and m.direction != "inactive"
        )
        self.changed.set()

    async def ping(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now_ms = int(time.time() * 1000)
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.send(ping_req={"timestamp": now_ms})

    async def publish(
        self, audio: bool, layers: int, sources: Callable[[int], tuple[int | None, list[int]]]
    ) -> None:
        """Announces the tracks, then offers them on a new publisher endpoint (sending what `sources` says
        for its index) and connects it."""
        from livekit.protocol import models  # noqa: PLC0415

        tracks: list[tuple[str, dict[str, Any]]] = []
        name = f"p{self.group}-{self.index}"
        if audio:
            tracks.append(
                (f"{name}-a0", {"type": models.TrackType.AUDIO, "source": models.TrackSource.MICROPHONE})
            )
        if layers:
            sizes = [(320, 180), (640, 360), (1280, 720)][-layers:]
            spec: dict[str, Any] = {
                "type": models.TrackType.VIDEO,
                "source": models.TrackSource.CAMERA,
                "width": sizes[-1][0],
                "height": sizes[-1][1],
                "layers": [
                    {"quality": q, "width": w, "height": h, **({"rid": sdp.RIDS[q]} if layers > 1 else {})}
                    for q, (w, h) in enumerate(sizes)
                ],
            }
            tracks.append((f"{name}-v0", spec))
        for cid, spec in tracks:
            self.published[cid] = asyncio.get_running_loop().create_future()
            await self.send(add_track={"cid": cid, "name": cid, **spec})
        for cid, _ in tracks:
            info = await _within(self.published[cid], f"LiveKit did not accept track {cid}")
            if cid.endswith("-v0"):
                self.video_sid = str(info.sid)
        ep = self.publisher_ep
        if ep is None:
            raise LiveKitError("publish: the participant has no publisher endpoint")
        audio_ssrc, video = sources(ep["index"])
        self.lg.set_sources(ep["index"], audio_ssrc, video)
        self.answer = asyncio.get_running_loop().create_future()
        offer = sdp.publisher_offer(
            ep,
            audio_ssrc,
            video,
            track_ids=(f"{name}-a0", f"{name}-v0"),
            stream=name,
            rid_ext=(MID_EXT_ID, RID_EXT_ID) if len(video) > 1 else None,
        )
        await self.send(offer={"type": "offer", "sdp": offer})
        remote = sdp.parse(await _within(self.answer, f"no answer to {name}'s publisher offer"))
        while not self.candidates[0]:
            self.candidate_seen.clear()
            await _within(self.candidate_seen.wait(), f"no ICE candidate for {name}'s publisher")
        self.lg.connect(
            ep["index"],
            remote.ufrag,
            remote.pwd,
            list(self.candidates[0]),
            list(remote.fingerprints),
            remote.setup,
        )

    async def close(self) -> None:
        for task in (self.reader, self.pinger):
            if task is not None:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.send(leave={})
        with contextlib.suppress(Exception):
            await self.ws.close()
        await asyncio.gather(
            *(t for t in (self.reader, self.pinger) if t is not None), return_exceptions=True
        )


async def allocate_livekit(
    *,
    url: str,
    http: aiohttp.ClientSession,
    server: LiveKitServer,
    lg: LoadGen,
    scenario: Scenario,
    create: Create,
    sources: Callable[[int, int], tuple[int | None, list[int]]],
    participants: list[Participant],
) -> None:
    """The scenario's conferences as LiveKit rooms: everyone joins (auto-subscribe), every sender publishes
    and connects, the load generator starts sending (LiveKit makes a track on its first packet), and this
    returns once every subscriber was offered every other participant's tracks and connected. The caller
    closes `participants`."""
    if scenario.receive is not None:
        raise Unsupported(
            "the scenario's [receive] (lastN, max-height, stage) has no LiveKit equivalent here"
        )
    ws_url = url.replace("http://", "ws://", 1) + "/rtc"
    expected: dict[int, int] = {}  # per conference: tracks published
    for conf in range(scenario.conferences):
        room = f"bench-{uuid.uuid4()}"
        for position in range(scenario.endpoints_per_conference):
            identity = f"lg-{conf}-{position}"
            params = {"access_token": token(server.key, server.secret, room, identity), "auto_subscribe": "1",
                      "protocol": "15", "sdk": "go", "version": "2.9.0"}  # fmt: skip
            sends = position < scenario.senders and (
                scenario.sends_audio(position) or scenario.media.video_ssrcs > 0
            )
            # RID simulcast: its video packets carry the video m-line's MID (after audio's, if any) and RID.
            rid = (MID_EXT_ID, RID_EXT_ID, "1" if scenario.sends_audio(position) else "0")
            role: dict[str, Any] = {"rid": rid} if scenario.media.video_ssrcs > 1 else {}
            publisher = create(1, conf, ice_controlling=True, receives=False, **role)[0] if sends else None
            ws = await http.ws_connect(ws_url, params=params, heartbeat=None, max_msg_size=0)
            p = Participant(position, conf, ws, lg, create, publisher_ep=publisher)
            p.reader = asyncio.create_task(p.read())
            participants.append(p)
            join = await _within(p.joined, f"{identity} was not let in")
            p.pinger = asyncio.create_task(p.ping(max(1.0, float(join.ping_interval or 5) / 2)))
    for p in participants:
        if p.publisher_ep is None:
            continue
        audio, layers = scenario.sends_audio(p.index), scenario.media.video_ssrcs
        await p.publish(audio, layers, functools.partial(_sources_at, sources, p.index))
        expected[p.group] = expected.get(p.group, 0) + audio + bool(layers)
    if not await asyncio.to_thread(lg.wait_connected, 30.0):
        raise LiveKitError(f"publishers: {lg.failed()} failed, {lg.connected()}/{lg.endpoints()} connected")
    lg.start()
    deadline = time.monotonic() + 30.0
    while True:
        errors = [p.error for p in participants if p.error]
        if errors:
            raise LiveKitError(errors[0])
        waiting = [p for p in participants if p.offered_tracks < _tracks_for(p, expected, scenario)]
        if not waiting and lg.connected() == lg.endpoints():
            # And every track flows: LiveKit starts a video track at its next keyframe.
            flowing: dict[int, int] = {}
            for r in lg.stats(detail=True)["receive_streams"]:
                flowing[r["receiver"]] = flowing.get(r["receiver"], 0) + 1
            waiting = [
                p
                for p in participants
                if p.subscriber is not None
                and flowing.get(p.subscriber["index"], 0) < _tracks_for(p, expected, scenario)
            ]
            if not waiting:
                if scenario.media.video_ssrcs > 1:
                    await _lowest_layer(participants, lg)
                return
        if time.monotonic() > deadline:
            raise LiveKitError(
                f"{len(waiting)} subscribers lack tracks, {lg.connected()}/{lg.endpoints()} connected:\n"
                f"{server.log_tail()}"
            )
        await asyncio.sleep(0.1)


def _sources_at(
    sources: Callable[[int, int], tuple[int | None, list[int]]], position: int, index: int
) -> tuple[int | None, list[int]]:
    return sources(index, position)


async def _lowest_layer(participants: list[Participant], lg: LoadGen, timeout: float = 15.0) -> None:
    """Every subscriber asks for the others' video at 180p, the layer Sluice's bench receivers get (LiveKit
    sends the highest by default), and this waits until every received video stream is on it."""
    from livekit.protocol import models  # noqa: PLC0415

    for p in participants:
        sids = [o.video_sid for o in participants if o.group == p.group and o is not p and o.video_sid]
        if p.subscriber is not None and sids:
            await p.send(
                track_setting={
                    "track_sids": sids,
                    "quality": models.VideoQuality.LOW,
                    "width": 320,
                    "height": 180,
                }
            )
    deadline = time.monotonic() + timeout
    while True:
        videos = [r for r in lg.stats(detail=True)["receive_streams"] if r["kind"] == "video"]
        if videos and all(r["layer"] == 0 for r in videos):
            # A moment on it: the window then opens on a steady stream.
            await asyncio.sleep(0.5)
            return
        if time.monotonic() > deadline:
            raise LiveKitError("subscribers did not get the lowest simulcast layer in time")
        await asyncio.sleep(0.2)


def _tracks_for(p: Participant, expected: Mapping[int, int], scenario: Scenario) -> int:
    """Tracks participant `p` should be offered: every track of its room but its own."""
    own = 0
    if p.index < scenario.senders:
        own = (1 if scenario.sends_audio(p.index) else 0) + (1 if scenario.media.video_ssrcs else 0)
    return expected.get(p.group, 0) - own


def main(argv: list[str]) -> int:
    """`python -m bench.livekit build`: builds LiveKit for the bench now (scripts/bootstrap.sh calls it)."""
    if argv != ["build"]:
        print("usage: python -m bench.livekit build", file=sys.stderr)
        return 2
    try:
        print(ensure_binary())
    except LiveKitError as exc:
        print(f"bench.livekit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
