"""Jingle XML codec: `<jingle xmlns="urn:xmpp:jingle:1">` <-> `signaling.jingle.model.Jingle`.

Parsing takes the `<jingle>` element or the `<iq>` carrying it. Unknown attributes and elements are ignored
(clients add extras over time); input that cannot be understood raises `JingleError` naming the element and
the attribute at fault, and nothing else.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TypeVar, cast

from colibri2.elements import (
    MalformedElement,
    build_candidate,
    build_fingerprint,
    build_payload_type,
    build_rtp_hdrext,
    parse_candidate,
    parse_fingerprint,
    parse_parameter,
    parse_payload_type,
    parse_rtp_hdrext,
    q,
)
from colibri2.elements import all_of as _all
from colibri2.elements import child as _child
from colibri2.elements import element as _el
from colibri2.elements import local as _local
from colibri2.elements import opt_bool as _bool
from colibri2.elements import opt_int as _int
from colibri2.elements import req as _req
from colibri2.elements import reqint as _reqint
from signaling.jingle import sources as json_sources
from signaling.jingle.model import (
    ACTIONS,
    Action,
    BridgeSession,
    Content,
    Description,
    Group,
    IceTransport,
    Jingle,
    JingleError,
    Reason,
    SctpMap,
    Source,
    SsrcGroup,
    StartMuted,
)

NS_JINGLE = "urn:xmpp:jingle:1"
NS_JINGLE_ERRORS = "urn:xmpp:jingle:errors:1"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_SCTP = "urn:xmpp:jingle:transports:dtls-sctp:1"
NS_GROUPING = "urn:xmpp:jingle:apps:grouping:0"
NS_COLIBRI = "http://jitsi.org/protocol/colibri"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NS_JITMEET = "http://jitsi.org/jitmeet"
NS_START_MUTED = "http://jitsi.org/jitmeet/start-muted"

#: XEP-0166 7.4 reason conditions.
REASONS = frozenset(
    {
        "alternative-session",
        "busy",
        "cancel",
        "connectivity-error",
        "decline",
        "expired",
        "failed-application",
        "failed-transport",
        "general-error",
        "gone",
        "incompatible-parameters",
        "media-error",
        "security-error",
        "success",
        "timeout",
        "unsupported-applications",
        "unsupported-transports",
    }
)

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------------------
# parsing


def _parse_source(el: ET.Element) -> Source:
    info = _child(el, q(NS_JITMEET, "ssrc-info"))
    return Source(
        ssrc=_reqint(el, "ssrc", _U32),
        name=el.get("name"),
        video_type=el.get("videoType"),
        # lib-jitsi-meet writes the msid parameter in the source's namespace; older code in the RTP one.
        parameters=tuple(
            parse_parameter(p) for p in el if p.tag in (q(NS_SSMA, "parameter"), q(NS_RTP, "parameter"))
        ),
        owner=_req(info, "owner") if info is not None else None,
    )


def _parse_group(el: ET.Element) -> SsrcGroup:
    semantics = _req(el, "semantics")
    ssrcs = _all(el, q(NS_SSMA, "source"), lambda e: _reqint(e, "ssrc", _U32))
    if not ssrcs:
        raise JingleError(f"<ssrc-group semantics='{semantics}'> has no <source>")
    return SsrcGroup(semantics, ssrcs)


def _parse_description(el: ET.Element) -> Description:
    return Description(
        media=_req(el, "media"),
        maxptime=_int(el, "maxptime", _U32),
        payload_types=_all(el, q(NS_RTP, "payload-type"), parse_payload_type),
        rtp_hdrexts=_all(el, q(NS_HDREXT, "rtp-hdrext"), parse_rtp_hdrext),
        extmap_allow_mixed=_child(el, q(NS_HDREXT, "extmap-allow-mixed")) is not None,
        rtcp_mux=_child(el, q(NS_RTP, "rtcp-mux")) is not None,
        sources=_all(el, q(NS_SSMA, "source"), _parse_source),
        ssrc_groups=_all(el, q(NS_SSMA, "ssrc-group"), _parse_group),
    )


def _parse_transport(el: ET.Element) -> IceTransport:
    sctpmap = _child(el, q(NS_SCTP, "sctpmap"))
    return IceTransport(
        ufrag=el.get("ufrag"),
        pwd=el.get("pwd"),
        candidates=_all(el, q(NS_ICE, "candidate"), parse_candidate),
        rtcp_mux=_child(el, q(NS_ICE, "rtcp-mux")) is not None,
        fingerprints=_all(el, q(NS_DTLS, "fingerprint"), parse_fingerprint),
        web_sockets=_all(el, q(NS_COLIBRI, "web-socket"), lambda e: _req(e, "url")),
        ice_generation=_int(el, "ice-generation", _U32),
        sctpmap=(
            SctpMap(
                _reqint(sctpmap, "number", _U16), _req(sctpmap, "protocol"), _int(sctpmap, "streams", _U16)
            )
            if sctpmap is not None
            else None
        ),
    )


def _parse_content(el: ET.Element) -> Content:
    description = _child(el, q(NS_RTP, "description"))
    transport = _child(el, q(NS_ICE, "transport"))
    if transport is None and any(_local(c.tag) == "transport" for c in el):
        other = next(c.tag for c in el if _local(c.tag) == "transport")
        raise JingleError(f"<content name='{el.get('name')}'> has an unsupported transport {other}")
    return Content(
        name=_req(el, "name"),
        creator=el.get("creator"),
        senders=el.get("senders"),
        description=_parse_description(description) if description is not None else None,
        transport=_parse_transport(transport) if transport is not None else None,
    )


def _parse_group_el(el: ET.Element) -> Group:
    return Group(_req(el, "semantics"), _all(el, q(NS_GROUPING, "content"), lambda e: _req(e, "name")))


def _parse_reason(el: ET.Element) -> Reason:
    text_el = _child(el, q(NS_JINGLE, "text"))
    conditions = [
        _local(c.tag) for c in el if c.tag.startswith(f"{{{NS_JINGLE}}}") and _local(c.tag) != "text"
    ]
    if not conditions:
        raise JingleError("<reason> has no condition element")
    if conditions[0] not in REASONS:
        raise JingleError(f"<reason> has an unknown condition <{conditions[0]}>")
    return Reason(conditions[0], text_el.text or "" if text_el is not None else None)


def _parse_bridge_session(el: ET.Element) -> BridgeSession:
    return BridgeSession(
        id=el.get("id"),
        region=el.get("region"),
        restart=_bool(el, "restart"),
        ice_restart=_bool(el, "ice-restart"),
    )


_KNOWN = {
    q(NS_JINGLE, "content"),
    q(NS_GROUPING, "group"),
    q(NS_FOCUS, "bridge-session"),
    q(NS_JITMEET, "json-message"),
    q(NS_JINGLE, "reason"),
    q(NS_START_MUTED, "startmuted"),
}


def find_jingle(stanza: ET.Element) -> ET.Element | None:
    """The `<jingle>` child of an `<iq>` (or the element itself when it is one)."""
    if stanza.tag == q(NS_JINGLE, "jingle"):
        return stanza
    return _child(stanza, q(NS_JINGLE, "jingle"))


def parse_jingle(data: ET.Element) -> Jingle:
    """`<jingle>` (or an `<iq>` carrying it) -> Jingle; JingleError on anything malformed."""
    el = find_jingle(data)
    if el is None:
        raise JingleError(f"no <jingle xmlns='{NS_JINGLE}'> in <{_local(data.tag)}>")
    try:
        return _parse(el)
    except JingleError:
        raise
    except MalformedElement as exc:
        raise JingleError(str(exc)) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise JingleError(f"malformed Jingle: {exc}") from None


def _parse(el: ET.Element) -> Jingle:
    action = _req(el, "action")
    if action not in ACTIONS:
        raise JingleError(f"<jingle> has an unknown action {action!r}")
    sid = _req(el, "sid")
    if not sid:
        raise JingleError("<jingle> has an empty sid")
    contents = _all(el, q(NS_JINGLE, "content"), _parse_content)
    names = [c.name for c in contents]
    if len(set(names)) != len(names):
        raise JingleError(f"<jingle> has duplicate content names {names}")
    json_el = _child(el, q(NS_JITMEET, "json-message"))
    reason = _child(el, q(NS_JINGLE, "reason"))
    bridge_session = _child(el, q(NS_FOCUS, "bridge-session"))
    start_muted = _child(el, q(NS_START_MUTED, "startmuted"))
    return Jingle(
        action=cast(Action, action),
        sid=sid,
        initiator=el.get("initiator"),
        responder=el.get("responder"),
        contents=contents,
        groups=_all(el, q(NS_GROUPING, "group"), _parse_group_el),
        bridge_session=_parse_bridge_session(bridge_session) if bridge_session is not None else None,
        json_sources=json_sources.decode(json_el.text or "") if json_el is not None else None,
        reason=_parse_reason(reason) if reason is not None else None,
        start_muted=(
            StartMuted(_bool(start_muted, "audio"), _bool(start_muted, "video"))
            if start_muted is not None
            else None
        ),
        extra=tuple(c.tag for c in el if c.tag not in _KNOWN),
    )


# ---------------------------------------------------------------------------------------------------------
# building


def _build_source(parent: ET.Element, source: Source) -> None:
    el = _el(parent, NS_SSMA, "source", ssrc=source.ssrc, name=source.name, videoType=source.video_type)
    for p in source.parameters:
        _el(el, NS_SSMA, "parameter", name=p.name, value=p.value)
    if source.owner is not None:
        _el(el, NS_JITMEET, "ssrc-info", owner=source.owner)


def _build_group(parent: ET.Element, group: SsrcGroup) -> None:
    el = _el(parent, NS_SSMA, "ssrc-group", semantics=group.semantics)
    for ssrc in group.ssrcs:
        _el(el, NS_SSMA, "source", ssrc=ssrc)


def _build_description(parent: ET.Element, d: Description) -> None:
    el = _el(parent, NS_RTP, "description", media=d.media, maxptime=d.maxptime)
    for pt in d.payload_types:
        build_payload_type(el, pt)
    for ext in d.rtp_hdrexts:
        build_rtp_hdrext(el, ext)
    if d.extmap_allow_mixed:
        _el(el, NS_HDREXT, "extmap-allow-mixed")
    if d.rtcp_mux:
        _el(el, NS_RTP, "rtcp-mux")
    for s in d.sources:
        _build_source(el, s)
    for g in d.ssrc_groups:
        _build_group(el, g)


def _build_transport(parent: ET.Element, t: IceTransport) -> None:
    el = _el(parent, NS_ICE, "transport", ufrag=t.ufrag, pwd=t.pwd, ice_generation=t.ice_generation)
    for c in t.candidates:
        build_candidate(el, c)
    if t.rtcp_mux:
        _el(el, NS_ICE, "rtcp-mux")
    for fp in t.fingerprints:
        build_fingerprint(el, fp)
    for url in t.web_sockets:
        _el(el, NS_COLIBRI, "web-socket", url=url)
    if t.sctpmap is not None:
        m = t.sctpmap
        _el(el, NS_SCTP, "sctpmap", number=m.number, protocol=m.protocol, streams=m.streams)


def build_jingle(j: Jingle) -> ET.Element:
    """Jingle -> `<jingle xmlns="urn:xmpp:jingle:1">` (to be put in an `<iq type="set">`)."""
    el = _el(
        None, NS_JINGLE, "jingle", action=j.action, initiator=j.initiator, responder=j.responder, sid=j.sid
    )
    for c in j.contents:
        c_el = _el(el, NS_JINGLE, "content", creator=c.creator, name=c.name, senders=c.senders)
        if c.description is not None:
            _build_description(c_el, c.description)
        if c.transport is not None:
            _build_transport(c_el, c.transport)
    for g in j.groups:
        g_el = _el(el, NS_GROUPING, "group", semantics=g.semantics)
        for name in g.contents:
            _el(g_el, NS_GROUPING, "content", name=name)
    if j.bridge_session is not None:
        b = j.bridge_session
        _el(
            el,
            NS_FOCUS,
            "bridge-session",
            id=b.id,
            region=b.region,
            restart=b.restart,
            ice_restart=b.ice_restart,
        )
    if j.json_sources is not None:
        _el(el, NS_JITMEET, "json-message").text = json_sources.encode(j.json_sources)
    if j.reason is not None:
        r_el = _el(el, NS_JINGLE, "reason")
        _el(r_el, NS_JINGLE, j.reason.condition)
        if j.reason.text is not None:
            _el(r_el, NS_JINGLE, "text").text = j.reason.text
    if j.start_muted is not None:
        _el(el, NS_START_MUTED, "startmuted", audio=j.start_muted.audio, video=j.start_muted.video)
    return el


def unknown_session_error() -> ET.Element:
    """The `<error>` for a Jingle request naming a sid we do not know (XEP-0166 7.3)."""
    err = ET.Element("{jabber:client}error", {"type": "cancel"})
    ET.SubElement(err, "{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found")
    ET.SubElement(err, q(NS_JINGLE_ERRORS, "unknown-session"))
    return err
