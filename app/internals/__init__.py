"""Every place LeadWheel reaches under a library (STYLE.md §5b), one module per library: its private
names are imported or spelled there, or at least listed there with the file that uses them, with
the version the code was written against and a check that each is still there.

`check_all()` runs once when a process starts (the API's create_app, a worker's WORKER_STARTUP, the
scheduler's startup, and the `leadwheel` commands that start them): a library that changed under
us stops the process with a message naming the library, the version found and the module to
update, instead of a wrong answer or a slower path later. The checks are cheap (attribute and
signature look-ups, and a few throw-away objects) and never run per request.

uv.lock pins the versions CI tested; pyproject.toml caps each of these libraries below its next
release line. To move to a new release: raise the cap, `uv lock --upgrade-package NAME`, run the
tests, then update the library's module here (its WRITTEN_AGAINST, and any use that moved)."""

from __future__ import annotations

from app.internals.checks import HEADLINE, InternalsChanged, Library

__all__ = ["InternalsChanged", "check_all", "libraries"]


def libraries() -> tuple[Library, ...]:
    from app.internals import (
        graphql_core,
        sqlalchemy,
        starlette,
        strawberry_graphql,
        taskiq,
        taskiq_redis,
        uvicorn,
    )

    return (
        graphql_core.LIBRARY,
        sqlalchemy.LIBRARY,
        starlette.LIBRARY,
        strawberry_graphql.LIBRARY,
        taskiq.LIBRARY,
        taskiq_redis.LIBRARY,
        uvicorn.LIBRARY,
    )


_checked = False


def check_all() -> None:
    """Raises InternalsChanged naming every library whose internals moved. Runs its checks once per
    process; later calls return at once."""
    global _checked
    if _checked:
        return
    failures = [library.failure(problems) for library in libraries() if (problems := library.problems())]
    if failures:
        raise InternalsChanged("\n".join([HEADLINE, *failures]))
    _checked = True
