"""The docs' examples run against the same real processes as the job tests."""

from tests.tasks.conftest import stack, token  # noqa: F401  (fixtures)
