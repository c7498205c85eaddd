"""`leadwheel`: serve, migrate, demo, create-admin, api-key. With no DATABASE_URL / REDIS_URL it
starts embedded PostgreSQL and Redis in DATA_DIR (default .leadwheel) and stops them on exit."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from app.db import Database, create_database
from app.demo import DemoRun, run_demo
from app.embedded import servers
from app.errors import DomainError
from app.internals import InternalsChanged, check_all
from app.migrate import upgrade
from app.services import auth, provider_users
from app.services.audit import SYSTEM
from app.settings import Settings, get_settings

cli = typer.Typer(help="LeadWheel: fair, atomic lead distribution.", no_args_is_help=True)
keys = typer.Typer(help="Scoped API keys for scripts.", no_args_is_help=True)
cli.add_typer(keys, name="api-key")
console = Console()
T = TypeVar("T")


@contextlib.contextmanager
def _runtime() -> Iterator[Settings]:
    """Settings whose URLs point at running, migrated servers (embedded ones if none were given)."""
    settings = get_settings()
    with servers(
        data_dir=settings.data_dir, database_url=settings.database_url, redis_url=settings.redis_url
    ) as (database_url, redis_url):
        upgrade(database_url)
        yield settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def go() -> T:
        db = create_database(str(settings.database_url))
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except DomainError as exc:
        console.print(f"[red]{exc.code.value}[/]: {exc}")
        raise typer.Exit(1) from exc


def _check_internals() -> None:
    """Before starting a server process: the library internals its code relies on are there."""
    try:
        check_all()
    except InternalsChanged as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(1) from exc


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def print_demo(run: DemoRun) -> None:
    console.rule(f"[bold]{run.niche_name}[/]: 3 levels (Exclusive $45 x1, Shared $30 x2, Budget $15 x3)")
    for number, (attributes, result) in enumerate(run.results, start=1):
        # on a line of its own: as a table's title it was wrapped to the table's width
        console.print(f"Lead {number}: {attributes}  ->  {result.status.value}", markup=False, soft_wrap=True)
        table = Table()
        for column in ("level", "provider", "decision", "why / balance after"):
            table.add_column(column)
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
    with _runtime() as settings:
        console.print(f"migrated {settings.database_url}")


@cli.command()
def demo() -> None:
    """Seed a demo niche, providers and leads; distribute them and print who got what and why."""
    with _runtime() as settings:
        print_demo(_with_db(settings, run_demo))


DEMO_ADMIN = "admin@leadwheel.local"


async def _seed_demo_if_empty(db: Database, settings: Settings) -> tuple[str, str, DemoRun] | None:
    """On an empty database: the demo data and a demo admin. Returns (password, TOTP secret, demo)."""
    import secrets

    import sqlalchemy as sa

    async with db.read() as session:
        if await session.scalar(sa.text("SELECT EXISTS (SELECT 1 FROM admin_users)")):
            return None
    password = secrets.token_urlsafe(12)
    created = await auth.create_admin(db, email=DEMO_ADMIN, password=password, settings=settings)
    return password, created.admin.totp_secret, await run_demo(db)


def _child_env(settings: Settings) -> dict[str, str]:
    """The children's environment: the servers' URLs, and one directory where API and worker
    processes write their metrics for /metrics to aggregate."""
    import os
    import tempfile

    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="lw-metrics-")
    return os.environ | {
        "DATABASE_URL": str(settings.database_url),
        "REDIS_URL": str(settings.redis_url),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
    }


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    demo: Annotated[bool, typer.Option(help="seed demo data into an empty database")] = True,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Everything: embedded PostgreSQL and Redis (unless URLs are set), migrations, the API,
    a worker and the scheduler. Ctrl-C stops them all."""
    import signal
    import sys
    import time

    from app.main import api_argv
    from app.tasks.broker import scheduler_argv, worker_argv

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    _check_internals()
    with _runtime() as settings:
        seeded = None
        if demo:
            seeded = _with_db(settings, lambda db: _seed_demo_if_empty(db, settings))
            if seeded:
                print_demo(seeded[2])
        env = _child_env(settings)
        py = sys.executable
        since_ms = asyncio.run(_redis_now_ms(str(settings.redis_url)))
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        children = {
            "API": subprocess.Popen(
                [py, "-m", *api_argv(host, port, log_level=settings.log_level.value)], env=env
            ),
            "worker": subprocess.Popen(
                [py, "-m", "taskiq", *worker_argv(settings, processes=workers)], env=env
            ),
            "scheduler": subprocess.Popen([py, "-m", "taskiq", *scheduler_argv(settings)], env=env),
        }
        failed = False
        try:
            local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            ready = asyncio.run(
                _wait_until_ready(
                    f"http://{local}:{port}",
                    str(settings.redis_url),
                    since_ms,
                    children,
                    lambda: stopping,
                )
            )
            if ready:
                print_summary(f"http://{local}:{port}", seeded[:2] if seeded else None)
            while not stopping and all(c.poll() is None for c in children.values()):
                time.sleep(0.2)
            dead = [name for name, c in children.items() if c.poll() is not None]
            if dead and not stopping:
                failed = True
                console.print(
                    f"[red]the {' and '.join(dead)} stopped[/] (see its messages above): stopping the rest"
                )
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children.values():
                try:
                    child.wait(timeout=40)  # a worker drains its in-flight jobs first
                except subprocess.TimeoutExpired:
                    child.kill()
        console.print("stopped")
    if failed:
        raise typer.Exit(1)


