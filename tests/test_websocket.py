"""app/websocket.py on real sockets: writes of one loop turn leave together, in order, and
nothing is lost on close. (Every WebSocket test of the API runs through it too: tests/tasks.)"""

from __future__ import annotations

import asyncio
import socket

from app.websocket import CoalescingTransport


_peers: list[asyncio.StreamWriter] = []  # a writer closes its socket when collected


async def _pair() -> tuple[CoalescingTransport, asyncio.Transport, asyncio.StreamReader]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    raw, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    reader, writer = await asyncio.open_connection(sock=theirs)
    _peers.append(writer)
    return CoalescingTransport(raw, loop), raw, reader  # type: ignore[arg-type]


async def test_writes_of_one_turn_leave_together_at_its_end() -> None:
    transport, raw, reader = await _pair()
    sent: list[bytes] = []
    raw_write = raw.write
    raw.write = lambda data: (sent.append(bytes(data)), raw_write(data))[1]  # type: ignore[method-assign]
    for frame in (b"one,", b"two,", b"three"):
        transport.write(frame)
    assert sent == []  # still this turn
    await asyncio.sleep(0)
    assert sent == [b"one,two,three"]  # one write, in order
    assert await reader.readexactly(13) == b"one,two,three"
    transport.close()


async def test_close_sends_what_is_pending_first() -> None:
    transport, _, reader = await _pair()
    transport.write(b"last frame")
    transport.close()
    assert await reader.read() == b"last frame"
