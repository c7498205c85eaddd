"""The client side of graphql-transport-ws, for `leadwheel distribute-batch` (and the benchmarks
and tests): connect, sign in with connection_init, subscribe as operation "1". What follows is
the caller's to read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

PROTOCOL = Subprotocol("graphql-transport-ws")


@asynccontextmanager
async def subscription(
    url: str, token: str | None, query: str, variables: dict[str, Any], **connect: Any
) -> AsyncIterator[ClientConnection]:
    """A refused sign-in closes the socket (4403): the first read raises ConnectionClosedError."""
    async with websockets.connect(url, subprotocols=[PROTOCOL], **connect) as ws:
        payload = {"authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        reply = json.loads(await ws.recv())
        if reply.get("type") != "connection_ack":
            raise websockets.InvalidMessage(f"expected connection_ack, got {reply}")
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
        )
        yield ws
