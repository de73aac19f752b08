"""The shared c2s client (`xmppclient`) on real sockets: the login deadline, a refused login, stanzas both
ways with a real Prosody, and nothing sent once the connection is gone."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.helpers.call import wait_until
from tests.helpers.prosody import AUTH_DOMAIN, JVB_USER, Prosody
from xmppclient import Account, Reconnect, ReconnectingClient


@dataclass
class Events:
    """What a client told its owner, with the loop time of each loss."""

    sessions: int = 0
    lost: list[float] = field(default_factory=list)
    stanzas: list[ET.Element] = field(default_factory=list)

    def client(self, account: Account, reconnect: Reconnect) -> ReconnectingClient:
        loop = asyncio.get_running_loop()

        def on_session() -> None:
            self.sessions += 1

        return ReconnectingClient(
            account,
            reconnect,
            label="test",
            on_session=on_session,
            on_stanza=self.stanzas.append,
            on_lost=lambda: self.lost.append(loop.time()),
        )


@dataclass
class SilentServer:
    """Accepts TCP connections and never says a word; records how long each one stayed open."""

    port: int = 0
    held: list[float] = field(default_factory=list)

    def account(self) -> Account:
        return Account(f"{JVB_USER}@{AUTH_DOMAIN}", "pw", "127.0.0.1", self.port, use_tls=False)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        await reader.read()  # whatever the client writes, until it hangs up
        self.held.append(loop.time() - opened)
        writer.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    silent = SilentServer()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        yield silent
    finally:
        server.close()


async def test_a_login_that_takes_too_long_is_given_up_and_tried_again(silent_server: SilentServer) -> None:
    events = Events()
    client = events.client(silent_server.account(), Reconnect(min=0.05, max=0.1, login_timeout=0.3))
    client.start()
    try:
        await wait_until(lambda: len(events.lost) >= 3, within=5, interval=0.05)
    finally:
        await client.stop()
    await wait_until(lambda: len(silent_server.held) >= 3, within=2, interval=0.05)
    assert events.sessions == 0 and client.connects == 0 and not client.ready
    assert all(held >= 0.25 for held in silent_server.held[:3]), silent_server.held
    gaps = [b - a for a, b in zip(events.lost, events.lost[1:], strict=False)]
    assert all(gap >= 0.3 for gap in gaps), f"each attempt waits for the deadline and a backoff: {gaps}"
    attempts = len(silent_server.held)
    await asyncio.sleep(0.4)
    assert len(silent_server.held) == attempts, "no attempt after stop()"


async def test_without_a_login_deadline_the_attempt_waits_for_the_server(silent_server: SilentServer) -> None:
    events = Events()
    client = events.client(silent_server.account(), Reconnect(min=0.05, max=0.1, login_timeout=None))
    client.start()
    try:
        await asyncio.sleep(0.6)
        assert events.lost == [] and not client.ready
    finally:
        await client.stop()


async def test_a_refused_login_is_retried_with_backoff(prosody: Prosody) -> None:
    events = Events()
    account = Account(f"{JVB_USER}@{AUTH_DOMAIN}", "wrong", "127.0.0.1", prosody.c2s_port, use_tls=False)
    client = events.client(account, Reconnect(min=0.05, max=0.2, login_timeout=5.0))
    client.start()
    try:
        await wait_until(lambda: len(events.lost) >= 2, within=10, interval=0.05)
    finally:
        await client.stop()
    assert events.sessions == 0 and client.connects == 0


async def test_stanzas_go_both_ways_and_nothing_is_sent_after_stop(prosody: Prosody) -> None:
    events = Events()
    account = Account(
        f"{JVB_USER}@{AUTH_DOMAIN}/r1", prosody.jvb_password, "127.0.0.1", prosody.c2s_port, use_tls=False
    )
    client = events.client(account, Reconnect(min=0.05, max=0.2, login_timeout=5.0))
    client.start()
    try:
        await client.wait_session(10)
        assert client.ready and client.connects == 1 and events.sessions == 1
        ping = "<ping xmlns='urn:xmpp:ping'/>"
        client.send_raw(f"<iq xmlns='jabber:client' type='get' id='ping-1' to='{AUTH_DOMAIN}'>{ping}</iq>")
        await wait_until(
            lambda: any(el.get("id") == "ping-1" for el in events.stanzas), within=5, interval=0.05
        )
        reply = next(el for el in events.stanzas if el.get("id") == "ping-1")
        assert reply.tag == "{jabber:client}iq" and reply.get("type") == "result"
    finally:
        await client.stop()
    assert not client.ready
    client.send_raw("<presence xmlns='jabber:client'/>")  # dropped: the stream is closed
    assert events.lost == [], "stop() is not a lost connection"
