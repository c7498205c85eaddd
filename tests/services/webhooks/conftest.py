"""The webhook client the outbound and transport tests send with: local receivers allowed, a 1 s
timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.services.webhooks import outbound
from tests.factories.webhooks import LOCAL_CLIENT


@pytest.fixture
async def client() -> AsyncIterator[outbound.WebhookClient]:
    made = outbound.make_client(LOCAL_CLIENT)
    yield made
    await made.aclose()
