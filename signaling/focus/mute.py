"""Mute (docs/jitsi-protocol.md 5.5): a participant mutes itself, a moderator mutes others; the bridge
enforces it.

A mute request from a moderator is forwarded to its target and becomes a Colibri2 force-mute on the bridge;
the target lifts it by unmuting itself (its presence goes from muted to unmuted). Current clients say their
mute state only in presence `<SourceInfo>` (docs/jitsi-protocol.md 5.3, 9), older ones in `<audiomuted>` /
`<videomuted>`; both are read, and `<SourceInfo>` wins for a kind it speaks of.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from signaling.focus import stanzas
from signaling.focus.colibri import Colibri
from signaling.focus.model import Participant, Room, Shared, find_participant
from signaling.focus.stanzas import (
    NS_AV_MODERATION,
    NS_CLIENT,
    NS_JITMEET_AUDIO,
    NS_JITMEET_DESKTOP,
    NS_JITMEET_VIDEO,
    bare,
    q,
    resource,
)

log = logging.getLogger(__name__)

MUTE_NAMESPACES = {NS_JITMEET_AUDIO: "audio", NS_JITMEET_VIDEO: "video", NS_JITMEET_DESKTOP: "video"}
MUTE_TAGS = frozenset(q(ns, "mute") for ns in MUTE_NAMESPACES)
AV_MODERATION_TAG = q(NS_AV_MODERATION, "av-moderation")
KINDS = ("audio", "video")

#: Largest `<SourceInfo>` text read: a client with a microphone, a camera and a screen share sends ~150
#: characters; this leaves room for many more sources and bounds what a hostile occupant makes us parse.
MAX_SOURCE_INFO_CHARS = 2048
#: What follows `<nick>-` in the name of an occupant's own source: a (audio) or v (video), then its index.
_OWN_SOURCE = re.compile(r"([av])(?:0|[1-9][0-9]{0,2})")


def _mute_tag(kind: str) -> str:
    return q(NS_JITMEET_AUDIO if kind == "audio" else NS_JITMEET_VIDEO, "mute")


class SourceInfoError(ValueError):
    """A `<SourceInfo>` that says nothing usable (too long, not JSON, not an object)."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What an occupant's `<SourceInfo>` says about its own sources."""

    #: "audio" / "video" -> muted, for each kind it names a source of: muted only if every such source is.
    muted: dict[str, bool]
    #: Entries ignored: another occupant's source or no source name of ours, a value that is not an object,
    #: a `muted` that is not a boolean.
    ignored: int


def parse_source_info(nick: str, text: str) -> SourceInfo:
    """The `<SourceInfo>` JSON of occupant `nick`: `{"<nick>-a0": {"muted": true}, "<nick>-v0": {...}}`.

    Untrusted: only the occupant's own sources (`<nick>-a<n>`, `<nick>-v<n>`) count; bad entries are ignored
    and counted; anything but a JSON object of bounded size raises `SourceInfoError`.
    """
    if len(text) > MAX_SOURCE_INFO_CHARS:
        raise SourceInfoError(f"longer than {MAX_SOURCE_INFO_CHARS} characters")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise SourceInfoError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SourceInfoError("not a JSON object")
    muted: dict[str, bool] = {}
    ignored = 0
    prefix = f"{nick}-"
    for name, info in doc.items():
        own = _OWN_SOURCE.fullmatch(name[len(prefix) :]) if name.startswith(prefix) else None
        value = info.get("muted") if isinstance(info, dict) else None
        if own is None or not isinstance(info, dict) or ("muted" in info and not isinstance(value, bool)):
            ignored += 1
            continue
        if isinstance(value, bool):
            kind = "audio" if own.group(1) == "a" else "video"
            # One unmuted source of a kind means the occupant sends that kind.
            muted[kind] = muted.get(kind, True) and value
    return SourceInfo(muted, ignored)


