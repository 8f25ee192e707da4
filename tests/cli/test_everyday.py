"""The everyday research loop through the real console script (`.venv/bin/trainbus`) against one
real stack for the whole module (nats-server, API with the projector, a container trainer):
`train --epochs` trains what `pipeline run --epochs` trains, tables that pipe, a closed pipe
that ends quietly, `data inspect`, and each command's exit code as the README's table says."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.events.embedded import free_port
from tests.cli.conftest import Result, cli_env, run_cli
from tests.harness.api import ApiStack, api_stack
from tests.harness.bus import bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import wait_status
from tests.harness.processes import TRAINBUS
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: the stack below lives in one loop for every test


@pytest.fixture(scope="module")
async def stack(nats_server_module: NatsServer, workspace: Workspace,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    config = bus_config(nats_server_module, "everyday", publish_retry_for=3.0)
    models = tmp_path_factory.mktemp("everyday-models")
    async with api_stack(config, workspace, models) as running:
        yield running


@pytest.fixture(scope="module")
def env(stack: ApiStack, workspace: Workspace) -> dict[str, str]:
    values = cli_env(stack.config, workspace, stack.settings.models_dir)
    values.pop("COLUMNS")  # as in a user's pipe: rich would fit tables into 80 columns
    return values


@pytest.fixture(scope="module")
async def finished(stack: ApiStack, env: dict[str, str]) -> dict[str, object]:
    """One job trained with overrides (`--epochs 1 --seed 3`), followed to its end."""
    result = await run_cli("train", "tiny", "--epochs", "1", "--seed", "3", "--follow", "--json",
                           env=env)
    assert result.rc == 0, result.stderr
    final: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    assert final["status"] == "completed", final
    return final


async def test_train_epochs_trains_the_weights_pipeline_run_epochs_trains(
    finished: dict[str, object], env: dict[str, str], workspace: Workspace, tmp_path: Path
) -> None:
    # The override is in the state (the fold copies it from the command) and was applied.
    assert finished["epochs"] == 1 and finished["seed"] == 3
    assert isinstance(finished["history"], list) and len(finished["history"]) == 1  # tiny: 2
    shown = await run_cli("show", str(finished["job_id"]), env=env)
    assert shown.rc == 0, shown.stderr
    assert "  epochs      1\n" in shown.stdout and "  seed        3\n" in shown.stdout

    direct = await run_cli("pipeline", "run", "tiny", "--epochs", "1", "--seed", "3",
                           "--data-dir", str(workspace.data_dir),
                           "--strategies-dir", str(workspace.strategies_dir),
                           "--models-dir", str(tmp_path), env=env)
    assert direct.rc == 0, direct.stderr
    path = Path(direct.stdout.rsplit("model: ", 1)[1].strip())
    manifest = json.loads((path / "metadata.json").read_text())
    model = finished["model"]
    assert isinstance(model, dict)
    assert manifest["epochs"] == 1
    assert model["weights_sha256"] == manifest["weights_sha256"]  # bit-identical weights


async def test_the_api_takes_epochs_bounded_and_names_the_field(stack: ApiStack) -> None:
    too_many = await stack.client.post("/api/v1/trainings",
                                       json={"strategy": "tiny", "epochs": 100_001})
    assert too_many.status_code == 422 and "epochs" in too_many.text
    zero = await stack.client.post("/api/v1/trainings", json={"strategy": "tiny", "epochs": 0})
    assert zero.status_code == 422 and "epochs" in zero.text
    # Pool `host`: no host trainer here, so the job stays queued and shows the command's value.
    queued = await stack.client.post("/api/v1/trainings", json={
        "strategy": "tiny", "epochs": 7, "pool": "host"})
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]
    state = await wait_status(stack.client, job_id, {"queued"})
    assert state["epochs"] == 7
    await stack.client.post(f"/api/v1/jobs/{job_id}/cancel")
    await wait_status(stack.client, job_id, {"cancelled"})


async def test_tables_in_a_pipe_print_whole_values_and_plain_is_tsv(
    finished: dict[str, object], env: dict[str, str]
) -> None:
    job_id = str(finished["job_id"])
    table = await run_cli("jobs", env=env)
    assert table.rc == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if job_id in line)
    assert "…" not in table.stdout and "completed" in row and "epoch 1/1" in row

    plain = await run_cli("jobs", "--plain", env=env)
    assert plain.rc == 0, plain.stderr
    header, *rows = plain.stdout.splitlines()
    assert header.split("\t") == ["job", "status", "strategy", "experiment", "pool", "trainer",
                                  "progress", "metric", "created", "tags", "note"]
    cells = next(r.split("\t") for r in rows if r.startswith(f"{job_id}\t"))
    assert cells[1:5] == ["completed", "tiny", "", "container"]
    assert all(len(r.split("\t")) == len(header.split("\t")) for r in rows)

    workers = await run_cli("workers", "--plain", env=env)
    assert workers.rc == 0 and workers.stdout.splitlines()[0].startswith("worker\tkind\tpools")
    assert "\tcontainer\t" in workers.stdout.splitlines()[1]
    models = await run_cli("models", "--plain", env=env)
    assert models.rc == 0, models.stderr
    model_rows = [r.split("\t") for r in models.stdout.splitlines()]
    assert model_rows[0][:4] == ["strategy", "version", "aliases", "job"]
    assert ["tiny", job_id] in [[r[0], r[3]] for r in model_rows[1:]]
    aliases = await run_cli("models", "aliases", "--json", env=env)
    assert aliases.rc == 0 and json.loads(aliases.stdout) == []
    both = await run_cli("jobs", "--json", "--plain", env=env)
    assert both.rc == 2 and "not allowed with argument" in both.stderr


async def closed_pipe(*args: str, env: dict[str, str]) -> Result:
    """`trainbus ARGS` writing into a pipe whose reader is already gone (`| head` that has
    read its lines): the first write fails, every time."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = await asyncio.create_subprocess_exec(
            TRAINBUS, *args, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=write,
            stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Result(proc.returncode, "", err.decode())


