"""The HTTP API through a real client (httpx) against the real app served by uvicorn, on a real
nats-server, with a real container trainer training tiny jobs in the same loop."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TypedDict

import msgspec
import numpy as np
import pytest

from libs.events.bus import connect
from libs.events.config import BusConfig
from libs.events.fold import fold, fold_all
from libs.events.follow import next_update
from libs.events.schema import encode
from libs.pipeline.storage.models import ModelStorage, predict
from services.backend.sse import state_frame, update_frames
from tests.events.builders import cancel, make_event, msg, train_command
from tests.harness.api import ApiStack, api_stack, iter_sse, parse_sse
from tests.harness.bus import bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import TERMINAL, eventually, wait_status
from tests.harness.trainers import serving
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SSE = {"Accept": "text/event-stream"}


class Accepted(TypedDict):
    """The JSON of a 202 from POST /api/v1/trainings (libs.events.job_types.TrainingAccepted)."""

    job_id: str
    pool: str
    routing: str
    status: str
    seq: int
    duplicate: bool
    links: dict[str, str]


async def submit(stack: ApiStack, **body: object) -> Accepted:
    response = await stack.client.post("/api/v1/trainings", json=body)
    assert response.status_code == 202, response.text
    return response.json()


# --- the happy path ---------------------------------------------------------------------------


async def test_submit_then_get_list_and_read_the_log_of_a_completed_job(stack: ApiStack) -> None:
    accepted = await submit(stack, strategy="tiny", seed=3)
    job_id = accepted["job_id"]
    # Check the 202 says where the job went, why, and where to follow it.
    assert accepted["pool"] == "container"
    assert accepted["routing"].startswith("auto: a container trainer is free (container-")
    assert accepted["status"] == "queued" and accepted["duplicate"] is False
    assert accepted["links"] == {
        "state": f"/api/v1/jobs/{job_id}", "events": f"/api/v1/jobs/{job_id}/events",
        "stream": f"/api/v1/jobs/{job_id}/events", "cancel": f"/api/v1/jobs/{job_id}/cancel",
    }
    # Check the job is readable at once (the submit waits for the projection, not training).
    first = await stack.client.get(f"/api/v1/jobs/{job_id}")
    assert first.status_code == 200
    assert first.json()["status"] in {"queued", "running", "completed"}

    state = await wait_status(stack.client, job_id, TERMINAL)
    assert state["status"] == "completed", state
    assert state["symbols"] == ["EURUSD"] and state["timeframes"] == ["1h"]  # from the strategy
    assert state["worker_kind"] == "container" and state["model"]["version"] == "1h_v1"
    assert [m["epoch"] for m in state["history"]] == [1, 2]

    # Check the listing: newest first, filters, pages.
    other = await submit(stack, strategy="tiny", seed=4)
    await wait_status(stack.client, other["job_id"], TERMINAL)
    page = (await stack.client.get("/api/v1/jobs")).json()
    assert [j["job_id"] for j in page["items"]] == [other["job_id"], job_id]
    assert page["total"] == 2 and page["next_offset"] is None
    one = (await stack.client.get("/api/v1/jobs", params={"limit": 1, "offset": 1})).json()
    assert [j["job_id"] for j in one["items"]] == [job_id] and one["total"] == 2
    for query, expected in (({"status": "completed"}, 2), ({"status": "running"}, 0),
                            ({"strategy": "tiny"}, 2), ({"strategy": "x"}, 0),
                            ({"pool": "container"}, 2), ({"pool": "host"}, 0)):
        assert (await stack.client.get("/api/v1/jobs", params=query)).json()["total"] == expected

    # Check the job's log: its command, then its events in stream order.
    log = (await stack.client.get(f"/api/v1/jobs/{job_id}/events")).json()
    entries = log["entries"]
    assert log["status"] == "completed"
    assert (entries[0]["type"], entries[0]["kind"]) == ("command", "train")
    assert entries[0]["body"]["strategy"] == "tiny"
    kinds = [e["kind"] for e in entries[1:]]
    assert kinds[0] == "accepted" and kinds[-1] == "completed"
    assert [e["body"]["epoch"] for e in entries if e["kind"] == "epoch"] == [1, 2]
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    later = (await stack.client.get(f"/api/v1/jobs/{job_id}/events",
                                    params={"after": seqs[-2]})).json()["entries"]
    assert [e["seq"] for e in later] == [seqs[-1]]


async def test_sse_streams_the_log_with_the_folded_state_and_ends_when_the_job_is_terminal(
    stack: ApiStack,
) -> None:
    job_id = (await submit(stack, strategy="medium"))["job_id"]
    async with stack.client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=SSE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in response.aiter_text()])
    frames = parse_sse(text)
    data = [json.loads(f["data"]) for f in frames]
    # Check the shape: the state first, then live frames in log order, then the terminal state.
    assert frames[0]["event"] == "state" and data[0]["job_id"] == job_id
    assert frames[-1]["event"] == "end" and data[-1]["status"] == "completed"
    ids = [int(f["id"]) for f in frames]
    live, live_ids = data[1:-1], ids[1:-1]
    assert ids[0] < live_ids[0] and live_ids == sorted(set(live_ids)), ids
    assert ids[-1] == live_ids[-1]
    for frame, body in zip(frames[1:-1], live, strict=True):
        # Each live frame: the log entry its name and id say, and the job's state after it.
        assert (body["entry"]["kind"], body["entry"]["seq"]) == (frame["event"], int(frame["id"]))
        assert body["state"]["last_seq"] == body["entry"]["seq"]  # one worker: each one counts
    assert frames[-2]["event"] == "completed" and live[-1]["state"] == data[-1]
    assert {b["state"]["status"] for b in live[:-1]} == {"running"}
    epochs = [b for b in live if b["entry"]["kind"] == "epoch"]
    assert len(epochs) >= 5, [f["event"] for f in frames]  # it streamed while training
    numbers = [b["entry"]["body"]["epoch"] for b in epochs]
    assert numbers == list(range(11 - len(numbers), 11))
    # The state is folded by the server: each epoch's frame has that epoch in its history.
    assert [b["state"]["history"][-1]["epoch"] for b in epochs] == numbers
    # And it is the projection's state: one fold, whoever reads.
    assert data[-1] == await wait_status(stack.client, job_id, TERMINAL)

    # A stream opened on a finished (and projected) job: snapshot and end at once.
    async with stack.client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=SSE) as response:
        frames = parse_sse("".join([c async for c in response.aiter_text()]))
    assert [f["event"] for f in frames] == ["state", "end"]


async def test_sse_states_are_fenced_and_fold_the_cancel_commands(stack: ApiStack) -> None:
    """The test plays two workers of one job: a stale attempt's events reach the stream (the log
    shows them) but leave the state it sends as it was; the cancel command counts as in the
    projection (`cancelling`, who asked)."""
    # Pool host has no trainer in this stack: only the test writes this job's events.
    job_id = (await submit(stack, strategy="tiny", pool="host"))["job_id"]
    bus = await connect(stack.config)

    async def emit(kind: str, attempt: int, **fields: object) -> None:
        event = make_event(kind, job_id, attempt=attempt, **fields)
        await bus.js.publish(bus.names.event_subject(job_id, kind), encode(event))

    frames: list[dict[str, str]] = []
    try:
        async with stack.client.stream(
            "GET", f"/api/v1/jobs/{job_id}/events", headers=SSE
        ) as response:
            async for frame in iter_sse(response):
                frames.append(frame)
                if len(frames) > 1:
                    continue
                # The `state` frame (queued) is here: now the log grows, each publish stored
                # (acknowledged) before the next.
                await emit("accepted", 1)
                await emit("progress", 1, percent=10.0)
                await emit("accepted", 2)  # attempt 2 takes the job over
                await emit("progress", 1, percent=90.0)  # attempt 1 does not know yet
                await emit("progress", 2, percent=20.0)
                cancel = await stack.client.post(f"/api/v1/jobs/{job_id}/cancel",
                                                 json={"reason": "enough", "requested_by": "qa"})
                assert cancel.status_code == 202, cancel.text
                await emit("completed", 1)  # a stale attempt cannot complete the job
                await emit("cancelled", 2, reason="stopped at a batch")
    finally:
        await bus.close()

    assert [f["event"] for f in frames] == [
        "state", "accepted", "progress", "accepted", "progress", "progress", "cancel",
        "completed", "cancelled", "end"]
    data = [json.loads(f["data"]) for f in frames]
    ids = [int(f["id"]) for f in frames]
    assert ids[:-1] == sorted(set(ids[:-1])) and ids[-1] == ids[-2]
    assert data[0]["status"] == "queued"
    states = [d["state"] for d in data[1:-1]]
    taken_over = states[2]
    assert (taken_over["attempt"], taken_over["worker"], taken_over["percent"]) == (2, "w2", None)
    assert states[3] == taken_over  # attempt 1's progress: in the log, not in the state
    assert states[3]["last_seq"] < ids[4]
    assert (states[4]["percent"], states[4]["last_seq"]) == (20.0, ids[5])
    cancelling = states[5]
    assert cancelling["status"] == "cancelling"
    assert (cancelling["cancel_reason"], cancelling["cancel_requested_by"]) == ("enough", "qa")
    assert states[6] == cancelling  # attempt 1's `completed`: no model, no end
    end = data[-1]
    assert end == states[7]
    assert (end["status"], end["attempt"], end["worker"], end["model"]) == (
        "cancelled", 2, "w2", None)
    assert (end["cancel_reason"], end["cancel_requested_by"]) == ("enough", "qa")
    # The stream's fold is the projection's; its entries are the JSON log's.
    assert end == await wait_status(stack.client, job_id, TERMINAL)
    log = (await stack.client.get(f"/api/v1/jobs/{job_id}/events",
                                  params={"after": ids[0]})).json()["entries"]
    assert log == [d["entry"] for d in data[1:-1]]


def test_live_frames_carry_each_entry_with_the_fenced_state_after_it() -> None:
    """The pure half of the stream (no server): messages -> updates (the projector's fold) ->
    frames, on a log where a superseded attempt goes on publishing."""
    log = [
        msg(1, train_command()),
        msg(2, make_event("accepted", attempt=1)),
        msg(3, make_event("epoch", attempt=1, epoch=1)),
        msg(4, make_event("accepted", attempt=2)),
        msg(5, make_event("epoch", attempt=1, epoch=2, val_loss=0.1)),  # stale
        msg(6, make_event("epoch", attempt=2, epoch=1, val_loss=0.9)),
        msg(7, cancel("enough")),
        msg(8, make_event("completed", attempt=1)),  # stale
        msg(9, make_event("cancelled", attempt=2)),
    ]
    state = fold(None, log[0])
    assert state is not None
    frames = [state_frame("state", state)]
    for message in log[1:]:
        update = next_update(state, message)
        state = update.state
        frames.extend(update_frames(update))

    assert [f.event for f in frames] == ["state", "accepted", "epoch", "accepted", "epoch",
                                         "epoch", "cancel", "completed", "cancelled", "end"]
    assert [f.id for f in frames] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    data = [json.loads(str(f.data)) for f in frames]
    entries = [d["entry"] for d in data[1:-1]]
    states = {e["seq"]: d["state"] for e, d in zip(entries, data[1:-1], strict=True)}
    assert [(e["seq"], e["type"], e["kind"]) for e in entries[4:6]] == [
        (6, "event", "epoch"), (7, "command", "cancel")]
    assert entries[3]["body"]["attempt"] == 1 and entries[3]["body"]["epoch"] == 2
    # The stale attempt's epoch and completion are sent, and change nothing.
    assert states[5] == states[4] and [m["epoch"] for m in states[4]["history"]] == [1]
    # Attempt 2 re-runs epoch 1: it replaces attempt 1's; the stale epoch 2 never shows.
    assert [(m["epoch"], m["val_loss"]) for m in states[6]["history"]] == [(1, 0.9)]
    assert states[8] == states[7] and states[7]["status"] == "cancelling"
    # The end is the state of the last message, and the projector's fold of the whole log.
    final = fold_all(log)["job-a"]
    assert data[-1] == states[9] == json.loads(msgspec.json.encode(final))
    assert (final.status, final.model, final.cancel_requested_by) == ("cancelled", None, "bob")


async def test_sse_of_a_job_in_the_log_but_not_yet_projected(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    """Regression: the README's `nats req` + `curl -N` recipe answered 404 while the projector
    had not reached the command. No projector runs here at all (`external`), so the state can
    only come from the log: the job's train command, then its events as the trainer works."""
    async with api_stack(config, workspace, tmp_path / "models", projector="external") as stack:
        bus = await connect(config)
        try:
            names = bus.names
            body = b'{"job_id":"raw-1","strategy":"tiny","symbols":["EURUSD"],"timeframes":["1h"]}'
            await bus.js.publish(names.train_subject("any"), body)
            # Without a job id in the body the id is job-<seq>: found by its sequence.
            ack = await bus.js.publish(
                names.train_subject("any"), b'{"strategy":"nope","symbols":["EURUSD"],'
                b'"timeframes":["1h"]}')
        finally:
            await bus.close()
        async with stack.client.stream(
            "GET", "/api/v1/jobs/raw-1/events", headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.status_code == 200, await response.aread()
            text = "".join([chunk async for chunk in response.aiter_text()])
        frames = parse_sse(text)
        assert frames[0]["event"] == "state" and '"status":"queued"' in frames[0]["data"]
        assert frames[-1]["event"] == "end" and '"status":"completed"' in frames[-1]["data"]
        assert "accepted" in [f["event"] for f in frames]
        state = (await stack.client.get(f"/api/v1/jobs/job-{ack.seq}")).json()
        assert state["job_id"] == f"job-{ack.seq}" and state["strategy"] == "nope"
        assert (await stack.client.get("/api/v1/jobs/raw-2")).status_code == 404
        # The stream said completed: its model is there too (the catalog reads the job's log
        # when the projection does not have it; regression: the dashboard got a 404 here).
        detail = await stack.client.get("/api/v1/models/tiny/raw-1")
        assert detail.status_code == 200, detail.text
        assert detail.json()["metrics"]["test"]["samples"] > 0


# --- cancel -----------------------------------------------------------------------------------


async def test_cancel_a_running_job_then_a_second_cancel_is_409(stack: ApiStack) -> None:
    job_id = (await submit(stack, strategy="long"))["job_id"]
    await wait_status(stack.client, job_id, {"running"})

    async def job() -> dict:
        return (await stack.client.get(f"/api/v1/jobs/{job_id}")).json()

    # Wait for training proper, so the cancel trips the trainer's token mid-run.
    await eventually(job, lambda s: s.get("epoch") is not None, timeout=60,
                     what="an epoch under way")
    response = await stack.client.post(f"/api/v1/jobs/{job_id}/cancel",
                                       json={"reason": "enough"})
    assert response.status_code == 202
    assert response.json()["status"] == "cancelling"
    state = await wait_status(stack.client, job_id, TERMINAL, timeout=30)
    assert state["status"] == "cancelled" and state["cancel_reason"] == "enough"
    assert state["model"] is None  # nothing is published after a cancel

    again = await stack.client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith(PROBLEM)
    assert again.json()["title"] == "job already finished"
    kinds = [e["kind"] for e in
             (await stack.client.get(f"/api/v1/jobs/{job_id}/events")).json()["entries"]]
    assert "cancel" in kinds and kinds[-1] == "cancelled"


async def test_cancel_a_queued_job_ends_it_at_once(stack: ApiStack) -> None:
    # Pool host has no trainer here: the job waits in the queue.
    accepted = await submit(stack, strategy="tiny", pool="host")
    assert (accepted["pool"], accepted["routing"]) == ("host", "requested")
    response = await stack.client.post(f"/api/v1/jobs/{accepted['job_id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    state = await wait_status(stack.client, accepted["job_id"], TERMINAL, timeout=10)
    assert state["status"] == "cancelled"


# --- idempotency ------------------------------------------------------------------------------


async def test_the_same_idempotency_key_always_names_the_same_job(stack: ApiStack) -> None:
    body = {"strategy": "tiny", "idempotency_key": "nightly run 2024-06-01 #1"}
    first = await submit(stack, **body)
    second = await submit(stack, **body)
    assert second["job_id"] == first["job_id"]
    assert (first["duplicate"], second["duplicate"]) == (False, True)
    assert second["seq"] == first["seq"]  # nothing new was stored
    other = await submit(stack, strategy="tiny", idempotency_key="another key")
    assert other["job_id"] != first["job_id"]
    expected = "req-" + hashlib.sha256(body["idempotency_key"].encode()).hexdigest()[:24]
    assert first["job_id"] == expected  # deterministic: any process derives the same id

    done = await wait_status(stack.client, first["job_id"], TERMINAL)
    again = await submit(stack, **body)
    assert again["job_id"] == first["job_id"] and again["duplicate"] is True
    assert again["status"] == done["status"] == "completed"
    page = (await stack.client.get("/api/v1/jobs")).json()
    assert page["total"] == 2  # two keys, two jobs, however many submits


# --- errors -----------------------------------------------------------------------------------


async def test_errors_are_problem_details_naming_the_field(stack: ApiStack) -> None:
    client = stack.client

    async def problem(method: str, url: str, status: int, **kwargs: object) -> dict[str, object]:
        response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        body = response.json()
        assert body["status"] == status and body["title"] and body["detail"]
        return body

    # 404: unknown job (also for ids that could never be job ids), unknown model
    await problem("GET", "/api/v1/jobs/no-such-job", 404)
    await problem("GET", "/api/v1/jobs/bad.id/events", 404)
    await problem("POST", "/api/v1/jobs/no-such-job/cancel", 404)
    assert (await problem("GET", "/api/v1/models/tiny/1h_v9", 404))["field"] == "version"
    await problem("GET", "/api/v1/models/tiny/1h_v9/download", 404)

    # 422: the body (and query) name the bad field
    cases = [
        ({"strategy": "tiny", "bogus": 1}, "bogus"),
        ({"symbols": ["EURUSD"], "timeframes": ["1h"]}, "strategy"),
        ({"strategy": "tiny", "strategy_yaml": "name: x"}, "strategy"),
        ({"strategy": "tiny", "start": "2024-02-01", "end": "2024-01-01"}, "end"),
        ({"strategy": "tiny", "seed": -1}, "seed"),
        ({"strategy": "tiny", "pool": "gpu"}, "pool"),
        ({"strategy": "tiny", "timeframes": ["7x"]}, "timeframes[0]"),
        # Names the trainer refuses are refused here, before anything is stored (regression:
        # the bus schema used to allow dots in names, `/` in symbols and any `<n><unit>`).
        ({"strategy": "my.strat", "symbols": ["EURUSD"], "timeframes": ["1h"]}, "strategy"),
        ({"strategy": "tiny", "symbols": ["EUR/USD"], "timeframes": ["1h"]}, "symbols[0]"),
        ({"strategy": "tiny", "symbols": ["EURUSD"], "timeframes": ["2h"]}, "timeframes[0]"),
        ({"strategy": "not-here"}, "symbols"),
        ({"strategy_yaml": "name: x\nindicators: 3\n"}, "strategy_yaml"),
    ]
    for body, field in cases:
        found = await problem("POST", "/api/v1/trainings", 422, json=body)
        assert found["field"] == field, (body, found)
    assert (await problem("GET", "/api/v1/jobs", 422, params={"status": "x"}))["field"] == "status"
    assert (await problem("GET", "/api/v1/jobs", 422, params={"limit": 0}))["field"] == "limit"
    await problem("POST", "/api/v1/trainings", 400, content=b"{not json",
                  headers={"content-type": "application/json"})
    # Nothing invalid reached the log.
    assert (await client.get("/api/v1/jobs")).json()["total"] == 0


async def test_503_while_nats_is_down_and_recovery_after(
    nats_server: NatsServer, workspace: Workspace, tmp_path: Path
) -> None:
    config = bus_config(nats_server, publish_retry_for=2.0)
    async with api_stack(config, workspace, tmp_path / "models", trainer=False) as stack:
        job_id = (await submit(stack, strategy="tiny", pool="host"))["job_id"]
        nats_server.stop()
        for method, url, json_body in (
            ("GET", f"/api/v1/jobs/{job_id}", None),
            ("GET", "/api/v1/jobs", None),
            ("POST", "/api/v1/trainings", {"strategy": "tiny"}),
            ("POST", f"/api/v1/jobs/{job_id}/cancel", None),
            ("GET", "/api/v1/workers", None),
            ("GET", "/api/v1/models", None),
        ):
            response = await stack.client.request(method, url, json=json_body)
            assert response.status_code == 503, (url, response.text)
            assert response.headers["content-type"].startswith(PROBLEM)
        health = await stack.client.get("/health")
        assert health.status_code == 503 and health.json()["nats"]["connected"] is False

        nats_server.start()  # same port and store: the client reconnects by itself
        await eventually(lambda: stack.client.get("/health"), lambda r: r.status_code == 200,
                         timeout=20, interval=0.1, what="/health 200 again")
        response = await stack.client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200 and response.json()["status"] == "queued"


async def test_the_backend_starts_without_nats_and_connects_when_it_appears(
    workspace: Workspace, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "late")
    config = bus_config(server)
    async with api_stack(config, workspace, tmp_path / "models", trainer=False) as stack:
        response = await stack.client.get("/api/v1/jobs")
        assert response.status_code == 503
        assert "not reachable" in response.json()["detail"]
        server.start()
        try:
            await eventually(lambda: stack.client.get("/api/v1/jobs"),
                             lambda r: r.status_code == 200, timeout=20, interval=0.1,
                             what="/api/v1/jobs 200 once NATS is up")
            assert (await stack.client.get("/health")).json()["status"] == "ok"
        finally:
            server.stop()


# --- models, workers, health ------------------------------------------------------------------


async def test_models_list_detail_and_download_from_disk_and_from_the_object_store(
    stack: ApiStack, tmp_path: Path
) -> None:
    job_id = (await submit(stack, strategy="tiny"))["job_id"]
    state = await wait_status(stack.client, job_id, TERMINAL)
    assert state["status"] == "completed"

    models = (await stack.client.get("/api/v1/models")).json()
    assert len(models) == 1
    model = models[0]
    assert (model["strategy"], model["version"], model["job_id"]) == ("tiny", "1h_v1", job_id)
    assert model["local"] is True and model["object_name"]
    assert "accuracy" in model["test_metrics"]
    detail = (await stack.client.get("/api/v1/models/tiny/1h_v1")).json()
    assert detail["metadata"]["strategy"] == "tiny" and "history" in detail["metrics"]

    from_disk = await stack.client.get("/api/v1/models/tiny/1h_v1/download")
    assert from_disk.status_code == 200
    assert from_disk.headers["x-trainbus-source"] == "disk"
    assert from_disk.headers["content-type"] == "application/gzip"
    assert hashlib.sha256(from_disk.content).hexdigest() == model["sha256"]

    # Without the local copy (a backend on another machine) the object store serves it.
    shutil.rmtree(stack.settings.models_dir)
    from_store = await stack.client.get(f"/api/v1/models/tiny/{job_id}/download")
    assert from_store.status_code == 200
    assert from_store.headers["x-trainbus-source"] == "object store"
    assert from_store.content == from_disk.content
    meta = (await stack.client.get(f"/api/v1/models/tiny/{job_id}")).json()
    assert meta["metadata"]["strategy"] == "tiny"
    # An alias names the model for a download too.
    promoted = await stack.client.put("/api/v1/models/tiny/aliases/champion",
                                      json={"version": "1h_v1"})
    assert promoted.status_code == 200, promoted.text
    by_alias = await stack.client.get("/api/v1/models/tiny/@champion/download")
    assert by_alias.status_code == 200 and by_alias.content == from_disk.content

    # Loaded back and used for a prediction.
    storage = ModelStorage(tmp_path / "installed")
    ref = storage.from_archive(from_store.content)
    loaded = storage.load(ref.strategy, ref.version, ref.timeframe)
    features = np.random.default_rng(0).random((8, len(loaded.feature_names)), dtype=np.float32)
    probabilities = predict(loaded, features)
    assert probabilities.shape == (8, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


async def test_workers_health_and_openapi(stack: ApiStack) -> None:
    workers = (await stack.client.get("/api/v1/workers")).json()
    assert [(w["kind"], w["pools"], w["device"]) for w in workers] == [
        ("container", ["container", "any"], "cpu")
    ]
    health = await stack.client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["stream"]["ok"] is True
    assert body["projector"]["mode"] == "embedded" and body["projector"]["lag"] >= 0
    schema = (await stack.client.get("/schema/openapi.json")).json()
    assert {"/api/v1/trainings", "/api/v1/jobs/{job_id}/events", "/api/v1/models/{strategy}/"
            "{version}/download", "/health"} <= set(schema["paths"])


async def test_auto_routing_prefers_a_live_host_trainer(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    from services.host_trainer.main import serve as host_serve

    async with api_stack(config, workspace, tmp_path / "models", trainer=False) as stack, \
            serving(host_serve, config, data_dir=workspace.data_dir,
                    models_dir=tmp_path / "models", strategies_dir=workspace.strategies_dir,
                    checkpoint_every=0):
        accepted = await submit(stack, strategy="tiny")
        assert accepted["pool"] == "host"
        assert accepted["routing"].startswith("auto: a host trainer is free (host-")
        state = await wait_status(stack.client, accepted["job_id"], TERMINAL)
        assert (state["status"], state["worker_kind"]) == ("completed", "host")


# --- the model registry: aliases, the leaderboard, compare, delete ----------------------------


async def test_aliases_leaderboard_compare_and_delete_over_http(
    stack: ApiStack, config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    from libs.events.audit import audit
    from libs.events.setup import open_jetstream

    client = stack.client
    for seed in (3, 4):  # two real models: tiny/1h_v1, tiny/1h_v2 (each a job's model)
        job_id = (await submit(stack, strategy="tiny", seed=seed))["job_id"]
        assert (await wait_status(client, job_id, TERMINAL))["status"] == "completed"
    models = (await client.get("/api/v1/models")).json()
    assert [(m["version"], m["aliases"]) for m in models] == [("1h_v2", []), ("1h_v1", [])]

    async def problem(method: str, url: str, status: int, **kwargs: object) -> dict[str, object]:
        response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        return response.json()

    # Promote: the alias is set, every model lists its aliases, the detail resolves it.
    put = await client.put("/api/v1/models/tiny/aliases/champion",
                           json={"version": "1h_v1", "expires_after": 3600, "reason": "best"})
    assert put.status_code == 200, put.text
    record = put.json()
    assert (record["strategy"], record["alias"], record["version"], record["set_by"],
            record["reason"]) == ("tiny", "champion", "1h_v1", "api", "best")
    assert record["expires_at"] - record["set_at"] == pytest.approx(3600)
    models = (await client.get("/api/v1/models")).json()
    assert {m["version"]: m["aliases"] for m in models} == {"1h_v2": [], "1h_v1": ["champion"]}
    assert (await client.get("/api/v1/models/tiny/aliases")).json() == [record]
    detail = (await client.get("/api/v1/models/tiny/@champion")).json()
    assert (detail["model"]["version"], detail["model"]["aliases"]) == ("1h_v1", ["champion"])
    latest = (await client.get("/api/v1/models/tiny/latest")).json()
    assert latest["model"]["version"] == "1h_v2"

    # 422 a bad alias (named), 404 a version that does not exist; nothing reaches the log.
    for bad in ("Champion", "latest", "a.b", "x" * 40):
        body = await problem("PUT", f"/api/v1/models/tiny/aliases/{bad}", 422,
                             json={"version": "1h_v1"})
        assert body["field"] == "alias", body
    missing = await problem("PUT", "/api/v1/models/tiny/aliases/candidate", 404,
                            json={"version": "1h_v9"})
    assert (missing["title"], missing["field"]) == ("model not found", "version")
    assert (await problem("PUT", "/api/v1/models/tiny/aliases/candidate", 422,
                          json={"version": "1h_v1", "expires_after": 0}))["field"] == (
        "expires_after")

    # The leaderboard: sorted by a headline metric; an unknown key is 422 naming `sort`.
    ascending = (await client.get("/api/v1/models", params={"sort": "macro_f1",
                                                            "order": "asc"})).json()
    scores = [m["test_metrics"]["macro_f1"] for m in ascending]
    assert scores == sorted(scores) and len(scores) == 2
    by_sharpe = (await client.get("/api/v1/models", params={"sort": "backtest_sharpe"})).json()
    assert len(by_sharpe) == 2
    assert (await problem("GET", "/api/v1/models", 422, params={"sort": "bogus"}))["field"] == (
        "sort")
    assert (await problem("GET", "/api/v1/models", 422, params={"order": "up"}))["field"] == (
        "order")

    # Compare: the same rows as the CLI, best marked; through an alias as well.
    compared = (await client.get("/api/v1/models/compare",
                                 params={"models": "tiny/1h_v2,tiny@champion"})).json()
    assert compared["refs"] == ["tiny/1h_v2", "tiny@champion"]
    assert compared["models"] == ["tiny/1h_v2", "tiny/1h_v1"]
    rows = {row["key"]: row for row in compared["rows"]}
    f1 = rows["macro_f1"]["values"]
    assert rows["macro_f1"]["best"] == [i for i, v in enumerate(f1) if v == max(f1)]
    assert rows["aliases"]["values"] == [None, "champion"]
    assert rows["seed"]["values"] == [4, 3]
    await problem("GET", "/api/v1/models/compare", 404, params={"models": "tiny/1h_v1,tiny/1h_v9"})
    await problem("GET", "/api/v1/models/compare", 422, params={"models": "tiny/1h_v1"})

    # Delete: 409 for the aliased version and for a job's model; nothing is deleted.
    aliased = await problem("DELETE", "/api/v1/models/tiny/1h_v1", 409)
    assert aliased["title"] == "model in use" and "tiny@champion" in str(aliased["detail"])
    job_model = await problem("DELETE", "/api/v1/models/tiny/1h_v2", 409)
    assert "job" in str(job_model["detail"])
    assert (stack.settings.models_dir / "tiny" / "1h_v1").is_dir()

    # The alias changes are on the log: the audit replays them against the KV.
    bus = await connect(config)
    try:
        await open_jetstream(bus)
        report = await audit(bus, catch_up_timeout=10)
        assert report.ok, report.differences
    finally:
        await bus.close()

    # Remove the alias: it says where it pointed; then it is gone (404).
    removed = await client.delete("/api/v1/models/tiny/aliases/champion",
                                  params={"reason": "retired"})
    assert removed.status_code == 200 and removed.json()["version"] == "1h_v1"
    gone = await problem("DELETE", "/api/v1/models/tiny/aliases/champion", 404)
    assert gone["title"] == "alias not found"
    await problem("GET", "/api/v1/models/tiny/@champion", 404)
    assert (await client.get("/api/v1/models/tiny/aliases")).json() == []

    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/api/v1/models/compare", "/api/v1/models/{strategy}/aliases",
            "/api/v1/models/{strategy}/aliases/{alias}"} <= set(schema["paths"])
    assert {"put", "delete"} <= set(schema["paths"]["/api/v1/models/{strategy}/aliases/{alias}"])


async def test_alias_writes_need_the_api_token(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    from services.backend.security import ApiSecurity

    token = "t0ken-for-the-alias-tests"
    async with api_stack(config, workspace, tmp_path / "models", trainer=False,
                         security=ApiSecurity(token=token)) as stack:
        url = "/api/v1/models/tiny/aliases/champion"
        for method in ("PUT", "DELETE"):
            response = await stack.client.request(method, url, json={"version": "1h_v1"})
            assert response.status_code == 401, (method, response.text)
        assert (await stack.client.delete("/api/v1/models/tiny/1h_v1")).status_code == 401
        # Reads stay open; with the token the write reaches the registry (no such model here).
        assert (await stack.client.get("/api/v1/models/tiny/aliases")).json() == []
        authorised = await stack.client.put(url, json={"version": "1h_v1"},
                                            headers={"Authorization": f"Bearer {token}"})
        assert authorised.status_code == 404, authorised.text
