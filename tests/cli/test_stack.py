"""`trainbus up` and `trainbus demo` end to end, as a user runs them: real processes, an
embedded nats-server from the wheel, a temp working directory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from libs.events.embedded import EmbeddedNatsServer, free_port
from tests.harness.bus import STREAM_MAX_BYTES
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.slow


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.communicate()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not healthy within {timeout}s")


def wait_workers(url: str, kinds: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        workers = httpx.get(f"{url}/api/v1/workers", timeout=5).json()
        if sorted(w["kind"] for w in workers) == kinds:
            return
        assert time.monotonic() < deadline, workers
        time.sleep(0.2)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """On a failed test: the stack and its embedded nats-server child, by process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def stop(proc: subprocess.Popen[str], signum: int, timeout: float = 60.0) -> tuple[str, str]:
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"did not stop within {timeout}s: {proc.communicate()}") from None


def test_up_runs_the_whole_stack_stops_cleanly_and_keeps_jobs_across_restarts(
    tmp_path: Path, workspace: Workspace
) -> None:
    nats_port, api_port = free_port(), free_port()
    env = clean_env(NATS_URL=f"nats://127.0.0.1:{nats_port}",
                    TRAINBUS_DATA_DIR=str(workspace.data_dir),
                    TRAINBUS_STRATEGIES_DIR=str(workspace.strategies_dir),
                    TRAINBUS_STREAM_MAX_BYTES=str(STREAM_MAX_BYTES))
    url = f"http://127.0.0.1:{api_port}"
    command = [TRAINBUS, "up", "--port", str(api_port)]

    proc = subprocess.Popen(command, cwd=tmp_path, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_healthy(url, proc)
        # Nothing answered at NATS_URL: an embedded server with its store under ./.trainbus.
        assert (tmp_path / ".trainbus" / "nats" / "jetstream").is_dir()
        wait_workers(url, ["container", "host"])
        # Secured by default: API writes need the token `up` made (tests/cli/test_up_secure.py).
        token = (tmp_path / ".trainbus" / "credentials" / "api-token").read_text().strip()
        job = httpx.post(f"{url}/api/v1/trainings", json={"strategy": "tiny"}, timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).json()
        assert job["pool"] == "host"  # auto routing: a host trainer is live
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/api/v1/jobs/{job['job_id']}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        started = time.monotonic()
        out, err = stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, err
        assert time.monotonic() - started < 30  # bounded shutdown
        assert "trainbus is up" in out and "stopped" in err
        assert (tmp_path / "models" / "tiny" / "1h_v1" / "model.safetensors").is_file()
    finally:
        kill_group(proc)

    # Restart: same store, every job still there.
    proc = subprocess.Popen([*command, "--no-host-trainer"], cwd=tmp_path, env=env, text=True,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_healthy(url, proc)
        jobs = httpx.get(f"{url}/api/v1/jobs", timeout=5).json()
        assert [(j["job_id"], j["status"]) for j in jobs["items"]] == [
            (job["job_id"], "completed")]
        wait_workers(url, ["container"])
        _, err = stop(proc, signal.SIGINT)
        assert proc.returncode == 0, err
    finally:
        kill_group(proc)


def test_demo_end_to_end_in_a_fresh_directory(tmp_path: Path) -> None:
    # As a new user: no env, no data, no strategies dir here (the repo's example is used).
    result = subprocess.run([TRAINBUS, "demo", "--epochs", "2", "--bars", "2000"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                            timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "wrote sample data" in out
    assert "epoch 2/2" in out and "test accuracy" in out
    assert "model: rsi_macd_zigzag 1h_v1 at models/rsi_macd_zigzag/1h_v1" in out
    assert (tmp_path / "data" / "EURUSD_1h.parquet").is_file()
    assert (tmp_path / "models" / "rsi_macd_zigzag" / "1h_v1" / "model.safetensors").is_file()
    assert (tmp_path / ".trainbus" / "demo" / "nats").is_dir()
    # Secured: its private server had a user per role (and the demo trained as them).
    assert (tmp_path / ".trainbus" / "demo" / "credentials" / "trainer.nk").is_file()
    assert "secured, nkeys in .trainbus/demo/credentials" in out
    assert "Traceback" not in result.stderr

    # A second run reuses the data and its store, and trains the next version.
    again = subprocess.run([TRAINBUS, "demo", "--epochs", "1"], cwd=tmp_path, env=clean_env(),
                           capture_output=True, text=True, timeout=240, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "using the sample data" in again.stdout and "1h_v2" in again.stdout


@pytest.mark.anyio
async def test_embedded_server_starts_ready_stops_and_keeps_its_store(tmp_path: Path) -> None:
    import nats

    server = EmbeddedNatsServer(tmp_path / "nats")
    await server.start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"1")
        await nc.close()
    finally:
        await server.stop()
    assert not server.running

    await server.start()  # same port, same store
    try:
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("KEEP")
        assert info.state.messages == 1
        await nc.close()
    finally:
        await server.stop()

    # A port already taken: a clear error naming the log, not a hang.
    taken = EmbeddedNatsServer(tmp_path / "other", port=server.port)
    await server.start()
    try:
        with pytest.raises(Exception, match="nats-server"):
            await asyncio.wait_for(taken.start(), 20)
    finally:
        await server.stop()
