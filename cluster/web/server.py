"""``lvsctl web``: the live status page over HTTP (aiohttp).

    GET  /              the page (HTML, script and style served from here: no CDN)
    GET  /api/state     the page model now (JSON)
    GET  /api/stream    the page model, then what changed, pushed (server-sent events)
    POST /api/action    drain / disable / enable / switchover: only with --allow-actions,
                        and ``Authorization: Bearer <token>`` (a header, not a cookie: a
                        page on another site cannot make the browser send it)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from ..actions import ActionError, ask_switchover, set_admin
from ..etcd.client import Etcd, EtcdAuthError, EtcdUnavailable
from ..keys import Keys
from .feed import Feed

log = logging.getLogger(__name__)

STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
KEEPALIVE = 15.0  # s between comment lines on an idle stream (proxies close silent ones)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ADMIN = {"drain": "drain", "disable": "disable", "enable": None}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def app(feed: Feed, etcd: Etcd, keys: Keys, token: str | None) -> web.Application:
    """The application; actions are on when ``feed.live.actions`` (then ``token`` is set)."""
    if feed.live.actions and not token:
        raise ValueError("actions need a token")
    application = web.Application(middlewares=[_headers])
    assets = {name: _asset(name) for name in STATIC}
    page = _asset("index.html")

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], content_type=STATIC[name], charset="utf-8")

    async def state(_: web.Request) -> web.Response:
        if not feed.version:
            raise web.HTTPServiceUnavailable(text="no view of etcd yet")
        return web.json_response(feed.model)

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        seen = 0
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while True:
                try:
                    seen, text = await asyncio.wait_for(feed.next_message(seen), KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                await resp.write(f"id: {seen}\ndata: {text}\n\n".encode())
        return resp

    async def action(request: web.Request) -> web.Response:
        if not feed.live.actions:
            return _error(403, "read-only: start lvsctl web with --allow-actions to act")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return _error(401, "a valid token is needed (Authorization: Bearer ...)")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        who = f"web:{request.remote or '?'}"
        try:
            message = await _act(etcd, keys, body, who)
        except ActionError as exc:
            return _error(400, str(exc))
        except (EtcdUnavailable, EtcdAuthError) as exc:
            return _error(503, f"etcd: {exc}")
        log.info("%s: %s", who, message)
        return web.json_response({"ok": True, "message": message})

    application.router.add_get("/", index)
    application.router.add_get("/static/{name}", static)
    application.router.add_get("/api/state", state)
    application.router.add_get("/api/stream", stream)
    application.router.add_post("/api/action", action)
    return application


async def _act(etcd: Etcd, keys: Keys, body: dict[str, Any], who: str) -> str:
    kind = body.get("action")
    if kind in ADMIN:
        virtual, server = body.get("virtual"), body.get("server")
        if not isinstance(virtual, str) or not isinstance(server, str):
            raise ActionError(f"{kind} needs 'virtual' and 'server'")
        done = await set_admin(etcd, keys, virtual, server, ADMIN[kind], by=who)  # type: ignore[arg-type]
        return done.message
    if kind == "switchover":
        to = body.get("to") or None
        if to is not None and not isinstance(to, str):
            raise ActionError("'to' must be a router name")
        asked = await ask_switchover(etcd, keys, to, 10.0, by=who, reason="lvsctl web")
        return f"asked {asked.leader.node} (term {asked.leader.term}) to hand over" + (
            f" to {to}" if to else "")
    raise ActionError(f"unknown action {kind!r} (drain, disable, enable, switchover)")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    if not resp.prepared:
        resp.headers.update(HEADERS)
    return resp


async def serve(feed: Feed, etcd: Etcd, keys: Keys, host: str, port: int,
                token: str | None) -> None:
    """Run the feed and the HTTP server until cancelled."""
    runner = web.AppRunner(app(feed, etcd, keys, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("status page on http://%s:%d/ (%s)", host, port,
             "actions allowed" if feed.live.actions else "read-only")
    try:
        await feed.run()
    finally:
        await runner.cleanup()
