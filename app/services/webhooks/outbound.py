"""Outbound HTTP to buyers' endpoints, and the guard that keeps it off our own network (SSRF).

A URL is checked when it is written (every address its host resolves to must be public) and again
on every connection: the transport resolves the host itself, refuses a forbidden address, and
connects to the address it checked (TLS still verifies and sends the hostname), so a name that
resolves to a public address at write time and to 127.0.0.1 later (DNS rebinding) is still
refused. No proxy from the environment (it would connect for us, unchecked), no redirects
followed, at most MAX_READ bytes of an answer read, raw (never decompressed)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
import typing
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import certifi
import httpcore
import httpx

from app.errors import InvalidInput
from app.models.webhooks import AttemptOutcome
from app.settings import Environment, Settings

MAX_READ = 64 * 1024  # of an answer, at most
EXCERPT = 1024  # of an answer, kept in the delivery log
MAX_URL_LENGTH = 2000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services: refused even where private networks are allowed, since no
# buyer's endpoint is ever one of them and they hand out credentials.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why an address may not be connected to, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address in METADATA:
        return "a cloud metadata address"
    if allow_private:
        return None
    for kind, flag in (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return f"{kind} address"
    if not address.is_global:
        return "not a public address"
    return None


class RefusedAddress(httpcore.ConnectError):
    """The host resolves to an address we do not connect to."""


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Every address `host` resolves to, after checking each: one forbidden address refuses the
    host (an attacker's name may mix a public address with a private one)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"{host} does not resolve ({exc.strerror})") from exc
        # an IPv6 sockaddr may carry a scope (%eth0)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
    for address in addresses:
        why = refusal(address, allow_private=allow_private)
        if why is not None:
            raise RefusedAddress(
                f"{host} resolves to {address}, {why}; webhook endpoints must be on the public internet"
            )
    return [str(a) for a in addresses]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses `resolve` allows."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await resolve(host, port, allow_private=self.allow_private)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        failure: Exception | None = None
        for address in addresses:  # the checked addresses, in the resolver's order
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RefusedUrl(httpx.ConnectError):
    """httpx's face of RefusedAddress."""


# httpcore's errors as httpx's, most specific first (what httpx's own transport does)
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (RefusedAddress, RefusedUrl),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def _as_httpx(exc: Exception, request: httpx.Request | None) -> Exception:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            mapped = target(str(exc) or type(exc).__name__)
            if request is not None:
                mapped.request = request
            return mapped
    return exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:  # noqa: BLE001  (mapped, not swallowed)
            raise _as_httpx(exc, self._request) from exc

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over httpcore's pool (HTTP/1.1), with the guarded network backend: what
    httpx.AsyncHTTPTransport does, whose constructor takes no network backend."""

    def __init__(self, *, allow_private: bool, max_connections: int, ca_file: str | None = None) -> None:
        context = ssl.create_default_context(cafile=certifi.where())
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(allow_private=allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except Exception as exc:  # noqa: BLE001  (mapped, not swallowed)
            raise _as_httpx(exc, request) from exc
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def make_client(settings: Settings) -> httpx.AsyncClient:
    """One per worker process: its pool keeps connections to endpoints alive between sends."""
    return httpx.AsyncClient(
        transport=GuardedTransport(
            allow_private=settings.webhook_allow_private_networks,
            max_connections=settings.webhook_max_concurrency + 8,
            ca_file=str(settings.webhook_ca_file) if settings.webhook_ca_file else None,
        ),
        timeout=httpx.Timeout(
            settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
        ),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": "LeadWheel-Webhooks/1"},
    )


def check_scheme(url: httpx.URL, environment: Environment) -> str | None:
    """Why a URL's scheme is not allowed here, or None: https only in production."""
    if url.scheme not in ("http", "https"):
        return f"the scheme must be https (or http outside production), not {url.scheme!r}"
    if url.scheme != "https" and environment is Environment.PRODUCTION:
        return "the URL must use https"
    return None


async def validate_url(url: str, *, settings: Settings) -> str:
    """A URL an endpoint may have, or INVALID_INPUT saying why not. Resolves its host: every
    address must be allowed (the same check is made again on every connection)."""
    cleaned = url.strip() if isinstance(url, str) else ""
    if not cleaned:
        raise InvalidInput("url must not be empty", field="url")
    if len(cleaned) > MAX_URL_LENGTH:
        raise InvalidInput(f"url is longer than {MAX_URL_LENGTH} characters", field="url")
    try:
        parsed = httpx.URL(cleaned)
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}", field="url") from None
    why = check_scheme(parsed, settings.environment)
    if why is not None:
        raise InvalidInput(f"url: {why}", field="url")
    if not parsed.host:
        raise InvalidInput("url has no host", field="url")
    if parsed.fragment:
        raise InvalidInput("url must not have a #fragment (it is never sent)", field="url")
    try:
        await resolve(parsed.host, parsed.port or 443, allow_private=settings.webhook_allow_private_networks)
    except httpcore.ConnectError as exc:
        raise InvalidInput(f"url: {exc}", field="url") from None
    return cleaned


@dataclass(frozen=True)
class Answer:
    """One attempt, as the delivery log keeps it."""

    outcome: AttemptOutcome
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    body: str | None = None  # the first EXCERPT bytes, as text

    @property
    def ok(self) -> bool:
        return self.outcome is AttemptOutcome.SUCCESS


async def post(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], body: bytes, within: float
) -> Answer:
    """One POST: a 2xx answer within `within` seconds (for everything: connecting, sending, the answer's
    head and what is read of its body) is a success, anything else a failure saying why."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    status: int | None = None
    read = bytearray()
    try:
        async with asyncio.timeout(within):
            request = client.build_request("POST", url, headers=headers, content=body)
            response = await client.send(request, stream=True)
            status = response.status_code
            try:
                async for chunk in response.aiter_raw():
                    read += chunk
                    if len(read) >= MAX_READ:
                        break  # the rest is never read: the connection is closed, not reused
            finally:
                await response.aclose()
    except TimeoutError:
        return Answer(
            AttemptOutcome.TIMEOUT, elapsed(), status, f"no complete answer within {within:g} s", _text(read)
        )
    except RefusedUrl as exc:
        return Answer(AttemptOutcome.REFUSED, elapsed(), None, f"refused: {exc}")
    except httpx.TimeoutException as exc:
        return Answer(AttemptOutcome.TIMEOUT, elapsed(), status, f"{type(exc).__name__}: {exc}", _text(read))
    except (httpx.HTTPError, OSError) as exc:
        return Answer(
            AttemptOutcome.CONNECTION_ERROR, elapsed(), status, f"{type(exc).__name__}: {exc}", _text(read)
        )
    if 200 <= status < 300:
        return Answer(AttemptOutcome.SUCCESS, elapsed(), status, None, _text(read))
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += f": redirect to {response.headers.get('location', '?')!r} not followed"
    return Answer(AttemptOutcome.HTTP_ERROR, elapsed(), status, error, _text(read))


def _text(data: bytes | bytearray) -> str | None:
    if not data:
        return None
    # PostgreSQL text holds no NUL
    return bytes(data[:EXCERPT]).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
