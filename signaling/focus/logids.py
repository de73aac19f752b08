"""`extra` for the focus's log lines about a room or one participant: JSON logs make these fields
(sluice/logs.py). `conference` is the meeting-id, which the bridge's lines carry too."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signaling.focus.model import Room


def log_ids(room: Room, nick: str | None = None) -> dict[str, str]:
    ids = {"room": room.jid}
    if room.meeting_id is not None:
        ids["conference"] = room.meeting_id
    if nick is not None:
        ids["endpoint"] = nick
    return ids
