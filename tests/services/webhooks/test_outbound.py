"""The HTTP client against real local servers: answers, timeouts, dead ports, redirects, huge
answers, and the address guard (at write time and on the address actually connected to)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
import trustme
from werkzeug import Response

from app.errors import InvalidInput
from app.models.webhooks import AttemptOutcome
from app.services.webhooks import outbound
from app.settings import Environment, Settings
from tests.factories.webhooks import LOCAL_CLIENT
from tests.receiver import Receiver, start_receiver, statuses
from tests.services.webhooks.posting import post
from tests.tasks.conftest import free_port

GUARDED = Settings(_env_file=None, webhook_allow_private_networks=False)  # type: ignore[call-arg]


async def send(client: outbound.WebhookClient, url: str, timeout: float = 1.0) -> outbound.Answer:
    return await post(client, url, headers={"content-type": "application/json"}, body=b"{}", within=timeout)


async def test_a_2xx_is_a_success_and_anything_else_a_failure(
    client: outbound.WebhookClient, receiver: Receiver
) -> None:
    receiver.respond = statuses(200, 204, 500, 404)
    answers = [await send(client, receiver.url) for _ in range(4)]
    assert [a.outcome for a in answers] == [
        AttemptOutcome.SUCCESS,
        AttemptOutcome.SUCCESS,
        AttemptOutcome.HTTP_ERROR,
        AttemptOutcome.HTTP_ERROR,
    ]
    assert [a.status_code for a in answers] == [200, 204, 500, 404]
    assert answers[0].body == "answer" and answers[2].error == "HTTP 500"
    assert all(a.latency_ms > 0 for a in answers)


async def test_an_answer_later_than_the_timeout_is_a_failure(
    client: outbound.WebhookClient, receiver: Receiver
) -> None:
    def slow(n: int, _: object) -> Response:
        time.sleep(1.5)
        return Response("late", 200)

    receiver.respond = slow
    answer = await send(client, receiver.url, timeout=0.5)
    assert answer.outcome is AttemptOutcome.TIMEOUT
    assert answer.error == "no complete answer within 0.5 s"
    assert 450 < answer.latency_ms < 1400


async def test_a_dead_port_is_a_connection_error(client: outbound.WebhookClient) -> None:
    answer = await send(client, f"http://127.0.0.1:{free_port()}/hook")
    assert answer.outcome is AttemptOutcome.CONNECTION_ERROR
    assert answer.error is not None and "ConnectError" in answer.error


async def test_a_redirect_is_not_followed(client: outbound.WebhookClient, receiver: Receiver) -> None:
    receiver.respond = lambda n, r: Response("", 307, headers={"location": "http://127.0.0.1:1/elsewhere"})
    answer = await send(client, receiver.url)
    assert answer.outcome is AttemptOutcome.HTTP_ERROR
    assert answer.status_code == 307
    assert answer.error == "HTTP 307: redirect to 'http://127.0.0.1:1/elsewhere' not followed"
    assert len(receiver.received) == 1


async def test_a_huge_answer_is_cut(client: outbound.WebhookClient, receiver: Receiver) -> None:
    chunk = b"x" * 65536

    def huge(n: int, _: object) -> Response:
        return Response((chunk for _ in range(160)), 200, direct_passthrough=True)  # 10 MiB, streamed

    receiver.respond = huge
    started = time.perf_counter()
    answer = await send(client, receiver.url, timeout=5)
    assert answer.outcome is AttemptOutcome.SUCCESS
    assert answer.body == "x" * outbound.EXCERPT
    assert time.perf_counter() - started < 2
    # the cut connection is not reused: the next request still works
    receiver.respond = statuses(200)
    assert (await send(client, receiver.url)).outcome is AttemptOutcome.SUCCESS


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("localhost", "a loopback address"),  # a name that resolves to 127.0.0.1 (and ::1)
        ("[::1]", "a loopback address"),
        ("[::ffff:127.0.0.1]", "a loopback address"),
        ("192.168.0.10", "a private address"),
        ("0.0.0.0", "an unspecified address"),
    ],
)
async def test_the_guard_refuses_non_public_addresses(host: str, why: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await outbound.validate_url(f"http://{host}:8080/hook", settings=GUARDED)
    assert why in str(refused.value) and refused.value.field == "url"
    client = outbound.make_client(GUARDED)
    try:
        answer = await send(client, f"http://{host}:8080/hook")
    finally:
        await client.aclose()
    assert answer.outcome is AttemptOutcome.REFUSED
    assert answer.error is not None and why in answer.error


async def test_the_guard_checks_the_address_connected_to(receiver: Receiver) -> None:
    """A URL accepted while private networks were allowed (or a name re-pointed since: DNS
    rebinding) is refused when it is sent, before any connection is made."""
    guarded = outbound.make_client(GUARDED)
    try:
        answer = await send(guarded, receiver.url.replace("127.0.0.1", "localhost"))
    finally:
        await guarded.aclose()
    assert answer.outcome is AttemptOutcome.REFUSED
    assert receiver.received == []


async def test_metadata_addresses_stay_refused_when_private_networks_are_allowed() -> None:
    with pytest.raises(InvalidInput, match="cloud metadata"):
        await outbound.validate_url("http://169.254.169.254/latest/meta-data/", settings=LOCAL_CLIENT)


async def test_public_addresses_and_private_ones_when_allowed_pass() -> None:
    assert (
        await outbound.validate_url(" http://93.184.215.14/x ", settings=GUARDED) == "http://93.184.215.14/x"
    )
    assert (
        await outbound.validate_url("http://127.0.0.1:9/x", settings=LOCAL_CLIENT) == "http://127.0.0.1:9/x"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "url must not be empty"),
        ("ftp://example.com/x", "scheme must be https"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1/x#frag", "#fragment"),
        ("http://no-such-host.invalid/x", "does not resolve"),
        ("http://" + "a" * 2000 + ".com/", "longer than"),
    ],
)
async def test_bad_urls_are_invalid_input(url: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await outbound.validate_url(url, settings=LOCAL_CLIENT)


async def test_production_wants_https() -> None:
    production = LOCAL_CLIENT.model_copy(update={"environment": Environment.PRODUCTION})
    with pytest.raises(InvalidInput, match="must use https"):
        await outbound.validate_url("http://127.0.0.1/x", settings=production)
    assert await outbound.validate_url("https://127.0.0.1/x", settings=production) == "https://127.0.0.1/x"


@pytest.fixture(autouse=True)
def _no_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment would connect for us, unchecked: the client ignores it."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")


async def test_https_verifies_the_urls_hostname_on_the_checked_address(tmp_path: Path) -> None:
    """The guard connects to the address it resolved and checked; TLS still sends and verifies the
    URL's hostname (SNI), and trusts only known authorities."""
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(served)  # a name only, no IP address
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    receiver = start_receiver(served, host="localhost")
    trusting = outbound.make_client(LOCAL_CLIENT.model_copy(update={"webhook_ca_file": ca_file}))
    untrusting = outbound.make_client(LOCAL_CLIENT)
    try:
        ok = await send(trusting, receiver.url)  # https://localhost:port: resolved, checked, verified
        by_address = await send(trusting, receiver.url.replace("localhost", "127.0.0.1"))
        unknown_ca = await send(untrusting, receiver.url)
    finally:
        await trusting.aclose()
        await untrusting.aclose()
        receiver.server.stop()
    assert ok.outcome is AttemptOutcome.SUCCESS, ok
    assert by_address.outcome is AttemptOutcome.CONNECTION_ERROR
    assert by_address.error is not None and "127.0.0.1" in by_address.error  # not valid for that name
    assert unknown_ca.outcome is AttemptOutcome.CONNECTION_ERROR
    assert unknown_ca.error is not None and "CERTIFICATE_VERIFY_FAILED" in unknown_ca.error
    assert len(receiver.received) == 1


