"""Headless Debian Chromium driven by Selenium 4 and /usr/bin/chromedriver, and a bridge peer inside it.

The page (tests/e2e/static/peer.{html,js}) exposes `window.sluice`; every call goes through
execute_async_script and comes back as {ok: value} or {error: text}. Selenium is blocking, so async
tests use the `a*` methods, which run it in a thread and leave the event loop (bridge, aiortc) running.

Chromium and chromedriver are stopped by PID: `stop()` quits the session, then waits for every process
descended from chromedriver (recorded before quitting) to exit, and SIGKILLs any that remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from bridge import TransportDescription
from tests.helpers.netns import Netns, TcpForwarder
from tests.helpers.sdp import BridgeOffer, PeerAnswer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IP = shutil.which("ip") or "/usr/sbin/ip"

# Headless, no background requests, fake camera and microphone granted without a prompt, loopback ICE allowed;
# --user-data-dir is added per browser (fresh temp dir).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1100,560",
)

_CALL = """
const done = arguments[arguments.length - 1];
const [method, args] = [arguments[0], arguments[1]];
Promise.resolve()
  .then(() => window.sluice[method](...args))
  .then((ok) => done({ ok: ok === undefined ? null : ok }),
        (e) => done({ error: String((e && e.stack) || e) }));
"""


class PageError(RuntimeError):
    """A `window.sluice` method rejected."""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in _children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class NetnsService(Service):
    """chromedriver inside a network namespace (`ip netns exec` execs it, so the PID is chromedriver's),
    listening on that namespace's loopback; a `TcpForwarder` makes the same port on this process's loopback
    reach it, so Selenium (and Service's own readiness check) talk to it as to a local chromedriver and the
    control traffic never touches the namespace's other interfaces."""

    def __init__(self, netns: Netns, log_output: str) -> None:
        super().__init__(IP, log_output=log_output)
        self.netns = netns
        self.forwarder: TcpForwarder | None = None

    def command_line_args(self) -> list[str]:
        return ["netns", "exec", self.netns.name, CHROMEDRIVER, f"--port={self.port}"]

    def start(self) -> None:
        self.forwarder = TcpForwarder(self.netns, self.port, listen_port=self.port).start()
        try:
            super().start()
        except BaseException:
            self.forwarder.stop()
            raise

    def stop(self) -> None:
        super().stop()
        if self.forwarder is not None:
            self.forwarder.stop()


class ChromiumBrowser:
    def __init__(self, driver: webdriver.Chrome, service: Service, profile: Path) -> None:
        self.driver = driver
        self.service = service
        self.profile = profile
        process = service.process
        assert process is not None
        self.chromedriver_pid: int = process.pid
        self.pids: set[int] = {self.chromedriver_pid, *_descendants(self.chromedriver_pid)}
        self.stopped = False

    @classmethod
    def start(
        cls,
        profile: Path,
        url: str | None = None,
        *,
        netns: Netns | None = None,
        secure_origins: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
    ) -> ChromiumBrowser:
        """A fresh browser on `profile`, inside `netns` when given (tests/helpers/netns.py; chromedriver
        and Chromium run there, their media and page loads use its interfaces); `secure_origins` are
        plain-HTTP origins treated as secure (getUserMedia needs a secure context, which only loopback
        is without TLS); `flags` are added after the default ones (a later flag of the same name wins)."""
        profile.mkdir(parents=True, exist_ok=True)
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, *flags):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        if secure_origins:
            options.add_argument(f"--unsafely-treat-insecure-origin-as-secure={','.join(secure_origins)}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Several browsers of one test in namespaces: one log each.
        log = str(profile.parent / (f"{profile.name}-chromedriver.log" if netns else "chromedriver.log"))
        service: Service = (
            NetnsService(netns, log) if netns is not None else Service(CHROMEDRIVER, log_output=log)
        )
        driver = webdriver.Chrome(service=service, options=options)
        browser = cls(driver, service, profile)
        try:
            driver.set_script_timeout(60)
            if url is not None:
                driver.get(url)
                browser.wait_ready()
        except BaseException:
            browser.stop()
            raise
        return browser

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.driver.execute_script("return typeof window.sluice") != "object":
            if time.monotonic() > deadline:
                raise TimeoutError("peer page did not define window.sluice")
            time.sleep(0.05)

    def call(self, method: str, *args: Any) -> Any:
        """Calls `window.sluice[method](...args)` and returns its result (raises PageError)."""
        result = self.driver.execute_async_script(_CALL, method, list(args))
        if not isinstance(result, dict):
            raise PageError(f"{method}: unexpected result {result!r}")
        if "error" in result:
            raise PageError(f"{method}: {result['error']}")
        return result["ok"]

    async def acall(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self.call, method, *args)

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise RuntimeError(f"screenshot to {path} failed")
        return path

    async def ascreenshot(self, path: Path) -> Path:
        return await asyncio.to_thread(self.screenshot, path)

    def save_console_log(self, path: Path) -> None:
        entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        path.write_text("\n".join(json.dumps(e) for e in entries))

    def stop(self, timeout: float = 10.0) -> None:
        """Quits, then makes sure chromedriver and every Chromium process it started are gone."""
        if self.stopped:
            return
        self.stopped = True
        self.pids |= set(_descendants(self.chromedriver_pid))
        with contextlib.suppress(Exception):
            self.driver.quit()
        deadline = time.monotonic() + timeout
        while any(_alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        process = self.service.process
        if process is not None:
            with contextlib.suppress(Exception):
                process.wait(timeout=5)
        if isinstance(self.service, NetnsService) and self.service.forwarder is not None:
            self.service.forwarder.stop()  # quit() stops it, unless quit() failed

    def alive_pids(self) -> list[int]:
        return sorted(p for p in self.pids if _alive(p))


class ChromiumPeer:
    """A conference participant inside the page: fake camera and microphone, counters from getStats()."""

    def __init__(self, name: str, browser: ChromiumBrowser) -> None:
        self.name = name
        self.browser = browser
        self.mid_owner: dict[str, str] = {}
        self.offers: list[BridgeOffer] = []

    async def answer(self, offer: BridgeOffer) -> str:
        self.offers.append(offer)
        for section in offer.sections:
            if section.participant is not None:
                self.mid_owner.setdefault(section.mid, section.participant)
        sdp = await self.browser.acall("answer", offer.sdp)
        await self.browser.acall("label", self.mid_owner)
        return str(sdp)

    def describe_for_bridge(self, answer: PeerAnswer) -> TransportDescription:
        return answer.transport

    def _owner(self, stat: dict[str, Any]) -> str | None:
        mid = stat.get("mid")
        if mid is not None and mid in self.mid_owner:
            return self.mid_owner[mid]
        for offer in reversed(self.offers):
            owner = offer.participant_of_ssrc(int(stat["ssrc"]))
            if owner is not None:
                return owner
        return None

    async def inbound(self) -> list[dict[str, Any]]:
        return list(await self.browser.acall("inbound"))

    async def frames_decoded(self) -> dict[str, int]:
        """framesDecoded per participant, over the inbound video RTP streams attributed to it."""
        out: dict[str, int] = {}
        for stat in await self.inbound():
            owner = self._owner(stat)
            if stat["kind"] == "video" and owner is not None:
                out[owner] = out.get(owner, 0) + int(stat["framesDecoded"])
        return out

    async def frames_from(self, participant: str) -> int:
        return (await self.frames_decoded()).get(participant, 0)

    async def close(self) -> None:
        if not self.browser.stopped:
            await self.browser.acall("close")
