"""The README's start command, as a newcomer runs it: `./scripts/dev.sh` in a fresh clone with no
DATABASE_URL or REDIS_URL creates its virtualenv, installs, starts embedded servers, migrates, seeds
the demo (printing the demo admin's login and TOTP secret) and runs API + worker + scheduler. We
sign in with a TOTP code, follow a distribution to COMPLETED, then Ctrl-C stops everything."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pyotp

from tests.tasks.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_serve_from_nothing_to_a_completed_distribution(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env |= {"DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400", "RETRY_DELAYS_SECONDS": "[0.5]"}
    env.pop("VIRTUAL_ENV", None)
    clone = tmp_path / "clone"  # committed files only, no virtualenv: what a newcomer gets
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    proc = subprocess.Popen(
        ["bash", "scripts/dev.sh", "--port", str(port)],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        printed = ""
        deadline = time.monotonic() + 600  # includes creating the virtualenv and installing
        while "demo admin" not in printed or "GraphQL:" not in printed:
            assert time.monotonic() < deadline, printed
            line = proc.stdout.readline() if proc.stdout else ""
            assert line or proc.poll() is None, printed
            printed += line
        found = re.search(r"demo admin: (\S+)\s+password: (\S+)\s+TOTP secret: (\S+)", printed)
        assert found, printed
        email, password, secret = found.groups()
        assert "Exclusive" in printed  # the demo's who-got-what tables
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(200):
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)

            def gql(query: str, token: str | None = None, **variables: object) -> dict:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                body = http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                ).json()
                assert "errors" not in body, body
                return dict(body["data"])

            challenge = gql(
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }",
                e=email,
                p=password,
            )["login"]["challenge"]
            token = gql(
                "mutation($c: String!, $k: String!) { verifyMfa(challenge: $c, code: $k) { token } }",
                c=challenge,
                k=pyotp.TOTP(secret).now(),
            )["verifyMfa"]["token"]
            niche = gql("{ niches { id name } }", token)["niches"][0]
            lead = gql(
                'mutation($n: UUID!) { submitLead(nicheId: $n, attributes: {state: "TX", roof_sqft: 2500}) { id } }',
                token,
                n=niche["id"],
            )["submitLead"]
            gql("mutation($id: UUID!) { approveLead(id: $id) { id } }", token, id=lead["id"])
            run = gql("mutation($id: UUID!) { distributeLead(leadId: $id) { id } }", token, id=lead["id"])[
                "distributeLead"
            ]
            for _ in range(300):
                status = gql(
                    "query($id: UUID!) { distributionRun(id: $id) { status } }", token, id=run["id"]
                )["distributionRun"]["status"]
                if status not in ("QUEUED", "RUNNING"):
                    break
                time.sleep(0.1)
            assert status in ("SUCCESS", "PARTIAL")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert "stopped" in rest
    assert proc.returncode == 0
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()  # embedded PostgreSQL stopped
