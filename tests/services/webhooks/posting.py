"""One POST through the sender's outbound path with any headers, for the HTTP client's tests: the
head formatted and checked by request_head (the sender formats its own once per endpoint:
app/services/webhooks/attempts.py), then outbound.send."""

from __future__ import annotations

import httpx

from app.services.webhooks import outbound
from app.services.webhooks.connection import request_head


async def post(
    client: outbound.WebhookClient, url: str, *, headers: dict[str, str], body: bytes, within: float
) -> outbound.Answer:
    parsed = httpx.URL(url)
    head = [
        (b"host", parsed.netloc),
        (b"content-length", b"%d" % len(body)),
        (b"user-agent", outbound.USER_AGENT_RAW),
    ]
    head += [(name.encode(), value.encode()) for name, value in headers.items()]
    return await outbound.send(
        client, parsed, request_head(b"POST", parsed.raw_path, head) + body, within=within
    )
