"""The HTML pages the app serves (/dashboard for operators, /portal for buyers) and their static
assets under /static, all behind one set of hardening headers.

The pages hold no inline script or style: their code and styles are files under app/static, so
the Content-Security-Policy can allow scripts and styles from this origin only ('self') and no
injected markup can run. Only the routes made here get the headers: GraphiQL (development only)
loads its code from a CDN and inline, and JSON responses have nothing to frame or sniff."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Environment, Settings

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# url -> file: a page added here is served like the others, headers included
PAGES = {
    "/dashboard": HERE / "dashboard" / "index.html",
    "/portal": HERE / "portal" / "index.html",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",  # everything not named below is refused
        "script-src 'self'",  # no 'unsafe-inline', no eval: only the files under /static
        "style-src 'self'",
        "img-src 'self' data:",  # data: the portal's QR code, an SVG in an <img> (which runs no script)
        "font-src 'self'",
        "connect-src 'self'",  # fetch to /graphql and /exports, the WebSocket to /graphql
        "base-uri 'none'",
        "form-action 'none'",  # the forms are handled by script, never submitted
        "frame-ancestors 'none'",  # no clickjacking: no page may frame these
    ]
)
# two years, the preload list's minimum; sent in production only, where TLS terminates in front
STRICT_TRANSPORT_SECURITY = "max-age=63072000; includeSubDomains"


def page_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if settings.environment is Environment.PRODUCTION:
        headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class HardeningHeaders:
    """Adds the headers, computed once, to every response of the wrapped routes (errors
    included: a 404 under /static is still a page of this origin)."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Assets(StaticFiles):
    """StaticFiles answers a missing file by raising, which the app's exception handler turns into
    a response outside these routes' middleware: return it here instead, so it gets the headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


def _serve_file(path: Path) -> Callable[[Request], Awaitable[Response]]:
    """Read per request (in a thread), so an edited page shows on reload."""

    async def endpoint(request: Request) -> Response:
        return FileResponse(path, media_type="text/html; charset=utf-8")

    return endpoint


def page_routes(settings: Settings) -> list[BaseRoute]:
    """Every page of PAGES and /static, each wrapped in the hardening headers."""
    hardened = [Middleware(HardeningHeaders, headers=page_headers(settings))]
    routes: list[BaseRoute] = [
        Route(url, _serve_file(path), methods=["GET"], middleware=hardened) for url, path in PAGES.items()
    ]
    routes.append(Mount("/static", app=_Assets(directory=STATIC), name="static", middleware=hardened))
    return routes
