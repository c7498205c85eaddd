"""One HTTP/1.1 connection of the webhook client: the request's head formatted here, the answer
parsed by httptools (llhttp, Node's parser) as it arrives.

A webhook is small and its answer usually one read: the cost per send is the machinery around it.
h11 over asyncio streams spent over a quarter of the sender's CPU in h11's pure-Python framing
(bench/webhook_sender.py: 422 and 547 µs per webhook then, 328 and 347 with this). Here a request
is written in one call (its head formatted here: names and the method checked as tokens, values
for line breaks), and the answer is fed to llhttp from `data_received`, straight into the
caller's `Answered`: one wake-up per answer. transport.py keeps these connections per origin."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import httptools
import httpx

# An idle connection is kept this long: servers commonly keep theirs 60 s or more, and one closed
# sooner (Node's 5 s) is noticed before reuse or, in a race, the request goes once more on a new
# connection. Each new connection to a buyer costs a TLS handshake on both sides.
KEEPALIVE_SECONDS = 30.0
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


class Disconnected(Exception):
    """The server closed the connection before its answer was complete."""


class InvalidAnswer(Exception):
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


class Connection(asyncio.Protocol):
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
            self._fail(InvalidAnswer("the server sent data no request asked for"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # a callback's own error comes as the context of httptools' (one answer too many)
            cause = exc.__context__
            if isinstance(cause, InvalidAnswer):
                self._fail(cause)
            else:
                failure = InvalidAnswer(
                    f"invalid answer: {exc}" + (f" ({cause!r})" if cause is not None else "")
                )
                failure.__cause__ = cause
                self._fail(failure)
            return
        if not self.head_read and not self.ended:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(InvalidAnswer(f"the answer's head is longer than {MAX_HEAD // 1024} KiB"))

    def eof_received(self) -> bool:
        return False  # closes; connection_lost says what it ended

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.into is not None and not self.ended and self.failure is None:
            if exc is None and self.head_read and not self._framed and not self._informational:
                self.ended = True  # a body that ends with the connection (closed, not reset)
            else:
                self.failure = exc or Disconnected(
                    "the server closed the connection before its answer was complete"
                )
        self._wake()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self.ended:  # a second answer to one request: parsing stops here (data_received fails)
            raise InvalidAnswer("the server sent more than one answer")
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
            raise InvalidAnswer("the server switched protocols")
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
            raise Disconnected("the connection was closed before the request was sent")
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
