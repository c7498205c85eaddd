"""Structured logs: structlog renders every record (the stdlib loggers included) as JSON outside
development, and readable lines in development. Context variables bound with
`bind_contextvars(request_id=…, run_id=…, lead_id=…)` appear on every line logged in that context."""

from __future__ import annotations

import logging
import sys

import structlog

from app.settings import Environment, Settings

_configured = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (it may be replaced after configuration)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


# Libraries' INFO lines for every task sent or run (the scheduler's sweep alone is two a second):
# logger -> how those messages start. They are logged at DEBUG instead.
ROUTINE: dict[str, tuple[str, ...]] = {
    "taskiq.cli.scheduler.run": ("Sending task",),
    "taskiq.receiver.receiver": ("Executing task",),
}


class _Routine(logging.Filter):
    """Demotes a logger's routine INFO records to DEBUG, and drops them unless that logger is
    enabled for DEBUG (LOG_LEVEL=DEBUG): a level is checked before a filter runs, so the demoted
    record must be checked again here."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).startswith(self.prefixes):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def demote_routine() -> None:
    for name, prefixes in ROUTINE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Routine) for f in logger.filters):
            logger.addFilter(_Routine(prefixes))


def configure_logging(settings: Settings) -> None:
    global _configured
    demote_routine()
    if _configured:
        return
    _configured = True
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer()
        if settings.environment is Environment.DEVELOPMENT
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.value)
