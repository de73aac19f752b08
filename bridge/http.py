"""The bridge's private HTTP API (JVB's port 8080 surface, docs/jitsi-protocol.md 3.1-3.4 and 2.7), on
aiohttp.

Routes:
  GET   /about/health                       200 (empty body) if the native core answers get_stats in time,
                                            else 500 {"healthy": false, "reason": ...}
  GET   /about/version                      {"name", "version", "os"}
  GET   /metrics                            Prometheus text or OpenMetrics by Accept (bridge/metrics.py)
  GET   /colibri/stats                      flat JSON with the presence stats keys (3.3)
  POST  /colibri/v2/conferences             Colibri2 conference-modify as JSON -> conference-modified JSON
  PATCH /colibri/v2/conferences/{id}        the same; the path's meeting-id wins over the body's
  GET   /colibri/v2/conferences[/{id}]      what the bridge hosts (JVB answers 501 here; ours is informative)
  GET   /colibri/drain, POST /colibri/drain/enable|disable
  POST  /colibri/shutdown                   {"graceful-shutdown": bool}
  GET   /admin (and /admin/state ...)       the operator's admin page (bridge/admin.py)

Every error is JSON {"error": text, ...}; nothing a client sends can produce a traceback page. A Colibri2
error is 400 like JVB's REST (`"Failed to create conference: <text>"`), with condition/reason/endpoint
added so a client can tell them apart; PATCH of an unknown meeting-id is 404 like JVB.

A web page in a browser on this host can reach 127.0.0.1 too, so before any route runs (`_guard`):
  421  the Host header is not one of the API's names (DNS rebinding: a page's own name resolving here)
  403  an Origin header other than the API's own (browsers send one on every cross-origin POST and fetch)
  401  a token is configured and `Authorization: Bearer <token>` does not carry it
  415  a request with a body, or any POST/PATCH/PUT/DELETE, without `Content-Type: application/json`
       (a page can only send text/plain, form or multipart bodies cross-origin without a CORS preflight)
Each refusal is counted by reason (`sluice_private_http_refused_total`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import platform
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from bridge.admin import OPEN_PATHS, AdminApi, Operator, add_admin_routes
from bridge.bridge import Bridge, BridgeError
from bridge.colibri2_handler import COLIBRI2_LIMITS, Colibri2Handler
from bridge.lifecycle import Lifecycle
from bridge.load import LoadSampler
from bridge.metrics import BridgeMetrics, render, render_families
from bridge.quality import QualityTracker
from bridge.selection import Selection
from bridge.speakers import Speakers
from bridge.xmpp_core import colibri_stats
from colibri2.json import MAX_JSON_BYTES, conference_modified_to_json, conference_modify_from_json
from colibri2.model import Colibri2Error

log = logging.getLogger(__name__)

#: jvb `videobridge.health.max-check-duration`: a core slower than this counts as unhealthy.
HEALTH_TIMEOUT_S = 3.0

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The names the Host header may carry by default (any port); the configured bind host is added to them.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Why `_guard` refused a request: the label of `sluice_private_http_refused_total`.
REFUSAL_REASONS = ("misdirected_host", "cross_origin", "unauthorized", "unsupported_content_type")
#: The admin page's counters (bridge/admin.py), exported as `sluice_admin_events_total{event}`.
ADMIN_EVENTS = ("admin_logins", "admin_login_failures", "admin_actions", "admin_actions_unknown")
_STATE_CHANGING = frozenset({hdrs.METH_POST, hdrs.METH_PATCH, hdrs.METH_PUT, hdrs.METH_DELETE})
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT = re.compile(r":([0-9]{1,5})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _error(status: int, text: str, **extra: object) -> web.Response:
    body: dict[str, object] = {"error": text}
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.json_response(body, status=status)


def _colibri2_error(exc: Colibri2Error) -> web.Response:
    return _error(
        400,
        f"Failed to create conference: {exc.text}",
        condition=exc.condition,
        reason=exc.reason.value if exc.reason is not None else None,
        endpoint=exc.endpoint_id,
    )


@web.middleware
async def _json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413) and anything unexpected become JSON, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.text or exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("http: %s %s failed", request.method, request.path)
        return _error(500, "internal error")


def _authority(text: str) -> tuple[str, int | None] | None:
    """`host[:port]` (a Host header, an Origin's authority) as (host, port); None if it is not one.

    The host is lower case, without IPv6 brackets or a final dot, IPv6 compressed, so equal names compare
    equal. An unbracketed IPv6 address is refused, as RFC 9110 7.2 requires brackets.
    """
    text = text.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        try:
            host = str(ipaddress.IPv6Address(text[1:end]))
        except ValueError:
            return None
        rest = text[end + 1 :]
    else:
        host, colon, port_text = text.partition(":")
        host, rest = host.removesuffix("."), colon + port_text
        if not _NAME.fullmatch(host):
            return None
    if not rest:
        return host, None
    match = _PORT.fullmatch(rest)
    if match is None or int(match.group(1)) > 65535:
        return None
    return host, int(match.group(1))


def _origin(text: str) -> tuple[str, str, int] | None:
    """An RFC 6454 origin `scheme://host[:port]` as (scheme, host, port); None for "null" or anything else."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    authority = _authority(rest) if sep and scheme in _DEFAULT_PORTS else None
    if authority is None:
        return None
    host, port = authority
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def private_host_names(allowed: Iterable[str], bind_host: str | None = None) -> frozenset[str]:
    """The names `_guard` accepts in Host: `allowed` (host names or addresses, any port), plus the API's own
    bind host unless it is a wildcard (a client may address it as configured)."""
    names = set()
    for name in (*allowed, *([bind_host] if bind_host else [])):
        bare = name.strip()
        parsed = _authority(f"[{bare}]" if ":" in bare and not bare.startswith("[") else bare)
        if parsed is not None and parsed[0] not in ("0.0.0.0", "::"):
            names.add(parsed[0])
    return frozenset(names)


def _shown(value: str, limit: int = 100) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _guard(
    allowed_hosts: frozenset[str],
    token: str | None,
    refused: Counter[str],
    admin: AdminApi | None = None,
) -> Middleware:
    """The middleware that keeps web pages (and anyone without the token) out; see the module docstring.
    With `admin`, its login session cookie stands for the token on the admin page's routes (only), and the
    page's files and login need neither (bridge/admin.py)."""
    expected = token.encode() if token is not None else None

    def refuse(reason: str, status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
        refused[reason] += 1
        if refused[reason] == 1:
            # Only the first per reason: a hostile page could otherwise flood the log.
            log.warning("http: refused (%s): %s; further refusals are only counted", reason, text)
        response = _error(status, text, reason=reason)
        response.headers.update(headers or {})
        return response

    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        host_header = request.headers.get(hdrs.HOST, "")
        host = _authority(host_header)
        if host is None or host[0] not in allowed_hosts:
            return refuse(
                "misdirected_host",
                421,
                f"Host {_shown(host_header)} is not a name of this API "
                "(videobridge.http-servers.private.allowed-hosts)",
            )
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and (
            (theirs := _origin(origin)) is None or theirs != _origin(f"{request.scheme}://{host_header}")
        ):
            return refuse("cross_origin", 403, f"cross-origin request refused (Origin {_shown(origin)})")
        if expected is not None and not (
            admin is not None
            and (
                request.path in OPEN_PATHS
                or (request.path.startswith("/admin/") and admin.session_valid(request))
            )
        ):
            scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                return refuse(
                    "unauthorized",
                    401,
                    "a bearer token is required "
                    "(Authorization: Bearer <videobridge.http-servers.private.token>)",
                    {hdrs.WWW_AUTHENTICATE: 'Bearer realm="sluice-bridge"'},
                )
        if (
            request.method in _STATE_CHANGING or request.body_exists
        ) and request.content_type != "application/json":
            return refuse(
                "unsupported_content_type",
                415,
                "Content-Type must be application/json, "
                f"not {_shown(request.headers.get(hdrs.CONTENT_TYPE, ''))}",
            )
        return await handler(request)

    return guard


class PrivateApi:
    """Request handlers over one Bridge, its Colibri2 handler, its shutdown/drain flags and load sampler."""

    def __init__(
        self,
        bridge: Bridge,
        handler: Colibri2Handler,
        lifecycle: Lifecycle,
        sampler: LoadSampler,
        *,
        version: str,
        average_participant_stress: float = 0.01,
        health_timeout: float = HEALTH_TIMEOUT_S,
        extra_metrics: Callable[[], Iterable[Metric]] | None = None,
        selection: Selection | None = None,
        speakers: Speakers | None = None,
        quality: QualityTracker | None = None,
        admin_counters: Counter[str] | None = None,
    ) -> None:
        self.bridge = bridge
        self.quality = quality
        self.admin_counters = admin_counters
        self.speakers = speakers
        self.handler = handler
        self.extra_metrics = extra_metrics
        self.selection = selection
        self.lifecycle = lifecycle
        self.state = lifecycle.state
        self.sampler = sampler
        self.version = version
        self.average_participant_stress = average_participant_stress
        self.health_timeout = health_timeout

    # ---- health, version, stats, metrics

    async def _snapshot(self) -> tuple[dict[str, object] | None, str]:
        """The native stats, or None and why not (the core is not running or too slow)."""
        try:
            return await self.bridge.get_stats(timeout=self.health_timeout), ""
        except TimeoutError:
            return None, f"native core did not answer within {self.health_timeout:g}s"
        except BridgeError as exc:
            return None, str(exc)

    async def health(self, _request: web.Request) -> web.Response:
        snapshot, reason = await self._snapshot()
        if snapshot is None:
            return web.json_response({"healthy": False, "reason": reason}, status=500)
        return web.Response(status=200, content_type="application/json")

    async def about_version(self, _request: web.Request) -> web.Response:
        return web.json_response({"name": "Sluice", "version": self.version, "os": platform.system()})

    def _counts(self) -> tuple[int, int, int]:
        conferences = self.bridge.conferences.values()
        sizes = [len(c.endpoints) for c in conferences]
        return len(sizes), sum(sizes), max(sizes, default=0)

    async def stats(self, _request: web.Request) -> web.Response:
        snapshot, _ = await self._snapshot()
        load = self.sampler.current
        conferences, endpoints, largest = self._counts()
        body: dict[str, object] = dict(
            colibri_stats(
                load=load,
                state=self.state,
                version=self.version,
                average_participant_stress=self.average_participant_stress,
                healthy=snapshot is not None,
                conferences=conferences,
                endpoints=endpoints,
                now_ms=int(time.time() * 1000),
            )
        )
        body["participants"] = endpoints
        body["largest_conference"] = largest
        body["total_private_http_refused"] = sum(self.state.private_http_refused.values())
        body["total_xmpp_iqs_refused"] = self.state.xmpp_iqs_refused
        body["total_colibri2_refused"] = sum(self.handler.refused.values())
        if snapshot is not None:
            total = snapshot.get("total")
            failures = snapshot.get("failures")
            if isinstance(total, Mapping):
                body["total_packets_received"] = total.get("packets_in", 0)
                body["total_packets_sent"] = total.get("packets_out", 0)
                body["total_bytes_received"] = total.get("bytes_in", 0)
                body["total_bytes_sent"] = total.get("bytes_out", 0)
            if isinstance(failures, Mapping):
                body["total_ice_failed"] = failures.get("ice", 0)
                # Every DTLS cause (handshake, fingerprint, the peer's fatal alert, ...).
                dtls = (v for k, v in failures.items() if str(k).startswith("dtls_"))
                body["dtls_failed_endpoints"] = sum(v for v in dtls if isinstance(v, int))
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        snapshot, _ = await self._snapshot()
        conferences, endpoints, _largest = self._counts()
        body, content_type = render(
            BridgeMetrics(
                snapshot=snapshot,
                conferences=conferences,
                endpoints=endpoints,
                load=self.sampler.current,
                healthy=snapshot is not None,
                drain=self.state.drain,
                graceful_shutdown=self.state.graceful_shutdown,
                shutting_down=self.state.shutting_down,
                channels=self.state.channel_stats,
                # Every reason, so a scrape shows 0 before the first refusal (rate() needs the series).
                private_http_refused={r: self.state.private_http_refused[r] for r in REFUSAL_REASONS},
                xmpp_iqs_refused=self.state.xmpp_iqs_refused,
                colibri2_refused={limit: self.handler.refused[limit] for limit in COLIBRI2_LIMITS},
                allocation=self.selection.stats if self.selection is not None else None,
                quality=tuple(self.quality.current.values()) if self.quality is not None else None,
                admin={e: self.admin_counters[e] for e in ADMIN_EVENTS}
                if self.admin_counters is not None
                else None,
                extra=tuple(self.extra_metrics()) if self.extra_metrics is not None else (),
            ),
            request.headers.get("Accept"),
        )
        # Content-Type carries parameters (version, charset), so set the header as a whole.
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def allocation(self, request: web.Request) -> web.Response:
        """The allocation flight recorder of one conference: each receiver's recent decisions, with a reason
        per source (docs/allocation.md)."""
        conference = self.bridge.conference_by_meeting(request.match_info["meeting_id"])
        if conference is None or self.selection is None:
            raise web.HTTPNotFound(text="no such conference")
        return web.json_response(
            {"meeting_id": conference.meeting_id, "receivers": self.selection.dump(conference.id)}
        )

    async def bandwidth(self, request: web.Request) -> web.Response:
        """Per endpoint of one conference: its estimate, what the Allocator allocated it now
        (`Selection.bandwidth_view`), and its transport's counters from a fresh native snapshot (what the
        bridge sent it, the NACKs and retransmissions the packet path counts)."""
        conference = self.bridge.conference_by_meeting(request.match_info["meeting_id"])
        if conference is None or self.selection is None:
            raise web.HTTPNotFound(text="no such conference")
        snapshot, _ = await self._snapshot()
        transports = snapshot.get("transports") if snapshot is not None else None
        view = self.selection.bandwidth_view(conference)
        for item in view.values():
            t = transports.get(item["transport"]) if isinstance(transports, Mapping) else None
            item["counters"] = (
                {
                    k: v
                    for k, v in t.items()
                    # The probe's results too: a receiver held low tells why (clusters failed or held back).
                    if (isinstance(v, int) and not isinstance(v, bool))
                    or (k == "probe" and isinstance(v, Mapping))
                }
                if isinstance(t, Mapping)
                else None
            )
        return web.json_response(
            {"meeting_id": conference.meeting_id, "time": time.monotonic(), "endpoints": view}
        )

    async def dominant_speaker(self, request: web.Request) -> web.Response:
        """The `dominant-speaker-identification` view of one conference: the dominant speaker, the recent
        ones, and each endpoint's current loudness."""
        conference = self.bridge.conference_by_meeting(request.match_info["meeting_id"])
        if conference is None:
            raise web.HTTPNotFound(text="no such conference")
        state = self.speakers.get(conference.id) if self.speakers is not None else None
        view = state.view() if state is not None else {"dominantSpeaker": None, "recentSpeakers": []}
        return web.json_response({"meeting_id": conference.meeting_id, **view})

    # ---- Colibri2 over JSON (2.7)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise Colibri2Error("bad-request", f"could not parse JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Colibri2Error("bad-request", "the body must be a JSON object")
        return body

    def _modify(self, body: Mapping[str, object]) -> web.Response:
        response = self.handler.handle(conference_modify_from_json(body))
        return web.json_response(conference_modified_to_json(response))

    async def create_conference(self, request: web.Request) -> web.Response:
        try:
            return self._modify(await self._body(request))
        except Colibri2Error as exc:
            return _colibri2_error(exc)

    async def patch_conference(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        if self.bridge.conference_by_meeting(meeting_id) is None:
            return _error(
                404,
                f"Conference not found for ID: {meeting_id}",
                condition="item-not-found",
                reason="conference_not_found",
            )
        try:
            body = await self._body(request)
            body["meeting-id"] = meeting_id
            return self._modify(body)
        except Colibri2Error as exc:
            return _colibri2_error(exc)

    async def _remotes(self) -> Mapping[object, object]:
        """Each transport's selected remote address (operators' view; empty if the core is not answering)."""
        snapshot, _ = await self._snapshot()
        transports = snapshot.get("transports") if snapshot is not None else None
        if not isinstance(transports, Mapping):
            return {}
        return {tid: t.get("selected_remote") for tid, t in transports.items() if isinstance(t, Mapping)}

    def _describe(self, meeting_id: str, remotes: Mapping[object, object]) -> dict[str, object] | None:
        conference = self.bridge.conference_by_meeting(meeting_id)
        if conference is None:
            return None
        endpoints = []
        for ep in conference.endpoints.values():
            item: dict[str, object] = {"id": ep.id, "transport-state": ep.state}
            if ep.stats_id is not None:
                item["stats-id"] = ep.stats_id
            remote = remotes.get(ep.transport_id)
            if isinstance(remote, str):
                item["remote-address"] = remote
            endpoints.append(item)
        return {"meeting-id": meeting_id, "endpoints": endpoints}

    async def list_conferences(self, _request: web.Request) -> web.Response:
        meeting_ids = sorted({c.meeting_id for c in self.bridge.conferences.values()})
        remotes = await self._remotes()
        described = [d for d in (self._describe(m, remotes) for m in meeting_ids) if d is not None]
        return web.json_response({"conferences": described})

    async def get_conference(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        described = self._describe(meeting_id, await self._remotes())
        if described is None:
            return _error(
                404,
                f"Conference not found for ID: {meeting_id}",
                condition="item-not-found",
                reason="conference_not_found",
            )
        return web.json_response(described)

    # ---- drain and shutdown (3.4)

    async def get_drain(self, _request: web.Request) -> web.Response:
        return web.json_response({"drain": self.state.drain})

    async def enable_drain(self, _request: web.Request) -> web.Response:
        self.lifecycle.set_drain(True)
        return web.json_response({"drain": True})

    async def disable_drain(self, _request: web.Request) -> web.Response:
        self.lifecycle.set_drain(False)
        return web.json_response({"drain": False})

    async def shutdown(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
        except Colibri2Error as exc:
            return _error(400, exc.text)
        graceful = body.get("graceful-shutdown")
        if not isinstance(graceful, bool):
            return _error(400, "'graceful-shutdown' (boolean) is required")
        # Graceful: refuse new conferences, exit once empty (or at the maximum duration). Forced: exit now.
        # Leaving the process is the owner's job: it waits on `lifecycle.finished`.
        self.lifecycle.begin_shutdown(graceful)
        log.warning("http: %s shutdown requested by %s", "graceful" if graceful else "forced", request.remote)
        return web.json_response(
            {"graceful_shutdown": self.state.graceful_shutdown, "shutting_down": self.state.shutting_down}
        )


def create_private_app(
    bridge: Bridge,
    handler: Colibri2Handler,
    lifecycle: Lifecycle,
    sampler: LoadSampler,
    *,
    version: str,
    average_participant_stress: float = 0.01,
    health_timeout: float = HEALTH_TIMEOUT_S,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    token: str | None = None,
    extra_metrics: Callable[[], Iterable[Metric]] | None = None,
    selection: Selection | None = None,
    speakers: Speakers | None = None,
    quality: QualityTracker | None = None,
    operator: Operator | None = None,
    name: str = "this bridge",
) -> web.Application:
    """The private HTTP API (bind it to 127.0.0.1, as JVB does on 8080).

    `allowed_hosts` are the names the Host header may carry (pass them through `private_host_names` to add
    the bind host); `token`, when set, is the bearer token every request must carry. With `quality` the
    admin page (bridge/admin.py) is served, acting through `operator` when given.
    """
    admin_counters: Counter[str] = Counter()
    api = PrivateApi(
        bridge,
        handler,
        lifecycle,
        sampler,
        version=version,
        average_participant_stress=average_participant_stress,
        health_timeout=health_timeout,
        extra_metrics=extra_metrics,
        selection=selection,
        speakers=speakers,
        quality=quality,
        admin_counters=admin_counters if quality is not None else None,
    )
    admin = (
        AdminApi(bridge, sampler, quality, token=token, operator=operator, name=name, counters=admin_counters)
        if quality is not None
        else None
    )
    # A larger body is refused by aiohttp with 413 (made JSON by the middleware).
    guard = _guard(private_host_names(allowed_hosts), token, api.state.private_http_refused, admin)
    app = web.Application(middlewares=[_json_errors, guard], client_max_size=MAX_JSON_BYTES)
    app.add_routes(
        [
            web.get("/about/health", api.health),
            web.get("/about/version", api.about_version),
            web.get("/metrics", api.metrics),
            web.get("/colibri/stats", api.stats),
            web.post("/colibri/v2/conferences", api.create_conference),
            web.get("/colibri/v2/conferences", api.list_conferences),
            web.get("/colibri/v2/conferences/{meeting_id}", api.get_conference),
            web.get("/debug/conferences/{meeting_id}/allocation", api.allocation),
            web.get("/debug/conferences/{meeting_id}/bandwidth", api.bandwidth),
            web.get("/debug/conferences/{meeting_id}/dominant-speaker-identification", api.dominant_speaker),
            web.patch("/colibri/v2/conferences/{meeting_id}", api.patch_conference),
            web.get("/colibri/drain", api.get_drain),
            web.post("/colibri/drain/enable", api.enable_drain),
            web.post("/colibri/drain/disable", api.disable_drain),
            web.post("/colibri/shutdown", api.shutdown),
        ]
    )
    if admin is not None:
        add_admin_routes(app, admin)
    return app


def create_metrics_app(
    collect: Callable[[], Iterable[Metric]],
    *,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    token: str | None = None,
) -> web.Application:
    """`GET /metrics` alone, behind the private API's guard (Host, Origin, token): the exporter of a
    component that runs without a bridge (`sluice focus --metrics-port`)."""
    refused: Counter[str] = Counter()

    async def metrics(request: web.Request) -> web.Response:
        refusals = CounterMetricFamily(
            "sluice_private_http_refused", "Metrics requests refused, by reason.", labels=["reason"]
        )
        for reason in REFUSAL_REASONS:
            refusals.add_metric([reason], refused[reason])
        body, content_type = render_families([*collect(), refusals], request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application(
        middlewares=[_json_errors, _guard(private_host_names(allowed_hosts), token, refused)]
    )
    app.add_routes([web.get("/metrics", metrics)])
    return app
