"""Routine lines (a task sent or run: the sweep's, twice a second) are DEBUG: hidden at the default
level, back with LOG_LEVEL=DEBUG; everything else from the same loggers is left as it is."""

import logging

import pytest

from app.logging import ROUTINE, demote_routine


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(("name", "routine"), [(n, p[0]) for n, p in ROUTINE.items()])
def test_routine_lines_are_debug(name: str, routine: str) -> None:
    demote_routine()
    logger = logging.getLogger(name)
    kept = _Kept()
    logger.addHandler(kept)
    saved = logger.level
    try:
        logger.setLevel(logging.INFO)  # the default LOG_LEVEL, as taskiq's CLI sets it
        logger.info(routine + " leadwheel.sweep with ID: 1")
        logger.info("Listening started.")  # not routine: stays
        logger.warning(routine + " that went wrong")  # a warning stays a warning
        assert [(r.levelname, r.getMessage()) for r in kept.records] == [
            ("INFO", "Listening started."),
            ("WARNING", routine + " that went wrong"),
        ]
        kept.records.clear()
        logger.setLevel(logging.DEBUG)  # LOG_LEVEL=DEBUG
        logger.info(routine + " leadwheel.sweep with ID: 2")
        assert [(r.levelname, r.getMessage()) for r in kept.records] == [
            ("DEBUG", routine + " leadwheel.sweep with ID: 2")
        ]
    finally:
        logger.setLevel(saved)
        logger.removeHandler(kept)
