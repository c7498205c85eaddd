"""One scheduler process (two would send every schedule twice): `leadwheel scheduler`."""

from taskiq import TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

from app.internals import check_all
from app.logging import configure_logging
from app.tasks import jobs  # noqa: F401  (registers the scheduled tasks)
from app.tasks.broker import broker, settings


class Scheduler(TaskiqScheduler):
    async def startup(self) -> None:
        check_all()  # a scheduler on changed library internals does not start
        # the workers' log format and LOG_LEVEL; the sweep's "Sending task" line is routine (DEBUG)
        configure_logging(settings)
        await super().startup()


scheduler = Scheduler(broker, sources=[LabelScheduleSource(broker)])
