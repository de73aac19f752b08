"""What receivers are told about a sender's sources (Jicofo's strip-simulcast) and what the bridge is told,
sans-IO with a fake clock (docs/jitsi-protocol.md 5.4, 9).

A Jitsi sender announces its camera as SIM(1,2,3) + FID(1,4) FID(2,5) FID(3,6), one msid on all six.
Receivers must hear of the primary and its RTX only (else Chrome refuses the description: one m-line per
group with the same msid); the bridge must get every layer. A receiver's picture, built only from the
session-initiate, source-add and source-remove it gets, must equal the stripped view of what the sender has
now, and a source-remove must take back exactly what was added.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from signaling.focus.sources import colibri_sources, named_sources, strip_simulcast
from signaling.jingle import EndpointSources, Jingle, Source, SsrcGroup, build_jingle, parse_jingle
from signaling.jingle.model import Action, Content, Description, Parameter
from tests.unit.test_focus import FOCUS_FULL, ROOM, Net, in_call, owners, single

DATA = Path(__file__).resolve().parent.parent / "data" / "jingle"
SENDER = "abcd1234"  # the nick of the recorded session-accept
# tests/data/jingle/session-accept.xml: Chrome's camera, three layers and their RTX.
PRIMARY, L2, L3 = 1201405786, 3560014352, 677320958
RTX1, RTX2, RTX3 = 2410935516, 93781014, 3019277440
AUDIO = 2876543210
CAMERA_MSID = "b7e3f5a1-2c4d-4e6f-8a9b-0c1d2e3f4a5b 5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f"


def recorded_accept(sid: str, room: str = ROOM) -> ET.Element:
    """The recorded lib-jitsi-meet session-accept, sent in `room` for session `sid`."""
    text = (DATA / "session-accept.xml").read_text()
    text = text.replace("room1@conference.example.org", room).replace('sid="4hbc2kq0oqv1t"', f'sid="{sid}"')
    return ET.fromstring(text)


def chrome_camera() -> EndpointSources:
    """The recorded session-accept's sources, as the focus keeps them for its sender."""
    j = parse_jingle(recorded_accept("s"))
    return named_sources(SENDER, j.sources(SENDER))


def sim_video(
    base: int, name: str, msid: str = "stream track"
) -> tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]:
    """A SIM+FID camera of three layers: SSRCs base..base+2, their RTX base+10..base+12."""
    layers, rtx = (base, base + 1, base + 2), (base + 10, base + 11, base + 12)
    srcs = tuple(Source(s, name, "camera", (Parameter("msid", msid),), owner=SENDER) for s in (*layers, *rtx))
    groups = (
        SsrcGroup("SIM", layers),
        *(SsrcGroup("FID", (lay, r)) for lay, r in zip(layers, rtx, strict=True)),
    )
    return srcs, groups


# ---- the pure function


def test_receivers_get_the_primary_and_its_rtx_with_every_attribute() -> None:
    sender = chrome_camera()
    assert len(sender.video) == 6 and len(sender.video_groups) == 4
    view = strip_simulcast(sender)
    assert [s.ssrc for s in view.video] == [PRIMARY, RTX1]
    assert view.video_groups == (SsrcGroup("FID", (PRIMARY, RTX1)),)
    for s in view.video:
        assert (s.name, s.video_type, s.msid, s.owner) == (f"{SENDER}-v0", "camera", CAMERA_MSID, SENDER)
    # The very Source values the sender signalled (ssrc-info owner, msid parameter), only fewer of them.
    assert set(view.video) <= set(sender.video)
    assert view.audio == sender.audio and [s.ssrc for s in view.audio] == [AUDIO]


def test_sources_without_simulcast_are_unchanged() -> None:
    sender = chrome_camera()
    no_sim = replace(
        sender,
        video=tuple(s for s in sender.video if s.ssrc in (PRIMARY, RTX1)),
        video_groups=(SsrcGroup("FID", (PRIMARY, RTX1)),),
    )
    assert strip_simulcast(no_sim) == no_sim
    audio_only = replace(sender, video=(), video_groups=())
    assert strip_simulcast(audio_only) == audio_only
    assert strip_simulcast(EndpointSources()) == EndpointSources()


