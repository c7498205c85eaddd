"""Outbound HTTP to buyers' endpoints: the URL checks made when an endpoint is written, the one
httpx client per worker process, and one attempt (`send`, of a request the caller formatted:
attempts.py).

A URL is checked when it is written (every address its host resolves to must be public: guard.py)
and again on every connection (transport.py connects only to checked addresses). No proxy from the
environment (it would connect for us, unchecked), no redirects followed, at most MAX_READ bytes of
an answer read, raw (never decompressed)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from app.errors import InvalidInput
from app.models.webhooks import AttemptOutcome
from app.services.webhooks.connection import Answered, OutOfTime
from app.services.webhooks.guard import RefusedAddress, Unresolvable, resolve
from app.services.webhooks.transport import RefusedUrl, WebhookTransport
from app.settings import Environment, Settings

MAX_READ = 64 * 1024  # of an answer, at most
EXCERPT = 1024  # of an answer, kept in the delivery log
MAX_URL_LENGTH = 2000


USER_AGENT = "LeadWheel-Webhooks/1"
USER_AGENT_RAW = USER_AGENT.encode()


class WebhookClient(httpx.AsyncClient):
    """httpx's client on the webhook transport. `send` hands its requests to the transport itself:
    a webhook needs none of the client's per-request work (cookies, auth, redirects, hooks, default
    headers merged into each request), which was a tenth of a send's CPU."""

    def __init__(self, settings: Settings) -> None:
        self.transport = WebhookTransport(
            allow_private=settings.webhook_allow_private_networks,
            max_idle_per_origin=settings.webhook_max_concurrency,
            ca_file=str(settings.webhook_ca_file) if settings.webhook_ca_file else None,
        )
        super().__init__(
            transport=self.transport,
            timeout=httpx.Timeout(
                settings.webhook_timeout_seconds, connect=settings.webhook_connect_timeout_seconds
            ),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )


def make_client(settings: Settings) -> WebhookClient:
    """One per worker process: its transport keeps idle connections per origin alive between sends."""
    return WebhookClient(settings)


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
    except (RefusedAddress, Unresolvable) as exc:
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


async def send(client: WebhookClient, url: httpx.URL, message: bytes, *, within: float) -> Answer:
    """One request (a whole HTTP/1.1 message to `url`'s origin, formatted by the caller: the
    sender's head is made once per endpoint, attempts.py): a 2xx answer within `within` seconds
    (for everything: connecting, sending, the answer's head and what is read of its body) is a
    success, anything else a failure saying why."""
    started = time.perf_counter()
    answered = Answered()
    try:
        await client.transport.post(
            url,
            message,
            connect_within=client.timeout.connect,
            within=within,
            max_read=MAX_READ,
            into=answered,
        )
    except (TimeoutError, OutOfTime):
        return Answer(
            AttemptOutcome.TIMEOUT,
            _elapsed(started),
            answered.status_code,
            f"no complete answer within {within:g} s",
            _text(answered.body),
        )
    except RefusedUrl as exc:
        return Answer(AttemptOutcome.REFUSED, _elapsed(started), None, f"refused: {exc}")
    except httpx.TimeoutException as exc:
        return Answer(
            AttemptOutcome.TIMEOUT,
            _elapsed(started),
            answered.status_code,
            f"{type(exc).__name__}: {exc}",
            _text(answered.body),
        )
    except (httpx.HTTPError, OSError) as exc:
        return Answer(
            AttemptOutcome.CONNECTION_ERROR,
            _elapsed(started),
            answered.status_code,
            f"{type(exc).__name__}: {exc}",
            _text(answered.body),
        )
    code = answered.status_code or 0
    if 200 <= code < 300:
        return Answer(AttemptOutcome.SUCCESS, _elapsed(started), code, None, _text(answered.body))
    error = f"HTTP {code}"
    if 300 <= code < 400:
        location = (answered.header(b"location") or b"?").decode("latin-1")
        error += f": redirect to {location!r} not followed"
    return Answer(AttemptOutcome.HTTP_ERROR, _elapsed(started), code, error, _text(answered.body))


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _text(data: bytes | bytearray) -> str | None:
    if not data:
        return None
    # PostgreSQL text holds no NUL
    return bytes(data[:EXCERPT]).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
