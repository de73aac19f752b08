"""Source bookkeeping, pure: Jingle sources and transports to Colibri2 and back, and source-set arithmetic.

A participant's sources are an `EndpointSources` (SSRCs with their groups); what a client is told about the
others is the difference between what it should know and what it was told (`diff_sources`).
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
