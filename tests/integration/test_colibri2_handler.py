"""Colibri2Handler over the real Bridge and native core: the changes it plans reach the native transports.

Every rule of the handler itself (2.3 flow, 2.5 errors, limits, ids) is shown sans-IO in
tests/unit/test_colibri2_handler.py; this file shows what only the real core can: its port and certificate in
the answer, and force-mute, transports and routers as the core holds them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from colibri2 import xml as cxml
from colibri2.model import ConferenceModify, Endpoint, Transport

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f"


def recorded(name: str) -> ConferenceModify:
    return cxml.parse_conference_modify((DATA / name).read_bytes())


async def native_transports(bridge: Bridge) -> dict[int, dict[str, object]]:
    transports = (await bridge.get_stats())["transports"]
    assert isinstance(transports, dict)
    return transports


async def native_force_mute(bridge: Bridge, transport_id: int) -> tuple[object, object]:
    """(audio, video) force-mute as the native core holds it for one transport."""
    t = (await native_transports(bridge))[transport_id]
    return t["force_mute_audio"], t["force_mute_video"]


async def test_the_jicofo_flow_reaches_the_native_core(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Colibri2Handler(bridge)
    first = handler.handle(recorded("create-conference.request.xml"))
    conference = bridge.conference_by_meeting(MEETING)
    assert conference is not None

    # The answer names the shared port the core bound and the core's certificate.
    (ep_answer,) = first.endpoints
    assert ep_answer.transport is not None and ep_answer.transport.ice is not None
    ice = ep_answer.transport.ice
    assert {c.port for c in ice.candidates} == {bridge.local_addresses()[0][1]}
    (fp,) = ice.fingerprints
    assert (fp.hash, fp.setup, fp.value) == ("sha-256", "actpass", bridge.fingerprint.value)

    # The create's force-mute holds in the core before any source or connection.
    ep = conference.endpoints["abcd1234"]
    assert await native_force_mute(bridge, ep.transport_id) == (True, False)

    # A second endpoint; the client's transport and simulcast sources; a force-mute batch for both.
    handler.handle(
        ConferenceModify(
            MEETING,
            endpoints=(
                Endpoint(
                    "efgh5678",
                    create=True,
                    capabilities=("source-names",),
                    transport=Transport(ice_controlling=True),
                ),
            ),
        )
    )
    with caplog.at_level("WARNING", logger="bridge.bridge"):
        handler.handle(recorded("update-endpoint.request.xml"))
        handler.handle(recorded("force-mute.request.xml"))
        other = conference.endpoints["efgh5678"]
        assert await native_force_mute(bridge, other.transport_id) == (False, True)
        assert await native_force_mute(bridge, ep.transport_id) == (True, True)
    assert "refused" not in caplog.text, "the core took every typed Command"

    # Expiring one endpoint closes its transport; expiring the conference closes the router.
    handler.handle(ConferenceModify(MEETING, endpoints=(Endpoint("efgh5678", expire=True),)))
    assert other.transport_id not in await native_transports(bridge)
    handler.handle(recorded("expire-conference.request.xml"))
    for _ in range(50):
        stats = await bridge.get_stats()
        if stats["routers"] == 0:
            break
        await asyncio.sleep(0.02)
    assert stats["routers"] == 0 and stats["transports"] == {}
    assert bridge.conference_by_meeting(MEETING) is None
