"""`trainbus up` is secured by default, as a user runs it: real `up` processes, their embedded
nats-server, the CLI in the same folder with no NATS credential in its environment.

- the embedded server refuses an anonymous connection; the `client` credential may submit but
  not publish an event (a forged `completed`) or write KV (the server's permissions violation,
  and nothing stored);
- the credentials are 0600 in a 0700 folder and the same files serve a restart;
- `train --follow`, `jobs` and `audit` work with no NATS_* credential set;
- the banner prints the dashboard link with the token; an API write without it is 401;
- `--insecure` runs the open server, and says so in the banner and the log;
- each command logs in as the role it needs, and a refusal names the role used and the one
  needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest

from libs.events.credentials import API_TOKEN_FILE, CREDENTIALS_DIR
from libs.events.embedded import free_port
from libs.events.roles import ROLES
from tests.harness.bus import STREAM_MAX_BYTES
from tests.harness.polling import wait_until
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.workspace import Workspace

STOP_TIMEOUT = 60.0


class Up:
    """One `trainbus up` in `cwd` (its store ./.trainbus), stdout and stderr kept in files."""

    def __init__(self, cwd: Path, workspace: Workspace, *args: str) -> None:
        self.cwd = cwd
        self.nats_url = f"nats://127.0.0.1:{free_port()}"
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.env = clean_env(NATS_URL=self.nats_url,
                             TRAINBUS_DATA_DIR=str(workspace.data_dir),
                             TRAINBUS_STRATEGIES_DIR=str(workspace.strategies_dir),
                             TRAINBUS_MODELS_DIR=str(cwd / "models"),
                             TRAINBUS_STREAM_MAX_BYTES=str(STREAM_MAX_BYTES))
        self.args = ["up", "--port", self.api_url.rsplit(":", 1)[1], "--no-host-trainer", *args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def credentials(self) -> Path:
        return self.cwd / ".trainbus" / CREDENTIALS_DIR

    @property
    def out(self) -> Path:
        return self.cwd / f"up-{self.runs}.out"

    @property
    def err(self) -> Path:
        return self.cwd / f"up-{self.runs}.err"

    def start(self) -> str:
        """Start and wait for the banner; the banner."""
        self.runs += 1
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([TRAINBUS, *self.args], cwd=self.cwd, env=self.env,
                                         start_new_session=True, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)

        def banner() -> str | None:
            assert self.proc is not None and self.proc.poll() is None, (
                f"`up` exited with {self.proc and self.proc.returncode}: "
                f"{self.err.read_text()[-3000:]}")
            text = self.out.read_text()
            return text if "Ctrl-C to stop." in text else None

        return str(asyncio.run(wait_until(banner, "the `up` banner", timeout=120,
                                          interval=0.1)))

    def stop(self) -> str:
        """SIGTERM, a clean exit; its stderr."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=STOP_TIMEOUT) == 0, self.err.read_text()[-3000:]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`up` still running {STOP_TIMEOUT:g}s after SIGTERM") from None
        return self.err.read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`trainbus ...` in the same folder, with NATS_URL and no NATS credential at all."""
        env = {k: v for k, v in self.env.items() if not k.startswith("NATS_")}
        env["NATS_URL"] = self.nats_url
        return subprocess.run([TRAINBUS, *args], cwd=self.cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture
def up(tmp_path: Path, workspace: Workspace) -> Iterator[Up]:
    stack = Up(tmp_path, workspace)
    try:
        yield stack
    finally:
        stack.kill()


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.iterdir())}


async def denied(nc: nats.NATS, errors: list[str], subject: str, payload: bytes) -> None:
    """Publish as js.publish does (with a reply inbox) and wait for the server's permissions
    violation naming `subject`."""
    wanted = f'permissions violation for publish to "{subject}"'.lower()
    await nc.publish(subject, payload, reply=nc.new_inbox())
    await nc.flush()
    await wait_until(lambda: any(wanted in e.lower() for e in errors),
                     f"a permissions violation for {subject}", timeout=10)


async def check_nats_is_secured(up: Up) -> None:
    """Anonymous: refused. client: submits, but its forged `completed` and KV write are
    refused and nothing is stored (seen through the admin credential)."""
    with pytest.raises((nats.errors.Error, OSError)) as refused:
        await nats.connect(up.nats_url, allow_reconnect=False, max_reconnect_attempts=0,
                           connect_timeout=3)
    assert "authorization violation" in str(refused.value).lower()

    errors: list[str] = []

    async def error_cb(err: Exception) -> None:
        errors.append(str(err))

    client = await nats.connect(up.nats_url, nkeys_seed=str(up.credentials / "client.nk"),
                                error_cb=error_cb, allow_reconnect=False)
    admin = await nats.connect(up.nats_url, nkeys_seed=str(up.credentials / "admin.nk"))
    try:
        js = client.jetstream()
        ack = await js.publish("trainbus.cmd.train.container", msgspec.json.encode(
            {"job_id": "by-client", "strategy": "tiny", "symbols": ["EURUSD"],
             "timeframes": ["1h"]}), headers={"Nats-Msg-Id": "train:by-client"})
        assert ack.stream == "TRAINBUS"
        forged = msgspec.json.encode({"type": "completed", "job_id": "by-client", "attempt": 1,
                                      "worker_id": "mallory", "time": 1.0})
        await denied(client, errors, "trainbus.evt.by-client.completed", forged)
        await denied(client, errors, "$KV.trainbus_jobs.by-client",
                     b'{"job_id":"by-client","status":"completed"}')
        ajs = admin.jetstream()
        with pytest.raises(nats.js.errors.NotFoundError):
            await ajs.get_last_msg("TRAINBUS", "trainbus.evt.by-client.completed")
        # The projector (as the backend) writes the job's state; never the client's forgery.
        jobs = await ajs.key_value("trainbus_jobs")

        async def projected() -> dict[str, object] | None:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                entry = await jobs.get("by-client")
                return dict(msgspec.json.decode(entry.value or b"{}"))
            return None

        state = await wait_until(projected, "the client's job projected", timeout=30)
        assert state["status"] != "completed", state
    finally:
        await client.close()
        await admin.close()


@pytest.mark.slow
def test_up_is_secured_by_default_and_the_local_cli_just_works(up: Up) -> None:
    banner = up.start()
    token = (up.credentials / API_TOKEN_FILE).read_text().strip()
    assert f"{up.api_url}/?token={token}" in banner
    assert str(Path(".trainbus") / CREDENTIALS_DIR / API_TOKEN_FILE) in banner
    assert "secured" in banner and "WARNING" not in banner
    # One seed per role and the token, private; the server's config too.
    assert stat.S_IMODE(up.credentials.stat().st_mode) == 0o700
    files = modes(up.credentials)
    assert files == {**{f"{role}.nk": 0o600 for role in ROLES}, API_TOKEN_FILE: 0o600}
    assert stat.S_IMODE((up.cwd / ".trainbus" / "nats-auth.conf").stat().st_mode) == 0o600
    seeds = {name: (up.credentials / name).read_bytes() for name in files}

    asyncio.run(check_nats_is_secured(up))

    # The API: a write without the token is 401, with it accepted.
    body = {"strategy": "tiny", "symbols": ["EURUSD"], "timeframes": ["1h"]}
    anonymous = httpx.post(f"{up.api_url}/api/v1/trainings", json=body, timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    accepted = httpx.post(f"{up.api_url}/api/v1/trainings", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 202, accepted.text

    # The CLI in this folder, no NATS credential in its environment.
    trained = up.cli("train", "tiny", "--follow", "--pool", "container")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "accepted by container" in trained.stdout and "models/tiny/1h_v" in trained.stdout
    # Within their roles too: the trainer's log lines of the job (read as `client`), and an
    # annotation (the one event kind the client may publish).
    job = trained.stdout.split("job ", 1)[1].split()[0]
    logs = up.cli("logs", job, "--json")
    assert logs.returncode == 0 and '"end":true' in logs.stdout, logs.stdout + logs.stderr
    annotated = up.cli("jobs", "annotate", job, "--tag", "secured=yes")
    assert annotated.returncode == 0, annotated.stdout + annotated.stderr
    listed = up.cli("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "by-client" in listed.stdout and accepted.json()["job_id"] in listed.stdout
    audited = up.cli("audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "OK" in audited.stdout
    # `up` trusts its own trainer's key: every event verified, and the model is listed (it
    # would not be, were its job signed by an untrusted key).
    workers = json.loads(up.cli("workers", "--json").stdout)
    assert [w["kind"] for w in workers] == ["container"]
    assert all(w["trusted"] for w in workers), workers
    assert "0 invalid" in audited.stdout and "UNTRUSTED" not in audited.stdout
    models = up.cli("models", "list", "--json")
    assert models.returncode == 0 and '"tiny"' in models.stdout, models.stdout + models.stderr
    err = up.stop()
    assert "Traceback" not in err

    # A restart reuses every credential: the same files, and the CLI still logs in with them.
    banner = up.start()
    assert {name: (up.credentials / name).read_bytes() for name in files} == seeds
    assert modes(up.credentials) == files
    assert f"/?token={token}" in banner
    again = up.cli("jobs", "--json")
    assert again.returncode == 0 and "by-client" in again.stdout, again.stderr
    up.stop()
    # The stack's own parts and the CLI did their work within their roles: the server refused
    # only the two forgeries above.
    log = (up.cwd / ".trainbus" / "nats-server.log").read_text()
    violations = [line for line in log.splitlines() if "Violation" in line]
    assert len(violations) == 2, violations
    assert all("by-client" in line for line in violations), violations


@pytest.mark.slow
def test_insecure_runs_the_open_server_and_says_so_loudly(tmp_path: Path,
                                                          workspace: Workspace) -> None:
    up = Up(tmp_path, workspace, "--insecure")
    try:
        banner = up.start()
        assert "WARNING: --insecure" in banner and "NO AUTHENTICATION" in banner
        assert "?token=" not in banner
        assert not up.credentials.exists()

        async def anonymous() -> None:
            nc = await nats.connect(up.nats_url, allow_reconnect=False, connect_timeout=3)
            await nc.close()

        asyncio.run(anonymous())  # open, as asked
        written = httpx.post(f"{up.api_url}/api/v1/trainings", timeout=10, json={
            "strategy": "tiny", "symbols": ["EURUSD"], "timeframes": ["1h"]})
        assert written.status_code == 202, written.text
        err = up.stop()
        assert "WARNING: --insecure" in err  # stderr: said before the start, too
        assert re.search(r"WARNING .*INSECURE: the embedded nats-server .* no authentication",
                         err), err[-2000:]
    finally:
        up.kill()


def parse(*argv: str) -> argparse.Namespace:
    from services.cli.main import build_parser

    return build_parser().parse_args(list(argv))


def test_each_command_picks_the_role_it_needs() -> None:
    from services.cli.client import role_for

    assert role_for(parse("jobs")) == "client"
    assert role_for(parse("train", "tiny", "--follow")) == "client"
    assert role_for(parse("cancel", "j1")) == "client"
    assert role_for(parse("audit")) == "auditor"
    assert role_for(parse("audit", "--repair")) == "backend"
    assert role_for(parse("jobs", "fail", "j1", "--reason", "gone")) == "backend"
    assert role_for(parse("models", "promote", "tiny/1h_v1", "champion")) == "admin"
    assert role_for(parse("models", "prune", "--keep", "2")) == "admin"
    assert role_for(parse("models")) == "client"
    assert role_for(parse("workers", "trust", "U" + "A" * 55, "--name", "box")) == "admin"
    assert role_for(parse("sweep", "promote", "sw-1", "--alias", "candidate")) == "admin"
    assert role_for(parse("projector")) == "backend"
    assert role_for(parse("predictor")) == "predictor"


def test_the_local_seed_is_used_only_without_other_credentials_and_refusals_name_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from libs.events.credentials import ensure_credentials
    from services.cli import client

    creds = ensure_credentials(tmp_path)
    for var in list(os.environ):
        if var.startswith(("NATS_", "TRAINBUS_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("TRAINBUS_STORE", str(tmp_path))
    client.use_role_for(parse("jobs"))
    assert client.bus_config().nkey_seed_file == str(creds.seed_file("client"))
    # A remote server, or credentials of the user's own: the local seed stays out of it.
    assert client.bus_config(urls=("nats://nats.example:4222",)).nkey_seed_file is None
    monkeypatch.setenv("NATS_USER", "someone")
    monkeypatch.setenv("NATS_PASSWORD", "secret")
    assert client.bus_config().nkey_seed_file is None
    monkeypatch.delenv("NATS_USER")
    monkeypatch.delenv("NATS_PASSWORD")

    client.use_role_for(parse("audit"))
    assert client.bus_config().nkey_seed_file == str(creds.seed_file("auditor"))
    # What the bus logs when the server refuses a publish: the error names both roles.
    logging.getLogger("libs.events.bus").warning(
        "NATS: %s", 'nats: permissions violation for publish to "$KV.trainbus_jobs.j1"')
    message = client._with_hint("publish timed out")
    assert "NATS refused $KV.trainbus_jobs.j1 to the `auditor` role" in message
    assert str(creds.seed_file("auditor")) in message
    assert "needs the `admin` or `backend` role" in message
    assert f"NATS_NKEY_SEED={creds.folder}/backend.nk" in message
    client.use_role_for(parse("jobs"))
