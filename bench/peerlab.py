"""Network namespaces for the other SFUs the bench runs beside Sluice (bench/janus.py, bench/livekit.py): the
peer in a namespace of its own and the load generator's sockets in a second, joined by a veth pair
(tests/helpers/netns.py makes and removes them; nothing of the host's own network is touched). Janus gathers
no ICE candidates on loopback, and both peers then see the same path: one veth, the same kernel cost per
packet on both sides. Each peer's HTTP or WebSocket API listens on its namespace's loopback and is reached
through a TCP forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiohttp

if TYPE_CHECKING:
    from tests.helpers.netns import Netns, TcpForwarder


class PeerLabError(RuntimeError):
    """The namespaces or their link could not be set up, or the peer did not start."""


class PeerProcess:
    """A peer's server started in its namespace (`cmd` as `Netns.exec_args` gives it), pinned to `cpu` when
    given, its output in `log_path`; stopped by PID (SIGINT, then SIGKILL after 10 s)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, cpu: int | None) -> None:
        self.name = name
        self.log_path = log_path
        if cpu is not None:
            # taskset and `ip netns exec` exec: the PID is the server's; its threads inherit the CPU.
            cmd = ["taskset", "-c", str(cpu), *cmd]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
        """Until `probe()` says the server answers; PeerLabError if it exits or does not answer in time."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PeerLabError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                if await probe():
                    return
            if time.monotonic() > deadline:
                raise PeerLabError(f"{self.name} did not answer in {timeout:.0f} s:\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True, slots=True)
class PeerLab:
    #: Where the load generator's endpoint sockets are made (`Netns.call`), and their address there.
    loadgen: Netns
    loadgen_ip: str
    #: Where the peer runs, its interface (the only one it should gather on) and address.
    peer: Netns
    peer_iface: str
    peer_ip: str

    def forward(self, port: int) -> TcpForwarder:
        """A local TCP port that reaches `port` on the peer namespace's loopback (started)."""
        from tests.helpers.netns import TcpForwarder  # noqa: PLC0415

        return TcpForwarder(self.peer, port).start()


async def _link_up(netns: Netns, iface: str, timeout: float = 5.0) -> None:
    """Until the veth's carrier is up: a peer that reads its addresses once, at start, skips a link that is
    not running yet (Janus then has no candidate at all)."""
    deadline = time.monotonic() + timeout
    while netns.run("cat", f"/sys/class/net/{iface}/operstate", check=False).stdout.strip() != "up":
        if time.monotonic() > deadline:
            raise PeerLabError(f"the veth {iface} did not come up in {timeout:.0f} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def peer_lab(workdir: Path, role: str) -> AsyncIterator[PeerLab]:
    """The two namespaces and their veth, removed on exit (with whatever still runs in them)."""
    from tests.helpers.netns import Netlab  # noqa: PLC0415

    try:
        lab = Netlab(workdir)
    except PermissionError as exc:
        raise PeerLabError(f"{exc}: run the bench as root to compare with other SFUs") from exc
    try:
        try:
            # Names unique within the process: several labs (a peer each) share its PID in theirs.
            loadgen, peer = lab.namespace(f"lg{role}"[:12]), lab.namespace(role)
            link = lab.link(loadgen, peer)
        except RuntimeError as exc:
            raise PeerLabError(str(exc)) from exc
        await _link_up(peer, link.ifname)
        yield PeerLab(loadgen, link.a_addr, peer, link.ifname, link.b_addr)
    finally:
        lab.close()


P = TypeVar("P", bound=PeerProcess)


@contextlib.asynccontextmanager
async def running_peer(
    role: str,
    start: Callable[[PeerLab, Path], P],
    port: int,
    ready: Callable[[P, str], Awaitable[None]],
) -> AsyncIterator[tuple[str, P, PeerLab]]:
    """A peer in a namespace of its own: `start(lab, folder)` makes its server (its configuration and log in
    `folder`, a temporary directory), and once `ready(server, url)` returns, yields the base URL of its API
    (`port` on its namespace's loopback, through a forwarder), the server and the lab. Everything is stopped
    and removed on exit."""
    with tempfile.TemporaryDirectory(prefix=f"sluice-bench-{role}-") as tmp:
        async with peer_lab(Path(tmp) / "lab", role) as lab:
            server = start(lab, Path(tmp))
            forwarder = None
            try:
                forwarder = lab.forward(port)
                await ready(server, forwarder.url)
                yield forwarder.url, server, lab
            finally:
                if forwarder is not None:
                    forwarder.stop()
                server.stop()
