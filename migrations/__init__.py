"""LeadWheel's Alembic scripts (env.py, versions/). A package so the wheel ships them beside `app`:
a production install migrates with `leadwheel migrate` (app/migrate.py finds them either way)."""
