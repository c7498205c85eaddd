"""One HTTP/1.1 connection of the webhook client: a request's head formatted and checked here
(request_head), the answer parsed by httptools (llhttp, Node's parser) as it arrives.

A webhook is small and its answer usually one read: the cost per send is the machinery around it.
h11 over asyncio streams spent over a quarter of the sender's CPU in h11's pure-Python framing
(bench/webhook_sender.py's `sender_over_receiver`: 3.86 and 3.72 then, 3.36 and 3.08 with this;
docs/benchmarks.md). Here a request is written in one call (its head formatted by request_head: the
method and names checked as tokens, values for line breaks; the sender formats a webhook's own
lines itself, attempts.py), and the answer is fed to llhttp from
`data_received`, straight into the caller's `Answered`: one wake-up per answer. transport.py
keeps these connections per origin."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import httptools
import httpx

# An answer's status line and headers, at most (h11, before, stopped at 16 KiB; large cookies pass
# here): llhttp sets no limit, and a header value that never ended would grow for the whole timeout.
MAX_HEAD = 64 * 1024

Origin = tuple[bytes, bytes, int]  # scheme, host, port

# what may appear in a request's head (RFC 9110 tokens; a value without CR, LF or NUL; a target
# without spaces or controls): checked on every head made here, as h11 did, since a header
# injected through a value would be a request smuggled to the buyer (the sender's per-webhook
# lines, made of digits, hex and base64 only, are formatted without it: attempts.py)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_TARGET = re.compile(rb"[\x21-\x7e]+")


class Disconnected(Exception):
    """The server closed the connection before its answer was complete."""


class InvalidAnswer(Exception):
    """The server's answer is not HTTP/1.1 as it must be."""


class OutOfTime(Exception):
    """The exchange's deadline passed (not a TimeoutError: that is an OSError, as a socket's own
    timeout is)."""


@dataclass(slots=True)
class Answered:
    """What an exchange has read so far (transport.post's caller keeps it when its time runs out):
    the answer's status and headers (names in lower case), and its body up to the limit."""

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
    """One connection to an origin, one exchange at a time (`exchange`, then `until` its end, then
    `finish`): an answer read into an `Answered`, 1xx answers before it skipped, its body kept up to
    a limit (reading pauses there), ending at its length, its last chunk, or (with neither) the
    connection's end. A connection that failed is closed and never used again."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        # the loop it runs in, kept: asyncio.get_running_loop() makes a getpid() system call on
        # every call in Python 3.11 (its fork check), a few times per webhook otherwise
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # lines that end in a bare LF, as some embedded servers send them; nothing else relaxed (a
        # doubled Content-Length or a folded header stays an invalid answer: both are ways to
        # smuggle an answer past a proxy)
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.idle_since = 0.0  # the pool's: when its last exchange finished
        self.deadline: float | None = None  # the current exchange's end (its caller's), loop clock
        self.closed = False
        self.into: Answered | None = None  # the exchange's answer; None between exchanges
        self.limit = 0
        self.truncate = True
        self.no_body = False  # an answer to HEAD: its head is all of it
        self.head_read = False
        self.ended = False
        self.keep_alive = False
        self.failure: Exception | None = None
        self._informational = False
        self._framed = False  # a length or chunks: else the body ends with the connection
        self._head_bytes = 0  # read before the answer's head was complete
        self._paused = False
        self._stopped: InvalidAnswer | None = None  # why a callback stopped the parser
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
            failure = self._stopped or InvalidAnswer(f"invalid answer: {exc}")
            failure.__cause__ = exc
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
        if self.ended:  # a second answer to one request
            self._stop(InvalidAnswer("the server sent more than one answer"))
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
            self._stop(InvalidAnswer("the server switched protocols"))
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
        if not self.truncate:
            into.body += body
        elif (room := self.limit - len(into.body)) > 0:
            into.body += body[:room] if len(body) > room else body
        if len(into.body) >= self.limit:
            if self.transport is not None and not self.closed and not self._paused:
                self.transport.pause_reading()  # until the reader takes it, or drops the connection
                self._paused = True
            self._wake()
        elif not self.truncate:
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

    async def exchange(
        self,
        message: bytes,
        into: Answered,
        limit: int,
        *,
        truncate: bool,
        no_body: bool = False,
        within: float | None = None,
        deadline: float | None = None,
    ) -> None:
        """Sends `message` (a whole request) and waits for its answer's head, read into `into`.
        `truncate`: the body is kept up to `limit` bytes and the rest never read (the caller then
        closes the connection); else reading pauses at `limit` until the caller `take`s what was
        read. `no_body`: the request was HEAD. `within`, `deadline`: as for `until` (the deadline
        kept as `self.deadline`, for reading the rest of the answer)."""
        into.status_code, into.reason, into.headers = None, b"", []
        into.body.clear()
        self.into, self.limit, self.truncate, self.no_body = into, limit, truncate, no_body
        self.head_read = self.ended = self.keep_alive = self._informational = False
        self._head_bytes = 0
        self.deadline = deadline
        if self.closed or self.transport is None or self.transport.is_closing():
            raise Disconnected("the connection was closed before the request was sent")
        self.transport.write(message)
        await self.until(head=True, within=within, deadline=deadline)

    def finish(self) -> bool:
        """After an answer read to its end: True if the connection may carry another (both sides
        keep it alive), reading again if the body's limit had paused it."""
        self.into = None
        if self.closed or not self.keep_alive:
            return False
        self.resume()
        return True

    async def until(
        self,
        *,
        head: bool = False,
        data: bool = False,
        within: float | None = None,
        deadline: float | None = None,
    ) -> None:
        """Until the answer's head is read (`head`), some of its body is (`data`), or its end or
        the limit is reached; raises what ended the exchange otherwise: httpx.ReadTimeout when that
        did not come within `within` seconds (an httpx caller's read timeout), OutOfTime at
        `deadline` (the event loop's clock: the sender's whole attempt), whichever is first. The
        timer is one of the loop's own (call_at, call_later), set only while waiting: cheaper than
        an asyncio.timeout context around every attempt (an object, a reschedule, and at expiry
        the task cancelled)."""
        while True:
            into = self.into
            assert into is not None
            if self.ended or (
                self.head_read and (head or (data and into.body) or len(into.body) >= self.limit)
            ):
                return
            if self.failure is not None:
                raise self.failure
            loop = self.loop
            waiter = self._waiter = loop.create_future()
            timer = None
            if within is not None and (deadline is None or loop.time() + within < deadline):
                timer = loop.call_later(within, self._expire, waiter, within)
            elif deadline is not None:
                timer = loop.call_at(deadline, self._expire, waiter, None)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    @staticmethod
    def _expire(waiter: asyncio.Future[None], within: float | None) -> None:
        if waiter.done():
            return
        if within is None:
            waiter.set_exception(OutOfTime())
        else:
            waiter.set_exception(
                httpx.ReadTimeout(f"the answer's head, or more of its body, did not come within {within:g} s")
            )

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

    @property
    def open(self) -> bool:
        # a loop closed since (a client outliving it) leaves its transports unusable, not closing
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and not self.loop.is_closed()
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _stop(self, failure: InvalidAnswer) -> None:
        """From a callback: stops the parser (httptools turns any exception into its own error),
        and data_received fails the exchange with `failure`."""
        self._stopped = failure
        raise failure

    def _fail(self, failure: Exception) -> None:
        if self.failure is None:
            self.failure = failure
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
