"""How a committed run reaches an executor. The API and the sweep only ever call a Dispatcher,
after the commit that made the run: TaskiqDispatcher (app/tasks) sends a job; InlineDispatcher
runs it at once (scripts, the demo, tests of the service layer)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.progress.events import ProgressEvent


@dataclass(frozen=True)
class RunJob:
    """What a worker needs to start a run without reading it first: the run row stays the truth
    (the engine checks its status under the lead's lock), these ids never change."""

    run_id: uuid.UUID
    lead_id: uuid.UUID
    batch_id: uuid.UUID | None = None


class Dispatcher(Protocol):
    # True when distribute() has finished the runs by the time it returns
    inline: bool

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        """Sends the runs' jobs; `announce` (events committed with the runs) is published first."""

    async def notify(self) -> None:
        """Has the outbox's first sends (written with assignments) delivered soon."""

    async def wake_webhooks(self) -> None:
        """Has the webhook deliveries that are due sent soon (after a commit that wrote or resumed
        some)."""
