"""A bridge behind a 1:1 NAT finds its public address by STUN and a browser outside reaches it there (issue
14's address discovery), on the real `sluice serve`, a real coturn as the STUN server and Chromium, in
network namespaces this test creates.

```
 priv (10.77.0.1)                   rtr                                        pub (10.77.1.2)
 sluice serve (web, XMPP, bridge)   ── v0 ── 1:1 NAT: 10.77.1.100 <-> 10.77.0.1 ── v1 ── coturn --stun-only
 Chromium "Inside"                        DROP from pub to 10.77.0.1 unless DNATed     Chromium "Outside"
```

The bridge binds and advertises its private address; `ice4j.harvest.mapping.stun.addresses` names coturn,
which sees its requests come from the NAT's public address, so the bridge advertises that too. Outside,
whose traffic to the private address the router drops and which takes nothing unsolicited (as behind its own
NAT), connects through the public one as the bridge signalled it; both decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_web_turn import decodes, join
from tests.helpers.chromium import ChromiumBrowser
from tests.helpers.netns import Netlab, Netns
from tests.helpers.prosody import free_tcp_port
from tests.helpers.serve import running_serve
from tests.helpers.webpage import WINDOW, await_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOM = "behind-one-to-one-nat"


@contextlib.contextmanager
def stun_server(ns: Netns, address: str, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real coturn answering STUN only, on `address`:3478 in `ns`; stopped by PID."""
    log = tmp / "stun.log"
    proc = subprocess.Popen(
        ns.exec_args(
            "turnserver", "-n", "--stun-only", "--listening-ip", address, "--listening-port", "3478",
            "--no-cli", "--no-tls", "--no-dtls", "--simple-log", "--log-file", str(log),
            "--pidfile", str(tmp / "stun.pid"), "--userdb", str(tmp / "stun.db"),
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        # It logs this once its servers run; the bridge's requests are resent for 3.5 s anyway.
        while "Total General servers" not in (log.read_text(errors="replace") if log.exists() else ""):
            assert proc.poll() is None, "coturn exited"
            assert time.monotonic() < deadline, "coturn did not open its listener"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_a_bridge_behind_a_one_to_one_nat_is_reached_at_the_address_stun_maps(
    netlab: Netlab, tmp_path: Path
) -> None:
    priv, rtr, pub = netlab.namespace("priv"), netlab.namespace("rtr"), netlab.namespace("pub")
    inside = netlab.link(priv, rtr)
    outside = netlab.link(rtr, pub)
    netlab.default_route(priv, inside)
    netlab.default_route(pub, outside)  # so Outside can try the private address, and the router drops it
    public = outside.a_addr.rsplit(".", 1)[0] + ".100"
    rtr.ip("addr", "add", f"{public}/24", "dev", outside.ifname)
    rtr.run(
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        public,
        "-j",
        "DNAT",
        "--to-destination",
        inside.a_addr,
    )
    rtr.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", inside.a_addr, "-o", outside.ifname,
            "-j", "SNAT", "--to-source", public)  # fmt: skip
    rtr.run(
        "iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"
    )
    rtr.run("iptables", "-A", "FORWARD", "-i", outside.ifname, "-d", inside.a_addr,
            "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP")  # fmt: skip
    # Outside takes nothing unsolicited but STUN (as behind its own NAT): the bridge cannot reach it first
    # and be learned as a peer-reflexive candidate; only an address the bridge advertises can work.
    pub.run("iptables", "-A", "INPUT", "-p", "udp", "-m", "conntrack", "--ctstate", "NEW",
            "!", "--dport", "3478", "-j", "DROP")  # fmt: skip
    http_port = free_tcp_port()
    settings = (
        f'[ice4j.harvest.mapping.stun]\naddresses = ["{outside.b_addr}:3478"]\n'
        # The bridge channel's URL names the address browsers reach the web port at.
        f'[videobridge.websockets]\ndomains = ["{public}:{http_port}"]\n'
    )
    with stun_server(pub, outside.b_addr, tmp_path):
        async with running_serve(
            tmp_path, settings, netns=priv, host=inside.a_addr, http_port=http_port
        ) as serve:
            assert any(f"STUN mapping: {inside.a_addr} is {public}" in line for line in serve.output), (
                serve.output
            )
            media_port = serve.media[1]
            browsers: list[ChromiumBrowser] = []
            try:
                url = f"http://{public}:{http_port}"
                for name, ns, base in (("inside", priv, serve.url), ("outside", pub, url)):
                    browser = await asyncio.to_thread(
                        ChromiumBrowser.start, tmp_path / f"{name}-profile", f"{base}/{ROOM}",
                        netns=ns, secure_origins=(base,),
                    )  # fmt: skip
                    browser.driver.set_window_size(*WINDOW)
                    browsers.append(browser)
                inside_page, outside_page = browsers
                inside_nick = await join(inside_page, "Inside")
                outside_nick = await join(outside_page, "Outside")
                await await_for(outside_page, "Outside decodes Inside", decodes(inside_nick), "getStats", 45)
                await await_for(inside_page, "Inside decodes Outside", decodes(outside_nick), "getStats", 30)
                pair = await outside_page.acall("transportStats")
                assert (pair["remote"], pair["remoteType"]) == (f"{public}:{media_port}", "host"), pair
                # Outside tried the private address too; the router dropped it.
                out = rtr.run("iptables", "-L", "FORWARD", "-v", "-n", "-x").stdout
                dropped = next(int(line.split()[0]) for line in out.splitlines() if "DROP" in line)
                assert dropped > 0, out
            finally:
                for i, browser in enumerate(browsers):
                    with contextlib.suppress(Exception):
                        browser.save_console_log(tmp_path / f"browser{i}-console.log")
                    await asyncio.to_thread(browser.stop)
