"""The webhook client's transport, under httpx: connections (connection.py) kept per origin, each
new one made to an address the guard checked.

Idle connections are kept per origin (scheme, host, port), the most recently used taken first:
endpoints on one host (buyers of one CRM, an endpoint claimed by one worker's sender after the
other's) share them instead of each paying a TLS handshake on both sides. A connection carries one
request at a time, so sharing one never makes a slow endpoint delay another. The sender calls
`post`, which reads the answer into a plain object (httpx's request and response objects were a
fifth of a webhook's CPU in a burst); any other caller goes through httpx (handle_async_request).
httpx's default transport (httpcore over anyio) had cost about a millisecond of CPU per webhook.

Every new connection goes through the address guard (guard.resolve): the host is resolved here,
each address checked, and the connection made to a checked address, TLS still sending and
verifying the URL's hostname. A reused connection was made that way."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator

import certifi
import httpx

from app.services.webhooks.connection import (
    Answered,
    Connection,
    Disconnected,
    InvalidAnswer,
    Origin,
    request_head,
)
from app.services.webhooks.guard import RefusedAddress, Unresolvable, resolve

# An idle connection is kept this long: servers commonly keep theirs 60 s or more, and one closed
# sooner (Node's 5 s) is noticed before reuse or, in a race, the request goes once more on a new
# connection. Each new connection to a buyer costs a TLS handshake on both sides.
KEEPALIVE_SECONDS = 30.0
# An httpx caller's answer is read ahead at most this far before reading pauses.
READ_AHEAD = 256 * 1024


class RefusedUrl(httpx.ConnectError):
    """The URL's host resolves to an address webhooks may not reach (guard.refusal)."""