class Mute:
    """Mute requests, self-unmutes seen in presence, and the force-mute they put on the bridge."""

    def __init__(self, shared: Shared, colibri: Colibri) -> None:
        self._shared = shared
        self._stats = shared.stats
        self._out = shared.out
        self._colibri = colibri

    def handle(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        """A mute request or a moderated meeting's request (AV_MODERATION_TAG)."""
        if payload.tag == AV_MODERATION_TAG:
            self.handle_av_moderation(now, request, payload)
        else:
            self.handle_request(now, request, payload)

    def handle_request(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        kind = MUTE_NAMESPACES[payload.tag[1:].partition("}")[0]]
        found = find_participant(self._shared.rooms, request.get("from", ""))
        target_jid = payload.get("jid", "")
        text = (payload.text or "").strip().lower()
        if text not in ("true", "false"):
            self._out.send(stanzas.error(request, "bad-request", "mute must be true or false"))
            return
        mute = text == "true"
        if found is None:
            self._out.send(stanzas.error(request, "not-allowed", "not a participant"))
            return
        room, actor = found
        target = room.participants.get(resource(target_jid)) if bare(target_jid) == room.jid else None
        if target is None:
            self._out.send(stanzas.error(request, "item-not-found", f"no participant {target_jid}"))
            return
        if (mute and not (actor.moderator or actor is target)) or (not mute and actor is not target):
            self._stats["mute_not_allowed"] += 1
            self._out.send(stanzas.error(request, "not-allowed", "only a moderator may mute others"))
            return
        if not mute and not self._may_unmute(room, target, kind):
            self._stats["unmute_refused_av_moderation"] += 1
            self._out.send(stanzas.error(request, "not-allowed", "a moderator must allow you to unmute"))
            return
        self._out.send(stanzas.result(request))
        self._stats["mutes"] += 1
        if actor is not target:
            self._tell_muted(now, room, target, payload.tag, actor)
        self._force_mute(now, room, target, kind, mute)

    def _tell_muted(
        self, now: float, room: Room, target: Participant, tag: str, actor: Participant | None
    ) -> None:
        """The mute IQ a client obeys (it mutes itself and shows who did it)."""
        attrs = {"jid": room.occupant(target.nick)}
        if actor is not None:
            attrs["actor"] = room.occupant(actor.nick)
        forward = ET.Element(tag, attrs)
        forward.text = "true"
        self._out.fire(now, "set", room.occupant(target.nick), forward)

    # ---- a moderated meeting ("AV moderation")

    def _may_unmute(self, room: Room, p: Participant, kind: str) -> bool:
        return not room.av_moderation[kind] or p.moderator or p.nick in room.av_allowed[kind]

    def handle_av_moderation(self, now: float, request: ET.Element, payload: ET.Element) -> None:
        """`<av-moderation kind='audio|video' enable='true|false'/>` or `... allow='<nick>'/>` from a
        moderator: a moderated meeting force-mutes every non-moderator for that kind (and everyone who joins
        later), and only those a moderator allows may lift it by unmuting."""
        found = find_participant(self._shared.rooms, request.get("from", ""))
        kind = payload.get("kind", "")
        enable = payload.get("enable")
        allow = payload.get("allow")
        if kind not in KINDS or (enable is None) == (allow is None) or enable not in (None, "true", "false"):
            self._stats["av_moderation_bad_requests"] += 1
            self._out.send(stanzas.error(request, "bad-request", "kind=audio|video and enable= or allow="))
            return
        if found is None or not found[1].moderator:
            self._stats["av_moderation_not_allowed"] += 1
            self._out.send(stanzas.error(request, "not-allowed", "only a moderator may moderate the meeting"))
            return
        room, actor = found
        if allow is not None:
            target = room.participants.get(allow)
            if target is None:
                self._out.send(stanzas.error(request, "item-not-found", f"no participant {allow}"))
                return
            self._out.send(stanzas.result(request))
            room.av_allowed[kind].add(allow)
            self._stats["av_moderation_allowed"] += 1
            self._notify(now, room, target, kind, allowed=True)
            return
        on = enable == "true"
        self._out.send(stanzas.result(request))
        if room.av_moderation[kind] == on:
            return
        room.av_moderation[kind] = on
        room.av_allowed[kind].clear()
        self._stats["av_moderation_enabled" if on else "av_moderation_disabled"] += 1
        tag = _mute_tag(kind)
        for p in list(room.participants.values()):
            if p.moderator:
                continue
            self._notify(now, room, p, kind, allowed=not on)
            if on:
                self._tell_muted(now, room, p, tag, actor)
                self._force_mute(now, room, p, kind, True)

    def _notify(self, now: float, room: Room, p: Participant, kind: str, *, allowed: bool) -> None:
        """Tells a participant whether its `kind` is moderated and whether it may unmute."""
        note = ET.Element(
            AV_MODERATION_TAG,
            {"kind": kind, "enabled": str(room.av_moderation[kind]).lower(), "allowed": str(allowed).lower()},
        )
        self._out.fire(now, "set", room.occupant(p.nick), note)

    def joined(self, now: float, room: Room, p: Participant) -> None:
        """A newcomer to a moderated meeting starts force-muted (its allocation carries it) and is told."""
        for kind in KINDS:
            if room.av_moderation[kind] and not p.moderator:
                p.force_muted[kind] = True
                self._notify(now, room, p, kind, allowed=False)
                self._tell_muted(now, room, p, _mute_tag(kind), None)

    def handle_presence(self, now: float, room: Room, p: Participant, el: ET.Element) -> None:
        """A participant that unmutes itself (presence true -> false) is no longer force-muted."""
        said: dict[str, bool] = {}
        for kind, tag in (
            ("audio", q(NS_JITMEET_AUDIO, "audiomuted")),
            ("video", q(NS_JITMEET_VIDEO, "videomuted")),
        ):
            found = el.find(tag)
            if found is None:
                found = el.find(q(NS_CLIENT, tag.rpartition("}")[2]))
            if found is not None:
                said[kind] = (found.text or "").strip().lower() == "true"
        said.update(self._source_info(room, p, el))
        for kind, muted in said.items():
            before = p.audio_muted if kind == "audio" else p.video_muted
            if kind == "audio":
                p.audio_muted = muted
            else:
                p.video_muted = muted
            if before and not muted and p.force_muted[kind]:
                if self._may_unmute(room, p, kind):
                    self._force_mute(now, room, p, kind, False)
                else:
                    # A moderated meeting: the bridge keeps dropping its media; tell the client again.
                    self._stats["unmute_refused_av_moderation"] += 1
                    tag = _mute_tag(kind)
                    self._tell_muted(now, room, p, tag, None)

    def _source_info(self, room: Room, p: Participant, el: ET.Element) -> dict[str, bool]:
        """The mute state by kind that the presence's `<SourceInfo>` gives for `p`'s own sources."""
        found = el.find(q(NS_CLIENT, "SourceInfo"))
        if found is None:
            found = el.find("SourceInfo")
        if found is None:
            return {}
        try:
            info = parse_source_info(p.nick, found.text or "")
        except SourceInfoError as exc:
            self._stats["source_info_invalid"] += 1
            log.debug("focus: ignoring <SourceInfo> of %s in %s: %s", p.nick, room.jid, exc)
            return {}
        if info.ignored:
            self._stats["source_info_entries_ignored"] += info.ignored
            log.debug("focus: ignored %d <SourceInfo> entries of %s in %s", info.ignored, p.nick, room.jid)
        return info.muted

    def _force_mute(self, now: float, room: Room, p: Participant, kind: str, value: bool) -> None:
        if p.force_muted[kind] == value:
            return
        p.force_muted[kind] = value
        self._colibri.force_mute(now, room, p)
