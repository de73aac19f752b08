"""Janus VideoRoom as a bench target (`sluice bench --target janus`): the same scenario and load generator as
Sluice's own run, through Debian's `janus` (1.1).

Janus gathers no ICE candidates on loopback, so it runs in a network namespace of its own, joined by a veth
pair to a second namespace that holds the load generator's sockets (bench/peerlab.py); its HTTP API listens
on the namespace's loopback and is reached through a TCP forwarder. Its configuration is generated: the
VideoRoom plugin and the HTTP transport only, full ICE (libnice) on the veth, default event loops (a thread
per handle), no event handlers, logging at warnings.

Each participant is two PeerConnections, as Janus clients make them: a publisher (the load generator
offers, ICE-controlling, sendonly, an SSRC simulcast group when the scenario has simulcast) and, when
there is anyone to receive, one multistream subscriber to every other publisher of its room (Janus offers
and controls ICE; the endpoint answers recvonly). The endpoints say so to the load generator: a publisher
expects nothing, a subscriber every stream of its room but its own publisher's (`LoadGen.create_endpoints`'
`receives` and `peer`), so loss is counted as for Sluice. A room per conference, with as many publishers as
the scenario has senders; Janus forwards one simulcast layer per subscriber (the highest, its default).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench import sdp
from bench.peerlab import PeerLab, PeerLabError, PeerProcess, running_peer

if TYPE_CHECKING:
    from bench._native import LoadGen, LoadGenEndpoint
    from bench.scenario import Scenario
    from tests.helpers.netns import Netns

#: Its HTTP API's port, on its namespace's loopback.
HTTP_PORT = 8088
#: Seconds Janus gets to answer one asynchronous request (publish, subscribe, start).
EVENT_TIMEOUT = 20.0


class JanusError(RuntimeError):
    """Janus refused a request or did not answer it."""


class Unsupported(JanusError):
    """The scenario asks what has no Janus equivalent."""


def janus_binary() -> tuple[str, Path]:
    """The `janus` executable and its library folder (plugins, transports)."""
    exe = shutil.which("janus")
    libs = sorted(glob.glob("/usr/lib/*/janus")) + sorted(glob.glob("/usr/lib/janus"))
    if exe is None or not libs:
        raise JanusError("janus is not installed: scripts/bootstrap.sh installs Debian's janus package")
    return exe, Path(libs[0])


def write_config(folder: Path, lib: Path, *, http_port: int, iface: str, rtp_ports: tuple[int, int]) -> Path:
    """Janus's configuration in `folder`: the core (full ICE on `iface` only, `rtp_ports`), the HTTP
    transport on 127.0.0.1:`http_port`, the VideoRoom with no static room. Returns janus.jcfg's path."""
    for sub, names in (("plugins", ["libjanus_videoroom.so"]), ("transports", ["libjanus_http.so"])):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = folder / sub / name
            if not link.exists():
                link.symlink_to(lib / sub / name)
    (folder / "none").mkdir(exist_ok=True)
    jcfg = folder / "janus.jcfg"
    jcfg.write_text(
        "general: {\n"
        f'  configs_folder = "{folder}"\n'
        f'  plugins_folder = "{folder / "plugins"}"\n'
        f'  transports_folder = "{folder / "transports"}"\n'
        f'  events_folder = "{folder / "none"}"\n'
        f'  loggers_folder = "{folder / "none"}"\n'
        "  debug_level = 3\n"
        # The bench's own session lives as long as the run; Janus goes with it.
        "  session_timeout = 0\n"
        "}\n"
        f'media: {{\n  rtp_port_range = "{rtp_ports[0]}-{rtp_ports[1]}"\n}}\n'
        f'nat: {{\n  nice_debug = false\n  full_trickle = false\n  ice_enforce_list = "{iface}"\n}}\n'
        "plugins: {\n}\ntransports: {\n}\nevents: {\n  broadcast = false\n}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        '  json = "plain"\n  base_path = "/janus"\n  http = true\n'
        f'  port = {http_port}\n  ip = "127.0.0.1"\n  https = false\n'
        "}\nadmin: {\n  admin_http = false\n  admin_https = false\n}\n"
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return jcfg


class JanusApi:
    """Janus's HTTP API for one session: plugin requests answered at once (`request`) and those answered
    by an event (`message`), which a long poll of the session collects by transaction."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.session_id: int | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or uuid.uuid4().hex}
        async with self.http.post(f"{self.url}{path}", json=body) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body.get('janus')}: {reply.get('error')}")
        return reply

    async def open(self) -> None:
        reply = await self._post("", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self.session_id is not None:
            # Destroying the session hangs up every PeerConnection of it.
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
            self.session_id = None

    async def attach(self) -> int:
        reply = await self._post(
            f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A VideoRoom request answered in the reply (create, destroy, list)."""
        reply = await self._post(f"/{self.session_id}/{handle}", {"janus": "message", "body": body})
        data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """A VideoRoom request answered by an event: its data and JSEP."""
        transaction = uuid.uuid4().hex
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = done
        try:
            msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
            if jsep is not None:
                msg["jsep"] = jsep
            await self._post(f"/{self.session_id}/{handle}", msg)
            async with asyncio.timeout(EVENT_TIMEOUT):
                event = await done
        except TimeoutError:
            raise JanusError(f"{body.get('request')}: no answer in {EVENT_TIMEOUT:.0f} s") from None
        finally:
            self._waiting.pop(transaction, None)
        data: dict[str, Any] = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data, event.get("jsep")

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(
                    f"{self.url}/{self.session_id}",
                    params={"maxev": "10"},
                    timeout=aiohttp.ClientTimeout(total=40),
                ) as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(0.1)
                continue
            for event in body if isinstance(body, list) else [body]:
                waiter = self._waiting.get(str(event.get("transaction")))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)


