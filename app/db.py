"""One async engine per process; sessions per unit of work; the conflict-retry decorator."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.internals.sqlalchemy import greenlet_spawn
from app.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


@dataclass(frozen=True)
class Database:
    """The process's engine plus its session factories: what services and the engine receive.
    `readers` share the pool in AUTOCOMMIT: a read costs its statement, with no BEGIN / ROLLBACK
    round trips (measured: 4 round trips per loader batch became 1)."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    readers: async_sessionmaker[AsyncSession]
    autocommit: AsyncEngine  # the same pool, in AUTOCOMMIT

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on exit, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Reads only: each statement sees its own committed snapshot."""
        async with self.readers() as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in AUTOCOMMIT: each statement is its own transaction, with no BEGIN /
        ROLLBACK round trips (for reads, and for writes that are one statement)."""
        async with self.autocommit.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_database(
    url: str, settings: Settings | None = None, *, pre_ping: bool = False, **engine_kwargs: object
) -> Database:
    """No pre-ping by default: it costs a round trip per checkout (19% of engine throughput). A
    connection lost to a server restart fails the statement that finds it; SQLAlchemy then
    invalidates the pool, the engine's transactions retry, and later requests reconnect."""
    pool: dict[str, object] = {}
    if settings is not None:
        pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow}
    engine = create_async_engine(url, pool_pre_ping=pre_ping, **(pool | engine_kwargs))
    reader = engine.execution_options(isolation_level="AUTOCOMMIT")
    return Database(
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        readers=async_sessionmaker(reader, expire_on_commit=False),
        autocommit=reader,
    )


def sqlstate_of(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def retry_on_conflict(
    attempts: int = 6,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Re-runs the whole transaction on deadlock, serialization failure or a lost connection: each
    try starts fresh, so it must decorate the function that opens the transaction, and that
    transaction must be safe to run again after an unknown COMMIT outcome (the engine's is)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(1, attempts + 1):
                try:
                    return await fn(*args, **kwargs)
                except DBAPIError as exc:
                    retryable = exc.connection_invalidated or sqlstate_of(exc) in RETRYABLE_SQLSTATES
                    if not retryable or attempt == attempts:
                        raise
                    await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            raise AssertionError("unreachable")

        return wrapper

    return decorate


# admin_shutdown, crash_shutdown, cannot_connect_now; with class 08 (connection exceptions): the
# server ended or refused the session, as opposed to an error in a statement
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def session_ended(sqlstate: object) -> bool:
    """A SQLSTATE saying the connection is gone (or cannot be made now), not the statement wrong."""
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _SESSION_ENDED)


def _connection_trouble(exc: DBAPIError) -> bool:
    """A lost or broken connection (terminated backend, server restart, a protocol left in a bad
    state by one), as opposed to an error in the statement itself."""
    from sqlalchemy.exc import InterfaceError, InternalError

    return bool(exc.connection_invalidated) or isinstance(exc, InterfaceError | InternalError)


def retry_on_disconnect(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """For reads (safe to repeat) taking the Database as first argument: on connection trouble,
    drop the pool's idle connections (some may be broken the same way) and try again, twice."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(3):
            try:
                return await fn(*args, **kwargs)
            except DBAPIError as exc:
                if not _connection_trouble(exc) or attempt == 2:
                    raise
                db = args[0]
                if isinstance(db, Database):
                    await db.engine.dispose()
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    return wrapper


@asynccontextmanager
async def driver_connection(source: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """asyncpg's own connection from `source`'s pool, for a hot path's statements sent without
    SQLAlchemy's execution machinery (nor its Connection around the pooled one). Errors are raised
    as SQLAlchemy raises them everywhere else (DBAPIError, whose `orig` is asyncpg's:
    retry_on_conflict, sqlstate_of and the error mapping read it), and a connection the server
    ended, that broke, or that a cancellation left mid-statement is never reused."""
    pooled = await source.raw_connection()
    conn: asyncpg.Connection = pooled.driver_connection
    unfit: BaseException | None = None
    try:
        yield conn
    except asyncpg.PostgresError as exc:
        lost = session_ended(exc.sqlstate)
        unfit = exc if lost else None
        raise DBAPIError(None, None, exc, connection_invalidated=lost) from exc
    except (asyncpg.InterfaceError, OSError) as exc:  # a client-side or protocol error, a lost socket
        unfit = exc  # not reused either way; but only a lost one is UNAVAILABLE and retried
        lost = isinstance(exc, OSError) or conn.is_closed()
        raise DBAPIError(None, None, exc, connection_invalidated=lost) from exc
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled: the protocol may be mid-statement
            unfit = exc
        raise
    finally:
        # a cancellation during a rollback can leave the session inside a transaction, which the
        # pool's reset on return does not see (it rolls back only what SQLAlchemy began)
        if unfit is not None or conn.is_closed() or conn.is_in_transaction():
            await greenlet_spawn(pooled.invalidate, unfit if isinstance(unfit, Exception) else None)
        await greenlet_spawn(pooled.close)  # back to the pool (a no-op once invalidated)
