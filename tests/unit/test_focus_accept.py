"""A session-initiate that is never accepted is retried once, then given up and reported; never silent.
Sans-IO with a fake clock.

Seen with stock lib-jitsi-meet (docs/jitsi-protocol.md 9): a client whose browser refuses the offer acks the
IQ and then says nothing, neither session-accept nor session-terminate. The focus gives each session
`session_accept_timeout` from the ack (or from the IQ's own timeout when there is no ack), then starts over
once with a new session on a new endpoint, and after a second silence terminates the session, expires the
endpoint, logs the room and participant, and counts it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import pytest

from signaling.jingle import Jingle, Source, SsrcGroup
from signaling.jingle.model import Content, Description
from tests.unit.test_focus import (
    BREWERY,
    CLIENT,
    JINGLE,
    MEETING_ID,
    ROOM,
    Net,
    _result,
    error_of,
    in_call,
    owners,
    restart,
    single,
)

TIMEOUT = 15.0


def endpoints(net: Net) -> set[str]:
    return net.bridges[f"{BREWERY}/jvb1"].conferences.get(MEETING_ID, set())


def started(net: Net) -> dict[str, Jingle]:
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.accept("aaaa0001", inits["aaaa0001"].sid, (100, 200))
    net.jingles("aaaa0001")
    net.colibri("jvb1")
    return inits


def test_a_session_never_accepted_is_retried_once_then_given_up_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    inits = started(net)
    first = inits["bbbb0002"]

    net.advance(TIMEOUT - 0.5)
    assert not net.jingles("bbbb0002"), "terminated before its time"
    with caplog.at_level(logging.WARNING, logger="signaling.focus"):
        net.advance(1.0)
    # The retry: the old session ends, the endpoint is made anew on the bridge, a new session-initiate.
    terminate, retry = net.jingles("bbbb0002")
    assert (terminate.action, terminate.sid) == ("session-terminate", first.sid)
    assert retry.action == "session-initiate" and retry.sid != first.sid
    assert [[(e.id, e.expire, e.create) for e in r.endpoints] for r in net.colibri("jvb1")] == [
        [("bbbb0002", True, False)],
        [("bbbb0002", False, True)],
    ]
    assert "bbbb0002" in endpoints(net)
    assert owners(retry)["aaaa0001"], "the retry carries the others' sources like any session-initiate"
    assert net.core.stats["session_accept_timeouts"] == 1 and net.core.stats["sessions_retried"] == 1
    (retrying,) = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert ROOM in retrying.getMessage() and "bbbb0002" in retrying.getMessage()
    # aaaa0001's accepted session is not touched.
    assert not net.jingles("aaaa0001")

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="signaling.focus"):
        net.advance(TIMEOUT + 0.5)
    (given_up,) = net.jingles("bbbb0002")
    assert (given_up.action, given_up.sid) == ("session-terminate", retry.sid)
    assert given_up.reason is not None and given_up.reason.condition == "timeout"
    assert [[(e.id, e.expire) for e in r.endpoints] for r in net.colibri("jvb1")] == [[("bbbb0002", True)]]
    assert endpoints(net) == {"aaaa0001"}
    assert net.core.stats["session_accept_timeouts"] == 2 and net.core.stats["sessions_never_accepted"] == 1
    (report,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert ROOM in report.getMessage() and "bbbb0002" in report.getMessage()
    p = net.core.rooms[ROOM].participants["bbbb0002"]
    assert p.session is None and p.endpoint is None

    # Nothing more: no endless re-invites, not even when someone else joins.
    net.advance(10 * TIMEOUT)
    net.join("cccc0003")
    assert not net.jingles("bbbb0002")
    assert net.core.stats["session_accept_timeouts"] == 2
    # A late session-accept for either old session is refused as unknown.
    (late,) = net.accept("bbbb0002", retry.sid, (300, 400))
    assert error_of(late)[0] == "item-not-found"


def test_an_accepted_retry_is_a_normal_session_and_the_count_starts_over() -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    started(net)
    net.advance(TIMEOUT + 0.5)
    _, retry = net.jingles("bbbb0002")
    (ok,) = net.accept("bbbb0002", retry.sid, (300, 400))
    assert ok.get("type") == "result"
    assert [s.ssrc for s in owners(single(net.jingles("aaaa0001", "source-add")))["bbbb0002"].audio] == [300]
    net.advance(5 * TIMEOUT)
    assert not net.jingles("bbbb0002")
    assert net.core.rooms[ROOM].participants["bbbb0002"].unaccepted == 0
    assert net.core.stats["sessions_never_accepted"] == 0

    # A later session (the client asked for a restart) that is not accepted gets its own retry again.
    (ok,) = net.send_jingle("bbbb0002", restart(retry.sid), iq_id="r1")
    assert ok.get("type") == "result"
    single(net.jingles("bbbb0002", "session-initiate"))
    net.advance(TIMEOUT + 0.5)
    assert net.core.stats["sessions_retried"] == 2 and net.core.stats["sessions_never_accepted"] == 0
    assert single(net.jingles("bbbb0002", "session-initiate"))


def test_accepted_in_time_nothing_happens() -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    inits = started(net)
    net.advance(TIMEOUT - 1.0)
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    net.jingles("bbbb0002")
    net.jingles("aaaa0001")
    net.advance(10 * TIMEOUT)
    assert not net.jingles("bbbb0002") and not net.jingles("aaaa0001")
    assert net.core.stats["session_accept_timeouts"] == 0


def test_an_initiate_without_any_ack_is_waited_for_after_its_iq_timeout() -> None:
    """Jicofo takes a session-initiate's IQ timeout as success; the accept is still due, from then on."""
    net = Net(session_accept_timeout=TIMEOUT, iq_timeout=10.0)
    net.auto_answer_clients = False
    net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    first = single(net.jingles("bbbb0002", "session-initiate"))
    net.advance(10.0 + TIMEOUT - 0.5)
    assert not net.jingles("bbbb0002")
    net.advance(1.0)
    terminate, retry = net.jingles("bbbb0002")
    assert (terminate.action, terminate.sid, retry.action) == (
        "session-terminate",
        first.sid,
        "session-initiate",
    )