class JanusServer(PeerProcess):
    """Janus started in its namespace (`netns`), pinned to `cpu` when given; stopped by PID."""

    def __init__(self, netns: Netns, iface: str, folder: Path, cpu: int | None) -> None:
        exe, lib = janus_binary()
        jcfg = write_config(folder, lib, http_port=HTTP_PORT, iface=iface, rtp_ports=(20000, 40000))
        cmd = netns.exec_args(exe, "-C", str(jcfg), "-F", str(folder), "-o", "-d", "3")
        super().__init__("janus", cmd, folder / "janus.log", cpu)

    async def ready(self, url: str, http: aiohttp.ClientSession) -> None:
        async def answers() -> bool:
            async with http.get(f"{url}/info", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                info = await resp.json(content_type=None)
                return bool(info.get("janus") == "server_info")

        await self.wait_ready(answers)


@contextlib.asynccontextmanager
async def started_janus(
    http: aiohttp.ClientSession, cpu: int | None
) -> AsyncIterator[tuple[str, JanusServer, PeerLab]]:
    """Janus in a namespace of its own (bench/peerlab.py); yields its API URL, the server and the lab (the
    load generator's namespace and address)."""

    def start(lab: PeerLab, folder: Path) -> JanusServer:
        return JanusServer(lab.peer, lab.peer_iface, folder, cpu)

    async def ready(server: JanusServer, base: str) -> None:
        await server.ready(f"{base}/janus", http)

    try:
        async with running_peer("janus", start, HTTP_PORT, ready) as (base, server, lab):
            yield f"{base}/janus", server, lab
    except PeerLabError as exc:
        raise JanusError(str(exc)) from exc


def _remote(lg: LoadGen, index: int, remote: sdp.RemoteSdp) -> None:
    lg.connect(
        index, remote.ufrag, remote.pwd, list(remote.candidates), list(remote.fingerprints), remote.setup
    )


def simulcast_substream(scenario: Scenario) -> int | None:
    """The simulcast layer Janus should send every subscriber (its substream: 0 lowest) to match what
    Sluice's allocation gives the same scenario's receivers: the layer of their `[receive]` max-height, the
    lowest (180p) by default. None without simulcast. Janus has no lastN or stage: such a scenario is not
    the same load there, and is refused."""
    if scenario.media.video_ssrcs < 2:
        return None
    receive = scenario.receive
    if receive is not None and (receive.last_n is not None or receive.screen_share):
        raise Unsupported("the scenario's [receive] lastN or screen share has no Janus equivalent")
    height = receive.max_height if receive is not None and receive.max_height is not None else 180
    # The load generator's layers are 180p, 360p and 720p (native/loadgen vp8.rs), lowest first.
    return 0 if height < 360 else 1 if height < 720 else min(2, scenario.media.video_ssrcs - 1)


async def allocate_janus(
    api: JanusApi,
    lg: LoadGen,
    scenario: Scenario,
    create: Any,
    sources: Any,
) -> None:
    """The scenario's conferences as VideoRoom rooms: every sender publishes, then every participant with
    someone to receive subscribes to the others (after the publishers connected: Janus offers a subscriber
    only streams it already has). `create(count, group, **role)` makes endpoints (in the load generator's
    namespace), `sources(index, position)` says what endpoint `index` sends."""
    substream = simulcast_substream(scenario)
    control = await api.attach()
    per = scenario.endpoints_per_conference
    # Per conference: its room, and per participant (publisher endpoint index, feed id).
    rooms: list[tuple[int, list[tuple[int | None, int | None]]]] = []
    for conf in range(scenario.conferences):
        created = await api.request(
            control,
            {"request": "create", "publishers": max(scenario.senders, 1), "bitrate": 0, "fir_freq": 0,
             "audiocodec": "opus", "videocodec": "vp8", "notify_joining": False},
        )  # fmt: skip
        room = created["room"]
        members: list[tuple[int | None, int | None]] = []
        for position in range(per):
            if position >= scenario.senders:
                members.append((None, None))
                continue
            ep: LoadGenEndpoint = create(1, conf, ice_controlling=True, receives=False)[0]
            audio, video = sources(ep["index"], position)
            if audio is None and not video:
                members.append((None, None))
                continue
            lg.set_sources(ep["index"], audio, video)
            handle = await api.attach()
            joined, _ = await api.message(
                handle, {"request": "join", "ptype": "publisher", "room": room, "display": f"lg{ep['index']}"}
            )
            offer = sdp.publisher_offer(ep, audio, video)
            _, answer = await api.message(
                handle, {"request": "publish", "audio": audio is not None, "video": bool(video)},
                {"type": "offer", "sdp": offer},
            )  # fmt: skip
            if answer is None:
                raise JanusError("publish: no SDP answer")
            _remote(lg, ep["index"], sdp.parse(answer["sdp"]))
            members.append((ep["index"], int(joined["id"])))
        rooms.append((int(room), members))
    if not await asyncio.to_thread(lg.wait_connected, 30.0):
        raise JanusError(f"publishers: {lg.failed()} failed, {lg.connected()}/{lg.endpoints()} connected")
    for conf, (room_id, members) in enumerate(rooms):
        for own_index, own_feed in members:
            feeds = [feed for _, feed in members if feed is not None and feed != own_feed]
            if not feeds:
                continue
            handle = await api.attach()
            _, jsep = await api.message(
                handle,
                {"request": "join", "ptype": "subscriber", "room": room_id,
                 "streams": [{"feed": feed} for feed in feeds]},
            )  # fmt: skip
            if jsep is None:
                raise JanusError("subscribe: no SDP offer")
            remote = sdp.parse(jsep["sdp"])
            # Janus numbers the payload types of what it offers itself (VP8 is 96 there).
            ep = create(1, conf, ice_controlling=False, receives=True, peer=own_index,
                        rtx_pt=sdp.rtx_payload_type(remote))[0]  # fmt: skip
            local = sdp.subscriber_answer(remote, ep)
            await api.message(handle, {"request": "start"}, {"type": "answer", "sdp": local})
            if substream is not None:
                # Before any media flows: the layer Sluice's receivers get under the same scenario.
                videos = [{"mid": m.mid, "substream": substream} for m in remote.media if m.kind == "video"]
                await api.message(handle, {"request": "configure", "streams": videos})
            _remote(lg, ep["index"], remote)
