"""The transport's HTTP/1.1 against a raw local server that answers exactly the bytes a test gives:
every way an answer's body may end (a length, chunks, the connection's end), 1xx answers before
the answer, answers cut short, malformed, doubled or with an endless head, data on an idle
connection, an httpx caller's streams (both ways), HEAD and read timeout, the attempt's time
limit (an answer still coming at its end, a connection not made by it), the request the sender
writes (each header once, a signature Standard Webhooks verifies), and what may go in a request's
head."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from standardwebhooks import Webhook

from app.models.webhooks import AttemptOutcome
from app.services.webhooks import outbound, transport
from app.services.webhooks.attempts import Endpoint
from app.services.webhooks.connection import request_head
from app.services.webhooks.transport import READ_AHEAD
from tests.factories.webhooks import LOCAL_CLIENT
from tests.services.webhooks.posting import post

CLOSE = b""  # in a script: the server closes the connection here


@dataclass
class RawServer:
    """Answers each request with the next scripted answer (pieces written apart, CLOSE closes);
    counts connections and keeps each request's head and body."""

    script: list[list[bytes]]
    url: str = ""
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,  # HEAD, GET
                )
                self.requests.append(head + await reader.readexactly(length))
                for piece in self.script.pop(0):
                    if piece == CLOSE:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # the next piece in another read
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer([])
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/hook"
    yield server
    listening.close()


async def send(client: outbound.WebhookClient, url: str) -> outbound.Answer:
    return await post(client, url, headers={"webhook-id": "msg_1"}, body=b'{"a":1}', within=1)


