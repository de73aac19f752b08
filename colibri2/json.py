"""Colibri2 JSON codec (JVB's private REST form, docs/jitsi-protocol.md 2.7): model <-> JSON-compatible dicts.

The keys are the XML attribute and element names (`meeting-id`, `payload-types`, `rtcp-fbs`, ...). Numbers are
written as JSON numbers; numeric strings are accepted too (UNVERIFIED which one JVB writes for every field).
Anything that is not the expected shape raises `Colibri2Error("bad-request", ...)`.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from colibri2.model import (
    Candidate,
    Colibri2Error,
    ConferenceModified,
    ConferenceModify,
    Endpoint,
    Fingerprint,
    ForceMute,
    IceUdpTransport,
    Media,
    MediaSource,
    Parameter,
    PayloadType,
    Relay,
    RtcpFb,
    RtpHdrExt,
    Sctp,
    SourceDesc,
    SsrcGroupDesc,
    Transport,
    bad_request,
)
from colibri2.xml import NS_ICE

#: Largest JSON body accepted as text.
MAX_JSON_BYTES = 512 * 1024

_U32 = 0xFFFF_FFFF
_T = TypeVar("_T")
Json = dict[str, Any]

# ---------------------------------------------------------------------------------------------------------
# reading


def _obj(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise bad_request(f"{what} must be an object")
    return value


def _list(obj: Mapping[str, object], key: str, parse: Callable[[object], _T]) -> tuple[_T, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request(f"'{key}' must be an array")
    return tuple(parse(item) for item in value)


def _opt_str(obj: Mapping[str, object], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise bad_request(f"'{key}' must be a string")


def _str(obj: Mapping[str, object], key: str) -> str:
    value = _opt_str(obj, key)
    if value is None:
        raise bad_request(f"'{key}' is required")
    return value


def _opt_bool(obj: Mapping[str, object], key: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_request(f"'{key}' must be a boolean")


def _bool(obj: Mapping[str, object], key: str) -> bool:
    return _opt_bool(obj, key) or False


def _opt_int(obj: Mapping[str, object], key: str, hi: int, lo: int = 0) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise bad_request(f"'{key}' must be an integer") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"'{key}' must be an integer")
    if not lo <= value <= hi:
        raise bad_request(f"'{key}' is out of range: {value}")
    return value


def _int(obj: Mapping[str, object], key: str, hi: int, lo: int = 0) -> int:
    value = _opt_int(obj, key, hi, lo)
    if value is None:
        raise bad_request(f"'{key}' is required")
    return value


def _parameters(obj: Mapping[str, object], key: str) -> tuple[Parameter, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    params = _obj(value, f"'{key}'")
    out = []
    for name, v in params.items():
        if v is not None and not isinstance(v, str):
            raise bad_request(f"parameter '{name}' must be a string")
        out.append(Parameter(name, v))
    return tuple(out)


def _payload_type(value: object) -> PayloadType:
    o = _obj(value, "payload-type")
    return PayloadType(
        id=_int(o, "id", 127),
        name=_opt_str(o, "name"),
        clockrate=_opt_int(o, "clockrate", _U32),
        channels=_opt_int(o, "channels", 255),
        parameters=_parameters(o, "parameters"),
        rtcp_fbs=_list(
            o,
            "rtcp-fbs",
            lambda v: RtcpFb(_str(_obj(v, "rtcp-fb"), "type"), _opt_str(_obj(v, ""), "subtype")),
        ),
    )


def _media(value: object) -> Media:
    o = _obj(value, "media")
    return Media(
        type=_str(o, "type"),
        payload_types=_list(o, "payload-types", _payload_type),
        rtp_hdrexts=_list(
            o,
            "rtp-hdrexts",
            lambda v: RtpHdrExt(_int(_obj(v, "rtp-hdrext"), "id", 255), _str(_obj(v, ""), "uri")),
        ),
        extmap_allow_mixed=_bool(o, "extmap-allow-mixed"),
    )


def _candidate(value: object) -> Candidate:
    o = _obj(value, "candidate")
    return Candidate(
        component=_int(o, "component", 256, 1),
        foundation=_str(o, "foundation"),
        generation=_opt_int(o, "generation", _U32),
        id=_opt_str(o, "id"),
        ip=_str(o, "ip"),
        network=_opt_int(o, "network", _U32),
        port=_int(o, "port", 0xFFFF),
        priority=_int(o, "priority", _U32),
        protocol=_str(o, "protocol"),
        type=_str(o, "type"),
        rel_addr=_opt_str(o, "rel-addr"),
        rel_port=_opt_int(o, "rel-port", 0xFFFF),
        tcptype=_opt_str(o, "tcptype"),
    )


def _fingerprint(value: object) -> Fingerprint:
    o = _obj(value, "fingerprint")
    return Fingerprint(
        hash=_str(o, "hash"),
        value=_str(o, "fingerprint"),
        setup=_opt_str(o, "setup"),
        cryptex=_opt_bool(o, "cryptex"),
    )


def _web_socket(value: object) -> str:
    if isinstance(value, str):
        return value
    return _str(_obj(value, "web-socket"), "url")


def _ice(value: object) -> IceUdpTransport:
    o = _obj(value, "transport")
    return IceUdpTransport(
        ufrag=_opt_str(o, "ufrag"),
        pwd=_opt_str(o, "pwd"),
        candidates=_list(o, "candidates", _candidate),
        rtcp_mux=_bool(o, "rtcp-mux"),
        fingerprints=_list(o, "fingerprints", _fingerprint),
        web_sockets=_list(o, "web-sockets", _web_socket),
        ice_generation=_opt_int(o, "ice-generation", _U32),
    )


def _transport(value: object) -> Transport:
    o = _obj(value, "transport")
    ice, sctp = o.get("transport"), o.get("sctp")
    sctp_obj = _obj(sctp, "sctp") if sctp is not None else None
    return Transport(
        ice_controlling=_opt_bool(o, "ice-controlling"),
        use_unique_port=_opt_bool(o, "use-unique-port"),
        ice_restart=_opt_bool(o, "ice-restart"),
        initiator=_opt_bool(o, "initiator"),
        ice=_ice(ice) if ice is not None else None,
        sctp=Sctp(_opt_int(sctp_obj, "port", 0xFFFF), _opt_str(sctp_obj, "role"))
        if sctp_obj is not None
        else None,
    )


def _source(value: object) -> SourceDesc:
    o = _obj(value, "source")
    return SourceDesc(
        ssrc=_opt_int(o, "ssrc", _U32),
        name=_opt_str(o, "name"),
        video_type=_opt_str(o, "videoType"),
        rid=_opt_str(o, "rid"),
        parameters=_parameters(o, "parameters"),
    )


def _ssrc(value: object) -> int:
    return _int({"ssrc": value}, "ssrc", _U32)


def _ssrc_group(value: object) -> SsrcGroupDesc:
    o = _obj(value, "ssrc-group")
    return SsrcGroupDesc(_str(o, "semantics"), _list(o, "sources", _ssrc))


def _media_source(value: object) -> MediaSource:
    o = _obj(value, "media-source")
    return MediaSource(
        type=_str(o, "type"),
        id=_str(o, "id"),
        synthetic=_opt_bool(o, "synthetic"),
        sources=_list(o, "sources", _source),
        ssrc_groups=_list(o, "ssrc-groups", _ssrc_group),
    )


def _sources(obj: Mapping[str, object]) -> tuple[MediaSource, ...] | None:
    if obj.get("sources") is None:
        return None
    return _list(obj, "sources", _media_source)


def _endpoint(value: object) -> Endpoint:
    o = _obj(value, "endpoint")
    transport, force_mute, last_n = o.get("transport"), o.get("force-mute"), o.get("initial-last-n")
    fm = _obj(force_mute, "force-mute") if force_mute is not None else None
    endpoint_id = _str(o, "id")
    if not endpoint_id.strip():
        raise bad_request("endpoint has a blank id")
    return Endpoint(
        id=endpoint_id,
        create=_bool(o, "create"),
        expire=_bool(o, "expire"),
        stats_id=_opt_str(o, "stats-id"),
        muc_role=_opt_str(o, "muc-role"),
        medias=_list(o, "medias", _media),
        transport=_transport(transport) if transport is not None else None,
        sources=_sources(o),
        force_mute=ForceMute(_opt_bool(fm, "audio"), _opt_bool(fm, "video")) if fm is not None else None,
        capabilities=_list(o, "capabilities", lambda v: _str({"name": v}, "name")),
        initial_last_n=(
            _int(_obj(last_n, "initial-last-n"), "value", 2**31 - 1, -1) if last_n is not None else None
        ),
    )


def _relay(value: object) -> Relay:
    o = _obj(value, "relay")
    transport = o.get("transport")
    return Relay(
        id=_str(o, "id"),
        mesh_id=_opt_str(o, "mesh-id"),
        create=_bool(o, "create"),
        expire=_bool(o, "expire"),
        medias=_list(o, "medias", _media),
        transport=_transport(transport) if transport is not None else None,
        endpoints=_list(o, "endpoints", _endpoint) if o.get("endpoints") is not None else None,
    )


def _load(data: str | bytes | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(data, Mapping):
        return data
    if len(data) > MAX_JSON_BYTES:
        raise bad_request(f"body larger than {MAX_JSON_BYTES} bytes")
    try:
        return _obj(_json.loads(data), "the body")
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {exc}") from None


def _guarded(parse: Callable[[], _T]) -> _T:
    try:
        return parse()
    except Colibri2Error:
        raise
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise bad_request(f"malformed colibri2 JSON: {exc}") from None


def conference_modify_from_json(data: str | bytes | Mapping[str, object]) -> ConferenceModify:
    def parse() -> ConferenceModify:
        o = _load(data)
        return ConferenceModify(
            meeting_id=_str(o, "meeting-id"),
            name=_opt_str(o, "name"),
            create=_bool(o, "create"),
            expire=_bool(o, "expire"),
            rtcstats_enabled=_opt_bool(o, "rtcstats-enabled"),
            endpoints=_list(o, "endpoints", _endpoint),
            relays=_list(o, "relays", _relay),
        )

    return _guarded(parse)


def conference_modified_from_json(data: str | bytes | Mapping[str, object]) -> ConferenceModified:
    def parse() -> ConferenceModified:
        o = _load(data)
        return ConferenceModified(
            endpoints=_list(o, "endpoints", _endpoint),
            relays=_list(o, "relays", _relay),
            sources=_sources(o),
        )

    return _guarded(parse)


# ---------------------------------------------------------------------------------------------------------
# writing


def _put(out: Json, key: str, value: object) -> None:
    if value is not None:
        out[key] = value


def _params_json(parameters: tuple[Parameter, ...]) -> dict[str, str | None]:
    return {p.name: p.value for p in parameters}


def _media_json(m: Media) -> Json:
    out: Json = {"type": m.type}
    if m.payload_types:
        pts = []
        for pt in m.payload_types:
            o: Json = {"id": pt.id}
            _put(o, "name", pt.name)
            _put(o, "clockrate", pt.clockrate)
            _put(o, "channels", pt.channels)
            if pt.parameters:
                o["parameters"] = _params_json(pt.parameters)
            if pt.rtcp_fbs:
                o["rtcp-fbs"] = [_rtcp_fb_json(fb) for fb in pt.rtcp_fbs]
            pts.append(o)
        out["payload-types"] = pts
    if m.rtp_hdrexts:
        out["rtp-hdrexts"] = [{"id": e.id, "uri": e.uri} for e in m.rtp_hdrexts]
    if m.extmap_allow_mixed:
        out["extmap-allow-mixed"] = True
    return out


def _rtcp_fb_json(fb: RtcpFb) -> Json:
    o: Json = {"type": fb.type}
    _put(o, "subtype", fb.subtype)
    return o


def _candidate_json(c: Candidate) -> Json:
    o: Json = {
        "component": c.component,
        "foundation": c.foundation,
        "ip": c.ip,
        "port": c.port,
        "priority": c.priority,
        "protocol": c.protocol,
        "type": c.type,
    }
    _put(o, "generation", c.generation)
    _put(o, "id", c.id)
    _put(o, "network", c.network)
    _put(o, "rel-addr", c.rel_addr)
    _put(o, "rel-port", c.rel_port)
    _put(o, "tcptype", c.tcptype)
    return o


def _fingerprint_json(fp: Fingerprint) -> Json:
    o: Json = {"fingerprint": fp.value, "hash": fp.hash}
    _put(o, "setup", fp.setup)
    _put(o, "cryptex", fp.cryptex)
    return o


def _transport_json(t: Transport) -> Json:
    out: Json = {}
    _put(out, "ice-controlling", t.ice_controlling)
    _put(out, "use-unique-port", t.use_unique_port)
    _put(out, "ice-restart", t.ice_restart)
    _put(out, "initiator", t.initiator)
    if t.ice is not None:
        ice: Json = {"xmlns": NS_ICE}
        _put(ice, "ufrag", t.ice.ufrag)
        _put(ice, "pwd", t.ice.pwd)
        _put(ice, "ice-generation", t.ice.ice_generation)
        if t.ice.rtcp_mux:
            ice["rtcp-mux"] = True
        if t.ice.candidates:
            ice["candidates"] = [_candidate_json(c) for c in t.ice.candidates]
        if t.ice.fingerprints:
            ice["fingerprints"] = [_fingerprint_json(fp) for fp in t.ice.fingerprints]
        if t.ice.web_sockets:
            ice["web-sockets"] = list(t.ice.web_sockets)
        out["transport"] = ice
    if t.sctp is not None:
        sctp: Json = {}
        _put(sctp, "port", t.sctp.port)
        _put(sctp, "role", t.sctp.role)
        out["sctp"] = sctp
    return out


def _media_source_json(ms: MediaSource) -> Json:
    out: Json = {"type": ms.type, "id": ms.id}
    _put(out, "synthetic", ms.synthetic)
    if ms.sources:
        sources = []
        for s in ms.sources:
            o: Json = {}
            _put(o, "ssrc", s.ssrc)
            _put(o, "name", s.name)
            _put(o, "videoType", s.video_type)
            _put(o, "rid", s.rid)
            if s.parameters:
                o["parameters"] = _params_json(s.parameters)
            sources.append(o)
        out["sources"] = sources
    if ms.ssrc_groups:
        out["ssrc-groups"] = [{"semantics": g.semantics, "sources": list(g.ssrcs)} for g in ms.ssrc_groups]
    return out


def _endpoint_json(ep: Endpoint) -> Json:
    out: Json = {"id": ep.id}
    if ep.create:
        out["create"] = True
    if ep.expire:
        out["expire"] = True
    _put(out, "stats-id", ep.stats_id)
    _put(out, "muc-role", ep.muc_role)
    if ep.medias:
        out["medias"] = [_media_json(m) for m in ep.medias]
    if ep.transport is not None:
        out["transport"] = _transport_json(ep.transport)
    if ep.sources is not None:
        out["sources"] = [_media_source_json(ms) for ms in ep.sources]
    if ep.force_mute is not None:
        fm: Json = {}
        _put(fm, "audio", ep.force_mute.audio)
        _put(fm, "video", ep.force_mute.video)
        out["force-mute"] = fm
    if ep.capabilities:
        out["capabilities"] = list(ep.capabilities)
    if ep.initial_last_n is not None:
        out["initial-last-n"] = {"value": ep.initial_last_n}
    return out


def _relay_json(r: Relay) -> Json:
    out: Json = {"id": r.id}
    _put(out, "mesh-id", r.mesh_id)
    if r.create:
        out["create"] = True
    if r.expire:
        out["expire"] = True
    if r.medias:
        out["medias"] = [_media_json(m) for m in r.medias]
    if r.transport is not None:
        out["transport"] = _transport_json(r.transport)
    if r.endpoints is not None:
        out["endpoints"] = [_endpoint_json(ep) for ep in r.endpoints]
    return out


def conference_modify_to_json(request: ConferenceModify) -> Json:
    out: Json = {"meeting-id": request.meeting_id}
    _put(out, "name", request.name)
    if request.create:
        out["create"] = True
    if request.expire:
        out["expire"] = True
    _put(out, "rtcstats-enabled", request.rtcstats_enabled)
    if request.endpoints:
        out["endpoints"] = [_endpoint_json(ep) for ep in request.endpoints]
    if request.relays:
        out["relays"] = [_relay_json(r) for r in request.relays]
    return out


def conference_modified_to_json(response: ConferenceModified) -> Json:
    out: Json = {}
    if response.endpoints:
        out["endpoints"] = [_endpoint_json(ep) for ep in response.endpoints]
    if response.relays:
        out["relays"] = [_relay_json(r) for r in response.relays]
    if response.sources is not None:
        out["sources"] = [_media_source_json(ms) for ms in response.sources]
    return out
