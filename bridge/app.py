"""The bridge process: the native Bridge, one Colibri2 handler, and one XMPP client per configured server.

`BridgeApp` only wires the parts together; each part keeps its own rules (bridge/colibri2 for Colibri2,
bridge/xmpp.py for the brewery). Colibri2 arrives as XML over XMPP and leaves as XML.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from bridge.bridge import Bridge
from bridge.colibri2.handler import Colibri2Handler
from bridge.colibri2.model import Colibri2Error
from bridge.colibri2.xml import build_conference_modified, build_error, parse_conference_modify
from bridge.settings import Settings
from bridge.xmpp import BridgeState, BridgeXmppClient

log = logging.getLogger(__name__)


class BridgeApp:
    """`await start()` binds the media port and starts logging in; `await stop()` undoes all of it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bridge = Bridge(settings.bridge_config())
        self.colibri2 = Colibri2Handler(self.bridge)
        #: Shared by every XMPP client, so drain/shutdown shows in every brewery at once.
        self.state = BridgeState()
        self.xmpp: list[BridgeXmppClient] = []
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.bridge.start()
        try:
            for config in self.settings.xmpp_client_configs():
                client = BridgeXmppClient(self.bridge, config, self.handle_colibri2, state=self.state)
                self.xmpp.append(client)
                await client.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Leaves the breweries first, so Jicofo stops sending work before the media port closes."""
        if not self._started:
            return
        self._started = False
        for client in self.xmpp:
            try:
                await client.stop()
            except Exception:
                log.exception("xmpp: stopping the client for %s failed", client.config.hostname)
        self.xmpp.clear()
        await self.bridge.stop()

    async def __aenter__(self) -> BridgeApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_joined(self, timeout: float = 10.0) -> None:
        """Until every XMPP client sits in all its brewery rooms."""
        for client in self.xmpp:
            await client.wait_joined(timeout)

    async def handle_colibri2(self, request: ET.Element) -> ET.Element:
        """`<conference-modify>` -> `<conference-modified>`, or the stanza `<error>` of section 2.5."""
        try:
            response = self.colibri2.handle(parse_conference_modify(request))
        except Colibri2Error as exc:
            log.info("colibri2: %s refused: %s (%s)", request.get("meeting-id"), exc.condition, exc.text)
            return build_error(exc)
        return build_conference_modified(response)