class WebhookTransport(httpx.AsyncBaseTransport):
    """`max_idle_per_origin`: idle connections kept per origin, at most; the sender's
    WEBHOOK_MAX_CONCURRENCY (it never has more requests in flight, so never needs more)."""

    def __init__(self, *, allow_private: bool, max_idle_per_origin: int, ca_file: str | None = None) -> None:
        self.allow_private = allow_private
        self.max_idle_per_origin = max_idle_per_origin
        self._ssl = ssl.create_default_context(cafile=certifi.where())
        if ca_file:
            self._ssl.load_verify_locations(cafile=ca_file)
        self._idle: dict[Origin, list[Connection]] = {}
        self._pruned = time.monotonic()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's entry (any request through the WebhookClient); the sender uses `post`. The
        body is sent whole with its length (httpx announces a streamed one as chunked)."""
        body = await request.aread()
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name.lower() not in (b"transfer-encoding", b"content-length")
        ]
        if body or len(headers) < len(request.headers.raw):
            headers.append((b"content-length", b"%d" % len(body)))
        timeouts = request.extensions.get("timeout", {})
        into = Answered()
        method = request.method.encode()
        connection = await self._send(
            request.url,
            request_head(method, request.url.raw_path, headers) + body,  # one write
            no_body=method == b"HEAD",
            connect_within=timeouts.get("connect"),
            read_within=timeouts.get("read"),
            into=into,
            limit=READ_AHEAD,
            truncate=False,
            request=request,
        )
        assert into.status_code is not None
        return httpx.Response(
            status_code=into.status_code,
            headers=into.headers,
            stream=_Body(self, connection, request, read_within=timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": into.reason},
        )

    async def post(
        self,
        url: httpx.URL,
        message: bytes,
        *,
        connect_within: float | None,
        within: float,
        max_read: int,
        into: Answered,
    ) -> None:
        """One request, formatted by the caller (a whole HTTP/1.1 message: outbound.py), and its
        answer, read into `into` up to `max_read` bytes of body, without httpx's request and
        response objects; all of it within `within` seconds, else TimeoutError (connecting) or
        OutOfTime (the exchange). Raises what handle_async_request raises."""
        connection = await self._send(
            url,
            message,
            connect_within=connect_within,
            into=into,
            limit=max_read,
            truncate=True,
            total_within=within,
        )
        try:
            await connection.until(deadline=connection.deadline)
        except (OSError, Disconnected, InvalidAnswer) as exc:
            connection.close()
            raise _mapped(exc, None) from exc
        except BaseException:
            connection.close()
            raise
        if connection.ended:
            self.release(connection)
        else:
            connection.close()  # cut at max_read: the rest is never read, the connection not reused

    async def _send(
        self,
        url: httpx.URL,
        message: bytes,
        *,
        connect_within: float | None,
        into: Answered,
        limit: int,
        truncate: bool,
        no_body: bool = False,
        read_within: float | None = None,
        total_within: float | None = None,
        request: httpx.Request | None = None,
    ) -> Connection:
        """Sends the request (`message`, whole: one write) on an idle connection of its origin or
        a new one, and reads the answer's head into `into`; the caller reads the body on the
        connection returned (its exchange's `deadline` kept on it). `no_body`: the request is HEAD.
        `total_within`: all of it."""
        origin: Origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        self._prune()
        idle = self._take_idle(origin)
        deadline = None
        if total_within is not None:
            deadline = (idle.loop if idle else asyncio.get_running_loop()).time() + total_within
        connection = idle or await self._connect_by(origin, connect_within, deadline, request)
        while True:
            try:
                await connection.exchange(
                    message,
                    into,
                    limit,
                    truncate=truncate,
                    no_body=no_body,
                    within=read_within,
                    deadline=deadline,
                )
                return connection
            except (OSError, Disconnected, InvalidAnswer) as exc:
                connection.close()
                if idle is None or isinstance(exc, InvalidAnswer) or into.status_code is not None:
                    raise _mapped(exc, request) from exc
            except BaseException:  # cancelled, out of time, an httpx caller's read timeout: half-used
                connection.close()
                raise
            # a kept-alive connection the server had closed: once more on a new one (at least
            # once: the receiver deduplicates on webhook-id should it have seen the first)
            idle = None
            connection = await self._connect_by(origin, connect_within, deadline, request)

    async def _connect_by(
        self, origin: Origin, within: float | None, deadline: float | None, request: httpx.Request | None
    ) -> Connection:
        """A new connection within `within` seconds, and by `deadline` (TimeoutError)."""
        if deadline is None:
            return await self._connect(origin, within, request)
        async with asyncio.timeout_at(deadline):
            return await self._connect(origin, within, request)

    async def _connect(
        self, origin: Origin, within: float | None, request: httpx.Request | None
    ) -> Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                addresses = await resolve(host, port, allow_private=self.allow_private)
                failure: Exception | None = None
                for address in addresses:
                    try:
                        _, connection = await loop.create_connection(
                            lambda: Connection(origin, loop),
                            address,
                            port,
                            ssl=self._ssl if tls else None,
                            server_hostname=host if tls else None,
                        )
                        return connection
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

    def _take_idle(self, origin: Origin) -> Connection | None:
        """The origin's most recently used idle connection that is still usable (the likeliest
        to be still open on the server's side), or None; unusable ones are closed on the way."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.open and time.monotonic() - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None

    def release(self, connection: Connection) -> None:
        """After an answer read to its end: kept for its origin's next request if both sides allow."""
        if not connection.finish():
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self.max_idle_per_origin:
            idle.pop(0).close()  # the least recently used
        idle.append(connection)

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


class _Body(httpx.AsyncByteStream):
    """An httpx caller's answer body, read as it arrives."""

    def __init__(
        self,
        transport: WebhookTransport,
        connection: Connection,
        request: httpx.Request,
        *,
        read_within: float | None,
    ):
        self._transport, self._connection, self._request = transport, connection, request
        self._read_within = read_within
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        try:
            while True:
                await connection.until(data=True, within=self._read_within)
                if connection.into is not None and connection.into.body:
                    yield connection.take()
                    continue  # what came while the caller had it is taken before the end is
                if connection.ended:
                    self._done = True
                    self._transport.release(connection)
                    return
        except (OSError, Disconnected, InvalidAnswer) as exc:
            connection.close()
            self._done = True
            raise _mapped(exc, self._request) from exc
        except BaseException:  # a read timeout, cancelled: the rest is never read
            connection.close()
            self._done = True
            raise

    async def aclose(self) -> None:
        if not self._done:  # the answer was not read to its end: the connection cannot be reused
            self._done = True
            self._connection.close()


def _mapped(exc: Exception, request: httpx.Request | None) -> httpx.HTTPError:
    if isinstance(exc, InvalidAnswer | Disconnected):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
