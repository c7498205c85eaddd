"""`leadwheel create-admin` in a terminal, as an operator runs it: the password is asked for (hidden,
twice) rather than given on the command line, and the TOTP provisioning URI comes out on one line
on an 80-column terminal, so it can be copied whole."""

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher

from app.db import Database
from app.models.auth import AdminUser

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long enough secret phrase"


def _in_terminal(argv: list[str], env: dict[str, str], answers: dict[bytes, bytes]) -> tuple[int, str]:
    """Runs `argv` on a pseudo-terminal of 80 x 24; whenever the output ends with a key of
    `answers`, types its value. Returns the exit status and everything the terminal showed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.2)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            for prompt, typed in answers.items():
                # the prompt's last character is written once input is hidden: type only then
                if shown.endswith(prompt):
                    os.write(master, typed)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, shown.decode(errors="replace")


async def test_create_admin_asks_for_the_password_and_prints_the_uri_on_one_line(
    db: Database, database_url: str, redis_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "TOTP_ISSUER": "LeadWheel Test Issuer"}
    email = "first.admin.with.a.rather.long.address@operations.example.test"
    status, shown = _in_terminal(
        [sys.executable, "-m", "app.cli", "create-admin", email],
        env,
        {b"Password: ": PASSWORD.encode() + b"\n", b"Repeat for confirmation: ": PASSWORD.encode() + b"\n"},
    )
    assert status == 0, shown
    assert "Password: " in shown and "Repeat for confirmation: " in shown
    assert PASSWORD not in shown  # not echoed
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown.splitlines()]
    uris = [line.strip() for line in lines if line.strip().startswith("otpauth://")]
    assert len(uris) == 1, shown
    assert len(uris[0]) > 80  # long enough that an 80-column wrap would have broken it
    parsed = pyotp.parse_uri(uris[0])
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.issuer == "LeadWheel Test Issuer"
    async with db.read() as session:
        admin = (await session.scalars(sa.select(AdminUser).where(AdminUser.email == email))).one()
    assert admin.totp_secret == parsed.secret
    assert PasswordHasher().verify(admin.password_hash, PASSWORD)  # what was typed, not an echo of it
