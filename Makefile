.PHONY: dev test lint fmt schema migrate bench lock
dev:
	./scripts/dev.sh
test:
	./scripts/test.sh
lint:
	.venv/bin/ruff check app tests bench && .venv/bin/ruff format --check app tests bench && .venv/bin/mypy
fmt:
	.venv/bin/ruff check --fix app tests bench; .venv/bin/ruff format app tests bench
schema:
	.venv/bin/strawberry export-schema app.resolvers.schema:schema --output schema.graphql
migrate:
	.venv/bin/leadwheel migrate
bench:
	.venv/bin/python bench/engine.py
lock:
	UV_PYTHON_DOWNLOADS=never .venv/bin/uv lock