async def test_a_closed_pipe_ends_any_command_quietly(
    finished: dict[str, object], env: dict[str, str]
) -> None:
    job_id = str(finished["job_id"])
    for args in (("audit", "--timeline", "--job", job_id), ("jobs",), ("jobs", "--plain"),
                 ("show", job_id), ("workers", "--json"), ("models",)):
        result = await closed_pipe(*args, env=env)
        # Not delivered: 1, as rich's console exits for its own output; nothing on stderr.
        assert (result.rc, result.stderr) == (1, ""), args


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_data_inspect_reports_each_file_and_exits_2_on_one_the_loader_refuses(
    tmp_path: Path, workspace: Workspace
) -> None:
    from libs.pipeline.data import read_price_file

    data = tmp_path / "data"
    data.mkdir()
    good = read_price_file(workspace.data_dir / "EURUSD_1h.parquet")
    good.to_parquet(data / "EURUSD_1h.parquet")
    good.iloc[:50].to_csv(data / "EURUSD_1h.csv")  # shadowed: the loader reads the Parquet
    env = cli_env_without_nats(data)

    ok = await run_cli("data", "inspect", "--json", env=env)
    assert ok.rc == 0, ok.stderr
    reports = json.loads(ok.stdout)
    assert [(r["symbol"], r["timeframe"], Path(r["path"]).suffix) for r in reports] == [
        ("EURUSD", "1h", ".parquet"), ("EURUSD", "1h", ".csv")]
    parquet, csv = reports
    assert parquet["bars"] == len(good) and parquet["refused"] is None
    assert parquet["first"] == good.index[0].isoformat()
    assert parquet["last"] == good.index[-1].isoformat()
    # The sample data skips weekends: gaps are counted, the largest is a weekend.
    assert parquet["gaps"] > 0 and parquet["largest_gap"] == "2d1h"
    assert csv["shadowed_by"] == str(data / "EURUSD_1h.parquet") and csv["bars"] == 50

    write(data / "BAD_1h.csv", "timestamp,open,high,low,close\n"
          "2024-01-01T00:00:00Z,1.0,1.2,0.9,1.1\n"
          "2024-01-01T01:00:00Z,1.1,1.0,0.9,1.05\n"  # high below the open
          "2024-01-01T01:00:00Z,1.1,1.3,0.9,1.2\n"  # that stamp again, other prices
          "2024-01-01T01:00:00Z,1.1,1.3,0.9,1.2\n"  # and once more with the same bar
          "2024-01-01T04:00:00Z,0,1.3,0.9,1.2\n")  # a price of 0, after a 3-hour gap
    refused = await run_cli("data", "inspect", "BAD", env=env)
    assert refused.rc == 2, refused.stdout
    assert "BAD_1h.csv: row 5 (line 6): a price at or below 0" in refused.stdout
    bad = json.loads((await run_cli("data", "inspect", "BAD", "--json", env=env)).stdout)[0]
    assert (bad["rows"], bad["bars"], bad["gaps"], bad["largest_gap"]) == (5, 3, 1, "3h")
    assert (bad["duplicates"], bad["conflicting_duplicates"]) == (1, 1)
    # Row 2's open and close are above its high; row 5's open of 0 is also below its low.
    assert (bad["non_positive"], bad["inconsistent"]) == (1, 2)
    assert bad["refused"].endswith("a price at or below 0 (1 such row(s))")

    plain = await run_cli("data", "inspect", "--plain", env=env)
    assert plain.rc == 2 and "refused: " in plain.stderr
    assert [line.split("\t")[0] for line in plain.stdout.splitlines()] == [
        "symbol", "BAD", "EURUSD", "EURUSD"]
    missing = await run_cli("data", "inspect", "EURUSD", "GBPUSD", env=env)
    assert missing.rc == 2 and "no price file for GBPUSD" in missing.stderr
    empty = await run_cli("data", "inspect", env=dict(env, TRAINBUS_DATA_DIR=str(tmp_path)))
    assert empty.rc == 2 and "no price files in" in empty.stderr


