"""Transport security: the backend, both trainers and the CLI as real processes over TLS (a CA
and server certificate made here), each with its own role user; credentials from the
environment or from files; no password or token ever in a log or on a terminal."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from libs.events.bus import connect
from libs.events.config import BusConfig
from libs.events.errors import BusUnavailable
from libs.events.setup import open_jetstream
from tests.harness.processes import TRAINBUS
from tests.harness.tls import make_tls
from tests.reliability.cluster import (
    Cluster,
    RoleServer,
    child_env,
    make_workspace,
    wait_http_ok,
    wait_workers,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    tls = make_tls(tmp_path / "tls", ca_name="trainbus reliability CA")
    server = RoleServer(tmp_path / "nats", tls=tls)
    server.start()
    cluster = Cluster(server, make_workspace(tmp_path / "ws"), tmp_path / "logs")
    try:
        yield cluster
    finally:
        cluster.stop_all()
        server.stop()


def secrets_of(cluster: Cluster) -> list[str]:
    assert isinstance(cluster.server, RoleServer)
    return [*cluster.server.passwords.values(), cluster.api_token]


def assert_no_secret(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


async def test_backend_trainers_and_cli_run_a_job_over_tls_as_their_roles(
    tls_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = tls_cluster
    server = cluster.server
    assert isinstance(server, RoleServer) and server.tls is not None
    backend = cluster.backend(projector="embedded").start()
    await wait_http_ok(cluster.api_url(), backend)
    # The host trainer reads its password from a file (NATS_PASSWORD_FILE), the container
    # trainer from the environment.
    secret_file = tmp_path / "trainer.password"
    secret_file.write_text(server.passwords["trainer"] + "\n")
    secret_file.chmod(0o600)
    container = cluster.trainer("tls-container", "container").start()
    host = cluster.trainer("tls-host", "host")
    del host.env["NATS_PASSWORD"]
    host.env["NATS_PASSWORD_FILE"] = str(secret_file)
    host.start()
    admin = await connect(server.bus_config("admin"))
    await open_jetstream(admin)
    try:
        await wait_workers(admin, ["tls-container", "tls-host"], (container, host, backend))

        # The CLI submits and follows over TLS as `client` (verbose: debug logging on).
        follow = await cluster.acli("-v", "train", "tiny", "--pool", "host", "--follow",
                                    "--json", "--seed", "4")
        assert follow.returncode == 0, follow.stderr[-3000:]
        final = json.loads(follow.stdout.strip().splitlines()[-1])
        assert final["status"] == "completed" and final["worker"] == "tls-host"

        # The API (backend over TLS) takes a job with the bearer token; the container
        # trainer runs it.
        async with httpx.AsyncClient(base_url=cluster.api_url(), timeout=30) as http:
            response = await http.post("/api/v1/trainings", json={"strategy": "tiny",
                                                                  "pool": "container"},
                                       headers={"Authorization": f"Bearer {cluster.api_token}"})
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
        watched = await cluster.acli("watch", job_id, "--json")
        assert watched.returncode == 0, watched.stderr[-3000:]

        jobs = await cluster.acli("jobs", "--json", role="auditor")
        assert jobs.returncode == 0, jobs.stderr
        audit = await cluster.acli("audit", "--json", role="auditor")
        assert audit.returncode == 0 and json.loads(audit.stdout)["ok"], audit.stdout

        # Check, at the server: every client connection is TLS, and each is the role it
        # should be.
        users = {}
        for conn in server.connections():
            assert conn.get("tls_version"), conn
            users[conn.get("name")] = conn.get("authorized_user")
        assert users.get("trainbus-backend") == "backend"
        assert users.get("trainbus-container-trainer") == "trainer"
        assert users.get("trainbus-host-trainer") == "trainer"
        assert server.violations() == []

        # A client that does not trust the CA, or speaks plain TCP, is refused.
        for config in (BusConfig(urls=(server.url,), user="client",
                                 password=server.passwords["client"], connect_timeout=2.0),):
            with pytest.raises(BusUnavailable) as caught:
                await connect(config)
            assert_no_secret(str(caught.value), secrets_of(cluster), "the error")
    finally:
        await admin.close()
        for proc in (container, host, backend):
            assert proc.terminate() == 0, proc.log_text()[-3000:]

    # Check: no password and no token in any process log or CLI output.
    for proc in cluster.procs.values():
        assert_no_secret(proc.log_text(), secrets_of(cluster), f"{proc.name}'s log")
    for result in (follow, watched, jobs, audit):
        assert_no_secret(result.stdout + result.stderr, secrets_of(cluster), "CLI output")


@pytest.mark.parametrize("how", ["env", "url", "file"])
def test_a_refused_password_is_never_printed(tls_cluster: Cluster, tmp_path: Path,
                                             how: str) -> None:
    """A wrong password, given three ways, with debug logging: the one-line error says what
    failed and never shows the password (nor does anything else the CLI prints)."""
    server = tls_cluster.server
    assert isinstance(server, RoleServer) and server.tls is not None
    wrong = "pWrongButSecret" + "7" * 12
    env = child_env({"NATS_TLS_CA": str(server.tls.ca), "NATS_URL": server.url})
    if how == "env":
        env.update(NATS_USER="client", NATS_PASSWORD=wrong)
    elif how == "url":
        env["NATS_URL"] = server.url.replace("nats://", f"nats://client:{wrong}@")
    else:
        path = tmp_path / "pw"
        path.write_text(wrong)
        env.update(NATS_USER="client", NATS_PASSWORD_FILE=str(path))
    for args in (["-v", "jobs"], ["audit"], ["-v", "train", "tiny", "--pool", "any"]):
        result = subprocess.run([TRAINBUS, *args], env=env, text=True, capture_output=True,
                                timeout=60, check=False, stdin=subprocess.DEVNULL)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "authorization violation" in output or "cannot reach NATS" in output, output
        assert wrong not in output
        assert "Traceback" not in output


def test_secrets_from_files_and_their_errors(tmp_path: Path) -> None:
    from libs.events.errors import BusConfigError

    secret = tmp_path / "pw"
    secret.write_text("pSecretFromFile1\n")
    config = BusConfig.from_env({"NATS_USER": "client", "NATS_PASSWORD_FILE": str(secret)})
    assert config.password == "pSecretFromFile1"
    assert "pSecretFromFile1" not in repr(config)
    token = tmp_path / "token"
    token.write_text("tok3n")
    assert BusConfig.from_env({"NATS_TOKEN_FILE": str(token)}).token == "tok3n"
    for env in ({"NATS_PASSWORD": "x", "NATS_PASSWORD_FILE": str(secret)},
                {"NATS_PASSWORD_FILE": str(tmp_path / "missing")},
                {"NATS_TOKEN_FILE": str(tmp_path / "empty")}):
        (tmp_path / "empty").write_text("")
        with pytest.raises(BusConfigError) as caught:
            BusConfig.from_env(env)
        assert "pSecretFromFile1" not in str(caught.value)
