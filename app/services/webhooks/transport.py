"""The webhook client's transport: HTTP/1.1 on an asyncio protocol, answers parsed by httptools
(llhttp, Node's parser), under httpx.

A webhook is small and its answer usually one read: the cost per send is the machinery around it.
httpx's default transport (httpcore over anyio) cost about a millisecond of CPU per webhook on the
benchmark machine; h11 over asyncio streams, after it, still spent over a quarter of the sender's
CPU in h11's pure-Python framing (bench/webhook_sender.py: 385 µs per webhook then, 285 now). Here
a request is written in one call (its head formatted here: fixed names, values checked for line
breaks) and the answer is parsed by httptools' C parser as it arrives, straight into the caller's
`Answered`: one wake-up per answer.

Idle connections are kept per origin (scheme, host, port), the most recently used taken first:
endpoints on one host (buyers of one CRM, an endpoint claimed by one worker's sender after the
other's) share them instead of each paying a TLS handshake on both sides. A connection carries one
request at a time, so sharing one never makes a slow endpoint delay another. The sender calls
`post`, which reads the answer into a plain object (httpx's request and response objects were a
fifth of a webhook's CPU in a burst); any other caller goes through httpx (handle_async_request).

Every new connection goes through the address guard (guard.resolve): the host is resolved here,
each address checked, and the connection made to a checked address, TLS still sending and
verifying the URL's hostname. A reused connection was made that way."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import certifi
import httptools
import httpx

from app.services.webhooks.guard import RefusedAddress, Unresolvable, resolve

# An idle connection is kept this long: servers commonly keep theirs 60 s or more, and one closed
# sooner (Node's 5 s) is noticed before reuse or, in a race, the request goes once more on a new
# connection. Each new connection to a buyer costs a TLS handshake on both sides.
KEEPALIVE_SECONDS = 30.0
# An httpx caller's answer is read ahead at most this far before reading pauses.
READ_AHEAD = 256 * 1024
# An answer's status line and headers, at most (h11's limit): llhttp sets none, and a header value
# that never ends would grow for the whole timeout.
MAX_HEAD = 64 * 1024

Origin = tuple[bytes, bytes, int]  # scheme, host, port

# what may appear in a request's head (RFC 9110 tokens; a value without CR, LF or NUL; a target
# without spaces or controls): checked on every request, as h11 did, since a header injected
# through a value would be a request smuggled to the buyer
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_TARGET = re.compile(rb"[\x21-\x7e]+")


class RefusedUrl(httpx.ConnectError):
    """The URL's host resolves to an address webhooks may not reach (guard.refusal)."""


class _Disconnected(Exception):
    """The server closed the connection before its answer was complete."""


class _Invalid(Exception):
    """The server's answer is not HTTP/1.1 as it must be."""


