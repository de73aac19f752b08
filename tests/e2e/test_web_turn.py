"""A Chromium participant behind a NAT whose UDP to the bridge is blocked joins a call through TURN
(issue 14's first Show, its TURN half), on the real `sluice serve` with the coturn it manages.

```
 srv namespace (10.77.0.1)                rtr namespace                     nat namespace (10.77.1.2)
 sluice serve: web, XMPP, bridge      ── v0 ── MASQUERADE out of v0 ── v1 ──  Chromium "Nat" + chromedriver
 managed coturn on 10.77.0.1:3478          DROP udp to the bridge's port      default route via 10.77.1.1
 Chromium "Direct"
```

The NAT participant reaches the web page, XMPP over WebSocket and coturn through the router, but every UDP
datagram it sends to the bridge's media port is dropped there (the rule's counter shows it tried). It gets
STUN and TURN from the server (XEP-0215), so its selected candidate pair must be a relay through coturn to
the bridge; both participants decode each other. A second test forces relay (`?forceRelay=1`) on a
participant that could reach the bridge directly. A third gives the bridge ICE-TCP and the server no TURN:
the NAT participant then connects over TCP to the bridge's passive candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.netns import Link, Netlab, Netns
from tests.helpers.prosody import free_tcp_port
from tests.helpers.serve import ServeProcess, running_serve
from tests.helpers.webpage import WINDOW, WebServer, await_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

_PURE = """
const done = arguments[arguments.length - 1];
import('/js/ice-servers.js').then((m) => {
  const doc = new DOMParser().parseFromString(arguments[1], 'text/xml');
  done({
    servers: m.iceServersFromServices(arguments[0]),
    parsed: m.servicesFromXml(doc.documentElement),
    relay: ['', '?forceRelay=1', '?forceRelay=yes', '?forceRelay=0', '?red=1'].map(m.forceRelayOption),
  });
}, (e) => done(String(e)));
"""

ROOM = "behind-nat"
TURN = "[signaling.turn]\nmanaged = true\nmin-port = 49160\nmax-port = 49200\n"


@dataclass
class NatLab:
    tmp: Path
    srv: Netns
    rtr: Netns
    nat: Netns
    uplink: Link  # srv (a) - rtr (b)
    serve: ServeProcess

    def open(self, name: str, ns: Netns, query: str = "") -> ChromiumBrowser:
        browser = ChromiumBrowser.start(
            self.tmp / f"{name}-profile", f"{self.serve.url}/{ROOM}{query}", netns=ns,
            secure_origins=(self.serve.url,),
        )  # fmt: skip
        browser.driver.set_window_size(*WINDOW)
        return browser

    def dropped(self) -> int:
        """Packets the router's DROP rule for the bridge's media port has dropped."""
        out = self.rtr.run("iptables", "-L", "FORWARD", "-v", "-n", "-x").stdout
        rule = next(
            line for line in out.splitlines() if "DROP" in line and f"dpt:{self.serve.media[1]}" in line
        )
        return int(rule.split()[0])

    def block_media(self) -> None:
        """From now on the router drops every UDP datagram to the bridge's media port."""
        self.rtr.run(
            "iptables", "-A", "FORWARD", "-p", "udp", "-d", self.uplink.a_addr,
            "--dport", str(self.serve.media[1]), "-j", "DROP",
        )  # fmt: skip


@contextlib.asynccontextmanager
async def nat_lab(
    netlab: Netlab, tmp: Path, settings: str = TURN, *, block_media: bool = True
) -> AsyncIterator[NatLab]:
    srv, rtr, nat = netlab.namespace("srv"), netlab.namespace("rtr"), netlab.namespace("nat")
    uplink = netlab.link(srv, rtr)
    lan = netlab.link(rtr, nat)
    netlab.default_route(nat, lan)  # rtr forwards
    # One shard: the router's rules name the one media port (and ICE-TCP port) the bridge has then.
    settings = "[videobridge.shard]\ncount = 1\n" + settings
    async with running_serve(tmp, settings, netns=srv, host=uplink.a_addr) as serve:
        rtr.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", uplink.ifname, "-j", "MASQUERADE")
        lab = NatLab(tmp, srv, rtr, nat, uplink, serve)
        if block_media:
            lab.block_media()
        yield lab


