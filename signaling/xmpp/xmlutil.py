"""Namespaces, a prefix-free XML serializer and stanza/stream error builders.

ElementTree's own serializer invents `ns0:` prefixes, which strophe.js (it matches on tag names) cannot read;
this one declares a default namespace wherever the namespace changes, as XMPP servers do.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_PING = "urn:xmpp:ping"
NS_VERSION = "jabber:iq:version"
NS_ROSTER = "jabber:iq:roster"
NS_DATA = "jabber:x:data"
NS_XML = "http://www.w3.org/XML/1998/namespace"

IQ = f"{{{NS_CLIENT}}}iq"
MESSAGE = f"{{{NS_CLIENT}}}message"
PRESENCE = f"{{{NS_CLIENT}}}presence"
ERROR = f"{{{NS_CLIENT}}}error"
STANZA_TAGS = frozenset((IQ, MESSAGE, PRESENCE))


def split_tag(tag: str) -> tuple[str, str]:
    """`{ns}local` -> (ns, local); a tag without namespace has ns ''."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}" if ns else local


_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)


def escape_text(text: str) -> str:
    return text.translate(_TEXT_ESCAPES)


def escape_attr(text: str) -> str:
    return text.translate(_ATTR_ESCAPES)


def serialize(elem: ET.Element, default_ns: str | None = NS_CLIENT) -> str:
    """`elem` as XML text, assuming the enclosing scope has `default_ns` as its default namespace.

    Inside a TCP stream that is `jabber:client`; a WebSocket frame (RFC 7395 §3.3.3) has none, so every
    stanza there carries its own `xmlns`.
    """
    out: list[str] = []
    _write(out, elem, default_ns)
    return "".join(out)


def _write(out: list[str], elem: ET.Element, scope_ns: str | None) -> None:
    ns, local = split_tag(elem.tag)
    out.append("<")
    out.append(local)
    if ns != (scope_ns or ""):
        out.append(f' xmlns="{escape_attr(ns)}"')
    prefixes: dict[str, str] = {}
    for key, value in elem.attrib.items():
        attr_ns, attr_local = split_tag(key)
        if not attr_ns:
            out.append(f' {attr_local}="{escape_attr(value)}"')
        elif attr_ns == NS_XML:
            out.append(f' xml:{attr_local}="{escape_attr(value)}"')
        else:
            prefix = prefixes.get(attr_ns)
            if prefix is None:
                prefix = prefixes[attr_ns] = f"a{len(prefixes)}"
                out.append(f' xmlns:{prefix}="{escape_attr(attr_ns)}"')
            out.append(f' {prefix}:{attr_local}="{escape_attr(value)}"')
    if not elem.text and len(elem) == 0:
        out.append("/>")
    else:
        out.append(">")
        if elem.text:
            out.append(escape_text(elem.text))
        for child in elem:
            _write(out, child, ns)
            if child.tail:
                out.append(escape_text(child.tail))
        out.append(f"</{local}>")
    # The tail belongs to the parent's content; the parent writes it.


def stanza_error(
    condition: str, error_type: str = "cancel", text: str | None = None, extra: Iterable[ET.Element] = ()
) -> ET.Element:
    """`<error type=..><condition xmlns=stanzas/>[<text>]</error>` (RFC 6120 §8.3)."""
    err = ET.Element(ERROR, {"type": error_type})
    ET.SubElement(err, f"{{{NS_STANZAS}}}{condition}")
    if text:
        ET.SubElement(err, f"{{{NS_STANZAS}}}text").text = text
    err.extend(extra)
    return err


def error_reply(
    stanza: ET.Element, condition: str, error_type: str = "cancel", text: str | None = None
) -> ET.Element | None:
    """The error bounce of `stanza`, or None where RFC 6120 §8.3.1 forbids one (errors, iq results)."""
    kind = stanza.get("type")
    if kind == "error" or (stanza.tag == IQ and kind == "result"):
        return None
    reply = ET.Element(stanza.tag, {"type": "error"})
    for key in ("id",):
        if key in stanza.attrib:
            reply.set(key, stanza.attrib[key])
    if "from" in stanza.attrib:
        reply.set("to", stanza.attrib["from"])
    if "to" in stanza.attrib:
        reply.set("from", stanza.attrib["to"])
    if stanza.tag == IQ and len(stanza):
        reply.append(stanza[0])  # the request payload helps the client match the error
    reply.append(stanza_error(condition, error_type, text))
    return reply


def iq_result(request: ET.Element, payload: ET.Element | None = None) -> ET.Element:
    reply = ET.Element(IQ, {"type": "result", "id": request.get("id", "")})
    if "from" in request.attrib:
        reply.set("to", request.attrib["from"])
    if "to" in request.attrib:
        reply.set("from", request.attrib["to"])
    if payload is not None:
        reply.append(payload)
    return reply


def stream_error_element(condition: str, text: str | None = None) -> ET.Element:
    err = ET.Element(f"{{{NS_STREAMS}}}error")
    ET.SubElement(err, f"{{{NS_STREAM_ERRORS}}}{condition}")
    if text:
        ET.SubElement(err, f"{{{NS_STREAM_ERRORS}}}text").text = text
    return err


def stream_error_text(condition: str, text: str | None = None) -> str:
    """A stream error with the `stream` prefix declared on itself (valid in a stream and in a WS frame)."""
    body = f'<{condition} xmlns="{NS_STREAM_ERRORS}"/>'
    if text:
        body += f'<text xmlns="{NS_STREAM_ERRORS}">{escape_text(text)}</text>'
    return f'<stream:error xmlns:stream="{NS_STREAMS}">{body}</stream:error>'


def features_text(children: Iterable[ET.Element]) -> str:
    body = "".join(serialize(child, None) for child in children)
    return f'<stream:features xmlns:stream="{NS_STREAMS}">{body}</stream:features>'
