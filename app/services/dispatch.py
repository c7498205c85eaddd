"""How a committed run reaches an executor. The API and the sweep only ever call a Dispatcher,
after the commit that made the run: TaskiqDispatcher (app/tasks) sends a job; InlineDispatcher
runs it at once (scripts, the demo, tests of the service layer)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from app.progress.events import ProgressEvent


class Dispatcher(Protocol):
    # True when distribute() has finished the runs by the time it returns
    inline: bool

    async def distribute(self, run_ids: Sequence[uuid.UUID], announce: Sequence[ProgressEvent] = ()) -> None:
        """Sends the runs' jobs; `announce` (events committed with the runs) is published first."""

    async def notify(self, lead_id: uuid.UUID) -> None: ...
