"""pytest-benchmark: the Python hot spots of allocation. Colibri2 XML/JSON parse and build of the recorded
messages, and Colibri2Handler.handle of an endpoint create + update on a real Bridge.

Each bench also checks what the timed call returned, so a broken codec fails here as well. The module's
marker caps each codec bench at 0.1 s of rounds (it overrides --benchmark-max-time) so the plain suite runs
the whole file in a few seconds; these calls take microseconds, so that is still thousands of rounds.
Figures: `pytest tests/bench --benchmark-only`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bridge import Bridge
from bridge.colibri2_handler import Colibri2Handler
from colibri2 import json as cjson
from colibri2 import xml as cxml
from colibri2.model import ConferenceModified, ConferenceModify, Endpoint

DATA = Path(__file__).resolve().parent.parent / "data" / "colibri2"
MEETING = "8f1c2a4e-5d6b-4c3a-9e8f-0a1b2c3d4e5f"
# The session-initiate / session-accept pair Jicofo sends for every participant, and their answers.
REQUESTS = ["create-conference.request.xml", "update-endpoint.request.xml"]
RESPONSES = ["create-conference.response.xml", "update-endpoint.response.xml"]

pytestmark = pytest.mark.benchmark(max_time=0.1, min_rounds=5, warmup=False)


def _modify(name: str) -> ConferenceModify:
    return cxml.parse_conference_modify((DATA / name).read_bytes())


def _modified(name: str) -> ConferenceModified:
    return cxml.parse_conference_modified((DATA / name).read_bytes())


@pytest.mark.parametrize("name", REQUESTS)
def test_xml_parse_request(benchmark: BenchmarkFixture, name: str) -> None:
    raw = (DATA / name).read_bytes()
    parsed = benchmark(cxml.parse_conference_modify, raw)
    assert parsed.meeting_id == MEETING and parsed.endpoints[0].id == "abcd1234"


@pytest.mark.parametrize("name", RESPONSES)
def test_xml_parse_response(benchmark: BenchmarkFixture, name: str) -> None:
    raw = (DATA / name).read_bytes()
    parsed = benchmark(cxml.parse_conference_modified, raw)
    assert parsed.endpoints[0].id == "abcd1234"


@pytest.mark.parametrize("name", REQUESTS)
def test_xml_build_request(benchmark: BenchmarkFixture, name: str) -> None:
    request = _modify(name)
    text = benchmark(lambda: cxml.to_string(cxml.build_conference_modify(request)))
    assert cxml.parse_conference_modify(text) == request


@pytest.mark.parametrize("name", RESPONSES)
def test_xml_build_response(benchmark: BenchmarkFixture, name: str) -> None:
    response = _modified(name)
    text = benchmark(lambda: cxml.to_string(cxml.build_conference_modified(response)))
    assert cxml.parse_conference_modified(text) == response


@pytest.mark.parametrize("name", REQUESTS)
def test_json_parse_request(benchmark: BenchmarkFixture, name: str) -> None:
    # The HTTP API's body: the JSON form of the recorded request, as bytes off the wire.
    request = _modify(name)
    body = json.dumps(cjson.conference_modify_to_json(request)).encode()
    assert benchmark(cjson.conference_modify_from_json, body) == request


@pytest.mark.parametrize("name", RESPONSES)
def test_json_build_response(benchmark: BenchmarkFixture, name: str) -> None:
    # The HTTP API's answer: model → JSON object → text.
    response = _modified(name)
    text = benchmark(lambda: json.dumps(cjson.conference_modified_to_json(response)))
    assert cjson.conference_modified_from_json(text) == response


@pytest.mark.integration
async def test_handler_create_and_update_endpoint(benchmark: BenchmarkFixture, bridge: Bridge) -> None:
    """One participant's allocation on a real Bridge: create (conference + endpoint), then session-accept.

    Each round starts from no conference; the conference is expired after each round, outside the timing.
    """
    handler = Colibri2Handler(bridge)
    create, update = _modify(REQUESTS[0]), _modify(REQUESTS[1])
    expire = _modify("expire-conference.request.xml")

    def allocate() -> tuple[ConferenceModified, ConferenceModified]:
        return handler.handle(create), handler.handle(update)

    def release() -> None:
        handler.handle(expire)
        assert bridge.conference_by_meeting(MEETING) is None

    # pytest-benchmark leaves pedantic() unannotated; the result is allocate()'s.
    created, updated = benchmark.pedantic(  # type: ignore[no-untyped-call]
        allocate, teardown=release, rounds=30, warmup_rounds=2
    )
    (ep,) = created.endpoints
    assert ep.id == "abcd1234" and ep.transport is not None and ep.transport.ice is not None
    assert ep.transport.ice.fingerprints[0].value == bridge.fingerprint.value
    assert updated.endpoints == (Endpoint("abcd1234"),)
    # Every round's transports were closed again: nothing leaks across rounds.
    assert bridge.conference_by_meeting(MEETING) is None
    assert (await bridge.get_stats())["transports"] == {}
