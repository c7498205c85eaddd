"""`leadwheel`: run, migrate and demo LeadWheel. With no DATABASE_URL / REDIS_URL it starts
embedded PostgreSQL and Redis in LEADWHEEL's data directory (DATA_DIR, default .leadwheel)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.table import Table

from app.db import create_database
from app.demo import run_demo
from app.embedded import servers
from app.migrate import upgrade
from app.settings import get_settings

cli = typer.Typer(help="LeadWheel: fair, atomic lead distribution.", no_args_is_help=True)
console = Console()


@contextlib.contextmanager
def _runtime() -> Iterator[tuple[str, str]]:
    settings = get_settings()
    with servers(
        data_dir=settings.data_dir, database_url=settings.database_url, redis_url=settings.redis_url
    ) as (database_url, redis_url):
        upgrade(database_url)
        yield database_url, redis_url


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def print_demo(run: object) -> None:
    from app.demo import DemoRun

    assert isinstance(run, DemoRun)
    console.rule(f"[bold]{run.niche_name}[/]: 3 levels (Exclusive $45 x1, Shared $30 x2, Budget $15 x3)")
    for number, (attributes, result) in enumerate(run.results, start=1):
        table = Table(title=f"Lead {number}: {attributes}  ->  {result.status.value}", title_justify="left")
        table.add_column("level")
        table.add_column("provider")
        table.add_column("decision")
        table.add_column("why / balance after")
        balances = {a.provider_id: a.balance_after_cents for a in result.assigned}
        for event in result.events:  # walk order
            name = run.provider_names.get(str(event.provider_id), str(event.provider_id))
            if event.type == "ASSIGNED" and event.provider_id is not None:
                decision = f"[green]assigned {_money(event.price_cents or 0)}[/]"
                why = f"balance {_money(balances[event.provider_id])}"
            elif event.type == "SKIPPED":
                decision, why = f"[yellow]skipped {event.reason}[/]", event.detail or ""
            else:
                continue
            table.add_row(event.level_name or "", name, decision, why)
        console.print(table)


@cli.command()
def migrate() -> None:
    """Apply every migration (to DATABASE_URL, or the embedded server)."""
    with _runtime() as (database_url, _):
        console.print(f"migrated {database_url}")


@cli.command()
def demo() -> None:
    """Seed a demo niche, providers and leads; distribute them and print who got what and why."""
    with _runtime() as (database_url, _):

        async def go() -> None:
            db = create_database(database_url)
            try:
                print_demo(await run_demo(db))
            finally:
                await db.dispose()

        asyncio.run(go())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
