from tests.tasks.conftest import stack, token  # noqa: F401  (fixtures)
