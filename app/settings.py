"""One Settings object, read from the environment (prefix-free names, as operators expect)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    # Unset: embedded PostgreSQL / Redis are started in data_dir (see app/embedded.py).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".leadwheel")
    # Connections are opened on demand up to the pool's size and then kept. Overflow connections
    # are closed as soon as they are returned: under a burst that started a new PostgreSQL backend
    # (and re-prepared every statement) for many requests, 65 backends in 5 s, a tenth of the
    # machine (bench/e2e.py (b), perf). So the pool is the cap, and overflow is off by default.
    db_pool_size: int = Field(default=30, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # DEBUG adds the routine lines: every task sent and run (the sweep's, once a second)
    log_level: LogLevel = LogLevel.INFO
    # the buyers' page: invite links are PORTAL_URL#invite=<token> (a fragment: never sent to a
    # server), and lead_assigned emails link it
    portal_url: str = "http://127.0.0.1:8000/portal"

    # jobs
    # seconds before attempt 2, 3, ...: five attempts in all by default (SPEC §4)
    retry_delays_seconds: list[float] = Field(default_factory=lambda: [5.0, 15.0, 45.0, 120.0, 300.0])
    retry_jitter: float = Field(default=0.2, ge=0, le=1)  # ± this fraction of each delay
    # a QUEUED run whose job was sent this long ago and has not finished is sent again
    stale_after_seconds: float = Field(default=60, gt=0)
    sweep_interval_seconds: int = Field(default=1, ge=1)
    worker_concurrency: int = Field(default=5, ge=1)  # runs at once per worker process
    worker_processes: int = Field(default=1, ge=1)
    # optional global limit on distributions per second (None: no limit)
    rate_limit_per_second: float | None = None
    # taskiq-redis reclaims a message unacknowledged this long (ms): redelivery after a crash
    queue_idle_timeout_ms: int = Field(default=30_000, ge=1000)
    queue_maxlen: int = Field(default=100_000, ge=1000)

    # notifications (no smtp_host: messages go to the log)
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_from: str = "LeadWheel <no-reply@leadwheel.local>"
    smtp_timeout_seconds: float = 10
    smtp_max_connections: int = Field(default=10, ge=1)
    notification_attempts: int = Field(default=5, ge=1)

    # webhooks (SPEC §9)
    webhook_connect_timeout_seconds: float = Field(default=5, gt=0)
    # the whole attempt: connecting, sending, the answer's head and what is read of its body
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    # seconds before attempts 2, 3, …: eight attempts in all by default, then FAILED
    webhook_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)  # ± this fraction of each delay
    # consecutive failed attempts (any deliveries) after which an endpoint is disabled and flagged
    webhook_disable_after_failures: int = Field(default=20, ge=1)
    # from its second failure in a row, a failing endpoint is tried again only after a wait: the
    # first retry delay, doubled with each further failure, at most this long, ± the retry jitter
    # (0, or a first retry delay of 0: no wait, each waiting delivery tried in turn)
    webhook_endpoint_backoff_max_seconds: float = Field(default=300, ge=0)
    # loopback, private, link-local and similar addresses (tests, the demo's local receivers)
    webhook_allow_private_networks: bool = False
    # endpoints sent to at once per worker process (each endpoint one request at a time)
    webhook_max_concurrency: int = Field(default=64, ge=1)
    # deliveries of one endpoint sent in a row per claim
    webhook_batch_size: int = Field(default=20, ge=1)
    # a distribution's deliveries to healthy endpoints are its worker's to send at once, without a
    # claim, for this long; a worker that died meanwhile leaves them to the others after it
    webhook_lease_seconds: float = Field(default=60, gt=0)
    webhook_rotation_overlap_hours: float = Field(default=24, ge=0, le=24 * 30)
    # certificate authorities (PEM) trusted for endpoints besides the public ones (a private CA)
    webhook_ca_file: Path | None = None

    # auth
    access_token_ttl_minutes: int = Field(default=480, ge=1)
    mfa_challenge_ttl_seconds: int = Field(default=300, ge=30)
    lockout_after_failures: int = Field(default=5, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    # login / verifyMfa attempts per minute, per account and per client address
    auth_rate_limit_per_minute: int = Field(default=10, ge=1)
    totp_issuer: str = "LeadWheel"
    # provider users: an invite is single use and expires; so does the enrollment it starts
    invite_ttl_hours: float = Field(default=72, gt=0)
    enrollment_ttl_minutes: float = Field(default=30, gt=0)
    # an API process re-checks a credential it verified after this long (revocations reach it at
    # once through Redis; this bounds the rare case they cannot); 0: check on every request
    auth_cache_seconds: float = Field(default=10, ge=0)

    # API hardening
    graphql_max_depth: int = Field(default=10, ge=2)
    graphql_max_tokens: int = Field(default=2000, ge=100)
    graphql_max_aliases: int = Field(default=30, ge=1)
    # estimated objects a document may ask for (app/resolvers/cost.py): the nested
    # leads(first: 100) page of bench/api.py is 3,201, the dashboard's refresh about 1,500
    graphql_max_cost: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # None: on in development, off in production
    graphql_ide: bool | None = None
    allowed_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _lease_outlasts_two_attempts(self) -> Settings:
        # a leased delivery starts while an attempt's time to answer and another to be recorded
        # remain in its lease (app/services/webhooks/sender.py)
        if self.webhook_lease_seconds <= 2 * self.webhook_timeout_seconds:
            raise ValueError("WEBHOOK_LEASE_SECONDS must be more than twice WEBHOOK_TIMEOUT_SECONDS")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def ide_enabled(self) -> bool:
        if self.graphql_ide is not None:
            return self.graphql_ide
        return self.environment is Environment.DEVELOPMENT


@lru_cache
def get_settings() -> Settings:
    return Settings()
