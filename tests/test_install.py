"""Installs as CI tested them. A production install, as an operator makes it: the wheel, in a fresh
virtualenv, with the runtime dependencies pinned by uv.lock and none of the dev extras. `leadwheel
--help` and every sub-command's --help run (the sub-commands are read from the Typer app, so a new
one is covered), every module of `app` imports, and so does every module `app` imports anywhere,
lazily inside a function too (`distribute-batch` imports httpx when it runs). And the lock check
fails when pyproject.toml and uv.lock disagree."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer
from packaging.requirements import Requirement

from app.cli import cli
from tests.conftest import _libpq, _with_database, admin_sql

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".venv" / "bin" / "uv"  # the pinned uv scripts/setup.sh installs
DEV_TOOLS = {
    "pytest",
    "pytest-asyncio",
    "pytest-httpserver",
    "hypothesis",
    "aiosmtpd",
    "playwright",
    "ruff",
    "mypy",
}


def uv(*args: str | Path, cwd: Path = ROOT) -> str:
    env = os.environ | {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(UV), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"uv {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The command and its sub-commands, depth first (a group has `commands`)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def imported_modules() -> set[str]:
    """Every absolute import in app/, at module level or inside a function."""
    found: set[str] = set()
    for source in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return {name for name in found if name != "app" and not name.startswith("app.")}


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and the locked runtime dependencies: its bin directory."""
    work = tmp_path_factory.mktemp("production")
    uv("build", "--quiet", "--out-dir", work / "dist", ROOT)  # an sdist, and the wheel built from it
    (wheel,) = (work / "dist").glob("leadwheel-*.whl")
    requirements = work / "requirements.txt"
    # the runtime dependencies as uv.lock pins them, with their hashes; no extras
    uv("export", "--frozen", "--no-emit-project", "--no-header", "--output-file", requirements)
    venv = work / "venv"
    uv("venv", "--quiet", "--python", sys._base_executable, venv)  # noqa: SLF001  (the interpreter under .venv)
    python = venv / "bin" / "python"
    # compiled, as an install should be (and a process then starts in a second, not four)
    uv("pip", "sync", "--quiet", "--compile-bytecode", "--python", python, "--require-hashes", requirements)
    uv("pip", "install", "--quiet", "--compile-bytecode", "--python", python, "--no-deps", wheel)
    return venv / "bin"


@pytest.mark.slow
def test_the_production_install_has_no_dev_extras(production: Path) -> None:
    listed = json.loads(uv("pip", "list", "--python", production / "python", "--format", "json"))
    installed = {(package["name"], package["version"]) for package in listed}
    runtime = uv("export", "--frozen", "--no-emit-project", "--no-header", "--no-hashes", "--no-annotate")
    pins = [Requirement(line) for line in runtime.splitlines() if "==" in line]
    locked = {(pin.name, str(pin.specifier)[2:]) for pin in pins if not pin.marker or pin.marker.evaluate()}
    assert installed == locked | {("leadwheel", "0.1.0")}  # exactly the locked runtime set
    assert {name for name, _ in installed} & DEV_TOOLS == set()


HELP_OF_EVERY_COMMAND = """
import json, sys
from importlib.metadata import entry_points

(script,) = entry_points(group="console_scripts", name="leadwheel")
main = script.load()  # what the installed `leadwheel` runs
for path in json.loads(sys.argv[1]):
    sys.argv = ["leadwheel", *path, "--help"]
    try:
        main()
    except SystemExit as exit:
        if exit.code:
            raise
    print("\\n--- done:", " ".join(path), flush=True)
"""


def production_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return env | {"COLUMNS": "200"}


@pytest.mark.slow
def test_every_command_helps_in_the_production_install(production: Path) -> None:
    paths = list(command_paths(typer.main.get_command(cli)))
    assert ("distribute-batch",) in paths
    assert ("api-key", "create") in paths
    # run outside the checkout, so nothing is imported from the source tree
    top = subprocess.run(
        [production / "leadwheel", "--help"], cwd="/", env=production_env(), capture_output=True, text=True
    )
    assert top.returncode == 0, top.stderr
    assert "distribute-batch" in top.stdout
    # every sub-command through the same entry point, in one process (each of them a second otherwise)
    done = subprocess.run(
        [production / "python", "-c", HELP_OF_EVERY_COMMAND, json.dumps(paths[1:])],
        cwd="/",
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    shown = done.stdout.split("\n--- done:")
    assert len(shown) == len(paths)  # one help per sub-command, and the tail after the last
    for path, text in zip(paths[1:], shown, strict=False):
        assert "Usage: leadwheel " + " ".join(path) in text, text


@pytest.mark.slow
def test_every_module_and_everything_it_imports_loads_in_the_production_install(production: Path) -> None:
    script = (
        "import importlib, pkgutil, sys, app\n"
        "assert not app.__file__.startswith(sys.argv[1]), app.__file__\n"
        "for info in pkgutil.walk_packages(app.__path__, 'app.'):\n"
        "    importlib.import_module(info.name)\n"
        "for name in sys.argv[2:]:\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [str(production / "python"), "-c", script, str(ROOT), *sorted(imported_modules())],
        cwd="/",
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_production_install_migrates_a_database(production: Path, server_url: str) -> None:
    """The Alembic scripts ship with the wheel: `leadwheel migrate` builds the schema from outside
    the checkout, to the head this checkout has."""
    name = f"lw_prod_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    url = _with_database(server_url, name)
    try:
        done = subprocess.run(
            [production / "leadwheel", "migrate"],
            cwd="/",
            env=production_env() | {"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

        async def head() -> str:
            conn = await asyncpg.connect(_libpq(url))
            try:
                return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
            finally:
                await conn.close()

        newest = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))[-1]
        assert asyncio.run(head()) == newest.split("_")[0]
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_lock_check_fails_when_pyproject_and_the_lock_disagree(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    uv("lock", "--check", "--offline", cwd=tmp_path)
    pyproject = tmp_path / "pyproject.toml"
    # a bound the locked pyotp meets: the lock is stale all the same. Finding that out resolves again,
    # which reads the registry's index for every platform split: from uv's cache when it has them,
    # else (a new machine: offline, that fails with another error) from PyPI, as the set-up does
    pyproject.write_text(pyproject.read_text().replace('"pyotp>=2.12",', '"pyotp>=2.12.1",'))
    env = os.environ | {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}

    def check(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(UV), "lock", "--check", *flags], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    done = check("--offline")
    if "network was disabled" in done.stderr:
        done = check()
    assert done.returncode != 0
    assert "needs to be updated" in done.stderr, done.stderr
