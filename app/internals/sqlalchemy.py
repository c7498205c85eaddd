"""SQLAlchemy internals, for app/db.py (`driver_connection`: a hot path's statements on a pooled
connection's asyncpg driver: the engine, the loaders, the run's insert, the webhook outbox).

- `sqlalchemy.util.greenlet_spawn(fn, *args)`: SQLAlchemy's own bridge (AsyncEngine.raw_connection
  and AsyncConnection.close use it) for the pool's synchronous calls that may await the driver:
  returning a connection (closing one beyond the pool's size) and invalidating one.
- `AsyncEngine.raw_connection()` (public) gives a `PoolProxiedConnection` whose `driver_connection`
  is the asyncpg connection SQLAlchemy set its codecs on."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from app.internals.checks import Library, Use, import_failure

DISTRIBUTION = "sqlalchemy"
WRITTEN_AGAINST = "2.1.9"
MODULE = "app/internals/sqlalchemy.py"
DRIVER = "app/db.py"

try:
    from sqlalchemy import util as _util
except ImportError as error:  # pragma: no cover
    raise import_failure(DISTRIBUTION, WRITTEN_AGAINST, MODULE, error) from error

__all__ = ["LIBRARY", "greenlet_spawn"]


def greenlet_spawn(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """`await greenlet_spawn(pooled.close)`: the pool's call, awaiting the driver where it must."""
    return _util.greenlet_spawn(fn, *args)


def _spawns() -> str | None:
    spawn = getattr(_util, "greenlet_spawn", None)
    if spawn is None:
        return "sqlalchemy.util has no greenlet_spawn"
    if not inspect.iscoroutinefunction(spawn):
        return "sqlalchemy.util.greenlet_spawn is no longer a coroutine function"
    parameters = list(inspect.signature(spawn).parameters.values())
    if (
        len(parameters) < 2
        or parameters[0].name != "fn"
        or parameters[1].kind is not inspect.Parameter.VAR_POSITIONAL
    ):
        return "sqlalchemy.util.greenlet_spawn no longer takes (fn, *args)"
    return None


LIBRARY = Library(
    DISTRIBUTION,
    WRITTEN_AGAINST,
    MODULE,
    (Use("sqlalchemy.util.greenlet_spawn(fn, *args)", DRIVER, _spawns),),
)
