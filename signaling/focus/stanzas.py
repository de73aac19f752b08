"""Builders and readers for the stanzas the focus sends and receives (ElementTree, jabber:client)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

NS_CLIENT = "jabber:client"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_DATA = "jabber:x:data"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_NICK = "http://jabber.org/protocol/nick"
NS_PING = "urn:xmpp:ping"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NS_HEALTHCHECK = "http://jitsi.org/protocol/healthcheck"
NS_JITMEET_AUDIO = "http://jitsi.org/jitmeet/audio"
NS_JITMEET_VIDEO = "http://jitsi.org/jitmeet/video"
NS_JITMEET_DESKTOP = "http://jitsi.org/jitmeet/desktop"
#: A moderated meeting (Jitsi's "AV moderation", which Jitsi runs through a Prosody component's JSON
#: messages): here an IQ a moderator sends the focus, and the focus's notices to participants.
NS_AV_MODERATION = "urn:xmpp:sluice:av-moderation:0"
NS_COLIBRI2 = "jitsi:colibri2"
#: The client's disco feature for Jingle sources as JSON (Jicofo's default when a client says nothing).
FEATURE_JSON_SOURCES = "http://jitsi.org/json-encoded-sources"

# RFC 6120 8.3.2: the error type that goes with each condition used here.
ERROR_TYPES = {
    "bad-request": "modify",
    "item-not-found": "cancel",
    "not-allowed": "cancel",
    "not-acceptable": "modify",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "feature-not-implemented": "cancel",
    "internal-server-error": "wait",
    "conflict": "cancel",
    "remote-server-timeout": "wait",
}


def same_jid(a: str, b: str) -> bool:
    """Equal as JIDs: local part and domain case-insensitive, resource exact."""
    return bare(a) == bare(b) and resource(a) == resource(b)


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def iq(iq_type: str, to: str, iq_id: str, payload: ET.Element | None = None) -> ET.Element:
    el = ET.Element(q(NS_CLIENT, "iq"), {"type": iq_type, "to": to, "id": iq_id})
    if payload is not None:
        el.append(payload)
    return el


def result(request: ET.Element, payload: ET.Element | None = None) -> ET.Element:
    return iq("result", request.get("from", ""), request.get("id", ""), payload)


def error_element(condition: str, text: str | None = None, *extra: ET.Element) -> ET.Element:
    err = ET.Element(q(NS_CLIENT, "error"), {"type": ERROR_TYPES.get(condition, "cancel")})
    ET.SubElement(err, q(NS_STANZAS, condition))
    if text:
        ET.SubElement(err, q(NS_STANZAS, "text")).text = text
    err.extend(extra)
    return err


def error(request: ET.Element, condition: str, text: str | None = None, *extra: ET.Element) -> ET.Element:
    """The IQ error reply to `request` (RFC 6120 8.3)."""
    return iq("error", request.get("from", ""), request.get("id", ""), error_element(condition, text, *extra))


def error_condition(stanza: ET.Element) -> str | None:
    """The defined condition of an error stanza (`item-not-found`, ...), if any."""
    err = stanza.find(q(NS_CLIENT, "error"))
    if err is None:
        err = stanza.find("error")
    if err is None:
        return None
    return next(
        (local(c.tag) for c in err if c.tag.startswith(f"{{{NS_STANZAS}}}") and local(c.tag) != "text"), None
    )


def presence(to: str, presence_type: str | None = None, *children: ET.Element) -> ET.Element:
    el = ET.Element(q(NS_CLIENT, "presence"), {"to": to})
    if presence_type is not None:
        el.set("type", presence_type)
    el.extend(children)
    return el


def muc_join() -> ET.Element:
    """The `<x xmlns=muc>` of a MUC join, asking for no history."""
    x = ET.Element(q(NS_MUC, "x"))
    ET.SubElement(x, q(NS_MUC, "history"), {"maxstanzas": "0"})
    return x


def bare(jid: str) -> str:
    return jid.partition("/")[0].lower()


def resource(jid: str) -> str:
    return jid.partition("/")[2]


def data_form(form_type: str, fields: dict[str, str]) -> ET.Element:
    """A submitted XEP-0004 form with FORM_TYPE first."""
    x = ET.Element(q(NS_DATA, "x"), {"type": "submit"})
    for var, value in {"FORM_TYPE": form_type, **fields}.items():
        field = ET.SubElement(x, q(NS_DATA, "field"), {"var": var})
        ET.SubElement(field, q(NS_DATA, "value")).text = value
    return x


def form_value(query: ET.Element, var: str) -> str | None:
    """The first value of field `var` in any data form under `query`."""
    for field in query.iter(q(NS_DATA, "field")):
        if field.get("var") == var:
            value = field.find(q(NS_DATA, "value"))
            return value.text if value is not None else None
    return None
