"""Source bookkeeping, pure: Jingle sources and transports to Colibri2 and back, and source-set arithmetic.

A participant's sources are an `EndpointSources` (SSRCs with their groups). The bridge gets them whole
(`colibri_sources`); receivers are told a view of them (`strip_simulcast`), and what a client is told about
the others is the difference between the views it should know and the views it was told (`diff_sources`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from colibri2 import model as c2
from signaling.jingle.model import JVB_OWNER, EndpointSources, IceTransport, Parameter, Source, SsrcGroup

FEEDBACK_MSID = {"audio": "mixedmslabel mixedlabelaudio0", "video": "mixedmslabel mixedlabelvideo0"}


def jingle_transport(ice: c2.IceUdpTransport) -> IceTransport:
    """The bridge's ICE transport as Jingle carries it (candidates, rtcp-mux, fingerprints, web-socket)."""
    return IceTransport(
        ufrag=ice.ufrag,
        pwd=ice.pwd,
        candidates=ice.candidates,
        rtcp_mux=True,
        fingerprints=ice.fingerprints,
        web_sockets=ice.web_sockets,
        ice_generation=ice.ice_generation,
    )


def colibri_ice(t: IceTransport) -> c2.IceUdpTransport:
    return c2.IceUdpTransport(
        ufrag=t.ufrag,
        pwd=t.pwd,
        candidates=t.candidates,
        rtcp_mux=True,
        fingerprints=t.fingerprints,
    )


def named_sources(owner: str, sources: EndpointSources) -> EndpointSources:
    """Sources owned by `owner` (whatever the client claimed), named `<owner>-a0`/`-v0` when unnamed."""

    def fix(srcs: tuple[Source, ...], letter: str) -> tuple[Source, ...]:
        return tuple(replace(s, owner=owner, name=s.name or f"{owner}-{letter}0") for s in srcs)

    return replace(sources, audio=fix(sources.audio, "a"), video=fix(sources.video, "v"))


def merge_sources(a: EndpointSources, b: EndpointSources) -> EndpointSources:
    return EndpointSources(
        audio=a.audio + tuple(s for s in b.audio if s.ssrc not in a.ssrcs),
        audio_groups=a.audio_groups + tuple(g for g in b.audio_groups if g not in a.audio_groups),
        video=a.video + tuple(s for s in b.video if s.ssrc not in a.ssrcs),
        video_groups=a.video_groups + tuple(g for g in b.video_groups if g not in a.video_groups),
    )


def remove_ssrcs(a: EndpointSources, ssrcs: frozenset[int]) -> EndpointSources:
    def keep_groups(groups: tuple[SsrcGroup, ...]) -> tuple[SsrcGroup, ...]:
        return tuple(g for g in groups if not set(g.ssrcs) & ssrcs)

    return EndpointSources(
        audio=tuple(s for s in a.audio if s.ssrc not in ssrcs),
        audio_groups=keep_groups(a.audio_groups),
        video=tuple(s for s in a.video if s.ssrc not in ssrcs),
        video_groups=keep_groups(a.video_groups),
    )


def diff_sources(a: EndpointSources, b: EndpointSources) -> EndpointSources:
    """What `a` has that `b` has not (sources by SSRC, groups by value)."""
    return EndpointSources(
        audio=tuple(s for s in a.audio if s.ssrc not in b.ssrcs),
        audio_groups=tuple(g for g in a.audio_groups if g not in b.audio_groups),
        video=tuple(s for s in a.video if s.ssrc not in b.ssrcs),
        video_groups=tuple(g for g in a.video_groups if g not in b.video_groups),
    )


def strip_simulcast(es: EndpointSources) -> EndpointSources:
    """What receivers are told about a sender when simulcast is stripped (Jicofo's `strip-simulcast`).

    Of each SIM group only its primary (first) SSRC stays, with its FID group and RTX SSRC; the SIM group,
    the other layers, their FID groups and their RTX SSRCs go. The bridge rewrites whichever layer it
    forwards onto the primary SSRC; told every layer, lib-jitsi-meet makes one m-line per group with the
    same msid and Chrome refuses the description. Sources without a SIM group are returned unchanged.
    """

    def strip(
        srcs: tuple[Source, ...], groups: tuple[SsrcGroup, ...]
    ) -> tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]:
        sims = [g for g in groups if g.semantics == "SIM"]
        if not sims:
            return srcs, groups
        primaries = {g.ssrcs[0] for g in sims if g.ssrcs}
        layers = {ssrc for g in sims for ssrc in g.ssrcs[1:]}
        rtx = {
            g.ssrcs[1] for g in groups if g.semantics == "FID" and len(g.ssrcs) == 2 and g.ssrcs[0] in layers
        }
        # A primary is never dropped, whatever else a (hostile) sender's groups say about it.
        gone = (layers | rtx) - primaries
        kept_groups = tuple(g for g in groups if g.semantics != "SIM" and not set(g.ssrcs) & gone)
        return tuple(s for s in srcs if s.ssrc not in gone), kept_groups

    audio, audio_groups = strip(es.audio, es.audio_groups)
    video, video_groups = strip(es.video, es.video_groups)
    return EndpointSources(audio, audio_groups, video, video_groups)


def inline_sources(
    owned: Iterable[tuple[str, EndpointSources]], kind: str
) -> tuple[tuple[Source, ...], tuple[SsrcGroup, ...]]:
    """Inline `<source>`s (with `ssrc-info owner`) and groups of one media kind, for clients without JSON."""
    srcs: list[Source] = []
    groups: list[SsrcGroup] = []
    for owner, es in owned:
        s, g = es.of(kind)
        srcs.extend(replace(x, owner=owner) for x in s)
        groups.extend(g)
    return tuple(srcs), tuple(groups)


def colibri_sources(owner: str, es: EndpointSources) -> tuple[c2.MediaSource, ...]:
    """The participant's sources as Colibri2 media-sources, one per source name (2.2)."""
    out: list[c2.MediaSource] = []
    for kind in ("audio", "video"):
        srcs, groups = es.of(kind)
        names: dict[str, list[Source]] = {}
        for s in srcs:
            names.setdefault(s.name or f"{owner}-{kind[0]}0", []).append(s)
        for name, members in names.items():
            ssrcs = {s.ssrc for s in members}
            out.append(
                c2.MediaSource(
                    type=kind,
                    id=name,
                    sources=tuple(
                        c2.SourceDesc(
                            ssrc=s.ssrc, name=name, video_type=s.video_type, parameters=s.parameters
                        )
                        for s in members
                    ),
                    ssrc_groups=tuple(
                        c2.SsrcGroupDesc(g.semantics, g.ssrcs) for g in groups if set(g.ssrcs) <= ssrcs
                    ),
                )
            )
    return tuple(out)


def feedback_sources(media_sources: Iterable[c2.MediaSource]) -> EndpointSources:
    """The bridge's `jvb-a0`/`jvb-v0` sources with the msids Jicofo gives them (2.4)."""
    by_kind: dict[str, list[Source]] = {"audio": [], "video": []}
    for ms in media_sources:
        if ms.type not in by_kind:
            continue
        for s in ms.sources:
            if s.ssrc is None:
                continue
            by_kind[ms.type].append(
                Source(
                    ssrc=s.ssrc,
                    name=s.name or ms.id,
                    parameters=(Parameter("msid", FEEDBACK_MSID[ms.type]),),
                    owner=JVB_OWNER,
                )
            )
    return EndpointSources(audio=tuple(by_kind["audio"]), video=tuple(by_kind["video"]))
