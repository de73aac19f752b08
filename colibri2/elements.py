"""The Jingle elements Colibri2 borrows, with one parser and one builder for both codecs.

Colibri2 (colibri2/xml.py) and Jingle (signaling/jingle/xml.py) carry the same `<payload-type>`
(XEP-0167, with XEP-0293 `<rtcp-fb>`), `<rtp-hdrext>` (XEP-0294), `<candidate>` (XEP-0176) and
`<fingerprint>` (XEP-0320) elements. Malformed input raises `MalformedElement`, which each codec turns into
its own error (Colibri2's `bad-request`, JingleError) with the same text.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import TypeVar

from colibri2.model import Candidate, Fingerprint, Parameter, PayloadType, RtcpFb, RtpHdrExt

NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"

U8 = 0xFF
U16 = 0xFFFF
U32 = 0xFFFF_FFFF
_T = TypeVar("_T")


class MalformedElement(ValueError):
    """An element or attribute that cannot be understood; the text names it."""


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


# ---- attributes and children


def req(el: ET.Element, name: str) -> str:
    value = el.get(name)
    if value is None:
        raise MalformedElement(f"<{local(el.tag)}> lacks the '{name}' attribute")
    return value


def opt_int(el: ET.Element, name: str, hi: int, *, lo: int = 0, required: bool = False) -> int | None:
    value = el.get(name)
    if value is None:
        if required:
            raise MalformedElement(f"<{local(el.tag)}> lacks the '{name}' attribute")
        return None
    try:
        number = int(value.strip(), 10)
    except ValueError:
        raise MalformedElement(f"<{local(el.tag)} {name}> is not an integer: {value!r}") from None
    if not lo <= number <= hi:
        raise MalformedElement(f"<{local(el.tag)} {name}> is out of range: {number}")
    return number


def reqint(el: ET.Element, name: str, hi: int, *, lo: int = 0) -> int:
    value = opt_int(el, name, hi, lo=lo, required=True)
    assert value is not None  # opt_int raised otherwise
    return value


def opt_bool(el: ET.Element, name: str) -> bool | None:
    value = el.get(name)
    if value is None:
        return None
    low = value.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise MalformedElement(f"<{local(el.tag)} {name}> is not a boolean: {value!r}")


def children(el: ET.Element, *tags: str) -> Iterator[ET.Element]:
    return (c for c in el if c.tag in tags)


def child(el: ET.Element, *tags: str) -> ET.Element | None:
    return next(children(el, *tags), None)


def all_of(el: ET.Element, tags: str | tuple[str, ...], parse: Callable[[ET.Element], _T]) -> tuple[_T, ...]:
    return tuple(parse(c) for c in children(el, *((tags,) if isinstance(tags, str) else tags)))


# ---- the shared elements


def parse_parameter(el: ET.Element) -> Parameter:
    return Parameter(req(el, "name"), el.get("value"))


def parse_payload_type(el: ET.Element) -> PayloadType:
    return PayloadType(
        id=reqint(el, "id", 127),
        name=el.get("name"),
        clockrate=opt_int(el, "clockrate", U32),
        channels=opt_int(el, "channels", U8),
        parameters=all_of(el, q(NS_RTP, "parameter"), parse_parameter),
        rtcp_fbs=all_of(el, q(NS_RTCP_FB, "rtcp-fb"), lambda e: RtcpFb(req(e, "type"), e.get("subtype"))),
    )


def parse_rtp_hdrext(el: ET.Element) -> RtpHdrExt:
    return RtpHdrExt(reqint(el, "id", 255), req(el, "uri"))


def parse_candidate(el: ET.Element) -> Candidate:
    return Candidate(
        component=reqint(el, "component", 256, lo=1),
        foundation=req(el, "foundation"),
        generation=opt_int(el, "generation", U32),
        id=el.get("id"),
        ip=req(el, "ip"),
        network=opt_int(el, "network", U32),
        port=reqint(el, "port", U16),
        priority=reqint(el, "priority", U32),
        protocol=req(el, "protocol"),
        type=req(el, "type"),
        rel_addr=el.get("rel-addr"),
        rel_port=opt_int(el, "rel-port", U16),
        tcptype=el.get("tcptype"),
    )


def parse_fingerprint(el: ET.Element, *, allow_empty: bool = False) -> Fingerprint:
    value = (el.text or "").strip()
    if not value and not allow_empty:
        raise MalformedElement("<fingerprint> is empty")
    return Fingerprint(
        hash=req(el, "hash"), value=value, setup=el.get("setup"), cryptex=opt_bool(el, "cryptex")
    )


def element(parent: ET.Element | None, ns: str, tag: str, /, **attrs: str | int | bool | None) -> ET.Element:
    """A new element; keyword names are attribute names with "_" for "-" (rel_addr -> rel-addr)."""
    values = {k.replace("_", "-"): _text(v) for k, v in attrs.items() if v is not None}
    if parent is None:
        return ET.Element(q(ns, tag), values)
    return ET.SubElement(parent, q(ns, tag), values)


def _text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_payload_type(parent: ET.Element, pt: PayloadType) -> None:
    el = element(
        parent, NS_RTP, "payload-type", id=pt.id, name=pt.name, clockrate=pt.clockrate, channels=pt.channels
    )
    for p in pt.parameters:
        element(el, NS_RTP, "parameter", name=p.name, value=p.value)
    for fb in pt.rtcp_fbs:
        element(el, NS_RTCP_FB, "rtcp-fb", type=fb.type, subtype=fb.subtype)


def build_rtp_hdrext(parent: ET.Element, ext: RtpHdrExt) -> None:
    element(parent, NS_HDREXT, "rtp-hdrext", id=ext.id, uri=ext.uri)


def build_candidate(parent: ET.Element, c: Candidate) -> None:
    element(
        parent,
        NS_ICE,
        "candidate",
        component=c.component,
        foundation=c.foundation,
        generation=c.generation,
        id=c.id,
        ip=c.ip,
        network=c.network,
        port=c.port,
        priority=c.priority,
        protocol=c.protocol,
        type=c.type,
        rel_addr=c.rel_addr,
        rel_port=c.rel_port,
        tcptype=c.tcptype,
    )


def build_fingerprint(parent: ET.Element, fp: Fingerprint) -> None:
    element(parent, NS_DTLS, "fingerprint", hash=fp.hash, setup=fp.setup, cryptex=fp.cryptex).text = fp.value
