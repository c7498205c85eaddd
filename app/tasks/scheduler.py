"""One scheduler process (two would send every schedule twice): `leadwheel scheduler`."""

from taskiq import TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

from app.tasks import jobs  # noqa: F401  (registers the scheduled tasks)
from app.tasks.broker import broker

scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker)])
