"""Poison input at the HTTP edge, through a real client against the real app on a real
nats-server: JSON 1,000 levels deep is a 400 problem (was a 500 with a traceback), a body not
declared JSON is 415 on every write (no cross-site `text/plain` or form posts), and
`requested_by` is the authenticated identity whenever a token authenticated the request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.events.config import BusConfig
from services.backend.security import (
    ApiSecurity,
    SecurityConfigError,
    is_cross_origin,
    is_json_media_type,
)
from tests.harness.api import ApiStack, api_stack
from tests.harness.bus import open_bus
from tests.harness.polling import TERMINAL, eventually, wait_status
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
TOKEN = "poison-test-token-" + "y" * 16
JSON = {"content-type": "application/json"}
DEEP = b"[" * 1000 + b"]" * 1000


@pytest.fixture
async def open_api(config: BusConfig, workspace: Workspace, tmp_path: Path
                   ) -> AsyncIterator[ApiStack]:
    async with api_stack(config, workspace, tmp_path / "models", trainer=False) as stack:
        yield stack


def problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert "Traceback" not in response.text
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


def test_json_media_types() -> None:
    for good in ("application/json", "Application/JSON; charset=utf-8",
                 "application/merge-patch+json"):
        assert is_json_media_type(good), good
    for bad in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                "text/json+html", "application/jsonp"):
        assert not is_json_media_type(bad), bad


def test_the_identity_comes_from_the_environment() -> None:
    env = {"TRAINBUS_API_TOKEN": TOKEN}
    assert ApiSecurity.from_env(env).identity == "api-token"
    assert ApiSecurity.from_env({**env, "TRAINBUS_API_IDENTITY": "ci-bot"}).identity == "ci-bot"
    with pytest.raises(SecurityConfigError, match="TRAINBUS_API_IDENTITY"):
        ApiSecurity.from_env({**env, "TRAINBUS_API_IDENTITY": "two words"})


def test_cross_origin() -> None:
    assert not is_cross_origin("same-origin", "http://evil.example", "127.0.0.1:8000")
    assert not is_cross_origin("none", None, "127.0.0.1:8000")  # typed into the address bar
    for site in ("cross-site", "same-site"):  # same-site: another port of localhost
        assert is_cross_origin(site, None, "127.0.0.1:8000")
    assert is_cross_origin(None, "http://127.0.0.1:3000", "127.0.0.1:8000")
    assert is_cross_origin(None, "null", "127.0.0.1:8000")
    assert not is_cross_origin(None, "http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not is_cross_origin(None, None, "127.0.0.1:8000")  # curl, the CLI


async def test_a_write_from_another_sites_page_is_403(open_api: ApiStack) -> None:
    client = open_api.client
    job_id = (await client.post("/api/v1/trainings", json={"strategy": "tiny"})).json()["job_id"]
    cancel = f"/api/v1/jobs/{job_id}/cancel"
    # A bodiless no-cors fetch from another page: no content type to refuse, so the origin is.
    for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "http://evil.example"}):
        problem(await client.post(cancel, headers=headers), 403)
    state = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert state["cancel_requested_by"] is None
    same = await client.post(cancel, headers={"sec-fetch-site": "same-origin",
                                              "origin": open_api.url})
    assert same.status_code == 202, same.text


async def test_deep_json_is_a_400_problem_on_every_write(open_api: ApiStack) -> None:
    client = open_api.client
    for path in ("/api/v1/trainings", "/api/v1/jobs/some-job/cancel", "/api/v1/strategies/check"):
        body = problem(await client.post(path, content=DEEP, headers=JSON), 400)
        assert "nested deeper than 64 levels" in str(body["detail"]), body
    # Deep inside an otherwise valid request too.
    wrapped = b'{"strategy":"tiny","symbols":' + DEEP + b"}"
    problem(await client.post("/api/v1/trainings", content=wrapped, headers=JSON), 400)
    # Nothing reached the log.
    assert (await client.get("/api/v1/jobs")).json()["total"] == 0


async def test_a_body_not_declared_json_is_415_and_json_is_accepted(open_api: ApiStack) -> None:
    client = open_api.client
    body = b'{"strategy": "tiny"}'
    refused = [
        {"content-type": "text/plain"},  # what a cross-site fetch/form sends without preflight
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},  # a body without any declared type
    ]
    for headers in refused:
        found = problem(await client.post("/api/v1/trainings", content=body, headers=headers),
                        415)
        assert "application/json" in str(found["detail"]), found
    form = await client.post("/api/v1/trainings", data={"strategy": "tiny"})
    problem(form, 415)
    # An empty form post (a cross-site <form> with no fields) cannot cancel either.
    empty_form = await client.post("/api/v1/jobs/some-job/cancel",
                                   headers={"content-type": "application/x-www-form-urlencoded"})
    problem(empty_form, 415)
    assert (await client.get("/api/v1/jobs")).json()["total"] == 0

    accepted = await client.post("/api/v1/trainings", content=body,
                                 headers={"content-type": "application/json; charset=utf-8"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    # A bare POST (no body, no type) is still a cancel.
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel")).status_code == 202
    # Reads are untouched.
    assert (await client.get("/api/v1/jobs", headers={"content-type": "text/plain"})
            ).status_code == 200


async def test_requested_by_is_the_authenticated_identity(
    config: BusConfig, workspace: Workspace, tmp_path: Path, open_api: ApiStack
) -> None:
    security = ApiSecurity(token=TOKEN, identity="ci-bot")
    async with api_stack(config, workspace, tmp_path / "secured", trainer=False,
                         security=security) as secured:
        accepted = await secured.client.post(
            "/api/v1/trainings", json={"strategy": "tiny", "requested_by": "the-ceo"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert accepted.status_code == 202, accepted.text
        state = (await secured.client.get(f"/api/v1/jobs/{accepted.json()['job_id']}")).json()
        assert state["requested_by"] == "ci-bot"
    # With auth off nobody is authenticated: the client's own value is kept.
    kept = await open_api.client.post("/api/v1/trainings",
                                      json={"strategy": "tiny", "requested_by": "alice"})
    assert kept.status_code == 202, kept.text
    state = (await open_api.client.get(f"/api/v1/jobs/{kept.json()['job_id']}")).json()
    assert state["requested_by"] == "alice"


async def test_a_live_worker_rejects_a_raw_deep_command_and_keeps_serving(stack: ApiStack) -> None:
    """The worker's own verdict (libs/events/commands.py, shared with the projector): a
    `rejected` event on the job, and the next job still trains."""
    async with open_bus(stack.config) as bus:
        await bus.js.publish(bus.names.train_subject("container"), DEEP,
                             headers={"Nats-Msg-Id": "train:deep-raw"})
    state = await wait_status(stack.client, "deep-raw", {"rejected"})
    assert "nested deeper than 64 levels" in state["error"]["reason"], state

    async def log_entries() -> list[tuple[str, str]]:
        log = (await stack.client.get("/api/v1/jobs/deep-raw/events")).json()
        return [(entry["type"], entry["kind"]) for entry in log["entries"]]

    await eventually(log_entries, lambda entries: ("event", "rejected") in entries, timeout=30,
                     what="the worker's rejected event")
    good = await stack.client.post("/api/v1/trainings", json={"strategy": "tiny", "seed": 1})
    assert good.status_code == 202, good.text
    done = await wait_status(stack.client, good.json()["job_id"], TERMINAL)
    assert done["status"] == "completed", done
