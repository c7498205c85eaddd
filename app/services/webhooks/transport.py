"""The webhook client's transport: HTTP/1.1 with h11 over asyncio streams, under httpx.

httpx's default transport (httpcore over anyio) cost about a millisecond of CPU per webhook on the
benchmark machine, most of it in machinery a webhook does not use (a pool that checks every
connection's socket on each request, anyio's cancel scopes, the head and the body written in two
system calls). Idle connections are kept per origin (scheme, host, port), the most recently used
taken first: endpoints on one host (buyers of one CRM, an endpoint claimed by one worker's sender
after the other's) share them instead of each paying a TLS handshake on both sides (in the burst
benchmark, with an endpoint per buyer, a handshake for every two or three webhooks). A connection
carries one request at a time, so sharing one never makes a slow endpoint delay another. Each
request is written in one call; h11 does the HTTP/1.1 framing (the parsing a hand-written client
would get wrong). The sender calls `post`, which reads the answer into a plain object: httpx's
request and response objects were a fifth of a webhook's CPU in a burst.

Every new connection goes through the address guard (guard.resolve): the host is resolved here,
each address checked, and the connection made to a checked address, TLS still sending and
verifying the URL's hostname. A reused connection was made that way."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import certifi
import h11
import httpx

from app.services.webhooks.guard import RefusedAddress, Unresolvable, resolve

# An idle connection is kept this long: servers commonly keep theirs 60 s or more, and one closed
# sooner (Node's 5 s) is noticed before reuse or, in a race, the request goes once more on a new
# connection. Each new connection to a buyer costs a TLS handshake on both sides.
KEEPALIVE_SECONDS = 30.0
READ_CHUNK = 65536

Origin = tuple[bytes, bytes, int]  # scheme, host, port


class RefusedUrl(httpx.ConnectError):
    """The URL's host resolves to an address webhooks may not reach (guard.refusal)."""


@dataclass(slots=True)
class Answered:
    """What `post` has read so far (kept by the caller when its time runs out): the answer's head,
    and its body up to the limit."""

    head: h11.Response | None = None
    body: bytearray = field(default_factory=bytearray)

    def header(self, name: bytes) -> bytes | None:
        headers = self.head.headers if self.head is not None else []
        return next((value for key, value in headers if key == name), None)


