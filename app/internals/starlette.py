"""Starlette internals, for app/resolvers/relay.py and app/main.py (KeepServerSend). The relay writes
a subscriber's frames beside Starlette's `WebSocket.send`, so it marks a socket whose write failed
closed as that send does (`WebSocket.application_state`), and it finds the server's own `send` in
the scope, where the KeepServerSend middleware put it: Starlette's router hands the endpoint the
scope dict the middleware saw. Both are checked here by running a probe application once (it awaits
nothing real, so it runs to its end without an event loop)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from app.internals.checks import Library, Use

DISTRIBUTION = "starlette"
WRITTEN_AGAINST = "1.10.0"
MODULE = "app/internals/starlette.py"
USERS = "app/resolvers/relay.py, app/main.py"
_MARK = "leadwheel.probe"


def _probe() -> dict[str, Any]:
    """What a WebSocket endpoint behind a middleware sees: the middleware's scope entry, and the
    socket's application_state."""
    seen: dict[str, Any] = {}

    class Mark:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            scope[_MARK] = send
            await self.app(scope, receive, send)

    async def endpoint(socket: WebSocket) -> None:
        seen["mark"] = socket.scope.get(_MARK)
        seen["state"] = getattr(socket, "application_state", None)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        seen.setdefault("sent", []).append(message)

    app = Starlette(routes=[WebSocketRoute("/", endpoint)], middleware=[Middleware(Mark)])
    scope = {"type": "websocket", "path": "/", "headers": [], "query_string": b"", "root_path": ""}
    scope |= {"scheme": "ws", "server": ("probe", 1), "client": ("probe", 2), "subprotocols": []}
    run = app(scope, receive, send)
    try:
        run.send(None)
    except StopIteration:
        seen["server_send"] = send
        return seen
    run.close()
    raise RuntimeError("the probe application waited for something: it cannot be run here")


def _scope_reaches_the_endpoint() -> str | None:
    seen = _probe()
    if seen.get("mark") is not seen["server_send"]:
        return "a WebSocket endpoint no longer sees the scope entry a middleware set"
    return None


def _application_state() -> str | None:
    if not {"CONNECTED", "DISCONNECTED"} <= set(WebSocketState.__members__):
        return "WebSocketState has no CONNECTED or DISCONNECTED"
    if _probe().get("state") is not WebSocketState.CONNECTING:
        return "a new WebSocket's application_state is not WebSocketState.CONNECTING"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    MODULE,
    (
        Use("the scope a middleware set reaches the WebSocket endpoint", USERS, _scope_reaches_the_endpoint),
        Use("WebSocket.application_state, WebSocketState", USERS, _application_state),
    ),
)
