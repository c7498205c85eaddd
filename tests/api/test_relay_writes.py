"""How relayed frames reach a socket (app/resolvers/relay.py, app/internals/uvicorn.py): under
uvicorn's sans-I/O WebSockets several due frames go out in one write and a full buffer makes the
writer wait (a slow subscriber stays bounded); a closed connection is WebSocketDisconnected; any
other server gets them frame by frame through Starlette. tests/tasks/test_relay.py checks the
bytes against the full path on a real server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.websockets import WebSocketState
from strawberry.http.exceptions import WebSocketDisconnected

from app.internals.uvicorn import SERVER_SEND, probe_protocol
from app.resolvers.relay import RelayingHandler


class Socket:
    """What send_texts uses of a Starlette WebSocket."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.application_state = WebSocketState.CONNECTED
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


def handler_on(socket: Socket) -> RelayingHandler:
    return RelayingHandler(
        view=None,  # type: ignore[arg-type]
        websocket=SimpleNamespace(ws=socket),  # type: ignore[arg-type]
        context=None,
        root_value=None,
        schema=None,  # type: ignore[arg-type]
        connection_init_wait_timeout=None,  # type: ignore[arg-type]
    )


async def test_due_frames_go_out_in_one_write_as_uvicorn_frames_each() -> None:
    batched, one_by_one = probe_protocol(), probe_protocol()
    frames = ['{"id":"1","type":"next","payload":{"data":{}}}', '{"id":"1","type":"complete"}']
    await handler_on(Socket({SERVER_SEND: batched.send})).send_texts(frames)
    for frame in frames:
        await one_by_one.send({"type": "websocket.send", "text": frame})
    assert len(batched.transport.written) == 1
    assert batched.transport.written[0] == b"".join(one_by_one.transport.written)


async def test_a_full_buffer_makes_the_writer_wait() -> None:
    protocol = probe_protocol()
    protocol.pause_writing()  # the transport's buffer is over its high-water mark
    writing = asyncio.create_task(handler_on(Socket({SERVER_SEND: protocol.send})).send_texts(["a", "b"]))
    await asyncio.sleep(0.05)
    assert not writing.done()
    assert protocol.transport.written == []
    protocol.resume_writing()
    await asyncio.wait_for(writing, 1)
    assert len(protocol.transport.written) == 1


async def test_a_closed_connection_is_websocket_disconnected() -> None:
    protocol = probe_protocol()
    protocol.connection_lost(None)  # the client went away
    socket = Socket({SERVER_SEND: protocol.send})
    with pytest.raises(WebSocketDisconnected):
        await handler_on(socket).send_texts(["a"])
    assert socket.application_state is WebSocketState.DISCONNECTED
    assert protocol.transport.written == []


async def test_another_server_gets_the_frames_one_by_one_through_starlette() -> None:
    socket = Socket({"type": "websocket"})  # no uvicorn sans-I/O send kept
    await handler_on(socket).send_texts(["a", "b"])
    assert socket.sent == ["a", "b"]
