"""The compact JSON sources of `<json-message xmlns="http://jitsi.org/jitmeet">` (docs/jitsi-protocol.md 5.4).

    {"sources": {owner: [videoSources, videoGroups, audioSources, audioGroups?]}}

A source is `{"s": ssrc, "n": name, "m": msid, "v": "d"}` ("v" only for desktop video), a group
`["s"|"f", ssrc, ...]` (s = SIM, f = FID). Owner is an endpoint id or `jvb`. Only what this form can say
round-trips: other parameters and ssrc-info owners are carried by the owner key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from signaling.jingle.model import EndpointSources, JingleError, Parameter, Source, SourcesMap, SsrcGroup

_GROUP_LETTERS = {"SIM": "s", "FID": "f"}
_GROUP_NAMES = {v: k for k, v in _GROUP_LETTERS.items()}
_U32 = 0xFFFF_FFFF

#: Largest json-message accepted (the XMPP server limits stanzas before this).
MAX_JSON_BYTES = 256 * 1024


def _encode_source(source: Source) -> dict[str, Any]:
    out: dict[str, Any] = {"s": source.ssrc}
    if source.name is not None:
        out["n"] = source.name
    if source.msid is not None:
        out["m"] = source.msid
    if source.video_type == "desktop":
        out["v"] = "d"
    return out


def _encode_group(group: SsrcGroup) -> list[Any]:
    letter = _GROUP_LETTERS.get(group.semantics)
    if letter is None:
        raise ValueError(f"ssrc-group {group.semantics!r} has no compact JSON form")
    return [letter, *group.ssrcs]


def encode(sources: Iterable[tuple[str, EndpointSources]]) -> str:
    """(owner, sources) pairs -> the json-message text."""
    body: dict[str, list[list[Any]]] = {}
    for owner, es in sources:
        entry: list[list[Any]] = [
            [_encode_source(s) for s in es.video],
            [_encode_group(g) for g in es.video_groups],
            [_encode_source(s) for s in es.audio],
        ]
        if es.audio_groups:
            entry.append([_encode_group(g) for g in es.audio_groups])
        body[owner] = entry
    return json.dumps({"sources": body}, separators=(",", ":"))


def _ssrc(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U32:
        raise JingleError(f"{where}: ssrc {value!r} is not a 32-bit unsigned integer")
    return value


def _decode_source(raw: object, owner: str, kind: str) -> Source:
    where = f"json-message sources of {owner!r} ({kind})"
    if not isinstance(raw, dict):
        raise JingleError(f"{where}: a source is not an object")
    ssrc = _ssrc(raw.get("s"), where)
    name, msid, vt = raw.get("n"), raw.get("m"), raw.get("v")
    for key, value in (("n", name), ("m", msid), ("v", vt)):
        if value is not None and not isinstance(value, str):
            raise JingleError(f"{where}: '{key}' is not a string")
    assert name is None or isinstance(name, str)
    assert msid is None or isinstance(msid, str)
    if vt not in (None, "d"):
        raise JingleError(f"{where}: unknown video type {vt!r}")
    return Source(
        ssrc=ssrc,
        name=name,
        video_type="desktop" if vt == "d" else None,
        parameters=(Parameter("msid", msid),) if msid is not None else (),
        owner=owner,
    )


def _decode_group(raw: object, owner: str) -> SsrcGroup:
    where = f"json-message groups of {owner!r}"
    if not isinstance(raw, list) or not raw:
        raise JingleError(f"{where}: a group is not a non-empty array")
    letter, *ssrcs = raw
    semantics = _GROUP_NAMES.get(letter) if isinstance(letter, str) else None
    if semantics is None:
        raise JingleError(f"{where}: unknown group semantics {letter!r}")
    return SsrcGroup(semantics, tuple(_ssrc(s, where) for s in ssrcs))


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise JingleError(f"json-message: {what} is not an array")
    return value


def decode(text: str) -> SourcesMap:
    """The json-message text -> (owner, sources) pairs; JingleError naming what is wrong."""
    if len(text.encode()) > MAX_JSON_BYTES:
        raise JingleError(f"json-message larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JingleError(f"json-message is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict):
        raise JingleError("json-message has no 'sources' object")
    out: list[tuple[str, EndpointSources]] = []
    for owner, entry in doc["sources"].items():
        parts = _list(entry, f"sources of {owner!r}")
        if len(parts) not in (3, 4):
            raise JingleError(f"json-message: sources of {owner!r} have {len(parts)} parts, not 3 or 4")
        video, video_groups, audio = (_list(p, f"a part of {owner!r}") for p in parts[:3])
        audio_groups = _list(parts[3], f"a part of {owner!r}") if len(parts) == 4 else []
        out.append(
            (
                owner,
                EndpointSources(
                    audio=tuple(_decode_source(s, owner, "audio") for s in audio),
                    audio_groups=tuple(_decode_group(g, owner) for g in audio_groups),
                    video=tuple(_decode_source(s, owner, "video") for s in video),
                    video_groups=tuple(_decode_group(g, owner) for g in video_groups),
                ),
            )
        )
    return tuple(out)
