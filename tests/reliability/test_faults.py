"""Faults one at a time, with real processes: a trainer frozen past its lease (fencing), a job
whose data or strategy is broken (fails once, never retried), and SIGTERM to every kind of
process (bounded, clean, the running job handed over)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from libs.events.bus import Bus, publish_command
from libs.events.embedded import free_port
from libs.events.projector import load_projection
from libs.events.schema import TrainCommand
from tests.harness.bus import STREAM_MAX_BYTES, open_bus
from tests.harness.nats_server import NatsServer
from tests.harness.polling import TERMINAL, wait_job_state, wait_until
from tests.harness.processes import TRAINBUS
from tests.harness.strategies import strategy_yaml
from tests.reliability.cluster import (
    SYMBOLS,
    Cluster,
    child_env,
    make_workspace,
    wait_http_ok,
    wait_log,
    wait_workers,
)
from tests.reliability.scenarios import last_event, model_objects, read_all
from tests.trainers.conftest import direct_run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

@pytest.fixture
def cluster(nats_server: NatsServer, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(nats_server, make_workspace(tmp_path / "ws"), tmp_path / "logs",
                      ack_wait=2.0, max_deliver=4)
    try:
        yield cluster
    finally:
        cluster.stop_all()


async def epoch_of(bus: Bus, job_id: str) -> int:
    last = await last_event(bus, f"trainbus.evt.{job_id}.epoch")
    return getattr(last[1], "epoch", 0) if last else 0


async def test_a_trainer_frozen_past_its_lease_publishes_nothing_for_the_job_it_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGSTOP a trainer mid-job for longer than AckWait: another worker claims the job. On
    SIGCONT the frozen one must not publish a model, a `completed` or anything else for it,
    and says so in its log."""
    projector = cluster.projector().start()
    stale = cluster.trainer("stale", "container", checkpoint_every=1).start()
    rescuer = cluster.trainer("rescuer", "container", checkpoint_every=1)
    try:
        async with open_bus(cluster.bus_config()) as bus:
            await wait_workers(bus, ["stale"], (stale,))
            command = TrainCommand(job_id="frozen-1", strategy="long", symbols=SYMBOLS,
                                   timeframes=("1h",), seed=2)
            await publish_command(bus, command, pool="container")
            await wait_until(lambda: _epoch_at_least(bus, "frozen-1", 2), "epoch 2",
                             procs=(stale,))
            # Frozen mid-job first, then the rescuer comes: the job cannot finish on the stale
            # worker while the rescuer is still starting (a few seconds under load).
            stale.signal(signal.SIGSTOP)
            rescuer.start()
            await wait_workers(bus, ["rescuer"], (rescuer,))
            claimed = await wait_until(lambda: _accepted_by(bus, "frozen-1", "rescuer"),
                                       "the rescuer's claim", procs=(rescuer,))
            stale.signal(signal.SIGCONT)
            await wait_log(stale, "fenced out: job frozen-1 now owned by another worker")
            state = await wait_job_state(bus, "frozen-1", timeout=180, procs=(rescuer,))
            assert state.status == "completed" and state.worker == "rescuer", state

            # Check the stream: after the rescuer's claim, nothing from the frozen worker; one
            # completed; the frozen attempt left no model in the object store.
            messages = [m for m in await read_all(bus) if m.job_id == "frozen-1"]
            late = [m for m in messages if m.seq > claimed
                    and getattr(m.body, "worker_id", "") == "stale"]
            assert late == [], late
            kinds = [m.subject.rsplit(".", 1)[-1] for m in messages]
            assert kinds.count("completed") == 1
            objects = await model_objects(bus)
            assert all(not o.startswith("models/long/frozen-1.a1") for o in objects)
            # The frozen worker is still alive and serving.
            assert stale.running
            await publish_command(bus, TrainCommand(job_id="after-thaw", strategy="tiny",
                                                    symbols=SYMBOLS, timeframes=("1h",)))
            thawed = await wait_job_state(bus, "after-thaw", timeout=180, procs=(stale, rescuer))
            assert thawed.status == "completed"
    finally:
        if stale.running:
            stale.signal(signal.SIGCONT)  # a stopped process would not act on the SIGTERM
        for proc in (stale, rescuer, projector):
            if proc.running:
                proc.terminate()
    # And the rescued model has the weights of an uninterrupted run.
    reference = await asyncio.to_thread(
        direct_run, cluster.workspace, tmp_path / "direct", command)
    assert state.model is not None
    assert state.model.weights_sha256 == reference.weights_sha256


async def _epoch_at_least(bus: Bus, job_id: str, epoch: int) -> bool:
    return await epoch_of(bus, job_id) >= epoch


