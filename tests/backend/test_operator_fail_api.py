"""POST /api/v1/jobs/{id}/fail: an operator ends a stuck job over HTTP, behind the same auth as
cancel. Real app (uvicorn, embedded projector), real nats-server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from libs.events.bus import publish_command, publish_event
from libs.events.config import BusConfig
from libs.events.heartbeat import WorkerHeartbeat, put_heartbeat
from services.backend.security import ApiSecurity
from tests.events.builders import make_event, train_command
from tests.harness.api import api_stack
from tests.harness.bus import open_bus
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"
TOKEN = "operator-token-0123456789"


async def test_fail_ends_a_stuck_job_refuses_a_held_one_and_a_finished_one(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    async with open_bus(config) as bus, api_stack(
        config, workspace, tmp_path / "models", trainer=False
    ) as stack:
        for job_id in ("stuck-api", "held-api"):
            await publish_command(bus, train_command(job_id))
            await publish_event(bus, make_event("accepted", job_id, worker_id="w1"), n=0,
                                expected_last_subject_seq=0)
        now = time.time()
        await put_heartbeat(bus, WorkerHeartbeat(
            worker_id="w1", kind="container", pools=["container"], host="box", pid=1,
            device="cpu", running=["held-api"], started_at=now, updated_at=now))

        done = await stack.client.post("/api/v1/jobs/stuck-api/fail",
                                       json={"reason": "worker died", "requested_by": "ops"})
        assert done.status_code == 202, done.text
        assert done.json()["status"] == "failed" and done.json()["forced"] is False
        state = (await stack.client.get("/api/v1/jobs/stuck-api")).json()  # projected at once
        assert state["status"] == "failed"
        assert state["error"]["category"] == "operator"
        assert state["error"]["reason"] == "worker died"
        log = (await stack.client.get("/api/v1/jobs/stuck-api/events")).json()["entries"]
        assert log[-1]["kind"] == "operator_failed" and log[-1]["body"]["by"] == "ops"

        again = await stack.client.post("/api/v1/jobs/stuck-api/fail", json={"reason": "x"})
        assert again.status_code == 409 and again.headers["content-type"].startswith(PROBLEM)
        held = await stack.client.post("/api/v1/jobs/held-api/fail", json={"reason": "x"})
        assert held.status_code == 409 and held.headers["content-type"].startswith(PROBLEM)
        assert "held by live worker w1" in held.json()["detail"]
        assert held.json()["field"] == "force"
        forced = await stack.client.post("/api/v1/jobs/held-api/fail",
                                         json={"reason": "wedged", "force": True})
        assert forced.status_code == 202 and forced.json()["held_by"] == "w1"

        assert (await stack.client.post("/api/v1/jobs/nope/fail",
                                        json={"reason": "x"})).status_code == 404
        empty = await stack.client.post("/api/v1/jobs/held-api/fail", json={"reason": ""})
        assert empty.status_code == 422 and empty.json()["field"] == "reason"


async def test_fail_needs_the_same_token_as_cancel(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    security = ApiSecurity(auth="token", token=TOKEN)
    async with open_bus(config) as bus, api_stack(
        config, workspace, tmp_path / "models", trainer=False, security=security
    ) as stack:
        await publish_command(bus, train_command("guarded"))
        for path in ("/api/v1/jobs/guarded/cancel", "/api/v1/jobs/guarded/fail"):
            refused = await stack.client.post(path, json={"reason": "x"})
            assert refused.status_code == 401, (path, refused.text)
        allowed = await stack.client.post("/api/v1/jobs/guarded/fail", json={"reason": "x"},
                                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 202, allowed.text
