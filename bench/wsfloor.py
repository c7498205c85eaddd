"""The fan-out floor of bench/e2e.py (c): the least a Starlette WebSocket endpoint under uvicorn
can spend to send one pre-encoded frame to each of many subscribers. bench/e2e.py runs it in its
own process with the API's uvicorn flags (app.main.api_argv: per-message deflate off), connects the
same 1,000 graphql-transport-ws clients as (c), and divides the API's CPU per event delivered by
this process's CPU per frame delivered (fanout_floor_ratio).

It does what the API's feed does minus GraphQL: the handshake (connection_init, connection_ack,
subscribe), then per connection one task that waits on its own queue and sends what arrives with
`websocket.send_text`, as Strawberry does. `POST /fanout` with `{"groups": [{"run": 0, "types":
["QUEUED"]}, {"run": 0, "types": ["STARTED", …, "COMPLETED"]}, …], "gap_ms": 5}` encodes each
group's frames once (a nicheActivity `next` message: one runId per run, `at` = now) and puts them
on every queue, as the API's ProgressHub puts the events of one Redis message; a group every
gap_ms.

    python -m uvicorn bench.wsfloor:create_app --factory --port 8001 --ws-per-message-deflate false
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

ACK = orjson.dumps({"type": "connection_ack"}).decode()


def frame(operation_id: str, run_id: str, kind: str, at: str) -> str:
    """A relayed nicheActivity event as bench/e2e.py's FEED selects it (runId, type, at)."""
    data = {"nicheActivity": {"runId": run_id, "type": kind, "at": at}}
    return orjson.dumps({"id": operation_id, "type": "next", "payload": {"data": data}}).decode()


def create_app() -> Starlette:
    queues: set[asyncio.Queue[str]] = set()

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="graphql-transport-ws")
        await websocket.receive_text()  # connection_init
        await websocket.send_text(ACK)
        subscribe = orjson.loads(await websocket.receive_text())
        if subscribe["id"] != "1":  # the frames are encoded once for everyone, under operation "1"
            await websocket.close(4400, "operation id must be 1")
            return
        queue: asyncio.Queue[str] = asyncio.Queue()
        queues.add(queue)
        try:
            while True:
                await websocket.send_text(await queue.get())
        finally:
            queues.discard(queue)

    async def fanout(request: Request) -> Response:
        body = orjson.loads(await request.body())
        gap = float(body.get("gap_ms", 0)) / 1000
        run_ids: dict[int, str] = {}
        for i, group in enumerate(body["groups"]):
            if i:
                await asyncio.sleep(gap)
            run_id = run_ids.setdefault(int(group["run"]), str(uuid.uuid4()))
            at = datetime.now(UTC).isoformat()
            frames = [frame("1", run_id, kind, at) for kind in group["types"]]
            for queue in list(queues):
                for encoded in frames:
                    queue.put_nowait(encoded)
        return JSONResponse({"subscribers": len(queues), "runs": list(run_ids.values())})

    async def ready(request: Request) -> Response:
        return JSONResponse({"subscribers": len(queues)})

    return Starlette(
        routes=[
            WebSocketRoute("/graphql", feed),
            Route("/fanout", fanout, methods=["POST"]),
            Route("/readyz", ready),
        ]
    )