def test_two_simulcast_sources_are_stripped_each_to_its_own_primary() -> None:
    camera, camera_groups = sim_video(100, f"{SENDER}-v0")
    desktop, desktop_groups = sim_video(200, f"{SENDER}-v1", "screen track")
    view = strip_simulcast(
        EndpointSources(video=camera + desktop, video_groups=camera_groups + desktop_groups)
    )
    assert [s.ssrc for s in view.video] == [100, 110, 200, 210]
    assert view.video_groups == (SsrcGroup("FID", (100, 110)), SsrcGroup("FID", (200, 210)))


def test_odd_groups_from_a_sender_never_lose_a_primary_nor_leave_a_dangling_group() -> None:
    srcs = tuple(Source(s, f"{SENDER}-v0", owner=SENDER) for s in (1, 2, 3, 4, 5))
    odd = EndpointSources(
        video=srcs,
        video_groups=(
            SsrcGroup("SIM", (1, 2, 9)),  # 9 was never signalled
            SsrcGroup("FID", (2, 1)),  # a layer whose "RTX" is the primary
            SsrcGroup("FID", (1, 4)),
            SsrcGroup("FID", (3, 5)),  # a source outside the SIM group keeps its RTX
            SsrcGroup("FID", (2, 4, 5)),  # not a pair: it names a dropped layer, so it goes too
        ),
    )
    view = strip_simulcast(odd)
    assert [s.ssrc for s in view.video] == [1, 3, 4, 5]
    assert view.video_groups == (SsrcGroup("FID", (1, 4)), SsrcGroup("FID", (3, 5)))
    kept = {s.ssrc for s in view.video}
    assert all(set(g.ssrcs) <= kept for g in view.video_groups)
    single_layer = EndpointSources(video=srcs[:1], video_groups=(SsrcGroup("SIM", (1,)),))
    assert strip_simulcast(single_layer) == EndpointSources(video=srcs[:1])


# ---- a receiver's picture, built only from what it is told


class Receiver:
    """What a client knows of each owner's sources, applying session-initiate / source-add / source-remove
    as lib-jitsi-meet does; a remove of something it was never told, or an add of something it already
    has, fails the test."""

    def __init__(self) -> None:
        self.sources: dict[str, set[tuple[str, Source]]] = {}
        self.groups: dict[str, set[tuple[str, SsrcGroup]]] = {}

    def apply(self, j: Jingle) -> None:
        assert j.json_sources is not None
        for owner, es in j.json_sources:
            have_s = self.sources.setdefault(owner, set())
            have_g = self.groups.setdefault(owner, set())
            for kind in ("audio", "video"):
                srcs, groups = es.of(kind)
                for s in srcs:
                    item = (kind, replace(s, owner=owner))
                    if j.action == "source-remove":
                        assert any(s.ssrc == h.ssrc for _, h in have_s), f"removes {s.ssrc}, never added"
                        have_s -= {x for x in have_s if x[1].ssrc == s.ssrc}
                    else:
                        assert all(s.ssrc != h.ssrc for _, h in have_s), f"adds {s.ssrc} twice"
                        have_s.add(item)
                for g in groups:
                    if j.action == "source-remove":
                        assert (kind, g) in have_g, f"removes {g}, never added"
                        have_g.discard((kind, g))
                    else:
                        assert (kind, g) not in have_g, f"adds {g} twice"
                        have_g.add((kind, g))

    def of(self, owner: str) -> EndpointSources:
        srcs = self.sources.get(owner, set())
        groups = self.groups.get(owner, set())
        return EndpointSources(
            audio=tuple(sorted((s for k, s in srcs if k == "audio"), key=lambda s: s.ssrc)),
            audio_groups=tuple(sorted((g for k, g in groups if k == "audio"), key=lambda g: g.ssrcs)),
            video=tuple(sorted((s for k, s in srcs if k == "video"), key=lambda s: s.ssrc)),
            video_groups=tuple(sorted((g for k, g in groups if k == "video"), key=lambda g: g.ssrcs)),
        )


