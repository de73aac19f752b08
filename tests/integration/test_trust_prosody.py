"""Attacks 1-3 of the trust-boundaries issue against real Prosody configured as docs/security.md says, with
`sluice focus` and `sluice bridge` processes and a call of two real participants (slixmpp + aiortc).

An anonymous visitor of Prosody (any web page visitor gets such a login) tries to join the brewery to read the
bridge's JID and to pose as a bridge, to open a brewery of its own, and to drive the bridge with Colibri2
(expire the conference, force-mute everyone) at the JID it would have read. Prosody refuses the first two
(members-only brewery, restricted creation); the bridge refuses the third itself (authorized source), counts
it, and the call keeps decoding media throughout.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.bridges import BridgeProcess, start_bridge, start_focus
from tests.helpers.jingle_peer import JinglePeer, keeps_decoding
from tests.helpers.prosody import BREWERY_DOMAIN, BREWERY_JID, DOMAIN, MucObserver, Prosody
from tests.helpers.xmppd import SlixClient, bridge_stats_presence, error_condition

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("loopback_ice")]

NS_COLIBRI2 = "jitsi:colibri2"
NS_HEALTHCHECK = "http://jitsi.org/protocol/healthcheck"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def colibri_stats(bridge: BridgeProcess) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{bridge.http_port}/colibri/stats") as resp,
    ):
        body: dict[str, object] = await resp.json()
    return body


async def test_attacks_1_to_3_against_prosody_as_documented(
    prosody: Prosody, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bridge = await start_bridge(prosody, tmp_path, "jvb-a", load_threshold=1_000_000)
    stack.push_async_callback(bridge.stop)
    await start_focus(prosody, tmp_path, stack)
    # What the operator sees: the bridge's account behind its brewery nickname (the focus account is an
    # admin of the brewery, so Prosody shows it real JIDs).
    operator = MucObserver(prosody, nickname="operator")
    await operator.start()
    stack.push_async_callback(operator.stop)
    pres = await operator.wait_presence("jvb-a", timeout=20)
    item = pres.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item")
    bridge_jid = item.get("jid") if item is not None else None
    assert bridge_jid is not None and bridge_jid.startswith("jvb@auth.meet.test/")

    peers = [JinglePeer(prosody, "trust") for _ in range(2)]
    for peer in peers:
        stack.push_async_callback(peer.leave)
        await peer.join()
    await keeps_decoding(peers, within=40.0)
    sessions = [p.sid for p in peers]
    (meeting_id,) = [m for m in (await bridge_conferences(bridge))]
    assert await bridge.endpoints(meeting_id) == {p.nick for p in peers}

    attacker = SlixClient(DOMAIN)
    await attacker.connect(prosody.c2s_port)
    stack.push_async_callback(attacker.disconnect)

    # 1 and 3: join the brewery (to read the bridge's JID) with bridge-shaped stats (to attract rooms).
    attacker.xmpp.send_raw(ET.tostring(bridge_stats_presence(f"{BREWERY_JID}/jvb-evil"), encoding="unicode"))
    refused = await attacker.wait_for(
        lambda p: p.get("from", "").lower() == f"{BREWERY_JID.lower()}/jvb-evil"
    )
    assert refused.get("type") == "error", ET.tostring(refused)
    assert error_condition(refused) in ("registration-required", "forbidden", "not-allowed")
    assert not [p for p in attacker.presences if p.get("type") != "error"], "the brewery leaked presence"
    # ... nor open a brewery of its own on the internal MUC.
    attacker.xmpp.send_raw(
        ET.tostring(bridge_stats_presence(f"evil@{BREWERY_DOMAIN}/jvb-evil"), encoding="unicode")
    )
    refused = await attacker.wait_for(
        lambda p: p.get("from", "").lower() == f"evil@{BREWERY_DOMAIN}/jvb-evil"
    )
    assert refused.get("type") == "error" and error_condition(refused) in ("not-allowed", "forbidden")
    assert "jvb-evil" not in operator.presences

    # 2: Colibri2 straight to the bridge's account (Prosody routes c2s to c2s): expire the conference,
    # force-mute everyone, and a health check. The bridge refuses every one: not an authorized source.
    before = await colibri_stats(bridge)
    expire = ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": meeting_id, "expire": "true"})
    mute = ET.Element(f"{{{NS_COLIBRI2}}}conference-modify", {"meeting-id": meeting_id})
    for peer in peers:
        ep = ET.SubElement(mute, f"{{{NS_COLIBRI2}}}endpoint", {"id": peer.nick})
        ET.SubElement(ep, f"{{{NS_COLIBRI2}}}force-mute", {"audio": "true", "video": "true"})
    for payload in (expire, mute, ET.Element(f"{{{NS_HEALTHCHECK}}}healthcheck")):
        reply = await attacker.iq(bridge_jid, payload, iq_type="set")
        assert reply.get("type") == "error" and error_condition(reply) == "forbidden", ET.tostring(reply)
    # Through its brewery nickname it cannot even reach the bridge (not an occupant).
    reply = await attacker.iq(f"{BREWERY_JID}/jvb-a", expire, iq_type="set")
    assert reply.get("type") == "error", ET.tostring(reply)
    after = await colibri_stats(bridge)
    assert after["total_xmpp_iqs_refused"] == before["total_xmpp_iqs_refused"] + 3  # type: ignore[operator]
    print(f"brewery join refused ({error_condition(refused)}); 3 Colibri2/health IQs to {bridge_jid} refused")

    # The call never noticed: same conference, same endpoints, same sessions, media still decoded.
    assert await bridge.endpoints(meeting_id) == {p.nick for p in peers}
    await keeps_decoding(peers)
    assert [p.sid for p in peers] == sessions
    assert not any(p.errors for p in peers)
    await asyncio.sleep(0)


async def bridge_conferences(bridge: BridgeProcess) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{bridge.http_port}/colibri/v2/conferences") as resp,
    ):
        body = await resp.json()
    return [c["meeting-id"] for c in body["conferences"]]