async def _redis_now_ms(redis_url: str) -> int:
    """Redis's clock (the job stream's ids are in it), in milliseconds."""
    from app.redis_client import connect

    redis = connect(redis_url)
    try:
        seconds, micros = await redis.time()
    finally:
        await redis.aclose()
    return int(seconds) * 1000 + int(micros) // 1000


async def _wait_until_ready(
    base: str,
    redis_url: str,
    since_ms: int,
    children: dict[str, subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
) -> bool:
    """Until the API answers /readyz and a job the scheduler sent after `since_ms` has reached a
    worker. False if a child exits or Ctrl-C comes first. Says what it still waits for now and then."""
    import time

    import httpx
    from redis.exceptions import RedisError

    from app.redis_client import connect
    from app.tasks.broker import job_delivered_since

    api, jobs = "the API", "a first job from the scheduler to a worker"
    waiting = {api: True, jobs: True}
    started = last_note = time.monotonic()
    redis = connect(redis_url)
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            while any(waiting.values()):
                if stopping() or any(c.poll() is not None for c in children.values()):
                    return False
                if waiting[api]:
                    with contextlib.suppress(httpx.HTTPError):
                        waiting[api] = (await http.get(f"{base}/readyz")).status_code != 200
                if waiting[jobs]:
                    with contextlib.suppress(RedisError, OSError):  # Redis not answering yet
                        waiting[jobs] = not await job_delivered_since(redis, since_ms)
                elapsed = time.monotonic() - started
                if time.monotonic() - last_note > 20:
                    last_note = time.monotonic()
                    late = " and ".join(name for name, still in waiting.items() if still)
                    console.print(f"still starting after {elapsed:.0f} s: waiting for {late}")
                # each probe of /readyz is an access log line: often at first, then calmly
                await asyncio.sleep(0.2 if elapsed < 10 else 1)
    finally:
        await redis.aclose()
    return True


def print_summary(base: str, demo_admin: tuple[str, str] | None) -> None:
    """Last, once everything answers, so nothing scrolls it away; unwrapped (soft_wrap), so a
    copied URL or secret is whole whatever the terminal's width."""
    console.rule("[bold]LeadWheel is ready[/]: API, worker and scheduler running; Ctrl-C stops them")
    lines = [
        f"GraphQL:   {base}/graphql",
        f"dashboard: {base}/dashboard",
        f"portal:    {base}/portal   (buyers; `leadwheel invite-provider-user PROVIDER EMAIL` invites one)",
        f"metrics:   {base}/metrics   health: {base}/healthz, {base}/readyz",
    ]
    if demo_admin:
        password, secret = demo_admin
        lines.append(f"demo admin: {DEMO_ADMIN}  password: {password}  TOTP secret: {secret}")
        lines.append("(sign in with a code from an authenticator app holding that secret; shown only now)")
    else:
        lines.append(
            "admin: sign in with an admin of this database (the demo admin's password was shown at "
            "its first start; `leadwheel create-admin EMAIL` makes another)"
        )
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@cli.command()
def worker(processes: Annotated[int | None, typer.Option(help="worker processes")] = None) -> None:
    """Run distribution and notification workers (taskiq). Needs DATABASE_URL and REDIS_URL."""
    import os
    import sys

    from app.tasks.broker import worker_argv

    _check_internals()
    settings = get_settings()
    if not settings.database_url or not settings.redis_url:
        console.print(
            "[red]INVALID_INPUT[/]: a worker needs DATABASE_URL and REDIS_URL (or use `leadwheel serve`)"
        )
        raise typer.Exit(2)
    os.execv(sys.executable, [sys.executable, "-m", "taskiq", *worker_argv(settings, processes=processes)])


@cli.command()
def scheduler() -> None:
    """Run the scheduler (the periodic sweep). Run exactly one. Needs DATABASE_URL and REDIS_URL."""
    import os
    import sys

    _check_internals()
    settings = get_settings()
    if not settings.database_url or not settings.redis_url:
        console.print(
            "[red]INVALID_INPUT[/]: the scheduler needs DATABASE_URL and REDIS_URL (or use `leadwheel serve`)"
        )
        raise typer.Exit(2)
    from app.tasks.broker import scheduler_argv

    os.execv(sys.executable, [sys.executable, "-m", "taskiq", *scheduler_argv(settings)])


def _qr(uri: str) -> str:
    import qrcode

    code = qrcode.QRCode(border=1)
    code.add_data(uri)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


@cli.command("create-admin")
def create_admin(
    email: str,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="asked for (hidden, twice) when not given, so it stays out of shell history and ps",
        ),
    ],
) -> None:
    """Create an admin user and print the TOTP provisioning URI (and a QR code) for an authenticator."""
    with _runtime() as settings:
        created = _with_db(
            settings, lambda db: auth.create_admin(db, email=email, password=password, settings=settings)
        )
    console.print(f"admin {created.admin.email} created ({created.admin.id})")
    console.print("Add it to an authenticator app (scan, or enter the URI):")
    # soft_wrap: rich would otherwise break lines at the terminal's width (80 columns when it
    # cannot tell), and a QR code or URI copied in pieces no longer works
    console.print(_qr(created.provisioning_uri), markup=False, highlight=False, soft_wrap=True)
    console.print(created.provisioning_uri, markup=False, highlight=False, soft_wrap=True)


