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

    # auth
    access_token_ttl_minutes: int = Field(default=480, ge=1)
    mfa_challenge_ttl_seconds: int = Field(default=300, ge=30)
    lockout_after_failures: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # login / verifyMfa attempts per minute, per account and per client address
    auth_rate_limit_per_minute: int = Field(default=10, ge=1)
    totp_issuer: str = "LeadWheel"

    # API hardening
    graphql_max_depth: int = Field(default=10, ge=2)
    graphql_max_tokens: int = Field(default=2000, ge=100)
    graphql_max_aliases: int = Field(default=30, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # None: on in development, off in production
    graphql_ide: bool | None = None
    allowed_origins: list[str] = Field(default_factory=list)

    @property
    def ide_enabled(self) -> bool:
        if self.graphql_ide is not None:
            return self.graphql_ide
        return self.environment is Environment.DEVELOPMENT


@lru_cache
def get_settings() -> Settings:
    return Settings()
