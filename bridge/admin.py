"""The operator's admin page on the private HTTP API: live rooms, their participants with link figures,
bridges with stress, and the actions end meeting and kick.

Routes (added to the private API by `add_admin_routes`):
  GET  /admin, /admin/admin.js, /admin/admin.css   the page (static; it fetches the state as JSON)
  POST /admin/login        {"token": ...} -> a session cookie (only when the API has a token)
  POST /admin/logout
  GET  /admin/state        rooms, participants, bridges (JSON)
  POST /admin/end          {"room": ...}            end the meeting for everyone
  POST /admin/kick         {"room": ..., "nick": ...} remove one participant

Authority is the private API's (bridge/http.py `_guard`): its Host and Origin checks apply to every route.
With a token configured (the API exposed beyond loopback), every route but the page's three files and the
login needs `Authorization: Bearer <token>` or the session cookie the login gives for that token (HttpOnly,
SameSite=Strict, bounded in number and time; it counts on `/admin/` routes only, never on the rest of the
API). Without a token the API is loopback-only and open to local clients, as the rest of it is. Actions
are POSTs with a JSON body, which a page elsewhere cannot send (415 and the Origin check), so the cookie
cannot be ridden cross-site.

Names in rooms (room names, nicks, display names) are remote input: the state carries them as JSON strings
(display names cut to `MAX_NAME`, ids to `MAX_ID`), and the page writes them with `textContent` only (never
as HTML). At most `MAX_ROOMS` rooms (largest first) and `MAX_PARTICIPANTS` participants per room are
listed, with the totals.

The rooms and actions come from whoever hosts the bridge (`Operator`, implemented by `sluice serve` over its
focus); a bridge alone lists its own conferences and endpoints and offers no actions.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from bridge.bridge import Bridge
from bridge.load import LoadSampler
from bridge.quality import Quality, QualityTracker

PAGE_DIR = Path(__file__).resolve().parent / "admin_page"
COOKIE = "sluice_admin"
#: Paths the guard lets through without the token: the page's static files and the login itself.
OPEN_PATHS = frozenset({"/admin", "/admin/admin.js", "/admin/admin.css", "/admin/login"})
MAX_ROOMS = 100
MAX_PARTICIPANTS = 100
#: Display names are cut to this; ids (room JIDs, nicks) to XMPP's own bound, so actions can name them.
MAX_NAME = 64
MAX_ID = 1023
#: Bounds of the login sessions: the oldest is dropped beyond MAX_SESSIONS; each lasts SESSION_TTL seconds.
MAX_SESSIONS = 16
SESSION_TTL = 8 * 3600.0
#: The page's own files only, no inline script, no framing (clickjacking of the actions).
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"


@dataclass(frozen=True, slots=True)
class AdminParticipant:
    nick: str
    name: str | None
    #: The Colibri2 endpoint id on `bridge` when allocated (the nick), else None.
    endpoint: str | None
    moderator: bool
    audio_muted: bool | None
    video_muted: bool | None


@dataclass(frozen=True, slots=True)
class AdminRoom:
    #: The MUC room's bare JID (what the actions name).
    room: str
    meeting_id: str | None
    bridge: str | None
    participants: tuple[AdminParticipant, ...]


@dataclass(frozen=True, slots=True)
class AdminBridge:
    name: str
    stress: float
    operational: bool
    drain: bool
    version: str | None


class Operator(Protocol):
    """The signaling side the page shows and acts on (the focus's view in `sluice serve`)."""

    def rooms(self) -> list[AdminRoom]: ...

    def bridges(self) -> list[AdminBridge]: ...

    def end_meeting(self, room: str) -> bool: ...

    def kick(self, room: str, nick: str) -> bool: ...


class AdminSessions:
    """Login sessions: random ids, at most `MAX_SESSIONS`, each expiring after `SESSION_TTL`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = self._clock() + SESSION_TTL
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        now = self._clock()
        for key, until in list(self._sessions.items()):
            if until <= now:
                del self._sessions[key]
        # Compared in constant time, like the token.
        return any(hmac.compare_digest(sid.encode(), key.encode()) for key in self._sessions)

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)


def _cut(text: str | None, limit: int = MAX_NAME) -> str | None:
    return None if text is None else text[:limit]


def _figures(q: Quality | None) -> dict[str, float | None]:
    if q is None:
        return {"up_bps": None, "down_bps": None, "loss": None, "rtt_ms": None, "jitter_ms": None}
    return {
        "up_bps": q.up_bps,
        "down_bps": q.down_bps,
        "loss": q.loss,
        "rtt_ms": q.rtt_s * 1000 if q.rtt_s is not None else None,
        "jitter_ms": q.jitter_s * 1000,
    }


class AdminApi:
    def __init__(
        self,
        bridge: Bridge,
        sampler: LoadSampler,
        quality: QualityTracker,
        *,
        token: str | None,
        operator: Operator | None,
        name: str,
        counters: Counter[str],
    ) -> None:
        self.bridge = bridge
        self.sampler = sampler
        self.quality = quality
        self.token = token
        self.operator = operator
        self.name = name
        self.sessions = AdminSessions()
        #: admin_logins, admin_login_failures, admin_actions, admin_actions_unknown (private API metrics).
        self.counters = counters

    # ---- authority

    def session_valid(self, request: web.Request) -> bool:
        return self.sessions.valid(request.cookies.get(COOKIE))

    async def login(self, request: web.Request) -> web.Response:
        if self.token is None:
            return web.json_response({"login": "not needed"})
        body = await _json_body(request)
        given = body.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
            self.counters["admin_login_failures"] += 1
            return web.json_response({"error": "wrong token"}, status=401)
        self.counters["admin_logins"] += 1
        response = web.json_response({"login": "ok"})
        response.set_cookie(
            COOKIE,
            self.sessions.new(),
            max_age=int(SESSION_TTL),
            path="/admin",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.json_response({"logout": "ok"})
        response.del_cookie(COOKIE, path="/admin")
        return response

    # ---- the page

    async def page(self, request: web.Request) -> web.StreamResponse:
        files = {"/admin": "index.html", "/admin/admin.js": "admin.js", "/admin/admin.css": "admin.css"}
        response = web.FileResponse(PAGE_DIR / files[request.path])
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    # ---- the state

    def _endpoint_quality(self) -> dict[tuple[str, str], Quality | None]:
        """(meeting-id, endpoint id) -> its figures, for the endpoints this bridge hosts."""
        return {
            (c.meeting_id, ep.id): self.quality.get(ep.transport_id)
            for c in self.bridge.conferences.values()
            for ep in c.endpoints.values()
        }

    def state(self) -> dict[str, object]:
        here = self._endpoint_quality()
        load = self.sampler.current
        own = {
            "name": self.name,
            "stress": load.stress_level,
            "conferences": len(self.bridge.conferences),
            "endpoints": sum(len(c.endpoints) for c in self.bridge.conferences.values()),
            "bit_rate_download_kbps": load.bit_rate_download,
            "bit_rate_upload_kbps": load.bit_rate_upload,
        }
        if self.operator is not None:
            rooms = self.operator.rooms()
            bridges = [
                {"name": b.name, "stress": b.stress, "operational": b.operational, "drain": b.drain,
                 "version": b.version}
                for b in self.operator.bridges()
            ]  # fmt: skip
        else:
            rooms = [
                AdminRoom(
                    room=c.meeting_id,
                    meeting_id=c.meeting_id,
                    bridge=self.name,
                    participants=tuple(
                        AdminParticipant(ep.id, None, ep.id, False, None, None) for ep in c.endpoints.values()
                    ),
                )
                for c in self.bridge.conferences.values()
            ]
            bridges = [{"name": self.name, "stress": load.stress_level, "operational": True,
                        "drain": False, "version": None}]  # fmt: skip
        rooms.sort(key=lambda r: (-len(r.participants), r.room))
        shown = []
        for room in rooms[:MAX_ROOMS]:
            people = []
            for p in room.participants[:MAX_PARTICIPANTS]:
                figures = (
                    here.get((room.meeting_id, p.endpoint))
                    if room.meeting_id is not None and p.endpoint is not None
                    else None
                )
                people.append(
                    {
                        "nick": _cut(p.nick, MAX_ID),
                        "name": _cut(p.name),
                        "endpoint": _cut(p.endpoint, MAX_ID),
                        "moderator": p.moderator,
                        "audio_muted": p.audio_muted,
                        "video_muted": p.video_muted,
                        **_figures(figures),
                    }
                )
            shown.append(
                {
                    "room": _cut(room.room, MAX_ID),
                    "meeting_id": room.meeting_id,
                    "bridge": _cut(room.bridge, MAX_ID),
                    "participant_count": len(room.participants),
                    "participants": people,
                }
            )
        return {
            "time": time.time(),
            "this_bridge": own,
            "bridges": bridges,
            "room_count": len(rooms),
            "participant_count": sum(len(r.participants) for r in rooms),
            "rooms": shown,
            "actions": self.operator is not None,
        }

    async def get_state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.state())

    # ---- actions

    async def end(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        room = body.get("room")
        if not isinstance(room, str) or not room:
            return web.json_response({"error": "'room' (string) is required"}, status=400)
        return self._acted(self.operator.end_meeting(room) if self.operator is not None else None)

    async def kick(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        room, nick = body.get("room"), body.get("nick")
        if not isinstance(room, str) or not isinstance(nick, str) or not room or not nick:
            return web.json_response({"error": "'room' and 'nick' (strings) are required"}, status=400)
        return self._acted(self.operator.kick(room, nick) if self.operator is not None else None)

    def _acted(self, done: bool | None) -> web.Response:
        if done is None:
            return web.json_response(
                {"error": "no actions here: this bridge runs without a focus"}, status=501
            )
        if not done:
            self.counters["admin_actions_unknown"] += 1
            return web.json_response({"error": "no such room or participant"}, status=404)
        self.counters["admin_actions"] += 1
        # Sent: the room's own presences show the effect (the page polls the state).
        return web.json_response({"sent": True}, status=202)


async def _json_body(request: web.Request) -> dict[str, object]:
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(text="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def add_admin_routes(app: web.Application, api: AdminApi) -> None:
    app.add_routes(
        [
            web.get("/admin", api.page),
            web.get("/admin/admin.js", api.page),
            web.get("/admin/admin.css", api.page),
            web.post("/admin/login", api.login),
            web.post("/admin/logout", api.logout),
            web.get("/admin/state", api.get_state),
            web.post("/admin/end", api.end),
            web.post("/admin/kick", api.kick),
        ]
    )
