"""Alembic from code: `upgrade(url)` / `downgrade(url)`. Synchronous (Alembic's env runs its own
event loop): call it before the loop starts or through asyncio.to_thread."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

# the checkout's root, or site-packages for a wheel: both hold `migrations/` beside `app/`
ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    """alembic.ini is the checkout's (for `alembic` run by hand); an installed wheel has none and
    needs none: the scripts' location is set here and logging is the application's."""
    ini = ROOT / "alembic.ini"
    config = Config(str(ini) if ini.is_file() else None)
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    config.attributes["configure_logging"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