def test_an_ack_starts_the_clock() -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    net.auto_answer_clients = False
    net.add_bridge("jvb1")
    net.open_room()
    net.join("aaaa0001")
    net.join("bbbb0002")
    net.jingles("aaaa0001")
    net.advance(5.0)
    (iq,) = [
        el
        for el in net.client_iqs
        if el.get("to") == f"{ROOM}/bbbb0002" and el.find(f"{{{JINGLE}}}jingle") is not None
    ]
    net.feed(_result(iq))
    net.advance(TIMEOUT - 0.5)
    assert not net.jingles("bbbb0002", "session-terminate")
    net.advance(1.0)
    assert single(net.jingles("bbbb0002", "session-terminate"))


def test_a_participant_that_leaves_is_not_timed_out() -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    started(net)
    net.leave("bbbb0002")
    net.sent.clear()
    net.advance(3 * TIMEOUT)
    assert not [el for el in net.sent if el.get("to") == f"{ROOM}/bbbb0002"]
    assert net.core.stats["session_accept_timeouts"] == 0


def test_a_refused_initiate_is_an_answer_not_a_silence() -> None:
    net = Net(session_accept_timeout=TIMEOUT)
    inits = started(net)
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    net.auto_answer_clients = False
    net.join("cccc0003")
    (iq,) = [
        el
        for el in net.client_iqs
        if el.get("to") == f"{ROOM}/cccc0003" and el.find(f"{{{JINGLE}}}jingle") is not None
    ]
    refusal = _result(iq)
    refusal.set("type", "error")
    refusal.append(
        ET.fromstring(
            f'<error xmlns="{CLIENT}" type="cancel">'
            '<bad-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error>'
        )
    )
    net.feed(refusal)
    assert net.core.stats["sessions_refused"] == 1
    net.sent.clear()
    net.advance(3 * TIMEOUT)
    assert not [el for el in net.sent if el.get("to") == f"{ROOM}/cccc0003"]
    assert net.core.stats["session_accept_timeouts"] == 0


def test_an_initiate_that_never_went_out_is_reported_too() -> None:
    """A session-initiate that fails to be built (today: a sender's FEC-FR group, which the compact JSON
    sources cannot carry) sends nothing, so there is neither ack nor IQ timeout; its deadline still comes."""
    net = Net(session_accept_timeout=TIMEOUT, iq_timeout=10.0)
    net.add_bridge("jvb1")
    inits = in_call(net, "aaaa0001", "bbbb0002")
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    fec = Jingle(
        action="session-accept",
        sid=inits["aaaa0001"].sid,
        contents=(
            Content(
                "video",
                description=Description(
                    "video", sources=(Source(5), Source(6)), ssrc_groups=(SsrcGroup("FEC-FR", (5, 6)),)
                ),
            ),
        ),
    )
    assert net.send_jingle("aaaa0001", fec)[0].get("type") == "result"
    net.join("cccc0003")
    assert not net.jingles("cccc0003"), "the initiate went out after all: find another way to break it"
    assert net.core.stats["internal_errors"] >= 1
    net.advance(2 * (10.0 + TIMEOUT) + 1.0)
    assert net.core.stats["sessions_never_accepted"] == 1 and net.core.stats["sessions_retried"] == 1
    p = net.core.rooms[ROOM].participants["cccc0003"]
    assert p.session is None and p.endpoint is None
