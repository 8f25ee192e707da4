"""The HTTP API's own protection (services/backend/security.py), through a real client against
the real app on a real nats-server: bearer-token auth for mutating routes (on by default,
failing closed), the request body limit, and no stack trace in any response."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.events.config import BusConfig
from libs.events.jobs import JobService
from services.backend.security import ApiSecurity, SecurityConfigError
from tests.harness.api import ApiStack, api_stack
from tests.harness.nats_server import NatsServer
from tests.harness.workspace import Workspace, api_workspace
from tests.reliability.cluster import Cluster, wait_http_ok
from tests.reliability.cluster import make_workspace as make_cluster_workspace

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
TOKEN = "t0ken-for-tests-" + "x" * 16


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return api_workspace(tmp_path_factory.mktemp("http-ws"))


@pytest.fixture
async def secured(config: BusConfig, workspace: Workspace, tmp_path: Path
                  ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, workspace, tmp_path / "models", trainer=False,
                         security=ApiSecurity(token=TOKEN)) as stack:
        yield stack


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body.get("detail")
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


async def test_writes_need_the_bearer_token_reads_do_not(secured: ApiStack) -> None:
    client = secured.client
    body = {"strategy": "tiny"}
    missing = assert_problem(await client.post("/api/v1/trainings", json=body), 401)
    assert "Bearer" in missing["detail"]
    response = await client.post("/api/v1/trainings", json=body)
    assert response.headers["www-authenticate"].startswith("Bearer")
    for header in (bearer("wrong-token-but-long-enough"), {"Authorization": TOKEN},
                   {"Authorization": "Basic " + TOKEN}, {"Authorization": "Bearer"}):
        assert_problem(await client.post("/api/v1/trainings", json=body, headers=header), 401)
    accepted = await client.post("/api/v1/trainings", json=body, headers=bearer(TOKEN))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    # Cancel is a write too.
    assert_problem(await client.post(f"/api/v1/jobs/{job_id}/cancel"), 401)
    cancelled = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(TOKEN))
    assert cancelled.status_code == 202, cancelled.text
    # Reads stay open: state, list, log, health, the OpenAPI document.
    for path in (f"/api/v1/jobs/{job_id}", "/api/v1/jobs", f"/api/v1/jobs/{job_id}/events",
                 "/health", "/schema/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_auth_on_without_a_token_refuses_every_write_and_says_how_to_fix_it(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    async with api_stack(config, workspace, tmp_path / "models", trainer=False,
                         security=ApiSecurity()) as stack:
        for headers in ({}, bearer(TOKEN)):
            body = assert_problem(await stack.client.post(
                "/api/v1/trainings", json={"strategy": "tiny"}, headers=headers), 401)
            assert "TRAINBUS_API_TOKEN" in body["detail"]
            assert "TRAINBUS_API_AUTH=off" in body["detail"]
        assert (await stack.client.get("/api/v1/jobs")).status_code == 200


async def test_bodies_over_the_limit_are_413_and_oversized_fields_422(secured: ApiStack) -> None:
    client, auth = secured.client, bearer(TOKEN)
    ten_mb = b'{"strategy_yaml": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    big = await client.post("/api/v1/trainings", content=ten_mb,
                            headers={**auth, "content-type": "application/json"})
    assert_problem(big, 413)

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"a" * (256 * 1024)

    streamed = await client.post("/api/v1/trainings", content=chunks(),
                                 headers={**auth, "content-type": "application/json"})
    assert_problem(streamed, 413)
    # Under the body limit but over the field's own cap: 422 naming the field.
    field = await client.post("/api/v1/trainings", headers=auth,
                              json={"strategy_yaml": "a" * (300 * 1024)})
    assert assert_problem(field, 422)["field"] == "strategy_yaml"
    # Without the token, a big body is refused before it is read.
    assert_problem(await client.post("/api/v1/trainings", content=ten_mb,
                                     headers={"content-type": "application/json"}), 401)


async def test_an_internal_error_is_a_500_problem_with_an_incident_id_and_no_trace(
    secured: ApiStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(JobService, "list", explode)
    with caplog.at_level(logging.ERROR, logger="services.backend.security"):
        response = await secured.client.get("/api/v1/jobs")
    body = assert_problem(response, 500)
    assert "internal detail" not in response.text and "RuntimeError" not in response.text
    incident = body["incident"]
    assert incident in body["detail"]
    # The traceback is in the server log, under the same incident id.
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    # Malformed input never reaches that path: a syntax error is a plain 400.
    bad = await secured.client.post("/api/v1/trainings", content=b'{"strategy": ',
                                     headers={**bearer(TOKEN),
                                              "content-type": "application/json"})
    assert_problem(bad, 400)


def test_security_settings_from_the_environment(tmp_path: Path) -> None:
    # `trainbus backend` / create_app: on by default, fail closed.
    assert ApiSecurity.from_env({}) == ApiSecurity(auth="token", token=None)
    # `trainbus up` / demo: off by default; a token turns it on; an explicit mode wins.
    assert ApiSecurity.from_env({}, default_auth="off").auth == "off"
    assert ApiSecurity.from_env({"TRAINBUS_API_TOKEN": TOKEN}, default_auth="off").auth == \
        "token"
    assert ApiSecurity.from_env({"TRAINBUS_API_AUTH": "off"}).auth == "off"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert ApiSecurity.from_env({"TRAINBUS_API_TOKEN_FILE": str(token_file)}).token == TOKEN
    assert ApiSecurity.from_env({"TRAINBUS_API_MAX_BODY": "65536"}).max_body_bytes == 65536
    assert TOKEN not in repr(ApiSecurity(token=TOKEN))
    for bad in ({"TRAINBUS_API_AUTH": "maybe"}, {"TRAINBUS_API_TOKEN": "short"},
                {"TRAINBUS_API_TOKEN": TOKEN, "TRAINBUS_API_TOKEN_FILE": str(token_file)},
                {"TRAINBUS_API_TOKEN_FILE": str(tmp_path / "missing")},
                {"TRAINBUS_API_MAX_BODY": "lots"}, {"TRAINBUS_API_MAX_BODY": "10"}):
        with pytest.raises(SecurityConfigError) as caught:
            ApiSecurity.from_env(bad)
        assert TOKEN not in str(caught.value)


async def test_trainbus_backend_fails_closed_without_a_token_and_stops_on_sigterm(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The real `trainbus backend` process, configured like a fresh deployment that forgot
    TRAINBUS_API_TOKEN: writes are refused with the how-to, reads work, SIGTERM stops it."""
    cluster = Cluster(nats_server, make_cluster_workspace(tmp_path / "ws"), tmp_path / "logs")
    backend = cluster.backend(projector="embedded")
    del backend.env["TRAINBUS_API_TOKEN"]
    backend.start()
    try:
        url = cluster.api_url()
        await wait_http_ok(url, backend)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = assert_problem(await http.post("/api/v1/trainings",
                                                  json={"strategy": "tiny"}), 401)
            assert "TRAINBUS_API_TOKEN" in body["detail"]
            assert (await http.get("/api/v1/jobs")).status_code == 200
        assert "every POST is refused" in backend.log_text()
        backend.signal(signal.SIGTERM)
        assert backend.popen is not None and backend.popen.wait(60) == 0
    finally:
        cluster.stop_all()