@dataclass(slots=True)
class Answered:
    """What `post` has read so far (kept by the caller when its time runs out): the answer's status
    and headers (names in lower case), and its body up to the limit."""

    status_code: int | None = None
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError(f"invalid request method {method!r}")
    if not _TARGET.fullmatch(target):
        raise httpx.LocalProtocolError(f"invalid request target {target!r}")
    lines = [method + b" " + target + b" HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise httpx.LocalProtocolError(f"invalid header {name!r}")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class _Connection(asyncio.Protocol):
    """One connection to an origin. An exchange (`begin`) reads one answer into an `Answered`:
    1xx answers before it are skipped, the body is kept up to `limit` bytes (reading pauses there),
    and the answer ends at its length, its last chunk, or (with neither) the connection's end."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # lines that end in a bare LF, as some embedded servers send them; nothing else relaxed (a
        # doubled Content-Length or a folded header stays an invalid answer: both are ways to
        # smuggle an answer past a proxy)
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.idle_since = 0.0
        self.closed = False
        self.into: Answered | None = None  # the exchange's answer; None between exchanges
        self.limit = 0
        self.cut = True
        self.no_body = False  # an answer to HEAD: its head is all of it
        self.head_read = False
        self.ended = False
        self.keep_alive = False
        self.failure: Exception | None = None
        self._informational = False
        self._framed = False  # a length or chunks: else the body ends with the connection
        self._head_bytes = 0  # read before the answer's head was complete
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.into is None or self.ended:  # nothing asked: an answer to no request
            self._fail(_Invalid("the server sent data no request asked for"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # a callback's own error comes as the context of httptools' (one answer too many)
            cause = exc.__context__
            if isinstance(cause, _Invalid):
                self._fail(cause)
            else:
                failure = _Invalid(f"invalid answer: {exc}" + (f" ({cause!r})" if cause is not None else ""))
                failure.__cause__ = cause
                self._fail(failure)
            return
        if not self.head_read and not self.ended:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(_Invalid(f"the answer's head is longer than {MAX_HEAD // 1024} KiB"))

    def eof_received(self) -> bool:
        return False  # closes; connection_lost says what it ended

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.into is not None and not self.ended and self.failure is None:
            if exc is None and self.head_read and not self._framed and not self._informational:
                self.ended = True  # a body that ends with the connection (closed, not reset)
            else:
                self.failure = exc or _Disconnected(
                    "the server closed the connection before its answer was complete"
                )
        self._wake()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self.ended:  # a second answer to one request: parsing stops here (data_received fails)
            raise _Invalid("the server sent more than one answer")
        self._framed = False
        if self.into is not None:
            self.into.headers.clear()
            self.into.reason = b""

    def on_status(self, reason: bytes) -> None:
        if self.into is not None:
            self.into.reason += reason  # in pieces when the status line came in two reads

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True
        if self.into is not None:
            self.into.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:  # nothing here speaks another protocol
            raise _Invalid("the server switched protocols")
        self._informational = status < 200
        if self._informational or self.into is None:
            return  # 1xx: the answer follows
        self.into.status_code = status
        if status in (204, 304):
            self._framed = True  # no body
        self.head_read = True
        if self.no_body:
            # llhttp cannot be told the request was HEAD (it would wait for the length announced):
            # the answer ends here, and the connection with it
            self.ended, self.keep_alive = True, False
        self._wake()

    def on_body(self, body: bytes) -> None:
        into = self.into
        if into is None or self._informational:
            return
        if not self.cut:
            into.body += body
        elif (room := self.limit - len(into.body)) > 0:
            into.body += body[:room] if len(body) > room else body
        if len(into.body) >= self.limit:
            if self.transport is not None and not self.closed and not self._paused:
                self.transport.pause_reading()  # until the reader takes it, or drops the connection
                self._paused = True
            self._wake()
        elif not self.cut:
            self._wake()  # a streaming reader takes what came

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.no_body:
            return  # ended with its head
        self.ended = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # the exchange

    def begin(self, into: Answered, limit: int, *, cut: bool, no_body: bool = False) -> None:
        """`cut`: the body is kept up to `limit` bytes and the rest never read (the caller drops the
        connection); else reading pauses at `limit` until the caller `take`s what was read.
        `no_body`: the request was HEAD. (A connection that failed is closed, never begun again.)"""
        self.into, self.limit, self.cut, self.no_body = into, limit, cut, no_body
        self.head_read = self.ended = self.keep_alive = self._informational = False
        self._head_bytes = 0

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _Disconnected("the connection was closed before the request was sent")
        self.transport.write(data)

    async def until(self, *, head: bool = False, data: bool = False, within: float | None = None) -> None:
        """Until the answer's head is read (`head`), some of its body is (`data`), or its end or
        the limit is reached; raises what ended the exchange otherwise, or httpx.ReadTimeout when
        nothing came for `within` seconds (an httpx caller's read timeout)."""
        while True:
            into = self.into
            assert into is not None
            if self.ended or (
                self.head_read and (head or (data and into.body) or len(into.body) >= self.limit)
            ):
                return
            if self.failure is not None:
                raise self.failure
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if within is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(within):
                        await self._waiter
            except TimeoutError:
                raise httpx.ReadTimeout(f"nothing read for {within:g} s") from None
            finally:
                self._waiter = None

    def take(self) -> bytes:
        """The body read so far, for an httpx caller's stream; reading resumes."""
        assert self.into is not None
        data = bytes(self.into.body)
        self.into.body.clear()
        self.resume()
        return data

    def resume(self) -> None:
        """Reading again, if the body's limit had paused it."""
        if self._paused:
            self._paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def reusable(self, origin: Origin) -> bool:
        return (
            self.origin == origin
            and not self.closed
            and time.monotonic() - self.idle_since < KEEPALIVE_SECONDS
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, failure: Exception) -> None:
        if self.failure is None:
            self.failure = failure
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


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
        connection = await self._send(
            request.url,
            request.method.encode(),
            headers,
            body,
            connect_within=timeouts.get("connect"),
            read_within=timeouts.get("read"),
            into=into,
            limit=READ_AHEAD,
            cut=False,
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
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_within: float | None,
        max_read: int,
        into: Answered,
    ) -> None:
        """One POST and its answer, read into `into` up to `max_read` bytes of body, without
        httpx's request and response objects. `headers` are sent as they are, after `host` and
        `content-length`. Raises what handle_async_request raises."""
        head = [(b"host", url.netloc), (b"content-length", b"%d" % len(body)), *headers]
        connection = await self._send(
            url, b"POST", head, body, connect_within=connect_within, into=into, limit=max_read, cut=True
        )
        try:
            await connection.until(head=False)
        except (OSError, _Disconnected, _Invalid) as exc:
            connection.close()
            raise _mapped(exc, None) from exc
        except BaseException:
            connection.close()
            raise
        if connection.ended:
            self._release(connection)
        else:
            connection.close()  # cut at max_read: the rest is never read, the connection not reused

    async def _send(
        self,
        url: httpx.URL,
        method: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        connect_within: float | None,
        into: Answered,
        limit: int,
        cut: bool,
        read_within: float | None = None,
        request: httpx.Request | None = None,
    ) -> _Connection:
        """Sends the request on an idle connection of its origin or a new one, and reads the
        answer's head into `into`; the caller reads the body on the connection returned."""
        origin: Origin = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        message = request_head(method, url.raw_path, headers) + body  # one write
        self._prune()
        idle = self._take_idle(origin)
        connection = idle or await self._connect(origin, connect_within, request)
        no_body = method == b"HEAD"
        try:
            await self._exchange(
                connection, message, into, limit, cut=cut, no_body=no_body, within=read_within
            )
            return connection
        except (OSError, _Disconnected, _Invalid) as exc:
            connection.close()
            if idle is None or isinstance(exc, _Invalid) or into.status_code is not None:
                raise _mapped(exc, request) from exc
        except BaseException:  # cancelled (the attempt's time ran out), or a read timeout: half-used
            connection.close()
            raise
        # a kept-alive connection the server had closed: once more on a new one (at least once:
        # the receiver deduplicates on webhook-id should it have seen the first)
        connection = await self._connect(origin, connect_within, request)
        try:
            await self._exchange(
                connection, message, into, limit, cut=cut, no_body=no_body, within=read_within
            )
            return connection
        except BaseException as again:
            connection.close()
            if isinstance(again, OSError | _Disconnected | _Invalid):
                raise _mapped(again, request) from again
            raise

    @staticmethod
    async def _exchange(
        connection: _Connection,
        message: bytes,
        into: Answered,
        limit: int,
        *,
        cut: bool,
        no_body: bool,
        within: float | None,
    ) -> None:
        into.status_code, into.reason, into.headers = None, b"", []
        into.body.clear()
        connection.begin(into, limit, cut=cut, no_body=no_body)
        connection.write(message)
        await connection.until(head=True, within=within)

    async def _connect(
        self, origin: Origin, within: float | None, request: httpx.Request | None
    ) -> _Connection:
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
                            lambda: _Connection(origin),
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
        connection.into = None
        if connection.closed or not connection.keep_alive:
            connection.close()
            return
        connection.resume()  # an answer that ended at the body's limit paused reading there
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
        connection: _Connection,
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
                    self._transport._release(connection)  # noqa: SLF001
                    return
        except (OSError, _Disconnected, _Invalid) as exc:
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
    if isinstance(exc, _Invalid | _Disconnected):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request)
