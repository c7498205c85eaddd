"""uvicorn's WebSocket protocol (websockets-sansio), with its writes coalesced per event-loop turn.

A run's events reach a niche feed together (one pub/sub message), and each subscriber's socket was
sent them as one `send()` system call per frame: on 1,000 sockets that was 38% of the API's CPU
(bench/e2e.py (c), py-spy). Frames written during one turn of the event loop now leave in one call
at the end of that turn; nothing waits longer than the turn itself. uvicorn takes the class by
import path (`--ws app.websocket:CoalescingWebSocketProtocol`, see app.main.api_argv)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class CoalescingTransport:
    """A transport whose writes are joined and handed on once per loop turn; everything else
    (close flushes first) goes to the wrapped transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self._pending)) + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
