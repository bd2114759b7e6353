"""The guard in front of every route: authentication, origin and CSRF, read-only, headers."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._http import root, route_path
from ._security import SECURITY_HEADERS, SESSION_COOKIE
from ._state import Dashboard

__all__ = ["Guard"]

# Reachable without credentials: the login form, and the package's own assets.
_PUBLIC = ("/login", "/static/")
# POSTs that change no job or queue: allowed in read-only mode.
_NOT_ACTIONS = ("/login", "/logout")
_MAX_BODY = 64 * 1024


class Guard:
    """Authentication, origin and CSRF checks, read-only mode and security headers.

    Every request passes here before any route, so no route can forget a
    check. A POST's body is read here (forms and API calls are small), its
    CSRF token checked, and handed on to the route.
    """

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        path = route_path(request)
        identity = self.dashboard.auth.identify(
            request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE)
        )
        if identity is None and not path.startswith(_PUBLIC):
            await self._unauthenticated(request, path)(scope, receive, send_with_headers)
            return
        scope["rivertrio_ui.identity"] = identity or "anonymous"
        if request.method not in ("GET", "HEAD"):
            refusal, receive = await self._check_change(request, path, identity, receive)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    def _unauthenticated(self, request: Request, path: str) -> Response:
        auth = self.dashboard.auth
        challenge = 'Bearer realm="rivertrio"' if auth.token is not None else ""
        if auth.basic is not None:
            challenge = 'Basic realm="rivertrio", charset="UTF-8"'
        if path.startswith("/api/"):
            return JSONResponse(
                {"error": "authentication required"},
                status_code=401,
                headers={"www-authenticate": challenge},
            )
        if auth.token is not None and request.method in ("GET", "HEAD"):
            target = root(request) + path + (f"?{request.url.query}" if request.url.query else "")
            login = f"{root(request)}/login?{urlencode({'next': target})}"
            return RedirectResponse(login, status_code=303)
        return Response(
            "authentication required",
            status_code=401,
            media_type="text/plain",
            headers={"www-authenticate": challenge},
        )

    async def _check_change(
        self, request: Request, path: str, identity: str | None, receive: Receive
    ) -> tuple[Response | None, Receive]:
        """A refusal of the state change, or None; and the body for the route to read."""
        auth = self.dashboard.auth
        headers = request.headers
        if not auth.same_origin(
            headers.get("host"),
            headers.get("origin"),
            headers.get("sec-fetch-site"),
            headers.get("referer"),
        ):
            return _refusal(path, 403, "cross-origin request refused"), receive
        if request.method != "POST":
            return _refusal(path, 405, "method not allowed"), receive
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("", "application/x-www-form-urlencoded"):
            return _refusal(path, 415, "send a form: application/x-www-form-urlencoded"), receive
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_BODY:
                return _refusal(path, 413, "request body too large"), receive
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if path == "/login":
            return None, replay
        token = headers.get("x-csrf-token")
        if token is None:
            token = dict(parse_qsl(body.decode("utf-8", "replace"))).get("csrf_token")
        if identity is None or not auth.check_csrf(identity, token):
            stale = (
                "missing or stale CSRF token: reload the page and try again "
                "(scripts: GET /api/csrf for one)"
            )
            return _refusal(path, 403, stale), replay
        if self.dashboard.read_only and path not in _NOT_ACTIONS:
            return _refusal(path, 403, "the dashboard is read-only: actions are turned off"), replay
        return None, replay


def _refusal(path: str, status: int, message: str) -> Response:
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return Response(message, status_code=status, media_type="text/plain")
