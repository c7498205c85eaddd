"""The revisions, in order (Alembic ignores this file)."""
