"""XEP-0215 External Service Discovery (`urn:xmpp:extdisco:2`): the `<services/>` and `<credentials/>`
queries, answered from signaling/turn.py's service list.

Sans-IO and pure: `answer(query, services)` returns the result payload or raises `ExtDiscoError` with the
stanza error to send. As Prosody's mod_external_services does, `<services/>` carries the credentials of the
restricted services itself (Jitsi clients read them there), an optional `type` filters it, and
`<credentials/>` answers the restricted services matching each requested `type` and `host` (and `port`
when given), nothing for a request that matches none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from signaling.turn import Service, xep0082

NS_EXTDISCO = "urn:xmpp:extdisco:2"
SERVICES = f"{{{NS_EXTDISCO}}}services"
CREDENTIALS = f"{{{NS_EXTDISCO}}}credentials"
_SERVICE = f"{{{NS_EXTDISCO}}}service"
#: `<service/>` children one `<credentials/>` request may name; more is a bad request.
MAX_REQUESTED = 16
_TYPES = ("stun", "stuns", "turn", "turns")


class ExtDiscoError(Exception):
    """A query answered with a stanza error (`condition`, `type`, `text`)."""

    def __init__(self, condition: str, error_type: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.error_type = error_type
        self.text = text


def is_query(payload: ET.Element) -> bool:
    return payload.tag in (SERVICES, CREDENTIALS)


def answer(query: ET.Element, services: Sequence[Service]) -> ET.Element:
    """The result payload for a `<services/>` or `<credentials/>` query (the IQ's one child)."""
    if query.tag == SERVICES:
        wanted = query.get("type")
        if wanted is not None and wanted not in _TYPES:
            raise ExtDiscoError("bad-request", "modify", f"unknown service type {wanted[:16]!r}")
        return _element(SERVICES, [s for s in services if wanted is None or s.type == wanted])
    if query.tag != CREDENTIALS:
        raise ExtDiscoError("bad-request", "modify", "not an external service discovery query")
    asked = [child for child in query if child.tag == _SERVICE]
    if not asked or len(asked) > MAX_REQUESTED:
        raise ExtDiscoError(
            "bad-request", "modify", f"name 1 to {MAX_REQUESTED} services, each with type and host"
        )
    keys: set[tuple[str, str, int | None]] = set()
    for child in asked:
        kind, host, port = child.get("type"), child.get("host"), child.get("port")
        if not kind or not host:
            raise ExtDiscoError("bad-request", "modify", "each service needs type and host")
        if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
            raise ExtDiscoError("bad-request", "modify", "a port is 1..65535")
        keys.add((kind, host, int(port) if port is not None else None))
    chosen = [
        s
        for s in services
        if s.restricted and ((s.type, s.host, s.port) in keys or (s.type, s.host, None) in keys)
    ]
    return _element(CREDENTIALS, chosen)


def _element(tag: str, services: Sequence[Service]) -> ET.Element:
    out = ET.Element(tag)
    for s in services:
        attrs = {"type": s.type, "host": s.host, "port": str(s.port), "transport": s.transport}
        if s.username is not None:
            attrs["username"] = s.username
        if s.password is not None:
            attrs["password"] = s.password
        if s.expires is not None:
            attrs["expires"] = xep0082(s.expires)
        if s.restricted:
            attrs["restricted"] = "1"
        ET.SubElement(out, _SERVICE, attrs)
    return out
