"""The dashboard's backend routes over real HTTP (no browser needed): the static files, the
strategies list, the live feed of every job (SSE) and a model's report page, against the real
app, a real container trainer and a real nats-server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from libs.events.schema import EVENT_TYPES, tag_of
from libs.pipeline.report import asset_text
from tests.harness.api import ApiStack, parse_sse
from tests.harness.polling import TERMINAL, Started, wait_status

pytestmark = pytest.mark.anyio



async def test_the_page_and_its_files_are_served_and_nothing_else(stack: ApiStack) -> None:
    page = await stack.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css"),
                        ("charts.js", "text/javascript")):
        response = await stack.client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media)
        assert response.headers["x-content-type-options"] == "nosniff"
    # Check the chart code is the one report.html inlines.
    assert (await stack.client.get("/static/charts.js")).text == asset_text("charts.js")
    for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/report.css",
                "/static/%2e%2e%2fcontrollers%2fdashboard.py"):
        assert (await stack.client.get(bad)).status_code == 404, bad
    # Check the OpenAPI document lists the new API routes but not the pages.
    paths = (await stack.client.get("/schema/openapi.json")).json()["paths"]
    assert "/api/v1/strategies" in paths and "/api/v1/stream" in paths
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_the_dashboard_listens_for_every_kind_of_log_entry() -> None:
    """EventSource delivers only the frame names it listens for, and a job's stream names each
    live frame by its entry's kind: app.js's LOG_KINDS must list every one (each event kind,
    `cancel` for a cancel command, `unreadable`)."""
    source = (Path(__file__).resolve().parents[2] / "services/backend/static/app.js").read_text()
    found = re.search(r"var LOG_KINDS = \[([^\]]*)\]", source)
    assert found is not None
    listed = set(re.findall(r'"([a-z_]+)"', found.group(1)))
    assert listed == {tag_of(cls) for cls in EVENT_TYPES} | {"cancel", "unreadable"}


async def test_strategies_list_their_default_symbols_and_timeframes(stack: ApiStack) -> None:
    (stack.settings.strategies_dir / "broken.yaml").write_text("name: broken\nnope: 1\n")
    try:
        listed = {s["name"]: s for s in (await stack.client.get("/api/v1/strategies")).json()}
    finally:
        (stack.settings.strategies_dir / "broken.yaml").unlink()
    assert listed["dash"]["symbols"] == ["EURUSD"] and listed["dash"]["timeframes"] == ["1h"]
    assert listed["dash"]["epochs"] == 8 and listed["dash"]["error"] is None
    # A file that does not load is listed with the reason, not hidden.
    assert listed["broken"]["error"] and listed["broken"]["symbols"] == []


async def read_frames(stack: ApiStack, frames: list[dict[str, Any]], until: Any,
                      on_frames: Callable[[None], None] = lambda _: None) -> None:
    """Append the live feed's frames to `frames` until `until(frames)` is true; call
    `on_frames` whenever frames were appended."""
    async with stack.client.stream("GET", "/api/v1/stream",
                                   headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        async for chunk in response.aiter_text():
            buffer = (buffer + chunk).replace("\r\n", "\n")
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                frames.extend(parse_sse(block + "\n\n"))
            if frames:
                on_frames(None)
            if until(frames):
                return


async def test_the_live_feed_sends_a_snapshot_then_every_state_change(stack: ApiStack) -> None:
    before = await stack.client.post("/api/v1/trainings", json={"strategy": "dash_quick"})
    done = await wait_status(stack.client, before.json()["job_id"], TERMINAL)
    assert done["status"] == "completed", done
    frames: list[dict[str, Any]] = []
    job_id: list[str] = []

    def finished(seen: list[dict[str, Any]]) -> bool:
        return any(f.get("event") == "job" and json.loads(f["data"])["status"] == "cancelled"
                   for f in seen)

    subscribed: Started[None] = Started()
    reader = asyncio.create_task(asyncio.wait_for(
        read_frames(stack, frames, finished, on_frames=subscribed), 60))
    await subscribed.wait(reader)  # the snapshot is sent once the feed is subscribed
    assert frames
    accepted = await stack.client.post("/api/v1/trainings", json={"strategy": "dash_long"})
    job_id.append(accepted.json()["job_id"])
    await wait_status(stack.client, job_id[0], {"running"})
    await stack.client.post(f"/api/v1/jobs/{job_id[0]}/cancel", json={"reason": "enough"})
    await reader

    snapshot = json.loads(frames[0]["data"])
    assert frames[0]["event"] == "snapshot"
    assert [j["job_id"] for j in snapshot["jobs"]] == [done["job_id"]] and snapshot["total"] == 1
    assert snapshot["jobs"][0]["best_val_accuracy"] is not None
    assert snapshot["jobs"][0]["test_accuracy"] == done["test_metrics"]["accuracy"]
    assert [w["kind"] for w in snapshot["workers"]] == ["container"]
    rows = [json.loads(f["data"]) for f in frames if f.get("event") == "job"]
    mine = [r for r in rows if r["job_id"] == job_id[0]]
    statuses = [r["status"] for r in mine]
    # Check the steps come in lifecycle order, without the history (rows stay small). The
    # feed coalesces changes per job (a client gets each job's latest state), so `queued`
    # and `cancelling` may be folded into the next row; the job was seen live before its end.
    lifecycle = ["queued", "running", "cancelling", "cancelled"]
    assert statuses == sorted(statuses, key=lifecycle.index), statuses
    assert statuses[-1] == "cancelled" and len(set(statuses)) >= 2, statuses
    assert mine[-1]["cancel_reason"] == "enough"
    assert any(r["percent"] for r in mine) and all("history" not in r for r in mine)
    seqs = [r["last_seq"] for r in mine]
    assert seqs == sorted(seqs)


async def test_the_live_feed_sends_workers_as_they_beat_and_go(stack: ApiStack) -> None:
    frames: list[dict[str, Any]] = []
    started = time.time()

    def fresh_beat(seen: list[dict[str, Any]]) -> bool:
        return any(f.get("event") == "workers"
                   and any(w["updated_at"] > started for w in json.loads(f["data"]))
                   for f in seen)

    # Heartbeats come every few seconds: a newer one arrives as a `workers` frame.
    await asyncio.wait_for(read_frames(stack, frames, fresh_beat), 30)
    assert frames[0]["event"] == "snapshot"


async def test_a_models_report_page_is_rendered_from_its_metadata(stack: ApiStack) -> None:
    accepted = (await stack.client.post("/api/v1/trainings", json={"strategy": "dash_quick"}))
    job_id = accepted.json()["job_id"]
    state = await wait_status(stack.client, job_id, TERMINAL)
    assert state["status"] == "completed", state
    for version in (job_id, "1h_v1"):
        page = await stack.client.get(f"/reports/dash_quick/{version}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<span id="version">1h_v1</span>' in page.text
        assert "connect-src" not in page.headers["content-security-policy"]
    # The file beside the model is the same rendering (the version comes from its path there).
    on_disk = (stack.settings.models_dir / "dash_quick" / "1h_v1" / "report.html").read_text()
    assert on_disk.replace('<span id="version"></span>', '<span id="version">1h_v1</span>') \
        == (await stack.client.get(f"/reports/dash_quick/{job_id}")).text
    missing = await stack.client.get("/reports/dash_quick/1h_v9")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