def cli_env_without_nats(data: Path) -> dict[str, str]:
    from tests.harness.processes import clean_env

    return clean_env(TRAINBUS_DATA_DIR=str(data))


async def test_exit_codes_follow_the_readme_table(
    stack: ApiStack, finished: dict[str, object], env: dict[str, str]
) -> None:
    job_id = str(finished["job_id"])
    # A job that is stuck (pool host, no host trainer) and then failed by an operator.
    queued = json.loads((await run_cli("train", "tiny", "--pool", "host", "--json",
                                       env=env)).stdout)["job_id"]
    assert (await run_cli("jobs", "fail", queued, "--reason", "test", env=env)).rc == 0
    down = dict(env, NATS_URL=f"nats://127.0.0.1:{free_port()}")
    cases: list[tuple[tuple[str, ...], dict[str, str], int, str]] = [
        # 0: done
        (("show", job_id), env, 0, ""),
        (("watch", job_id), env, 0, ""),
        (("audit", "--job", job_id), env, 0, ""),
        # 1: failed, not found, NATS unreachable
        (("watch", queued), env, 1, ""),
        (("show", "no-such-job"), env, 1, "no job 'no-such-job'"),
        (("audit", "--job", "no-such-job"), env, 1, "no job 'no-such-job' in the log"),
        (("audit", "--timeline", "--job", "no-such-job"), env, 1, ""),
        (("cancel", job_id), env, 1, "already completed"),
        (("jobs",), down, 1, "cannot reach NATS"),
        (("audit",), down, 1, "cannot reach NATS"),
        # 2: bad input, usage, rejected
        (("show", "not a job"), env, 2, "JOB: job_id 'not a job' is not allowed"),
        (("watch", "a.b"), env, 2, "is not allowed"),
        (("cancel", "x*"), env, 2, "is not allowed"),
        (("audit", "--job", "a b"), env, 2, "is not allowed"),
        (("audit", "--timeline"), env, 2, "--timeline needs --job"),
        (("train", "tiny", "--epochs", "0"), env, 2, "must be >= 1"),
        (("train", "tiny", "--epochs", "100001"), env, 2, "epochs"),
        (("train", "nowhere"), env, 2, "give symbols and timeframes"),
        (("train", "tiny", "--start", "2030-01-01", "--follow"), env, 2,
         ""),  # a window without bars: rejected by the trainer, not failed
        (("jobs", "--status", "bogus"), env, 2, "invalid choice"),
        (("no-such-command",), env, 2, "invalid choice"),
        ((), env, 2, ""),
    ]
    for args, case_env, code, message in cases:
        result = await run_cli(*args, env=case_env, timeout=60)
        assert result.rc == code, (args, result)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
    rejected = await run_cli("jobs", "--status", "rejected", "--json", env=env)
    (item,) = json.loads(rejected.stdout)["items"]
    assert "no usable rows" in item["error"] and "2030-01-01" in item["error"]
