"""Redis clients as every process makes them. redis-py's asyncio client does not retry by default:
after a Redis restart or a cut connection, the first command on each pooled connection failed
(a lost QUEUED event, a distributeLead answered INTERNAL although its run was committed). Commands
that find their connection gone are retried on a new one. All we send is safe to repeat: jobs and
events are idempotent by run id and seq, and a repeated rate-limit INCR only errs on the strict side."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff


def retrying() -> dict[str, Any]:
    """Connection arguments: up to 3 retries after a connection error or timeout, 20 ms to 0.5 s apart."""
    return {"retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3)}


def connect(url: str, **kwargs: Any) -> Redis:
    return Redis.from_url(url, **(retrying() | kwargs))