def canonical(es: EndpointSources) -> EndpointSources:
    """Order-free form, as the JSON form carries it (names and msids; owner by key)."""

    def src(s: Source) -> Source:
        return Source(s.ssrc, s.name, "desktop" if s.video_type == "desktop" else None, s.parameters, None)

    return EndpointSources(
        audio=tuple(sorted((src(s) for s in es.audio), key=lambda s: s.ssrc)),
        audio_groups=tuple(sorted(es.audio_groups, key=lambda g: g.ssrcs)),
        video=tuple(sorted((src(s) for s in es.video), key=lambda s: s.ssrc)),
        video_groups=tuple(sorted(es.video_groups, key=lambda g: g.ssrcs)),
    )


def picture(r: Receiver, owner: str) -> EndpointSources:
    return canonical(replace_owner(r.of(owner)))


def replace_owner(es: EndpointSources) -> EndpointSources:
    return EndpointSources(
        tuple(replace(s, owner=None) for s in es.audio),
        es.audio_groups,
        tuple(replace(s, owner=None) for s in es.video),
        es.video_groups,
    )


def feed_jingles(net: Net, nick: str, r: Receiver) -> list[Jingle]:
    got = net.jingles(nick)
    for j in got:
        if j.action in ("session-initiate", "source-add", "source-remove"):
            r.apply(j)
    return got


def send_iq(net: Net, el: ET.Element) -> ET.Element:
    net.feed(el)
    (reply,) = net.replies_to(el.get("id", ""))
    return reply


def sender_now(net: Net) -> EndpointSources:
    p = net.core.rooms[ROOM].participants.get(SENDER)
    return p.sources if p is not None else EndpointSources()


def sources_jingle(action: Action, sid: str, es: EndpointSources) -> Jingle:
    """`es` as the sender's Jingle: a content per kind that has sources."""
    contents = []
    for kind in ("audio", "video"):
        srcs, groups = es.of(kind)
        if srcs or groups:
            contents.append(Content(kind, description=Description(kind, sources=srcs, ssrc_groups=groups)))
    return Jingle(action=action, sid=sid, contents=tuple(contents))


_iq_ids = itertools.count(1)


def from_sender(j: Jingle) -> ET.Element:
    """`j` as an IQ from the sender to the focus, through the room."""
    iq = ET.Element(
        "{jabber:client}iq",
        {"type": "set", "id": f"src{next(_iq_ids)}", "from": f"{ROOM}/{SENDER}", "to": FOCUS_FULL},
    )
    iq.append(build_jingle(j))
    return iq


def test_a_late_joiner_hears_of_the_primary_only_and_the_bridge_of_every_layer() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, SENDER, "bbbb0002")
    net.colibri("jvb1")
    assert send_iq(net, recorded_accept(inits[SENDER].sid)).get("type") == "result"

    # The bridge: all six SSRCs and all four groups, under the one source name.
    (update,) = net.colibri("jvb1")
    (ep,) = update.endpoints
    assert ep.sources is not None
    (video,) = [ms for ms in ep.sources if ms.type == "video"]
    assert video.id == f"{SENDER}-v0"
    assert {s.ssrc for s in video.sources} == {PRIMARY, L2, L3, RTX1, RTX2, RTX3}
    assert [(g.semantics, g.ssrcs) for g in video.ssrc_groups] == [
        ("SIM", (PRIMARY, L2, L3)),
        ("FID", (PRIMARY, RTX1)),
        ("FID", (L2, RTX2)),
        ("FID", (L3, RTX3)),
    ]
    assert ep.sources == colibri_sources(SENDER, chrome_camera())

    # bbbb0002, whose session was initiated before, gets the stripped set as source-add when it accepts.
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    add = single(net.jingles("bbbb0002", "source-add"))
    assert [s.ssrc for s in owners(add)[SENDER].video] == [PRIMARY, RTX1]

    # A late joiner's session-initiate (the case Chrome refused): the primary and its RTX, FID only.
    net.colibri("jvb1")
    net.join("cccc0003")
    init = single(net.jingles("cccc0003", "session-initiate"))
    seen = owners(init)[SENDER]
    assert [s.ssrc for s in seen.video] == [PRIMARY, RTX1]
    assert seen.video_groups == (SsrcGroup("FID", (PRIMARY, RTX1)),)
    assert [s.ssrc for s in seen.audio] == [AUDIO]
    assert {s.msid for s in seen.video} == {CAMERA_MSID}
    assert not any(g.semantics == "SIM" for _, es in owners(init).items() for g in es.video_groups)
    # The Colibri2 allocation of the late joiner does not change what the bridge knows of the sender.
    assert all(e.id == "cccc0003" for r in net.colibri("jvb1") for e in r.endpoints)


