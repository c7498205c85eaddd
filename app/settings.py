"""One Settings object, read from the environment (prefix-free names, as operators expect)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    # Unset: embedded PostgreSQL / Redis are started in data_dir (see app/embedded.py).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".leadwheel")
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # How many times the engine re-runs a transaction that hit a deadlock or serialization failure.
    engine_conflict_attempts: int = Field(default=6, ge=1)
    dashboard_url: str = "http://127.0.0.1:8000/dashboard"


@lru_cache
def get_settings() -> Settings:
    return Settings()
