"""uvicorn internals, for app/resolvers/relay.py: several relayed frames to one WebSocket in one
write. ASGI sends one message per call, and uvicorn's sans-I/O WebSocket protocol writes each to
its transport at once: a syscall per frame, most of the CPU of a fan-out. When a subscriber has a
run's steps due together (one pub/sub message: bench/e2e.py (c)), `write_texts` frames them all
and writes them with one `transport.write`, as `send` would frame each.

- app/main.py's `KeepServerSend` puts the server's own `send` of a WebSocket into its scope
  (`SERVER_SEND`; Starlette's exception middleware wraps the one the endpoint sees); for
  `--ws websockets-sansio` (uvicorn's choice when websockets is installed, `--ws auto`) that is
  the bound `WebSocketsSansIOProtocol.send`. Any other server or implementation: `frames_writer`
  gives None and the relay sends frame by frame through Starlette.
- The protocol's `writable` (cleared while the transport's buffer is over its high-water mark:
  a slow subscriber waits, its hub queue overflows and it resyncs, memory stays bounded),
  `disconnected`, `close_sent`, `handshake_complete`, `initial_response`, `conn` (websockets'
  `ServerProtocol`: `send_text(data)`, `data_to_send()`) and `transport`, as its `send` uses them.
  A check writes the same frames both ways and compares the bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from app.internals.checks import Library, Use, import_failure, takes

DISTRIBUTION = "uvicorn"
WRITTEN_AGAINST = "0.55.0"
MODULE = "app/internals/uvicorn.py"
RELAY = "app/resolvers/relay.py"

try:
    from uvicorn.config import Config
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from uvicorn.server import ServerState
    from websockets.exceptions import InvalidState
    from websockets.protocol import State
except ImportError as error:
    raise import_failure(DISTRIBUTION, WRITTEN_AGAINST, MODULE, error) from error

__all__ = ["LIBRARY", "SERVER_SEND", "RecordingTransport", "frames_writer", "probe_protocol", "write_texts"]

SERVER_SEND = "leadwheel.server_send"  # the scope key app/main.py's KeepServerSend sets


class SocketGone(OSError):
    """The connection is closed or closing: nothing more can be written (uvicorn's send raises
    its ClientDisconnected, an OSError, in the same states)."""


def frames_writer(send: object) -> WebSocketsSansIOProtocol | None:
    """The protocol `write_texts` writes through, if `send` is uvicorn's sans-I/O WebSocket send."""
    protocol = getattr(send, "__self__", None)
    return protocol if isinstance(protocol, WebSocketsSansIOProtocol) else None


async def write_texts(protocol: Any, frames: Sequence[str]) -> None:
    """Text frames in order, framed as `send({"type": "websocket.send", "text": …})` frames each,
    with one write. Raises SocketGone where `send` raises ClientDisconnected."""
    await protocol.writable.wait()  # as send: a full buffer waits
    if (
        protocol.disconnected
        or protocol.close_sent
        or not protocol.handshake_complete
        or protocol.initial_response is not None
    ):
        raise SocketGone
    conn = protocol.conn
    try:
        for frame in frames:
            conn.send_text(frame.encode())
    except InvalidState as exc:
        raise SocketGone from exc
    protocol.transport.write(b"".join(conn.data_to_send()))


# --- checks -------------------------------------------------------------------------------------


class RecordingTransport:
    """Keeps what is written: the probe protocol's transport (these checks, and tests)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None


async def _probe_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def probe_protocol(loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """A sans-I/O WebSocket protocol as after its accept, writing to a RecordingTransport."""
    config = Config(app=_probe_app, ws="websockets-sansio", log_config=None, lifespan="off")
    config.load()
    protocol: Any = WebSocketsSansIOProtocol(config, ServerState(), {}, _loop=loop)
    protocol.transport = RecordingTransport()
    protocol.connections.add(protocol)  # as connection_made
    protocol.handshake_complete = True
    protocol.conn.state = State.OPEN
    return protocol


def _run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Runs a coroutine that never waits (nothing here does) to its end, in or out of a running
    event loop (a process checks from inside its own)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("it waited")


def _same_bytes() -> str | None:
    """Frames written by write_texts are byte for byte those send writes, one by one."""
    loop = asyncio.new_event_loop()
    try:
        frames = ['{"id":"1","type":"next","payload":{}}', "é" * 200]
        written = []
        for batched in (False, True):
            protocol = probe_protocol(loop)
            writer = frames_writer(protocol.send)
            if writer is None:
                return "frames_writer does not find the protocol of its send"
            if batched:
                _run_now(write_texts(writer, frames))
            else:
                for frame in frames:
                    _run_now(protocol.send({"type": "websocket.send", "text": frame}))
            written.append(b"".join(protocol.transport.written))
            protocol.disconnected = True
            try:
                _run_now(write_texts(protocol, frames))
            except SocketGone:
                pass
            else:
                return "write_texts wrote to a disconnected protocol"
    finally:
        loop.close()
    if not written[0] or written[0] != written[1]:
        return "write_texts does not write what send writes for the same frames"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    MODULE,
    (
        Use(
            "WebSocketsSansIOProtocol.send(self, message)",
            RELAY,
            takes(WebSocketsSansIOProtocol, "send", ("self", "message")),
        ),
        Use(
            "WebSocketsSansIOProtocol: writable, disconnected, close_sent, handshake_complete, "
            "initial_response, conn.send_text, conn.data_to_send, transport",
            RELAY,
            _same_bytes,
        ),
    ),
)