async def test_a_kept_alive_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    """A server that closes an idle connection as the next request arrives (a keep-alive race):
    the request goes again on a new connection, once."""
    connections = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        for answered in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await reader.readexactly(length)
            if answered:  # the second request on this connection: dropped unanswered
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = outbound.make_client(LOCAL_CLIENT)
    try:
        url = f"http://127.0.0.1:{port}/hook"
        first = await post(client, url, headers={}, body=b"{}", within=2)
        second = await post(client, url, headers={}, body=b"{}", within=2)
    finally:
        await client.aclose()
        server.close()
    assert (first.outcome, second.outcome) == (AttemptOutcome.SUCCESS, AttemptOutcome.SUCCESS), second.error
    assert len(connections) == 2  # the kept-alive one, then a new one for the retry


async def test_endpoints_on_one_origin_share_idle_connections_never_one_in_use() -> None:
    """Requests to two paths of one host, one after the other, go on one kept-alive connection;
    two at the same time each get a connection of their own (one carries one request at a time, so
    a slow endpoint never holds another's), and both are kept for what follows."""
    connections = []
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = int(
                next(
                    line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            await reader.readexactly(length)
            if b"/slow" in head.split(b"\r\n")[0]:
                await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = outbound.make_client(LOCAL_CLIENT)
    try:
        one = await send(client, f"{base}/endpoint-a")
        two = await send(client, f"{base}/endpoint-b")
        assert len(connections) == 1
        slow = asyncio.create_task(send(client, f"{base}/slow"))
        await asyncio.sleep(0.05)
        fast = await send(client, f"{base}/endpoint-c")  # not behind the slow one
        assert not slow.done()
        release.set()
        answers = [one, two, fast, await slow]
        assert len(connections) == 2
        await send(client, f"{base}/endpoint-a")
        await send(client, f"{base}/endpoint-b")
    finally:
        await client.aclose()
        server.close()
    assert all(a.outcome is AttemptOutcome.SUCCESS for a in answers), answers
    assert len(connections) == 2  # both kept alive and reused


async def test_the_client_answers_as_an_httpx_client_on_the_same_transport(
    client: outbound.WebhookClient, receiver: Receiver
) -> None:
    """The sender posts through the transport directly (outbound.send); the client stays a plain
    httpx client on that transport (handle_async_request), with the same answers."""
    receiver.respond = statuses(200, 500)
    first = await client.post(receiver.url, content=b'{"a": 1}', headers={"webhook-id": "msg_1"})
    second = await client.post(receiver.url, content=b"{}")
    assert (first.status_code, first.text) == (200, "answer")
    assert second.status_code == 500
    assert [r.webhook_id for r in receiver.received] == ["msg_1", ""]
    assert receiver.received[0].body == '{"a": 1}'
