"""Every example in docs/api.md (fenced blocks marked `example`) runs against a real API and worker."""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from graphql import DocumentNode, parse, validate

from app.db import Database
from app.internals.strawberry_graphql import graphql_core_schema
from app.resolvers.schema import schema
from tests.tasks.conftest import Stack

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```(python|sh) example\n(.*?)```", re.S)
GRAPHQL = re.compile(r"```graphql\n(.*?)```", re.S)


def test_the_guide_has_examples() -> None:
    kinds = [kind for kind, _ in BLOCK.findall(GUIDE.read_text())]
    assert kinds.count("python") >= 2
    assert kinds.count("sh") >= 2


def test_every_graphql_snippet_in_the_guide_is_valid_against_the_schema() -> None:
    """The guide's ```graphql snippets (ids written "…") name fields and arguments that exist."""
    snippets = GRAPHQL.findall(GUIDE.read_text())
    assert len(snippets) >= 3
    for snippet in snippets:
        source = re.sub(r"#[^\n\"]*", "", snippet).replace('"…"', '"00000000-0000-0000-0000-000000000001"')
        for operation in parse(source).definitions:  # each on its own: a block lists several
            errors = validate(graphql_core_schema(schema), DocumentNode(definitions=(operation,)))
            assert not errors, (snippet, [e.message for e in errors])


async def test_every_example_in_the_api_guide_runs(
    db: Database, stack: Stack, token: str, tmp_path: Path
) -> None:
    api = await stack.api()
    stack.worker()
    env = os.environ | {"LEADWHEEL_URL": api, "LEADWHEEL_TOKEN": token}
    for number, (kind, code) in enumerate(BLOCK.findall(GUIDE.read_text())):
        if kind == "python":
            # examples share os.environ (the second watches the run the first created)
            script = tmp_path / f"example_{number}.py"
            script.write_text(
                code + "\nimport json\nprint('ENV=' + json.dumps({k: v for k, v in os.environ.items() "
                "if k.startswith('EXAMPLE_')}))\n"
            )
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-c", "set -euo pipefail\n" + code]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, (code, done.stdout, done.stderr)
        for line in done.stdout.splitlines():
            if line.startswith("ENV="):
                import json

                env |= json.loads(line[4:])
        if kind == "sh" and "me {" in code:
            assert '"actorType":"API_KEY"' in done.stdout.replace(" ", "")
        if kind == "sh" and "assignments.csv" in code:
            assert done.stdout.startswith("assignment_id,created_at")
        if kind == "sh" and "runsByHour" in code:
            assert '"distributionStats":[' in done.stdout.replace(" ", ""), done.stdout
    assert "EXAMPLE_RUN_ID" in env
