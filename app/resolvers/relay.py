"""Relaying a shared subscription event straight to the socket. When many subscribers watch the
same feed with the same document and variables, the first one's event goes the whole way through
graphql-core and Strawberry (executed once, app/resolvers/executor.py); the message payload
Strawberry sent for it is kept, encoded. Every other subscriber of that event writes the kept
payload inside its own frame head (`{"id":…,"type":"next","payload":`, encoded once per
subscription) to its socket, from its resolver, without the per-result machinery (the event
mapping, execution lookup, extension hooks, result conversion, message dict, encoding, the
handler's and the adapter's send), the frames due together in one write (app/internals/uvicorn.py).
In a 1,000-subscriber fan-out (bench/e2e.py (c)) the API's CPU per event delivered went from ~31
to ~11 µs with the kept payload (2026-11-27), and from 25–28 to 13–14 µs (2026-12-03, a slower
machine) with the frame written as text and a subscriber's due frames in one write.

Only payloads of data alone are kept (no errors, no extensions), so what a subscriber receives is
byte for byte what the full path would have sent. Only graphql-transport-ws operations relay this
way (the handler below marks the operation its task runs); any other transport takes the full path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import orjson
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message

from app.internals.strawberry_graphql import (
    BaseGraphQLTransportWSHandler,
    Operation,
    graphql_core_schema,
    starlette_socket,
)
from app.internals.uvicorn import SERVER_SEND, frames_writer, write_texts
from app.metrics import BATCHED_FRAMES, RELAYED_EVENTS
from app.resolvers.executor import shared_result, variables_key
from app.resolvers.sharing import shared_names

log = logging.getLogger("leadwheel.relay")

_operation: ContextVar[Operation[Any, Any] | None] = ContextVar("ws_operation", default=None)
_relay: ContextVar[Relay | None] = ContextVar("ws_relay", default=None)


class RelayingHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Strawberry's graphql-transport-ws handler. It marks the operation each task runs, keeps
    the payload of an event result its subscription's Relay is waiting for, encoded, and writes
    frames encoded already."""

    _writer: Any  # app/internals/uvicorn.py's frames_writer for this connection, once looked up

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        _operation.set(operation)  # in this task's context: seen by the operation's resolver
        await super().run_operation(operation)

    async def send_message(self, message: Message) -> None:
        relay = _relay.get()
        if relay is not None and relay.waiting is not None and message["type"] == "next":
            relay.keep(message["payload"])
        await super().send_message(message)

    async def send_texts(self, frames: Sequence[str]) -> None:
        """Messages encoded already, in order, as text frames as send_message writes each; with
        one write under uvicorn's sans-I/O WebSockets (a write per frame was most of a fan-out's
        CPU), else one Starlette send each. A gone socket raises WebSocketDisconnected."""
        socket = starlette_socket(self.websocket)
        try:
            writer = self._writer
        except AttributeError:
            writer = self._writer = frames_writer(socket.scope.get(SERVER_SEND))
            if writer is None and not _told_per_frame:
                _tell_per_frame(socket.scope.get(SERVER_SEND))
        if writer is None:
            try:
                for frame in frames:
                    await socket.send_text(frame)
            except WebSocketDisconnect as exc:
                raise WebSocketDisconnected from exc
            return
        if socket.application_state is not WebSocketState.CONNECTED:  # closed by this side
            raise WebSocketDisconnected
        try:
            await write_texts(writer, frames)
        except OSError as exc:  # as Starlette's send: the socket is gone
            socket.application_state = WebSocketState.DISCONNECTED
            raise WebSocketDisconnected from exc
        BATCHED_FRAMES[0] += len(frames)


_told_per_frame = False


def _tell_per_frame(send: object) -> None:
    """Once per process: relayed frames go one Starlette send each (correct, slower)."""
    global _told_per_frame  # noqa: PLW0603
    _told_per_frame = True
    log.info("relay.frames_sent_one_by_one server_send=%s", type(send).__qualname__)


class Relay:
    """A subscription's direct path. `send_from(progresses, start)` sends the kept payloads of
    events another subscriber with the same operation and variables has already received."""

    __slots__ = ("_handler", "_head", "_node", "_operation", "_variables", "waiting")

    def __init__(self, operation: Operation[Any, Any], node: object, variables: Any) -> None:
        self._operation, self._node, self._variables = operation, node, variables
        self._handler: RelayingHandler = operation.handler  # type: ignore[assignment]
        # what orjson writes before the payload of {"id": id, "type": "next", "payload": …}
        self._head = '{"id":' + orjson.dumps(operation.id).decode() + ',"type":"next","payload":'
        self.waiting: object | None = None

    @classmethod
    def of(cls, info: Any) -> Relay | FullPath:
        """FullPath outside graphql-transport-ws, for variables that cannot be shared, or for a
        subscription the schema does not let share (app/resolvers/sharing.py)."""
        operation = _operation.get()
        variables = variables_key(info.variable_values)
        if operation is None or variables is None or not isinstance(operation.handler, RelayingHandler):
            return FullPath()
        if info.field_name not in shared_names(graphql_core_schema(info.schema)):
            return FullPath()
        relay = cls(operation, info.operation, variables)
        _relay.set(relay)  # the resolver runs in the operation's task: so does send_message
        return relay

    async def send_from(self, progresses: Sequence[object], start: int) -> int:
        """Sends progresses[start:] up to the first whose payload is not kept (the first
        subscriber's, an event with errors), in one write; returns where it stopped. The resolver
        yields the one there, and the payload that then goes out is kept for the others."""
        self.waiting = None
        frames: list[str] = []
        end = start
        while end < len(progresses):
            shared = shared_result(progresses[end], self._node, self._variables)
            if shared is None or shared.encoded is None:
                self.waiting = progresses[end]
                break
            frames.append(self._head + shared.encoded + "}")
            end += 1
        if not frames or self._operation.completed:  # as send_operation_message: nothing after complete
            return end
        try:
            await self._handler.send_texts(frames)
        except WebSocketDisconnected:
            # the socket is gone: the handler ends the operation when it reads the close (raised
            # here, inside the resolver, Strawberry would log it as a GraphQL error of the event)
            return end
        RELAYED_EVENTS[0] += len(frames)
        return end

    def keep(self, payload: Any) -> None:
        """The payload Strawberry sends for the event this subscription yielded: kept if it is data
        alone and that data is the shared result of the event (so any subscriber would get it)."""
        progress, self.waiting = self.waiting, None
        shared = shared_result(progress, self._node, self._variables) if progress is not None else None
        if shared is None or shared.encoded is not None or not isinstance(payload, dict) or len(payload) != 1:
            return
        if payload.get("data") is shared.result.data:  # what this very execution produced
            shared.encoded = orjson.dumps(payload).decode()


class FullPath:
    """No direct path: the resolver yields every event."""

    async def send_from(self, progresses: Sequence[object], start: int) -> int:
        return start