@cli.command("invite-provider-user")
def invite_provider_user(
    provider: Annotated[str, typer.Argument(help="the provider's id, email or exact name")],
    email: Annotated[str, typer.Argument(help="the person's email")],
) -> None:
    """Invite a provider user: prints the single-use invite link (also sent by email through the
    notification outbox, or written to the worker's log without SMTP)."""

    async def invite(db: Database, settings: Settings) -> provider_users.Invited:
        provider_id = await provider_users.find_provider(db, actor=SYSTEM, ref=provider)
        return await provider_users.invite(
            db, actor=SYSTEM, provider_id=provider_id, email=email, settings=settings
        )

    with _runtime() as settings:
        invited = _with_db(settings, lambda db: invite(db, settings))
    console.print(
        f"invited {invited.user.email} ({invited.user.id}) for provider {invited.user.provider_id}; "
        f"the link works once, until {invited.expires_at:%Y-%m-%d %H:%M} UTC:"
    )
    console.print(invited.invite_url, highlight=False, soft_wrap=True)


@keys.command("create")
def create_key(
    name: Annotated[str, typer.Option(help="who or what uses the key")],
    scope: Annotated[
        list[str], typer.Option(help="read, leads:write, distribution:write or admin; repeatable")
    ],
) -> None:
    """Create an API key; its secret is printed once."""
    with _runtime() as settings:
        created = _with_db(
            settings, lambda db: auth.create_api_key(db, actor=SYSTEM, name=name, scopes=scope)
        )
    console.print(
        f"API key {created.key.id} ({', '.join(created.key.scopes)}). Store it now, it is not shown again:"
    )
    console.print(created.secret, highlight=False)


