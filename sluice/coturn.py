"""A managed coturn (`[signaling.turn] managed = true`): `sluice serve` writes its configuration, starts the
real `turnserver` (Debian package coturn) and stops it by PID.

The configuration closes what makes a TURN server dangerous (docs/security.md): an open relay reaches
whatever the TURN host can, so by default this one relays only to the bridge's media addresses. Every
other IPv4 and IPv6 peer is denied (`denied-peer-ip` over everything, `allowed-peer-ip` for the bridge and
the operator's `allowed-peers`); loopback peers only when the bridge itself is on loopback; no TCP relay
(RFC 6062), no multicast, no CLI, no RFC 5780 NAT discovery (an amplification vector), no software
version. Credentials are checked by coturn itself against the shared secret (`use-auth-secret`).
Allocations are bounded in total (`max-allocations`) and per credential (`USER_QUOTA`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path

from signaling.turn import ManagedTurn, TurnConfig, TurnConfigError, peer_range

log = logging.getLogger("sluice.coturn")

TURNSERVER = "turnserver"
#: Allocations one credential may hold at once: a browser makes one per local interface and TURN URL
#: (UDP and TCP, and TLS when offered); a few more cover an ICE restart overlapping the old ones.
USER_QUOTA = 12
_ALL_PEERS = ("0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


class CoturnError(RuntimeError):
    """coturn could not be started (missing, bad configuration, did not listen in time)."""


def bridge_peers(addresses: Iterable[str]) -> tuple[str, ...]:
    """The bridge's media addresses coturn may relay to (and clients are told by default): every specific
    address, loopback only when there is no other. A relay to 127.0.0.1 would reach every UDP service of the
    host on that address (coturn cannot restrict ports), and no remote client needs it when the bridge has
    another address."""
    out: list[str] = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue  # a name: the advertised addresses are what browsers get; coturn needs addresses
        if not ip.is_unspecified and str(ip) not in out:
            out.append(str(ip))
    routable = [a for a in out if not ipaddress.ip_address(a).is_loopback]
    return tuple(routable or out)


def coturn_config(
    turn: TurnConfig, managed: ManagedTurn, *, realm: str, peers: Iterable[str], directory: Path
) -> str:
    """turnserver.conf for `turn` (ports, secret) and `managed` (addresses, relay ports, quotas), relaying
    only to `peers` (the bridge's media addresses) and `managed.allowed_peers`."""
    if not managed.listen:
        raise TurnConfigError(
            "a managed coturn needs an address to listen on (listen, or hosts as addresses)"
        )
    allowed = [(p, p) for p in peers] + [peer_range(p) for p in managed.allowed_peers]
    if not allowed:
        raise TurnConfigError("a managed coturn needs the bridge's media address to relay to")
    loopback = any(ipaddress.ip_address(first).is_loopback for first, _ in allowed)
    lines = [f"listening-ip={a}" for a in managed.listen]
    lines += [f"relay-ip={a}" for a in managed.listen]
    lines += [
        f"listening-port={turn.port}",
        f"min-port={managed.min_port}",
        f"max-port={managed.max_port}",
        f"realm={realm}",
        "use-auth-secret",
        f"static-auth-secret={turn.secret}",
        "fingerprint",
        f"total-quota={managed.max_allocations}",
        f"user-quota={USER_QUOTA}",
        "no-cli",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
        "no-software-attribute",
        "no-dtls",
    ]
    if turn.turns and managed.tls_cert is not None and managed.tls_key is not None:
        lines += [
            f"tls-listening-port={turn.tls_port}",
            f"cert={managed.tls_cert}",
            f"pkey={managed.tls_key}",
        ]
    else:
        lines.append("no-tls")
    lines += [f"denied-peer-ip={r}" for r in _ALL_PEERS]
    lines += [
        f"allowed-peer-ip={first}" if first == last else f"allowed-peer-ip={first}-{last}"
        for first, last in allowed
    ]
    if loopback:
        lines.append(
            "allow-loopback-peers"
        )  # the bridge is on loopback (one machine); the rules above still apply
    lines += [
        f"pidfile={directory / 'turnserver.pid'}",
        f"userdb={directory / 'turndb'}",
        f"log-file={directory / 'turnserver.log'}",
        "simple-log",
    ]
    return "\n".join(lines) + "\n"


class Coturn:
    """One turnserver process with a generated configuration in a private directory."""

    def __init__(
        self,
        turn: TurnConfig,
        managed: ManagedTurn,
        *,
        realm: str,
        peers: Iterable[str],
        directory: Path | None = None,
        command: str = TURNSERVER,
    ) -> None:
        self.turn = turn
        self.managed = managed
        self.realm = realm
        self.peers = tuple(peers)
        self._own_directory = directory is None
        self.directory = directory
        self.command = command
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_file(self) -> Path | None:
        return self.directory / "turnserver.log" if self.directory is not None else None

    async def start(self, timeout: float = 10.0) -> None:
        """Starts turnserver and returns once it accepts TCP on its port at every listening address."""
        binary = shutil.which(self.command)
        if binary is None:
            raise CoturnError(f"{self.command} not found: install the Debian package coturn")
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="sluice-coturn-"))  # 0700: the secret is inside
        config = self.directory / "turnserver.conf"
        text = coturn_config(
            self.turn, self.managed, realm=self.realm, peers=self.peers, directory=self.directory
        )
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(config), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                for address in self.managed.listen:
                    await self._wait_listening(address)
        except BaseException as exc:
            tail = self.log_tail()
            await self.stop()
            if isinstance(exc, TimeoutError | CoturnError):
                raise CoturnError(f"coturn did not start: {tail}") from None
            raise
        log.info("%s", self.describe())

    def describe(self) -> str:
        """Where it runs, for the log: PID, addresses, ports, the only peers it relays to, its log file."""
        return (
            f"managed coturn PID {self.pid} on {', '.join(self.managed.listen)} port {self.turn.port}, relay "
            f"ports {self.managed.min_port}-{self.managed.max_port}, relaying only to "
            f"{', '.join((*self.peers, *self.managed.allowed_peers))}; log {self.log_file}"
        )

    async def _wait_listening(self, address: str) -> None:
        while True:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise CoturnError(f"turnserver exited with {self.proc.returncode}")
            try:
                _, writer = await asyncio.open_connection(address, self.turn.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def log_tail(self, size: int = 2000) -> str:
        path = self.log_file
        if path is None or not path.exists():
            return "(no log)"
        return path.read_text(errors="replace")[-size:]

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to its PID, SIGKILL after `timeout`; removes the directory it made (secret and log)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