def test_a_client_without_json_sources_gets_the_stripped_set_inline() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, SENDER, "bbbb0002")
    send_iq(net, recorded_accept(inits[SENDER].sid))
    net.join("cccc0003", caps=True)
    (disco,) = [el for el in net.client_iqs if el.get("to") == f"{ROOM}/cccc0003"]
    reply = ET.Element(
        "{jabber:client}iq", {"type": "result", "id": disco.get("id", ""), "from": disco.get("to", "")}
    )
    ET.SubElement(reply, "{http://jabber.org/protocol/disco#info}query")  # no json-encoded-sources
    net.feed(reply)
    init = single(net.jingles("cccc0003", "session-initiate"))
    assert init.json_sources is None
    seen = init.sources()
    assert [(s.ssrc, s.owner) for s in seen.video if s.owner == SENDER] == [(PRIMARY, SENDER), (RTX1, SENDER)]
    assert [g for g in seen.video_groups if PRIMARY in g.ssrcs] == [SsrcGroup("FID", (PRIMARY, RTX1))]
    assert not any(g.semantics == "SIM" for g in seen.video_groups)


def test_with_strip_simulcast_off_receivers_get_every_layer() -> None:
    net = Net(strip_simulcast=False)
    net.add_bridge("jvb1")
    inits = in_call(net, SENDER, "bbbb0002")
    send_iq(net, recorded_accept(inits[SENDER].sid))
    net.join("cccc0003")
    seen = owners(single(net.jingles("cccc0003", "session-initiate")))[SENDER]
    assert len(seen.video) == 6 and SsrcGroup("SIM", (PRIMARY, L2, L3)) in seen.video_groups


def test_receivers_stay_in_step_as_the_sender_changes_its_sources() -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, SENDER, "bbbb0002")
    early = Receiver()  # in the call from the start: everything comes as source-add/remove
    feed_jingles(net, "bbbb0002", early)
    net.accept("bbbb0002", inits["bbbb0002"].sid, (300, 400))
    send_iq(net, recorded_accept(inits[SENDER].sid))
    feed_jingles(net, "bbbb0002", early)
    net.join("cccc0003")
    late = Receiver()  # joined with the simulcast camera already there
    (init_c,) = feed_jingles(net, "cccc0003", late)
    net.accept("cccc0003", init_c.sid, (500, 600))
    sid = inits[SENDER].sid

    def check(expected_video: list[int]) -> None:
        feed_jingles(net, "bbbb0002", early)
        feed_jingles(net, "cccc0003", late)
        want = canonical(replace_owner(strip_simulcast(sender_now(net))))
        assert [s.ssrc for s in want.video] == sorted(expected_video)
        assert picture(early, SENDER) == want
        assert picture(late, SENDER) == want

    check([PRIMARY, RTX1])

    # A screen share comes as source-add: itself simulcast (SIM of two layers with RTX).
    share = EndpointSources(
        video=tuple(
            Source(s, f"{SENDER}-v1", "desktop", (Parameter("msid", "d t"),)) for s in (700, 701, 710, 711)
        ),
        video_groups=(
            SsrcGroup("SIM", (700, 701)),
            SsrcGroup("FID", (700, 710)),
            SsrcGroup("FID", (701, 711)),
        ),
    )
    assert send_iq(net, from_sender(sources_jingle("source-add", sid, share))).get("type") == "result"
    check([PRIMARY, RTX1, 700, 710])
    (update,) = [r for r in net.colibri("jvb1") if r.endpoints and r.endpoints[0].id == SENDER][-1:]
    assert update.endpoints[0].sources is not None
    assert {s.ssrc for ms in update.endpoints[0].sources for s in ms.sources} >= {700, 701, 710, 711, L2, L3}

    # The camera goes (source-remove of all six, as lib-jitsi-meet does when the track is replaced) ...
    camera = EndpointSources(video=tuple(Source(s) for s in (PRIMARY, L2, L3, RTX1, RTX2, RTX3)))
    send_iq(net, from_sender(sources_jingle("source-remove", sid, camera)))
    check([700, 710])
    # ... and a new camera track comes back with new SSRCs.
    new_camera, new_groups = sim_video(900, f"{SENDER}-v0")
    add = EndpointSources(video=new_camera, video_groups=new_groups)
    send_iq(net, from_sender(sources_jingle("source-add", sid, add)))
    check([700, 710, 900, 910])

    # The sender leaves: every receiver is told to remove exactly what it was told, and nothing is left.
    net.leave(SENDER)
    check([])
    assert picture(early, SENDER) == EndpointSources() and picture(late, SENDER) == EndpointSources()