@keys.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke an API key by id."""
    try:
        ident = uuid.UUID(key_id)
    except ValueError:
        console.print(f"[red]INVALID_INPUT[/]: {key_id!r} is not an API key id")
        raise typer.Exit(2) from None
    with _runtime() as settings:
        key = _with_db(settings, lambda db: auth.revoke_api_key(db, actor=SYSTEM, key_id=ident))
        announced = asyncio.run(_announce_revoked(str(settings.redis_url), key.key_hash))
    console.print(f"API key {key.id} revoked at {key.revoked_at}")
    if not announced:
        console.print(
            f"[yellow]warning[/]: Redis was not told; API processes accept the key for up to "
            f"AUTH_CACHE_SECONDS ({settings.auth_cache_seconds:g} s) more"
        )


async def _announce_revoked(redis_url: str, token_hash: str) -> bool:
    from app.redis_client import connect
    from app.services.credentials import announce_revoked

    redis = connect(redis_url, socket_connect_timeout=2)
    try:
        return await announce_revoked(redis, token_hash)
    finally:
        await redis.aclose()


BATCH_PROGRESS = """subscription($b: UUID!) { batchProgress(batchId: $b) {
  total processed assigned noEligible failed ratePerSecond etaSeconds done revenueCents } }"""


@cli.command("distribute-batch")
def distribute_batch(
    niche: Annotated[str | None, typer.Option(help="niche id (default: every niche)")] = None,
    status: Annotated[str | None, typer.Option(help="APPROVED or NO_ELIGIBLE (default: both)")] = None,
    limit: Annotated[int, typer.Option(help="at most this many leads")] = 1000,
    url: Annotated[str, typer.Option(envvar="LEADWHEEL_URL", help="the API")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="LEADWHEEL_TOKEN", help="access token or API key")] = "",
) -> None:
    """Queue every distributable lead matching the filter through the API, follow batchProgress
    live with a progress bar, then print a summary."""
    import json

    import httpx
    import websockets
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from app.wsclient import subscription

    if not token:
        console.print(
            "[red]UNAUTHENTICATED[/]: pass --token or set LEADWHEEL_TOKEN (an access token or API key)"
        )
        raise typer.Exit(2)

    async def go() -> dict[str, object]:
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                f"{url}/graphql",
                json={
                    "query": "mutation($n: UUID, $s: LeadStatus, $l: Int!) { distributeLeads(nicheId: $n, status: $s, "
                    "limit: $l) { id total } }",
                    "variables": {"n": niche, "s": status, "l": limit},
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
        body = response.json()
        if body.get("errors"):
            error = body["errors"][0]
            raise typer.BadParameter(f"{error.get('extensions', {}).get('code')}: {error['message']}")
        batch = body["data"]["distributeLeads"]
        final: dict[str, object] = {"total": batch["total"]}
        ws_url = url.replace("http", "ws", 1) + "/graphql"
        columns = (
            TextColumn("distributing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("batch", total=batch["total"] or 1, rate="")
            async with subscription(ws_url, token, BATCH_PROGRESS, {"b": batch["id"]}) as ws:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "next":
                        final = message["payload"]["data"]["batchProgress"]
                        bar.update(
                            task, completed=float(str(final["processed"])), rate=f"{final['ratePerSecond']}/s"
                        )
                    elif message["type"] in ("complete", "error"):
                        break
        return final

    try:
        final = asyncio.run(go())
    except (OSError, websockets.WebSocketException) as exc:
        console.print(f"[red]cannot reach the API at {url}[/]: {exc}")
        raise typer.Exit(1) from exc
    table = Table(title="batch summary", title_justify="left")
    for column in ("leads", "assigned", "no eligible", "failed", "revenue"):
        table.add_column(column, justify="right")
    table.add_row(
        str(final.get("total", 0)),
        str(final.get("assigned", 0)),
        str(final.get("noEligible", 0)),
        str(final.get("failed", 0)),
        _money(int(str(final.get("revenueCents", 0)))),
    )
    console.print(table)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