OK = [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


@pytest.mark.parametrize(
    ("answer", "status", "body", "kept"),
    [
        ([b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello"], 201, "hello", True),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"\r\nhel", b"lo"], 200, "hello", True),
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n", b"2\r\nlo\r\n0\r\n\r\n"],
            200,
            "hello",
            True,
        ),
        ([b"HTTP/1.1 200 OK\r\n\r\nhel", b"lo", CLOSE], 200, "hello", False),  # ends with the connection
        ([b"HTTP/1.1 204 No Content\r\n\r\n"], 204, None, True),
        (
            [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok"],
            202,
            "ok",
            True,
        ),
        ([b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"], 200, "ok", False),
        ([b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"], 200, "ok", False),
        ([b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"], 200, "ok", True),  # bare LFs, as some servers send
        (  # exactly the most read of a body: it ends at the limit, and the connection is kept reading
            [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % outbound.MAX_READ + b"z" * outbound.MAX_READ],
            200,
            "z" * outbound.EXCERPT,
            True,
        ),
    ],
    ids=[
        "length",
        "length-in-pieces",
        "chunked",
        "until-close",
        "no-content",
        "continue-first",
        "http-1.0",
        "close",
        "bare-lf",
        "at-the-limit",
    ],
)
async def test_answers_are_read_to_their_end_however_framed(
    client: outbound.WebhookClient,
    raw: RawServer,
    answer: list[bytes],
    status: int,
    body: str | None,
    kept: bool,
) -> None:
    raw.script = [answer, OK]
    first = await send(client, raw.url)
    assert (first.outcome, first.status_code, first.body) == (AttemptOutcome.SUCCESS, status, body), first
    second = await send(client, raw.url)
    assert second.outcome is AttemptOutcome.SUCCESS, second
    assert raw.connections == (1 if kept else 2)  # kept alive only where both sides allow
    head, sent = raw.requests[0].split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /hook HTTP/1.1"
    assert b"webhook-id: msg_1" in head.split(b"\r\n") and sent == b'{"a":1}'


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        ([b"garbage\r\n\r\n"], None, "RemoteProtocolError: invalid answer"),
        (
            [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", CLOSE],
            200,
            "RemoteProtocolError: the server closed the connection before its answer was complete",
        ),
        (
            [CLOSE],
            None,
            "RemoteProtocolError: the server closed the connection before its answer was complete",
        ),
        (
            [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"],
            None,
            "the server switched protocols",
        ),
        (  # a doubled length is how one answer is smuggled past a proxy as two: never read
            [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok"],
            None,
            "invalid answer",
        ),
        (  # a header that never ends is not kept growing for the whole timeout
            [b"HTTP/1.1 200 OK\r\nx-big: ", b"y" * 50_000, b"y" * 50_000],
            None,
            "the answer's head is longer than 64 KiB",
        ),
    ],
    ids=["malformed", "cut-short", "no-answer", "upgrade", "doubled-length", "endless-head"],
)
async def test_a_broken_answer_is_a_failed_attempt_saying_why(
    client: outbound.WebhookClient, raw: RawServer, answer: list[bytes], status: int | None, error: str
) -> None:
    raw.script = [answer, OK]
    failed = await send(client, raw.url)
    assert failed.outcome is AttemptOutcome.CONNECTION_ERROR
    assert failed.status_code == status and failed.error is not None and error in failed.error, failed
    assert (await send(client, raw.url)).outcome is AttemptOutcome.SUCCESS  # on a new connection
    assert raw.connections == 2


async def test_a_second_answer_to_one_request_is_not_taken_for_the_next(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """An answer no request asked for (here, two at once): the first counts, and the connection is
    dropped rather than reused, so the next request never reads the stray one as its own."""
    raw.script = [[OK[0] + b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"], OK]
    first = await send(client, raw.url)
    second = await send(client, raw.url)
    assert (first.outcome, first.status_code) == (AttemptOutcome.SUCCESS, 200)
    assert (second.outcome, second.status_code) == (AttemptOutcome.SUCCESS, 200)
    assert raw.connections == 2


async def test_an_httpx_caller_streams_a_long_answer_whole(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """Through httpx (handle_async_request) an answer is streamed, never cut: reading pauses ahead
    of a slow caller (what it gets at once is bounded, not the whole answer buffered) and resumes
    as it reads."""
    big = b"y" * (4 * 1024 * 1024)
    raw.script = [[b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big), big], OK]
    chunks = []
    async with client.stream("POST", raw.url, content=b"{}") as answer:
        async for chunk in answer.aiter_raw():
            chunks.append(chunk)
            await asyncio.sleep(0.02)  # the server has long sent everything meanwhile
    assert answer.status_code == 200 and b"".join(chunks) == big
    assert max(len(c) for c in chunks) <= READ_AHEAD + 256 * 1024  # one read past the pause, at most
    assert (await client.post(raw.url, content=b"{}")).text == "ok"
    assert raw.connections == 1  # read to its end: kept alive


async def test_an_httpx_caller_sends_a_streamed_body_with_its_length(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """httpx announces a streamed body as chunked; it is sent whole, with its length."""

    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    raw.script = [OK]
    assert (await client.post(raw.url, content=parts())).text == "ok"
    head, body = raw.requests[0].split(b"\r\n\r\n")
    lines = [line.lower() for line in head.split(b"\r\n")]
    assert b"content-length: 11" in lines and not any(line.startswith(b"transfer-encoding") for line in lines)
    assert body == b"hello world"


async def test_an_httpx_caller_gets_a_head_answer_without_a_body(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """An answer to HEAD announces a length it does not send: its head is all of it."""
    raw.script = [[b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"], OK]
    answer = await asyncio.wait_for(client.head(raw.url), 2)
    assert answer.status_code == 200 and answer.content == b""
    assert (await client.post(raw.url, content=b"{}")).text == "ok"


async def test_an_httpx_callers_read_timeout_holds(client: outbound.WebhookClient, raw: RawServer) -> None:
    raw.script = [[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]]  # and then nothing
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await client.post(raw.url, content=b"{}", timeout=httpx.Timeout(5, read=0.3))
    assert time.perf_counter() - started < 2


async def test_an_answer_still_coming_at_the_attempts_end_is_a_timeout(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """The attempt's time covers the whole answer, not each read: a head in time whose body
    trickles on past it is a timeout (its status kept for the log), and the half-read connection
    is never reused."""
    trickle = [b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n"] + [b"z"] * 300  # 10 ms apart
    raw.script = [trickle, OK]
    started = time.perf_counter()
    late = await send(client, raw.url)  # within 1 s
    assert 0.9 < time.perf_counter() - started < 2
    assert (late.outcome, late.status_code) == (AttemptOutcome.TIMEOUT, 200), late
    assert (
        late.error == "no complete answer within 1 s" and late.body is not None and late.body.startswith("z")
    )
    assert (await send(client, raw.url)).outcome is AttemptOutcome.SUCCESS
    assert raw.connections == 2


async def test_a_connection_not_made_by_the_attempts_end_is_a_timeout(
    client: outbound.WebhookClient, raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connecting counts against the attempt's time too (its own connect timeout here longer)."""
    resolve = transport.resolve

    async def slow_resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
        await asyncio.sleep(1.5)
        return await resolve(host, port, allow_private=allow_private)

    monkeypatch.setattr(transport, "resolve", slow_resolve)
    assert client.timeout.connect is not None and client.timeout.connect > 1
    raw.script = [OK]
    started = time.perf_counter()
    late = await send(client, raw.url)  # within 1 s
    assert 0.9 < time.perf_counter() - started < 1.4
    assert (late.outcome, late.error) == (AttemptOutcome.TIMEOUT, "no complete answer within 1 s"), late
    assert raw.requests == []


async def test_the_sender_writes_each_header_once_and_a_verifiable_signature(
    client: outbound.WebhookClient, raw: RawServer
) -> None:
    """The request as Endpoint.send formats it (its fixed lines made once per endpoint): every
    header once, the body as written, and a signature Standard Webhooks verifies with either
    secret of a rotation's overlap."""
    secrets = [
        "whsec_" + base64.b64encode(bytes(range(32))).decode(),
        "whsec_" + base64.b64encode(b"x" * 32).decode(),
    ]
    endpoint = Endpoint(LOCAL_CLIENT, raw.url + "?key=1", secrets)
    raw.script = [OK]
    body = '{"type":"lead.assigned","data":{"name":"Zoë"}}'
    delivery_id = uuid.uuid4()
    sent = await endpoint.send(client, delivery_id, body)
    assert sent.answer.outcome is AttemptOutcome.SUCCESS, sent.answer
    head, got = raw.requests[0].split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook?key=1 HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert len(headers) == len(lines) - 1  # each name once
    assert set(headers) == {
        "host",
        "user-agent",
        "content-type",
        "content-length",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert headers["host"] == raw.url.split("/")[2] and headers["user-agent"] == outbound.USER_AGENT
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(got)
    assert got.decode() == body and headers["webhook-id"] == f"msg_{delivery_id.hex}"
    for secret in secrets:
        assert Webhook(secret).verify(got.decode(), headers) == json.loads(body)


async def test_data_on_an_idle_connection_drops_it(client: outbound.WebhookClient, raw: RawServer) -> None:
    """A server that writes to a connection between answers (a stray answer, a 408 before it
    closes): the connection is dropped, and the next request goes on a new one."""
    raw.script = [[*OK, b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"], OK]
    assert (await send(client, raw.url)).outcome is AttemptOutcome.SUCCESS
    await asyncio.sleep(0.1)  # the stray answer has come
    second = await send(client, raw.url)
    assert (second.outcome, second.status_code) == (AttemptOutcome.SUCCESS, 200)
    assert raw.connections == 2


@pytest.mark.parametrize(
    ("target", "headers", "method"),
    [
        (b"/hook", [(b"x-a", b"1\r\nx-injected: 1")], b"POST"),
        (b"/hook", [(b"x a", b"1")], b"POST"),
        (b"/hook", [(b"x-a", b"1\x00")], b"POST"),
        (b"/hook HTTP/1.1\r\nx-injected: 1", [], b"POST"),
        (b"/hook", [], b"POST /x HTTP/1.1\r\nx-injected: 1\r\n\r\nGET"),
    ],
)
def test_a_request_head_never_carries_a_line_break_or_a_bad_name(
    target: bytes, headers: list[tuple[bytes, bytes]], method: bytes
) -> None:
    with pytest.raises(httpx.LocalProtocolError):
        request_head(method, target, headers)
    assert request_head(b"POST", b"/hook?a=1", [(b"x-a", b"v1,abc= v1,def=")]) == (
        b"POST /hook?a=1 HTTP/1.1\r\nx-a: v1,abc= v1,def=\r\n\r\n"
    )
