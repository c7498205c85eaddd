"""A buyer's endpoint for tests: a real HTTP server (pytest-httpserver, one thread per request)
that verifies every request with standardwebhooks, as a buyer's integration would, and records it.
`respond` decides each answer; a request whose signature no known secret verifies gets 401."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Request, Response


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    signature: str
    body: str
    at: float  # time.time() on arrival
    verified_by: tuple[str, ...]  # the secrets whose signature matched

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    server: HTTPServer
    scheme: str = "http"
    host: str = "127.0.0.1"
    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    # (n-th request from 1, the request) -> the answer; default 200
    respond: Callable[[int, Received], Response] = lambda n, r: Response("ok", 200)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.server.port}/hook"

    def handle(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(secret)
        got = Received(
            webhook_id=headers.get("webhook-id", ""),
            timestamp=headers.get("webhook-timestamp", ""),
            signature=headers.get("webhook-signature", ""),
            body=body,
            at=time.time(),
            verified_by=tuple(verified),
        )
        with self._lock:
            self.received.append(got)
            n = len(self.received)
        if self.secrets and not verified:
            return Response("bad signature", 401)
        return self.respond(n, got)

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]


def statuses(*codes: int) -> Callable[[int, Received], Response]:
    """Answers the n-th request with codes[n - 1], then with the last code."""

    def respond(n: int, _: Received) -> Response:
        return Response("answer", codes[min(n, len(codes)) - 1])

    return respond


def start_receiver(ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Receiver:
    """With `ssl_context`, an https receiver (its URL names `host`, which the certificate must)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True, ssl_context=ssl_context)
    receiver = Receiver(server, scheme="https" if ssl_context else "http", host=host)
    server.expect_request("/hook", method="POST").respond_with_handler(receiver.handle)
    server.start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = start_receiver()
    try:
        yield made
    finally:
        made.server.clear()
        made.server.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """As many receivers as a test asks for."""
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(start_receiver())
        return made[-1]

    try:
        yield make
    finally:
        for r in made:
            r.server.clear()
            r.server.stop()
