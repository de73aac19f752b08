"""Colibri2 XML codec: conference-modify, conference-modified, errors <-> model (docs/jitsi-protocol.md
2.1-2.5).

Parsing accepts an Element (as an XMPP library hands it over), or text/bytes holding the payload element
or the whole `<iq>`. Unknown attributes and elements are ignored (newer Jicofo sends extras, 2.9); input
that cannot be understood raises `Colibri2Error("bad-request", ...)` and nothing else.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar
from xml.sax.saxutils import escape, quoteattr

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
)
from colibri2.elements import all_of as _all
from colibri2.elements import child as _child
from colibri2.elements import element as _el
from colibri2.elements import local as _local
from colibri2.elements import opt_bool as _bool
from colibri2.elements import opt_int as _int
from colibri2.elements import req as _req
from colibri2.elements import reqint as _reqint
from colibri2.model import (
    Colibri2Error,
    ConferenceModified,
    ConferenceModify,
    Endpoint,
    ForceMute,
    IceUdpTransport,
    Media,
    MediaSource,
    Parameter,
    Reason,
    Relay,
    Sctp,
    SourceDesc,
    SsrcGroupDesc,
    Transport,
    bad_request,
)

NS = "jitsi:colibri2"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_COLIBRI = "http://jitsi.org/protocol/colibri"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_CLIENT = "jabber:client"

#: Largest payload accepted as text (the XMPP server normally limits stanzas before this).
MAX_XML_BYTES = 512 * 1024

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_T = TypeVar("_T")


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


# ---------------------------------------------------------------------------------------------------------
# attribute helpers


def _str(el: ET.Element, name: str, *, required: bool = False) -> str | None:
    value = el.get(name)
    if value is None and required:
        raise bad_request(f"<{_local(el.tag)}> lacks the '{name}' attribute")
    return value


def _flag(el: ET.Element, name: str) -> bool:
    return _bool(el, name) or False


# ---------------------------------------------------------------------------------------------------------
# parsing


def _to_element(data: ET.Element | str | bytes) -> ET.Element:
    if isinstance(data, ET.Element):
        return data
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_XML_BYTES:
        raise bad_request(f"payload larger than {MAX_XML_BYTES} bytes")
    # No DTDs: entity expansion is how small XML becomes large memory.
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise bad_request("DTDs are not allowed")
    try:
        return ET.fromstring(raw)
    except ET.ParseError as exc:
        raise bad_request(f"malformed XML: {exc}") from None


def _payload(data: ET.Element | str | bytes, name: str) -> ET.Element:
    el = _to_element(data)
    if _local(el.tag) == "iq":
        found = _child(el, q(NS, name))
        if found is None:
            raise bad_request(f"the IQ carries no <{name} xmlns='{NS}'>")
        el = found
    if el.tag != q(NS, name):
        raise bad_request(f"expected <{name} xmlns='{NS}'>, got {el.tag}")
    return el


def _parse_media(el: ET.Element) -> Media:
    return Media(
        type=_req(el, "type"),
        payload_types=_all(el, (q(NS_RTP, "payload-type"),), parse_payload_type),
        rtp_hdrexts=_all(el, (q(NS_HDREXT, "rtp-hdrext"),), parse_rtp_hdrext),
        extmap_allow_mixed=_child(el, q(NS_HDREXT, "extmap-allow-mixed")) is not None,
    )


def _parse_ice(el: ET.Element) -> IceUdpTransport:
    return IceUdpTransport(
        ufrag=el.get("ufrag"),
        pwd=el.get("pwd"),
        candidates=_all(el, (q(NS_ICE, "candidate"),), parse_candidate),
        rtcp_mux=_child(el, q(NS_ICE, "rtcp-mux")) is not None,
        fingerprints=_all(el, (q(NS_DTLS, "fingerprint"),), lambda e: parse_fingerprint(e, allow_empty=True)),
        web_sockets=_all(el, (q(NS_COLIBRI, "web-socket"),), lambda e: _req(e, "url")),
        ice_generation=_int(el, "ice-generation", _U32),
    )


def _parse_transport(el: ET.Element) -> Transport:
    ice = _child(el, q(NS_ICE, "transport"))
    sctp = _child(el, q(NS, "sctp"))
    return Transport(
        ice_controlling=_bool(el, "ice-controlling"),
        use_unique_port=_bool(el, "use-unique-port"),
        ice_restart=_bool(el, "ice-restart"),
        initiator=_bool(el, "initiator"),
        ice=_parse_ice(ice) if ice is not None else None,
        sctp=Sctp(_int(sctp, "port", _U16), sctp.get("role")) if sctp is not None else None,
    )


def _parse_source(el: ET.Element) -> SourceDesc:
    return SourceDesc(
        ssrc=_int(el, "ssrc", _U32),
        name=el.get("name"),
        video_type=el.get("videoType"),
        rid=el.get("rid"),
        # Jingle writes the msid parameter in the source's namespace; accept the RTP one too.
        parameters=_all(el, (q(NS_SSMA, "parameter"), q(NS_RTP, "parameter")), parse_parameter),
    )


def _parse_ssrc_group(el: ET.Element) -> SsrcGroupDesc:
    return SsrcGroupDesc(
        semantics=_req(el, "semantics"),
        ssrcs=_all(el, (q(NS_SSMA, "source"),), lambda e: _reqint(e, "ssrc", _U32)),
    )


def _parse_media_source(el: ET.Element) -> MediaSource:
    return MediaSource(
        type=_req(el, "type"),
        id=_req(el, "id"),
        synthetic=_bool(el, "synthetic"),
        sources=_all(el, (q(NS_SSMA, "source"),), _parse_source),
        ssrc_groups=_all(el, (q(NS_SSMA, "ssrc-group"),), _parse_ssrc_group),
    )


def _parse_sources(el: ET.Element | None) -> tuple[MediaSource, ...] | None:
    if el is None:
        return None
    return _all(el, (q(NS, "media-source"),), _parse_media_source)


def _parse_endpoint(el: ET.Element) -> Endpoint:
    transport = _child(el, q(NS, "transport"))
    force_mute = _child(el, q(NS, "force-mute"))
    last_n = _child(el, q(NS, "initial-last-n"))
    endpoint_id = _req(el, "id")
    if not endpoint_id.strip():
        raise bad_request("<endpoint> has a blank id")
    return Endpoint(
        id=endpoint_id,
        create=_flag(el, "create"),
        expire=_flag(el, "expire"),
        stats_id=el.get("stats-id"),
        muc_role=el.get("muc-role"),
        medias=_all(el, (q(NS, "media"),), _parse_media),
        transport=_parse_transport(transport) if transport is not None else None,
        sources=_parse_sources(_child(el, q(NS, "sources"))),
        force_mute=(
            ForceMute(_bool(force_mute, "audio"), _bool(force_mute, "video"))
            if force_mute is not None
            else None
        ),
        capabilities=_all(el, (q(NS, "capability"),), lambda e: _req(e, "name")),
        initial_last_n=_int(last_n, "value", 2**31 - 1, lo=-1, required=True) if last_n is not None else None,
    )


def _parse_relay(el: ET.Element) -> Relay:
    transport = _child(el, q(NS, "transport"))
    endpoints = _child(el, q(NS, "endpoints"))
    return Relay(
        id=_req(el, "id"),
        mesh_id=el.get("mesh-id"),
        create=_flag(el, "create"),
        expire=_flag(el, "expire"),
        medias=_all(el, (q(NS, "media"),), _parse_media),
        transport=_parse_transport(transport) if transport is not None else None,
        endpoints=_all(endpoints, (q(NS, "endpoint"),), _parse_endpoint) if endpoints is not None else None,
    )


def _guarded(parse: Callable[[], _T]) -> _T:
    """Runs a parser so that only Colibri2Error leaves it, whatever the input."""
    try:
        return parse()
    except Colibri2Error:
        raise
    except MalformedElement as exc:
        raise bad_request(str(exc)) from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise bad_request(f"malformed colibri2 payload: {exc}") from None


def parse_conference_modify(data: ET.Element | str | bytes) -> ConferenceModify:
    """`<conference-modify>` (or an `<iq>` carrying it) -> ConferenceModify."""

    def parse() -> ConferenceModify:
        el = _payload(data, "conference-modify")
        return ConferenceModify(
            meeting_id=_req(el, "meeting-id"),
            name=el.get("name"),
            create=_flag(el, "create"),
            expire=_flag(el, "expire"),
            rtcstats_enabled=_bool(el, "rtcstats-enabled"),
            endpoints=_all(el, (q(NS, "endpoint"),), _parse_endpoint),
            relays=_all(el, (q(NS, "relay"),), _parse_relay),
        )

    return _guarded(parse)


def parse_conference_modified(data: ET.Element | str | bytes) -> ConferenceModified:
    """`<conference-modified>` (or a result `<iq>` carrying it) -> ConferenceModified."""

    def parse() -> ConferenceModified:
        el = _payload(data, "conference-modified")
        return ConferenceModified(
            endpoints=_all(el, (q(NS, "endpoint"),), _parse_endpoint),
            relays=_all(el, (q(NS, "relay"),), _parse_relay),
            sources=_parse_sources(_child(el, q(NS, "sources"))),
        )

    return _guarded(parse)


def parse_error(data: ET.Element | str | bytes) -> Colibri2Error:
    """A stanza `<error>` (or an error `<iq>`) -> the Colibri2Error it reports (the focus side's view)."""

    def parse() -> Colibri2Error:
        el = _to_element(data)
        if _local(el.tag) == "iq":
            found = next((c for c in el if _local(c.tag) == "error"), None)
            if found is None:
                raise bad_request("the IQ carries no <error>")
            el = found
        condition = next((_local(c.tag) for c in el if c.tag.startswith(f"{{{NS_STANZAS}}}")), None)
        text_el = _child(el, q(NS_STANZAS, "text"))
        if condition is None or condition == "text":
            raise bad_request("the error has no defined condition")
        reason_el = _child(el, q(NS, "error"))
        reason = None
        if reason_el is not None:
            raw = (reason_el.get("reason") or "unspecified").lower()
            try:
                reason = Reason(raw)
            except ValueError:
                raise bad_request(f"unknown colibri2 error reason {raw!r}") from None
        endpoint = _child(el, q(NS, "endpoint"))
        return Colibri2Error(
            condition,
            (text_el.text or "") if text_el is not None else "",
            reason,
            _req(endpoint, "id") if endpoint is not None else None,
        )

    return _guarded(parse)


# ---------------------------------------------------------------------------------------------------------
# building


def _true_or_none(value: bool) -> bool | None:
    return True if value else None


def _build_parameters(parent: ET.Element, ns: str, parameters: tuple[Parameter, ...]) -> None:
    for p in parameters:
        _el(parent, ns, "parameter", name=p.name, value=p.value)


def _build_media(parent: ET.Element, media: Media) -> None:
    el = _el(parent, NS, "media", type=media.type)
    for pt in media.payload_types:
        build_payload_type(el, pt)
    for ext in media.rtp_hdrexts:
        build_rtp_hdrext(el, ext)
    if media.extmap_allow_mixed:
        _el(el, NS_HDREXT, "extmap-allow-mixed")


def _build_ice(parent: ET.Element, ice: IceUdpTransport) -> None:
    el = _el(parent, NS_ICE, "transport", ufrag=ice.ufrag, pwd=ice.pwd, ice_generation=ice.ice_generation)
    for c in ice.candidates:
        build_candidate(el, c)
    if ice.rtcp_mux:
        _el(el, NS_ICE, "rtcp-mux")
    for fp in ice.fingerprints:
        build_fingerprint(el, fp)
    for url in ice.web_sockets:
        _el(el, NS_COLIBRI, "web-socket", url=url)


def _build_transport(parent: ET.Element, transport: Transport) -> None:
    el = _el(
        parent,
        NS,
        "transport",
        ice_controlling=transport.ice_controlling,
        use_unique_port=transport.use_unique_port,
        ice_restart=transport.ice_restart,
        initiator=transport.initiator,
    )
    if transport.ice is not None:
        _build_ice(el, transport.ice)
    if transport.sctp is not None:
        _el(el, NS, "sctp", port=transport.sctp.port, role=transport.sctp.role)


def _build_sources(parent: ET.Element, sources: tuple[MediaSource, ...]) -> None:
    el = _el(parent, NS, "sources")
    for ms in sources:
        ms_el = _el(el, NS, "media-source", type=ms.type, id=ms.id, synthetic=ms.synthetic)
        for s in ms.sources:
            s_el = _el(ms_el, NS_SSMA, "source", ssrc=s.ssrc, name=s.name, videoType=s.video_type, rid=s.rid)
            _build_parameters(s_el, NS_SSMA, s.parameters)
        for g in ms.ssrc_groups:
            g_el = _el(ms_el, NS_SSMA, "ssrc-group", semantics=g.semantics)
            for ssrc in g.ssrcs:
                _el(g_el, NS_SSMA, "source", ssrc=ssrc)


def _build_endpoint(parent: ET.Element, ep: Endpoint) -> None:
    el = _el(
        parent,
        NS,
        "endpoint",
        id=ep.id,
        create=_true_or_none(ep.create),
        expire=_true_or_none(ep.expire),
        stats_id=ep.stats_id,
        muc_role=ep.muc_role,
    )
    for name in ep.capabilities:
        _el(el, NS, "capability", name=name)
    for media in ep.medias:
        _build_media(el, media)
    if ep.transport is not None:
        _build_transport(el, ep.transport)
    if ep.sources is not None:
        _build_sources(el, ep.sources)
    if ep.force_mute is not None:
        _el(el, NS, "force-mute", audio=ep.force_mute.audio, video=ep.force_mute.video)
    if ep.initial_last_n is not None:
        _el(el, NS, "initial-last-n", value=ep.initial_last_n)


def _build_relay(parent: ET.Element, relay: Relay) -> None:
    el = _el(
        parent,
        NS,
        "relay",
        id=relay.id,
        mesh_id=relay.mesh_id,
        create=_true_or_none(relay.create),
        expire=_true_or_none(relay.expire),
    )
    for media in relay.medias:
        _build_media(el, media)
    if relay.transport is not None:
        _build_transport(el, relay.transport)
    if relay.endpoints is not None:
        eps = _el(el, NS, "endpoints")
        for ep in relay.endpoints:
            _build_endpoint(eps, ep)


def build_conference_modify(request: ConferenceModify) -> ET.Element:
    el = _el(
        None,
        NS,
        "conference-modify",
        meeting_id=request.meeting_id,
        name=request.name,
        create=_true_or_none(request.create),
        expire=_true_or_none(request.expire),
        rtcstats_enabled=request.rtcstats_enabled,
    )
    for ep in request.endpoints:
        _build_endpoint(el, ep)
    for relay in request.relays:
        _build_relay(el, relay)
    return el


def build_conference_modified(response: ConferenceModified) -> ET.Element:
    el = _el(None, NS, "conference-modified")
    for ep in response.endpoints:
        _build_endpoint(el, ep)
    for relay in response.relays:
        _build_relay(el, relay)
    if response.sources is not None:
        _build_sources(el, response.sources)
    return el


def build_error(error: Colibri2Error) -> ET.Element:
    """The stanza `<error>` of the IQ error reply (2.5): condition, text, colibri2 reason, endpoint."""
    el = _el(None, NS_CLIENT, "error", type=error.type)
    _el(el, NS_STANZAS, error.condition)
    _el(el, NS_STANZAS, "text").text = error.text
    if error.reason is not None:
        _el(el, NS, "error", reason=error.reason.value)
    if error.endpoint_id is not None:
        _el(el, NS, "endpoint", id=error.endpoint_id)
    return el


def to_string(el: ET.Element) -> str:
    """Serializes with a default `xmlns` wherever the namespace changes (how XMPP peers write it)."""
    out: list[str] = []
    _write(el, "", out)
    return "".join(out)


def _write(el: ET.Element, parent_ns: str, out: list[str]) -> None:
    ns, _, name = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
    out.append(f"<{name}")
    if ns != parent_ns:
        out.append(f" xmlns={quoteattr(ns)}")
    for key, value in el.attrib.items():
        out.append(f" {key}={quoteattr(value)}")
    if len(el) == 0 and not el.text:
        out.append("/>")
        return
    out.append(">")
    if el.text:
        out.append(escape(el.text))
    for child in el:
        _write(child, ns, out)
    out.append(f"</{name}>")