def coturn_cpu_seconds(serve: ServeProcess) -> float:
    """User + system CPU time of the managed coturn (its PID from the line `sluice serve` prints), for the
    log: what relaying the call has cost it."""
    line = next(line for line in serve.output if "managed coturn PID" in line)
    pid = int(line.split("managed coturn PID ", 1)[1].split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def join(browser: ChromiumBrowser, name: str) -> str:
    await await_for(browser, "pre-join", lambda s: s["view"] == "prejoin")
    await asyncio.to_thread(browser.call, "join", name)
    state = await await_for(browser, f"{name} in the room", lambda s: s["joined"])
    nick = str(state["nick"])
    assert re.fullmatch(r"[0-9a-f]{8}", nick), state
    return nick


def decodes(nick: str) -> Callable[[dict[str, Any]], bool]:
    return lambda stats: int(stats.get(nick, {}).get("framesDecoded", 0)) > 10


async def frames(browser: ChromiumBrowser, nick: str) -> int:
    stats: dict[str, Any] = await browser.acall("getStats")
    return int(stats.get(nick, {}).get("framesDecoded", 0))


async def decode_each_other(
    direct: ChromiumBrowser, direct_nick: str, nat: ChromiumBrowser, nat_nick: str
) -> None:
    """Both pages decode each other, and keep doing so for 2 s."""
    await await_for(nat, "Nat decodes Direct", decodes(direct_nick), "getStats", 45)
    await await_for(direct, "Direct decodes Nat", decodes(nat_nick), "getStats", 30)
    before = (await frames(nat, direct_nick), await frames(direct, nat_nick))
    await asyncio.sleep(2)
    after = (await frames(nat, direct_nick), await frames(direct, nat_nick))
    assert after[0] > before[0] + 10 and after[1] > before[1] + 10, (before, after)


@contextlib.asynccontextmanager
async def direct_and_nat(lab: NatLab) -> AsyncIterator[tuple[ChromiumBrowser, str, ChromiumBrowser, str]]:
    """Direct (beside the server) and Nat (behind the router) in the room: (direct, its nick, nat, its nick);
    both pages stopped (their console logs kept) at the end."""
    browsers: list[ChromiumBrowser] = []
    try:
        direct = await asyncio.to_thread(lab.open, "direct", lab.srv)
        browsers.append(direct)
        nat = await asyncio.to_thread(lab.open, "nat", lab.nat)
        browsers.append(nat)
        yield direct, await join(direct, "Direct"), nat, await join(nat, "Nat")
    finally:
        for i, browser in enumerate(browsers):
            with contextlib.suppress(Exception):
                browser.save_console_log(lab.tmp / f"browser{i}-console.log")
            await asyncio.to_thread(browser.stop)


async def test_a_participant_behind_a_nat_without_udp_to_the_bridge_relays_through_coturn(
    netlab: Netlab, tmp_path: Path
) -> None:
    async with nat_lab(netlab, tmp_path) as lab, direct_and_nat(lab) as (direct, direct_nick, nat, nat_nick):
        # It was told STUN and TURN (XEP-0215) with credentials, and uses every candidate kind.
        ice = await nat.acall("iceConfig")
        assert ice["iceTransportPolicy"] == "all", ice
        urls = [u for server in ice["iceServers"] for u in server["urls"]]
        assert f"stun:{lab.uplink.a_addr}:3478" in urls, ice
        assert f"turn:{lab.uplink.a_addr}:3478?transport=udp" in urls, ice
        assert all(s.get("username") for s in ice["iceServers"] if s["urls"][0].startswith("turn")), ice
        await decode_each_other(direct, direct_nick, nat, nat_nick)
        # Its media goes through coturn: a relayed local candidate, the bridge remote. The relay is
        # reached over UDP or TCP (both are offered; the bridge nominates the best pair valid within
        # 500 ms of the first, which on a loaded machine may be the TCP one).
        pair = await nat.acall("transportStats")
        print("selected pair behind the NAT:", pair)
        assert pair["localType"] == "relay" and pair["relayProtocol"] in ("udp", "tcp"), pair
        assert pair["local"].startswith(f"{lab.uplink.a_addr}:"), pair
        assert pair["remote"] == f"{lab.uplink.a_addr}:{lab.serve.media[1]}", pair
        # It did try the bridge directly, and the router dropped that.
        assert lab.dropped() > 0
        # The direct participant's media goes to the same bridge address.
        other = await direct.acall("transportStats")
        assert other["remote"] == pair["remote"], other
        print("coturn CPU seconds so far:", coturn_cpu_seconds(lab.serve))


async def test_force_relay_makes_a_participant_that_could_go_direct_use_turn(
    netlab: Netlab, tmp_path: Path
) -> None:
    # Alone in the room: the focus starts a session for one participant only when told to.
    async with nat_lab(netlab, tmp_path, TURN + "[signaling.focus]\nmin-participants = 1\n") as lab:
        browser = await asyncio.to_thread(lab.open, "forced", lab.srv, "?forceRelay=1")
        try:
            await join(browser, "Forced")
            ice = await browser.acall("iceConfig")
            assert ice["iceTransportPolicy"] == "relay", ice
            await await_for(
                browser, "ICE connected", lambda s: s["ice"] in ("connected", "completed"), within=30
            )
            pair = await browser.acall("transportStats")
            assert pair["localType"] == "relay", pair
            assert pair["remote"] == f"{lab.uplink.a_addr}:{lab.serve.media[1]}", pair
        finally:
            with contextlib.suppress(Exception):
                browser.save_console_log(tmp_path / "forced-console.log")
            await asyncio.to_thread(browser.stop)


async def test_without_udp_to_the_bridge_and_without_turn_a_participant_connects_over_ice_tcp(
    netlab: Netlab, tmp_path: Path
) -> None:
    """Issue 14's first Show, its ICE-TCP half: the same NAT and the same blocked UDP, no TURN at all; the
    bridge offers a passive TCP candidate (RFC 6544) and the participant's media goes over that connection
    (RFC 4571 framing) through the router's MASQUERADE."""
    tcp_port = free_tcp_port()
    settings = f"[videobridge.ice.tcp]\nenabled = true\nport = {tcp_port}\n"
    async with (
        nat_lab(netlab, tmp_path, settings) as lab,
        direct_and_nat(lab) as (direct, direct_nick, nat, nat_nick),
    ):
        ice = await nat.acall("iceConfig")
        assert not [s for s in ice["iceServers"] if s["urls"][0].startswith("turn")], ice
        await decode_each_other(direct, direct_nick, nat, nat_nick)
        # Its selected pair is TCP to the bridge's listener, from the router's address (the NAT).
        pair = await nat.acall("transportStats")
        print("selected pair behind the NAT:", pair)
        assert pair["localProtocol"] == "tcp" and pair["localType"] != "relay", pair
        assert pair["remote"] == f"{lab.uplink.a_addr}:{tcp_port}", pair
        assert lab.dropped() > 0, "it did try UDP first"
        # The direct participant, whose UDP works, stays on UDP (its candidates are preferred).
        other = await direct.acall("transportStats")
        assert other["localProtocol"] == "udp", other
        assert other["remote"] == f"{lab.uplink.a_addr}:{lab.serve.media[1]}", other
        metrics = await lab.serve.metrics()
        print({k: v for k, v in metrics.items() if "ice_tcp" in k})
        assert metrics['sluice_ice_tcp_connections_total{event="accepted"}'] >= 1, metrics
        assert metrics["sluice_ice_tcp_connections_open"] >= 1, metrics
        assert metrics['sluice_ice_tcp_frames_total{event="in"}'] > 100, metrics
        assert metrics['sluice_ice_tcp_frames_total{event="out"}'] > 100, metrics


def test_ice_servers_module_takes_usable_services_and_ignores_the_rest(tmp_path: Path) -> None:
    """ice-servers.js alone: XEP-0215 services become iceServers (credentials shared by one entry, IPv6 in
    brackets, the earliest expiry), malformed ones are ignored and counted; ?forceRelay= read."""
    creds = {"username": "1767225600:alice", "password": "pw", "expires": "2026-01-01T00:00:00Z"}
    services = [
        {"type": "stun", "host": "turn.example", "port": "3478", "transport": "udp"},
        {"type": "turn", "host": "turn.example", "port": "3478", "transport": "udp", **creds},
        {"type": "turn", "host": "turn.example", "port": "3478", "transport": "tcp", **creds},
        {"type": "turns", "host": "2001:db8::1", "port": "5349", "transport": "tcp", **creds},
        {"type": "turn", "host": "turn.example", "port": "3478", "transport": "udp"},  # no credentials
        {"type": "turn", "host": "bad host", "port": "3478", "transport": "udp", **creds},
        {"type": "turn", "host": "turn.example", "port": "0", "transport": "udp", **creds},
        {"type": "turns", "host": "turn.example", "port": "5349", "transport": "udp", **creds},
        {"type": "ftp", "host": "turn.example", "port": "21", "transport": "tcp"},
    ]
    xml = (
        "<services xmlns='urn:xmpp:extdisco:2'><service type='stun' host='h' port='3478' transport='udp'/>"
        "<other/><service type='turn' host='h' port='3478' transport='tcp' username='u' password='p'"
        " restricted='1'/></services>"
    )
    with WebServer() as server:
        browser = ChromiumBrowser.start(tmp_path / "profile", server.url + "/")
        try:
            got = browser.driver.execute_async_script(_PURE, services, xml)
        finally:
            browser.stop()
    assert isinstance(got, dict), got
    assert got["servers"] == {
        "iceServers": [
            {"urls": ["stun:turn.example:3478"]},
            {
                "urls": [
                    "turn:turn.example:3478?transport=udp",
                    "turn:turn.example:3478?transport=tcp",
                    "turns:[2001:db8::1]:5349?transport=tcp",
                ],
                "username": "1767225600:alice",
                "credential": "pw",
            },
        ],
        "expires": 1767225600000,
        "ignored": 5,
    }
    assert [(p["type"], p["transport"], p["username"]) for p in got["parsed"]] == [
        ("stun", "udp", None),
        ("turn", "tcp", "u"),
    ]
    assert got["relay"] == [False, True, True, False, False]