async def _accepted_by(bus: Bus, job_id: str, worker: str) -> int | None:
    try:
        raw = await bus.js.get_last_msg("TRAINBUS", f"trainbus.evt.{job_id}.accepted",
                                        direct=True)
    except Exception:
        return None
    if f'"worker_id":"{worker}"' not in (raw.data or b"").decode():
        return None
    assert raw.seq is not None, raw
    return int(raw.seq)


async def test_a_job_with_broken_data_or_strategy_fails_once_and_is_not_retried(
    cluster: Cluster,
) -> None:
    ws = cluster.workspace
    (ws.data_dir / "BROKEN_1h.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"2024-01-01T{h:02d}:00:00,1.0,0.5,2.0,1.0,10\n" for h in range(24)))
    (ws.strategies_dir / "hungry.yaml").write_text(
        strategy_yaml("hungry", epochs=2).replace("period: 14", "period: 5000"))
    projector = cluster.projector().start()
    trainer = cluster.trainer("only", "container").start()
    try:
        async with open_bus(cluster.bus_config()) as bus:
            await wait_workers(bus, ["only"], (trainer,))
            await publish_command(bus, TrainCommand(job_id="bad-data", strategy="tiny",
                                                    symbols=("BROKEN",), timeframes=("1h",)))
            await publish_command(bus, TrainCommand(job_id="bad-strategy", strategy="hungry",
                                                    symbols=SYMBOLS, timeframes=("1h",)))
            data = await wait_job_state(bus, "bad-data", timeout=180, procs=(trainer,))
            strategy = await wait_job_state(bus, "bad-strategy", timeout=180, procs=(trainer,))
            # A good job after them: the worker went on, and took nothing twice.
            await publish_command(bus, TrainCommand(job_id="good", strategy="tiny",
                                                    symbols=SYMBOLS, timeframes=("1h",)))
            good = await wait_job_state(bus, "good", timeout=180, procs=(trainer,))
            assert good.status == "completed"

            assert data.status == "failed" and data.error is not None
            assert data.error.category == "data"
            assert "BROKEN_1h.csv" in data.error.reason and "row 1" in data.error.reason
            assert strategy.status == "failed" and strategy.error is not None
            assert strategy.error.category == "data"
            assert "no usable rows" in strategy.error.reason
            messages = await read_all(bus)
            for job_id in ("bad-data", "bad-strategy"):
                kinds = [m.subject.rsplit(".", 1)[-1] for m in messages if m.job_id == job_id]
                assert kinds.count("accepted") == 1 and kinds.count("failed") == 1, kinds
                assert kinds[-1] == "failed"
            # Not retried: the pool consumer holds nothing pending and redelivered nothing.
            pool = await bus.js.consumer_info("TRAINBUS", "pool-any")
            assert pool.num_ack_pending == 0 and pool.num_redelivered == 0, pool
            assert pool.num_pending == 0
            log = trainer.log_text()
            assert log.count("job bad-data (attempt 1): failed (data)") == 1
            assert "attempt 2" not in log
    finally:
        for proc in (trainer, projector):
            if proc.running:
                proc.terminate()


async def test_sigterm_stops_each_process_cleanly_and_the_running_job_is_handed_over(
    cluster: Cluster, tmp_path: Path
) -> None:
    """host trainer mid-job -> checkpoint, released, nak -> a container trainer resumes it; backend
    with a live SSE stream; projector (flushes its checkpoint). Each exits 0 within its
    bound (Proc.terminate raises past 60 s)."""
    backend = cluster.backend(projector="external").start()
    projector = cluster.projector().start()
    host = cluster.trainer("host-1", "host", checkpoint_every=1).start()
    async with open_bus(cluster.bus_config()) as bus:
        await wait_http_ok(cluster.api_url(), backend)
        await wait_workers(bus, ["host-1"], (host,))
        command = TrainCommand(job_id="handover", strategy="long", symbols=SYMBOLS,
                               timeframes=("1h",), seed=6)
        await publish_command(bus, command, pool="any")
        await wait_until(lambda: _epoch_at_least(bus, "handover", 2), "epoch 2",
                         procs=(host,))

        assert host.terminate() == 0, host.log_text()[-3000:]
        assert "released for another worker" in host.log_text()
        last = await last_event(bus, "trainbus.evt.handover.>")
        assert last is not None and last[0] == "released"  # after its checkpoint

        container = cluster.trainer("container-1", "container").start()
        state = await wait_job_state(bus, "handover", timeout=180, procs=(container,))
        assert state.status == "completed" and state.attempt == 2, state
        assert state.worker == "container-1" and state.resumed_from_epoch is not None

        # The backend with an SSE stream open on a running job: SIGTERM ends the stream and
        # the process.
        await publish_command(bus, TrainCommand(job_id="streamed", strategy="long",
                                                symbols=SYMBOLS, timeframes=("1h",)))
        async with (
            httpx.AsyncClient(base_url=cluster.api_url(), timeout=60) as http,
            http.stream("GET", "/api/v1/jobs/streamed/events",
                        headers={"Accept": "text/event-stream"}) as stream,
        ):
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith(("event:", ":", "id:", "data:"))
            assert backend.terminate() == 0, backend.log_text()[-3000:]
            rest = [line async for line in lines]  # ends: the server closed it
            assert isinstance(rest, list)
        assert projector.terminate() == 0, projector.log_text()[-3000:]
        assert "trainbus projector stopped" in projector.log_text()
        # The projector flushed on the way out: its checkpoint is the stream's last sequence
        # that it saw, and the KV agrees with the log.
        projection = await load_projection(bus.js, "trainbus_jobs")
        assert projection.states["handover"].status == "completed"
        assert container.terminate() == 0
    reference = await asyncio.to_thread(
        direct_run, cluster.workspace, tmp_path / "direct", command)
    assert state.model is not None
    assert state.model.weights_sha256 == reference.weights_sha256


def test_trainbus_up_stops_on_sigterm_mid_job_and_the_restart_finishes_it(
    tmp_path: Path,
) -> None:
    """`trainbus up` (embedded NATS, API, projector, both trainers in one process) receives
    SIGTERM while a job trains: it exits 0, the job is handed back with a checkpoint, and the
    next `trainbus up` on the same store resumes and completes it.

    JetStream forgets a `nak` when its server restarts (here the embedded one stops with
    `up`): the handed-back command is redelivered once AckWait has passed since the restart,
    not at once. AckWait is 5 s here so that this takes seconds (default 120 s; see
    docs/reliability.md)."""
    ws = make_workspace(tmp_path / "ws")
    nats_port, api_port = free_port(), free_port()
    env = child_env({"NATS_URL": f"nats://127.0.0.1:{nats_port}",
                     "TRAINBUS_DATA_DIR": str(ws.data_dir),
                     "TRAINBUS_STRATEGIES_DIR": str(ws.strategies_dir),
                     "TRAINBUS_MODELS_DIR": str(ws.models_root / "up"),
                     "TRAINBUS_STREAM_MAX_BYTES": str(STREAM_MAX_BYTES),
                     "TRAINBUS_ACK_WAIT": "5"})
    url = f"http://127.0.0.1:{api_port}"
    argv = [TRAINBUS, "up", "--port", str(api_port), "--store", str(tmp_path / "store")]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(argv, cwd=ws.cwd, env=env, text=True, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def healthy(proc: subprocess.Popen[str]) -> None:
        async def ok() -> bool:
            assert proc.poll() is None, proc.communicate()
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    workers = (await http.get(f"{url}/api/v1/workers")).json()
                    return len(workers) == 2
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        asyncio.run(wait_until(ok, "trainbus up", timeout=120, interval=0.2))

    proc = start()
    try:
        healthy(proc)
        # `up` is secured: writes need the API token it made in its store.
        token = (tmp_path / "store" / "credentials" / "api-token").read_text().strip()
        submitted = httpx.post(f"{url}/api/v1/trainings", timeout=30, json={
            "strategy": "long", "symbols": list(SYMBOLS), "timeframes": ["1h"], "seed": 1},
            headers={"Authorization": f"Bearer {token}"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]

        async def training() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                state = (await http.get(f"{url}/api/v1/jobs/{job_id}")).json()
            # Two *finished* epochs (`epoch` alone is also the one in progress): the drain's
            # checkpoint then holds at least two.
            return len(state.get("history") or ()) >= 2

        asyncio.run(wait_until(training, "two finished epochs", interval=0.1))
        proc.send_signal(signal.SIGTERM)
        _, first = proc.communicate(timeout=90)
        assert proc.returncode == 0, first[-3000:]
        assert "released for another worker" in first
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    proc = start()
    try:
        healthy(proc)

        async def finished() -> dict | None:
            async with httpx.AsyncClient(timeout=5) as http:
                state = (await http.get(f"{url}/api/v1/jobs/{job_id}")).json()
            return state if state["status"] in TERMINAL else None

        state = asyncio.run(wait_until(finished, "the resumed job", timeout=180))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-3000:]
        logs = f"first run:\n{first[-3000:]}\nsecond run:\n{err[-3000:]}"
        assert state["status"] == "completed" and state["attempt"] == 2, (state, logs)
        assert (state["resumed_from_epoch"] or 0) >= 2, (state, logs)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