@dataclass
class _Connection:
    origin: Origin
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def reusable(self, origin: Origin) -> bool:
        return (
            self.origin == origin
            and time.monotonic() - self.idle_since < KEEPALIVE_SECONDS
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class WebhookTransport(httpx.AsyncBaseTransport):
    """`max_idle_per_origin`: idle connections kept per origin, at most; the sender's
    WEBHOOK_MAX_CONCURRENCY (it never has more requests in flight, so never needs more)."""

    def __init__(self, *, allow_private: bool, max_idle_per_origin: int, ca_file: str | None = None) -> None:
        self.allow_private = allow_private
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        if ca_file:
            self._ssl.load_verify_locations(cafile=ca_file)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._pruned = time.monotonic()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's entry (any request through the WebhookClient); the sender uses `post`."""
        body = await request.aread()
        connection, response = await self._send(
            request.url,
            request.method.encode(),
            request.headers.raw,
            body,
            connect_within=request.extensions.get("timeout", {}).get("connect"),
            request=request,
        )
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Body(self, connection, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason},
        )

    async def post(
        self,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_within: float | None,
        max_read: int,
        into: Answered,
    ) -> None:
        """One POST and its answer, read into `into` up to `max_read` bytes of body, without
        httpx's request and response objects (a fifth of a webhook's CPU in a burst). `headers`
        are sent as they are, after `host` and `content-length`. Raises what
        handle_async_request raises."""
        head = [(b"host", url.netloc), (b"content-length", b"%d" % len(body)), *headers]
        connection, into.head = await self._send(url, b"POST", head, body, connect_within=connect_within)
        read = into.body
        try:
            while len(read) < max_read:
                event = await _next_event(connection)
                if isinstance(event, h11.Data):
                    read += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._release(connection)
                    return
        except (OSError, h11.RemoteProtocolError, _Disconnected) as exc:
            connection.close()
            raise _mapped(exc, None) from exc
        except BaseException:
            connection.close()
            raise
        connection.close()  # the rest is never read: the connection cannot be reused

    async def _send(
        self,
        url: httpx.URL,
        method: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_within: float | None,
        request: httpx.Request | None = None,
    ) -> tuple[_Connection, h11.Response]:
        """Sends the request on an idle connection of its origin or a new one, and reads the
        answer's head; the caller reads the body on the connection returned."""
        origin: Origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        head = h11.Request(method=method, target=url.raw_path, headers=headers)
        self._prune()
        idle = self._take_idle(origin)
        connection = idle or await self._connect(origin, connect_within, request)
        try:
            return connection, await self._exchange(connection, head, body)
        except asyncio.CancelledError:  # the attempt's time ran out: the connection is half-used
            connection.close()
            raise
        except (OSError, h11.RemoteProtocolError, _Disconnected) as exc:
            connection.close()
            if idle is None or not isinstance(exc, OSError | _Disconnected):
                raise _mapped(exc, request) from exc
        # a kept-alive connection the server had closed: once more on a new one (at least once:
        # the receiver deduplicates on webhook-id should it have seen the first)
        connection = await self._connect(origin, connect_within, request)
        try:
            return connection, await self._exchange(connection, head, body)
        except BaseException as again:
            connection.close()
            if isinstance(again, OSError | h11.RemoteProtocolError | _Disconnected):
                raise _mapped(again, request) from again
            raise

    async def _connect(
        self, origin: Origin, within: float | None, request: httpx.Request | None
    ) -> _Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        tls = scheme == b"https"
        try:
            async with asyncio.timeout(within):
                addresses = await resolve(host, port, allow_private=self.allow_private)
                failure: Exception | None = None
                for address in addresses:
                    try:
                        reader, writer = await asyncio.open_connection(
                            address,
                            port,
                            ssl=self._ssl if tls else None,
                            server_hostname=host if tls else None,
                            limit=READ_CHUNK,
                        )
                        return _Connection(origin, reader, writer)
                    except OSError as exc:  # ssl.SSLError included
                        failure = exc
                assert failure is not None
                raise failure
        except RefusedAddress as exc:
            raise RefusedUrl(str(exc), request=request) from exc
        except Unresolvable as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def _exchange(self, connection: _Connection, head: h11.Request, body: bytes) -> h11.Response:
        protocol = connection.protocol
        out = protocol.send(head) or b""
        if body:
            out += protocol.send(h11.Data(data=body)) or b""
        out += protocol.send(h11.EndOfMessage()) or b""
        connection.writer.write(out)  # the head and the body in one system call
        await connection.writer.drain()
        while True:
            event = await _next_event(connection)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 1xx: the answer follows
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} before the answer")

    def _take_idle(self, origin: Origin) -> _Connection | None:
        """The origin's most recently used idle connection that is still usable (the likeliest
        to be still open on the server's side), or None; unusable ones are closed on the way."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable(origin):
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection) -> None:
        """After an answer read to its end: kept for its origin's next request if both sides allow."""
        protocol = connection.protocol
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            connection.idle_since = time.monotonic()
            idle = self._idle.setdefault(connection.origin, [])
            if len(idle) >= self.max_idle_per_origin:
                idle.pop(0).close()  # the least recently used
            idle.append(connection)
        else:
            connection.close()

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < KEEPALIVE_SECONDS:
            return
        self._pruned = now
        for origin, idle in list(self._idle.items()):
            kept = [c for c in idle if now - c.idle_since < KEEPALIVE_SECONDS]
            for connection in idle:
                if now - connection.idle_since >= KEEPALIVE_SECONDS:
                    connection.close()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


class _Disconnected(Exception):
    """The server closed the connection before its answer was complete."""


async def _next_event(connection: _Connection) -> h11.Event:
    protocol = connection.protocol
    closed = False
    while True:
        try:
            event = protocol.next_event()
        except h11.RemoteProtocolError as exc:
            if closed:  # the end of the stream where an answer (or the rest of one) was due
                raise _Disconnected(
                    "the server closed the connection before its answer was complete"
                ) from exc
            raise
        if event is h11.NEED_DATA:
            data = await connection.reader.read(READ_CHUNK)
            closed = not data
            protocol.receive_data(data)  # b"": the server closed
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise _Disconnected("the server closed the connection before its answer ended")
        if event is h11.PAUSED:
            raise h11.RemoteProtocolError("the server sent more than one answer")
        assert isinstance(event, h11.Event)
        return event


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: WebhookTransport, connection: _Connection, request: httpx.Request):
        self._transport, self._connection, self._request = transport, connection, request
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                event = await _next_event(self._connection)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                    self._transport._release(self._connection)  # noqa: SLF001
                    return
        except (OSError, h11.RemoteProtocolError, _Disconnected) as exc:
            self._connection.close()
            self._done = True
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        if not self._done:  # the answer was not read to its end: the connection cannot be reused
            self._done = True
            self._connection.close()


def _mapped(exc: Exception, request: httpx.Request | None) -> httpx.HTTPError:
    if isinstance(exc, h11.RemoteProtocolError):
        return httpx.RemoteProtocolError(f"invalid answer: {exc}", request=request)
    if isinstance(exc, _Disconnected):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