# ---- the same as a property: any sequence of sender source sets


def _sender_sets() -> st.SearchStrategy[EndpointSources]:
    """A sender's sources: audio or not, up to three video sources, each simulcast or not, RTX or not."""

    @st.composite
    def build(draw: st.DrawFn) -> EndpointSources:
        base = draw(st.sampled_from([1000, 2000, 3000]))
        audio = (Source(base, f"{SENDER}-a0"),) if draw(st.booleans()) else ()
        video: list[Source] = []
        groups: list[SsrcGroup] = []
        for i in range(draw(st.integers(0, 3))):
            first = base + 100 * (i + 1)
            layers = tuple(range(first, first + draw(st.integers(1, 3))))
            rtx = tuple(s + 50 for s in layers) if draw(st.booleans()) else ()
            video.extend(Source(s, f"{SENDER}-v{i}") for s in (*layers, *rtx))
            if len(layers) > 1:
                groups.append(SsrcGroup("SIM", layers))
            groups.extend(SsrcGroup("FID", (lay, r)) for lay, r in zip(layers, rtx, strict=False))
        return EndpointSources(audio=audio, video=tuple(video), video_groups=tuple(groups))

    return build()


@settings(max_examples=150, deadline=None)
@given(st.lists(_sender_sets(), min_size=1, max_size=5))
def test_any_sequence_of_sender_changes_keeps_a_receiver_exact(states: list[EndpointSources]) -> None:
    net = Net()
    net.add_bridge("jvb1")
    inits = in_call(net, SENDER, "bbbb0002")
    r = Receiver()
    feed_jingles(net, "bbbb0002", r)
    net.accept("bbbb0002", inits["bbbb0002"].sid, (10, 20))
    sid = inits[SENDER].sid
    for step, state in enumerate(states):
        # New SSRCs each time: a client's new tracks never reuse its old ones.
        shift = 10_000 * step
        moved = EndpointSources(
            audio=tuple(replace(s, ssrc=s.ssrc + shift) for s in state.audio),
            video=tuple(replace(s, ssrc=s.ssrc + shift) for s in state.video),
            video_groups=tuple(
                SsrcGroup(g.semantics, tuple(x + shift for x in g.ssrcs)) for g in state.video_groups
            ),
        )
        if step == 0:
            accepted = send_iq(net, from_sender(sources_jingle("session-accept", sid, moved)))
            assert accepted.get("type") == "result"
        else:
            now = sender_now(net)
            if now:
                send_iq(net, from_sender(sources_jingle("source-remove", sid, now)))
            if moved:
                assert (
                    send_iq(net, from_sender(sources_jingle("source-add", sid, moved))).get("type")
                    == "result"
                )
        feed_jingles(net, "bbbb0002", r)
        assert sender_now(net).ssrcs == moved.ssrcs
        assert picture(r, SENDER) == canonical(replace_owner(strip_simulcast(sender_now(net))))
        seen = r.of(SENDER)
        assert not any(g.semantics == "SIM" for g in seen.video_groups)
