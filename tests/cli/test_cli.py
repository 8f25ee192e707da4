"""The `trainbus` console script against a real nats-server with a real trainer running."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import pytest

from libs.events.embedded import free_port
from tests.cli.conftest import run_cli, start_cli
from tests.harness.api import ApiStack
from tests.harness.polling import wait_status
from tests.harness.processes import TRAINBUS

pytestmark = pytest.mark.anyio


async def test_train_follow_runs_to_completion_with_progress_metrics_and_model_path(
    stack: ApiStack, env: dict[str, str]
) -> None:
    result = await run_cli("train", "tiny", "--seed", "5", "--follow", env=env)
    assert result.rc == 0, result.stderr
    out = result.stdout
    assert "queued on pool container (auto: a container trainer is free (container-" in out
    assert "accepted by container-" in out
    # Without a terminal: one line per phase and epoch, then the metrics table and the model.
    assert "[training]" in out and "epoch 2/2" in out
    assert "test accuracy" in out
    assert "model: tiny 1h_v1 at " in out and "(object store: models/tiny/" in out
    assert "Traceback" not in result.stderr


async def test_train_follow_json_is_json_lines(stack: ApiStack, env: dict[str, str]) -> None:
    result = await run_cli("train", "tiny", "--follow", "--json", env=env)
    assert result.rc == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    accepted, events, final = lines[0], lines[1:-1], lines[-1]
    assert accepted["pool"] == "container" and accepted["job_id"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "completed"
    assert [e["event"]["epoch"] for e in events if e["kind"] == "epoch"] == [1, 2]
    assert final["status"] == "completed" and final["job_id"] == accepted["job_id"]


async def test_cancel_watch_show_and_jobs_json(stack: ApiStack, env: dict[str, str]) -> None:
    submitted = await run_cli("train", "long", "--json", env=env)
    assert submitted.rc == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    await wait_status(stack.client, job_id, {"running"})

    async with start_cli("watch", job_id, env=env) as watch:
        # The watcher follows from the job's projected state on: a first line printed is an
        # event of the running job that reached it live.
        await watch.read_until(b"\n")
        cancel = await run_cli("cancel", job_id, "--reason", "from the test", env=env)
        assert cancel.rc == 0, cancel.stderr
        assert f"cancel sent for job {job_id} (cancelling)" in cancel.stdout
        watched = await watch.result()
    assert watched.rc == 130, watched.stderr  # the job ended cancelled
    assert f"job {job_id} cancelled: from the test" in watched.stdout

    again = await run_cli("cancel", job_id, env=env)
    assert again.rc == 1 and f"job {job_id} is already cancelled" in again.stderr
    await wait_status(stack.client, job_id, {"cancelled"})
    jobs = json.loads((await run_cli("jobs", "--json", env=env)).stdout)
    assert [(j["job_id"], j["status"]) for j in jobs["items"]] == [(job_id, "cancelled")]
    shown = await run_cli("show", job_id, "--json", env=env)
    assert shown.rc == 0 and json.loads(shown.stdout)["cancel_reason"] == "from the test"
    missing = await run_cli("show", "no-such-job", env=env)
    assert missing.rc == 1 and "no job 'no-such-job'" in missing.stderr


async def test_models_workers_and_jobs_listings(stack: ApiStack, env: dict[str, str]) -> None:
    done = await run_cli("train", "tiny", "--follow", env=env)
    assert done.rc == 0, done.stderr
    models = json.loads((await run_cli("models", "--json", env=env)).stdout)
    assert [(m["strategy"], m["version"], m["local"]) for m in models] == [("tiny", "1h_v1", True)]
    workers = json.loads((await run_cli("workers", "--json", env=env)).stdout)
    assert [w["kind"] for w in workers] == ["container"]
    table = await run_cli("jobs", env=env)
    assert table.rc == 0 and "completed" in table.stdout and "tiny" in table.stdout


async def test_ctrl_c_without_a_terminal_stops_watching_and_leaves_the_job_running(
    stack: ApiStack, env: dict[str, str]
) -> None:
    async with start_cli("train", "long", "--follow", env=env) as follow:
        seen = await follow.read_until(b"[training]")
        job_id = seen.split(b"job ")[1].split(b" ")[0].decode()
        follow.proc.send_signal(signal.SIGINT)
        result = await follow.result(30)
    assert result.rc == 130, result.stderr
    assert f"stopped watching job {job_id}; it goes on" in result.stdout
    state = (await stack.client.get(f"/api/v1/jobs/{job_id}")).json()
    assert state["status"] == "running"  # only the watcher stopped
    await stack.client.post(f"/api/v1/jobs/{job_id}/cancel")


async def test_bad_input_is_exit_2_and_an_unreachable_nats_is_one_line_exit_1(
    stack: ApiStack, env: dict[str, str]
) -> None:
    bad = await run_cli("train", "tiny", "--start", "2024-02-01", "--end", "2024-01-01",
                        env=env)
    assert bad.rc == 2 and bad.stderr.startswith("trainbus: end: start 2024-02-01")
    unknown = await run_cli("train", "nowhere", env=env)
    assert unknown.rc == 2 and "give symbols and timeframes" in unknown.stderr

    down = dict(env, NATS_URL=f"nats://127.0.0.1:{free_port()}")
    for args in (("jobs",), ("train", "tiny"), ("watch", "x"), ("cancel", "x"), ("workers",)):
        result = await run_cli(*args, env=down, timeout=30)
        assert result.rc == 1, (args, result)
        assert result.stderr.startswith("trainbus: cannot reach NATS at nats://127.0.0.1:")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_every_command_has_help_and_exit_codes_documented() -> None:
    import subprocess

    for command in ("train", "jobs", "show", "watch", "cancel", "models", "workers", "backend",
                    "up", "demo"):
        result = subprocess.run([TRAINBUS, command, "--help"], capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0, (command, result.stderr)
    train_help = subprocess.run([TRAINBUS, "train", "--help"], capture_output=True, text=True,
                                timeout=30, check=True).stdout
    assert "Exit codes" in train_help  # documented where it is used


def test_console_script_exists() -> None:
    assert Path(TRAINBUS).is_file()


async def test_ctrl_c_on_a_terminal_asks_and_can_cancel_the_job(
    stack: ApiStack, env: dict[str, str]
) -> None:
    import os

    master, slave = os.openpty()
    proc = await asyncio.create_subprocess_exec(
        TRAINBUS, "train", "long", "--follow", env=env, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    output = bytearray()

    async def read_until(marker: bytes, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while marker not in output:
            assert loop.time() < deadline, output.decode(errors="replace")[-2000:]
            try:
                output.extend(await asyncio.to_thread(os.read, master, 65536))
            except OSError:  # the child closed the terminal
                break

    try:
        await read_until(b"epoch 1/")  # the live bar is training
        proc.send_signal(signal.SIGINT)
        await read_until(b"[c] cancel the job")
        os.write(master, b"c\n")
        await read_until(b"cancelled")
        assert await asyncio.wait_for(proc.wait(), 30) == 130
    finally:
        if proc.returncode is None:
            proc.kill()
        os.close(master)
    text = output.decode(errors="replace")
    match = re.search(r"cancel sent for (run-[0-9a-f]+)", text)
    assert match is not None, text[-2000:]
    state = await wait_status(stack.client, match.group(1), {"cancelled"}, timeout=10)
    assert state["cancel_reason"] == "cancelled from the CLI"
