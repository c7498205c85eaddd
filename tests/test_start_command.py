"""The README's start command, as a newcomer runs it: `./scripts/dev.sh` in a fresh clone with no
DATABASE_URL or REDIS_URL creates its virtualenv, installs, starts embedded servers, migrates, seeds
the demo and runs API + worker + scheduler. What it prints (its children's logs included) ends with
the summary (URLs, the demo admin's login and TOTP secret) once all of them answer, and then stays
quiet: the sweep's routine lines are DEBUG. We sign in with a TOTP code, follow a distribution to
COMPLETED, then Ctrl-C stops everything."""

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pyotp

from tests.tasks.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


class _Output:
    """What the process prints, read as it comes without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc, self.fd, self.text = proc, proc.stdout.fileno(), ""

    def read(self, seconds: float) -> str:
        """Whatever comes within `seconds` (less if the process closes its output)."""
        deadline, got = time.monotonic() + seconds, b""
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                got += chunk
        self.text += got.decode(errors="replace")
        return got.decode(errors="replace")

    def until(self, marker: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while marker not in self.text:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.text
            self.read(0.5)


SUMMARY_END = "shown only now)"
ROUTINE = ("Executing task", "Sending task")


def test_serve_from_nothing_to_a_completed_distribution(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "COLUMNS", "LOG_LEVEL")
    }
    env |= {"DATA_DIR": str(tmp_path / "data"), "RETRY_DELAYS_SECONDS": "[0.5]"}
    env.pop("VIRTUAL_ENV", None)
    clone = tmp_path / "clone"  # committed files only, no virtualenv: what a newcomer gets
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    proc = subprocess.Popen(
        ["bash", "scripts/dev.sh", "--port", str(port)],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the children's logs too: the whole terminal
        start_new_session=True,
    )
    output = _Output(proc)
    try:
        output.until(SUMMARY_END, 600)  # includes creating the virtualenv and installing
        # the summary is last: with the sweep sending and running a job every second, three quiet
        # seconds mean its routine lines are gone (and nothing else was still starting)
        later = output.read(3)
        assert later.strip() == "", later
        printed = output.text
        summary = printed[printed.index("LeadWheel is ready") :]
        # one line each, unwrapped at the 80 columns rich assumes without a terminal
        found = re.search(r"demo admin: (\S+)\s+password: (\S+)\s+TOTP secret: (\S+)\n", summary)
        assert found, summary
        email, password, secret = found.groups()
        assert re.search(rf"GraphQL: +http://127\.0\.0\.1:{port}/graphql\n", summary), summary
        assert "Exclusive" in printed[: printed.index("LeadWheel is ready")]  # the demo's tables, before
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/readyz").status_code == 200  # ready when it said so, not after

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
        output.read(2)  # the distribution's own lines, if any
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    printed = output.text + rest.decode(errors="replace")
    assert [line for line in printed.splitlines() if any(r in line for r in ROUTINE)] == []
    assert "stopped" in printed
    assert proc.returncode == 0
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists()  # embedded PostgreSQL stopped
