"""Mute (docs/jitsi-protocol.md 5.5): a participant mutes itself, a moderator mutes others; the bridge
enforces it.

A mute request from a moderator is forwarded to its target and becomes a Colibri2 force-mute on the bridge;
the target lifts it by unmuting itself (its presence goes from muted to unmuted).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from signaling.focus import stanzas
from signaling.focus.colibri import Colibri
from signaling.focus.model import Participant, Room, Shared, find_participant
from signaling.focus.stanzas import (
    NS_CLIENT,
    NS_JITMEET_AUDIO,
    NS_JITMEET_DESKTOP,
    NS_JITMEET_VIDEO,
    bare,
    q,
    resource,
)

MUTE_NAMESPACES = {NS_JITMEET_AUDIO: "audio", NS_JITMEET_VIDEO: "video", NS_JITMEET_DESKTOP: "video"}
MUTE_TAGS = frozenset(q(ns, "mute") for ns in MUTE_NAMESPACES)


class Mute:
    """Mute requests, self-unmutes seen in presence, and the force-mute they put on the bridge."""

    def __init__(self, shared: Shared, colibri: Colibri) -> None:
        self._shared = shared
        self._stats = shared.stats
        self._out = shared.out
        self._colibri = colibri

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
        self._out.send(stanzas.result(request))
        self._stats["mutes"] += 1
        if actor is not target:
            forward = ET.Element(
                payload.tag, {"jid": room.occupant(target.nick), "actor": room.occupant(actor.nick)}
            )
            forward.text = "true" if mute else "false"
            self._out.fire(now, "set", room.occupant(target.nick), forward)
        self._force_mute(now, room, target, kind, mute)

    def handle_presence(self, now: float, room: Room, p: Participant, el: ET.Element) -> None:
        """A participant that unmutes itself (presence true -> false) is no longer force-muted."""
        for kind, tag in (
            ("audio", q(NS_JITMEET_AUDIO, "audiomuted")),
            ("video", q(NS_JITMEET_VIDEO, "videomuted")),
        ):
            found = el.find(tag)
            if found is None:
                found = el.find(q(NS_CLIENT, tag.rpartition("}")[2]))
            if found is None:
                continue
            muted = (found.text or "").strip().lower() == "true"
            before = p.audio_muted if kind == "audio" else p.video_muted
            if kind == "audio":
                p.audio_muted = muted
            else:
                p.video_muted = muted
            if before and not muted and p.force_muted[kind]:
                self._force_mute(now, room, p, kind, False)

    def _force_mute(self, now: float, room: Room, p: Participant, kind: str, value: bool) -> None:
        if p.force_muted[kind] == value:
            return
        p.force_muted[kind] = value
        self._colibri.force_mute(now, room, p)
