"""The research loop, second part (issue 20), through the real console script against one real
stack for the module (nats-server, API with the projector, a real container trainer): rerun
with overrides (`derived_from`), a retry under the same idempotency key, experiments, tags and
notes (annotations as events) and the `jobs` filters, a `code` failure's traceback, and the
job's trainer log lines (`logs`, `--follow`, the API).

Failures and live logs need a trainer that fails or waits on cue: a host-pool worker runs the
real worker runtime (claims, fencing, events, log publishing) around a scriptable runner
(tests/harness/scripted.py); everything trained for real goes to the container pool by name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cli.conftest import Result, cli_env, run_cli, start_cli
from tests.harness.api import ApiStack, api_stack
from tests.harness.bus import bus_config, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import eventually, wait_status
from tests.harness.scripted import HOST_WORKER, SECRET, ScriptedRunner, scripted_host_worker
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope: the stack below lives in one loop for every test


@dataclass
class Stack:
    api: ApiStack
    env: dict[str, str]
    runner: ScriptedRunner


@pytest.fixture(scope="module")
async def stack(nats_server_module: NatsServer, workspace: Workspace,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = bus_config(nats_server_module, "research", publish_retry_for=3.0)
    models = tmp_path_factory.mktemp("research-models")
    async with api_stack(config, workspace, models) as api, \
            scripted_host_worker(trainer_bus_config(nats_server_module, "research")) as runner:
        yield Stack(api=api, env=cli_env(api.config, workspace, api.settings.models_dir),
                    runner=runner)


async def cli(stack: Stack, *args: str) -> Result:
    return await run_cli(*args, env=stack.env)


async def _json_of(request: Awaitable[httpx.Response]) -> dict[str, Any]:
    value: dict[str, Any] = (await request).json()
    return value


def last_json(result: Result) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    value: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return value


@pytest.fixture(scope="module")
async def trained(stack: Stack) -> dict[str, Any]:
    """One real job, organised at submit: experiment, two tags, a note."""
    result = await cli(stack, "train", "tiny", "--pool", "container", "--epochs", "1",
                       "--seed", "3", "--experiment", "lr-study", "--tag", "arch=mlp",
                       "--tag", "stage=base", "--note", "first try", "--follow", "--json")
    assert result.rc == 0, result.stderr
    final = last_json(result)
    assert final["status"] == "completed", final
    return final


async def test_rerun_with_a_changed_strategy_key_records_what_it_derives_from(
    stack: Stack, trained: dict[str, Any]
) -> None:
    source = trained["job_id"]
    assert (trained["experiment"], trained["tags"], trained["note"]) == (
        "lr-study", {"arch": "mlp", "stage": "base"}, "first try")
    result = await cli(stack, "rerun", source, "--pool", "container", "--seed", "5",
                       "--set", "training.learning_rate=0.01", "--tag", "stage=lr",
                       "--follow", "--json")
    assert result.rc == 0, result.stderr
    final = last_json(result)
    assert final["status"] == "completed" and final["job_id"] != source
    assert (final["derived_from"], final["seed"], final["epochs"]) == (source, 5, 1)
    # The changed strategy trained inline under its own name (its own model lineage); the
    # experiment and tags carried over, `--tag` overriding one, the note not.
    assert final["inline_strategy"] and final["model"]["strategy"].startswith("tiny-")
    assert (final["experiment"], final["tags"], final["note"]) == (
        "lr-study", {"arch": "mlp", "stage": "lr"}, None)
    shown = await cli(stack, "show", final["job_id"])
    assert shown.rc == 0 and f"  derived     from {source}\n" in shown.stdout

    # A plain rerun (no --set) trains the same named strategy again: a new job, same command.
    again = await cli(stack, "rerun", source, "--pool", "container", "--json")
    assert again.rc == 0, again.stderr
    new_id = json.loads(again.stdout)["job_id"]
    state = await wait_status(stack.api.client, new_id, {"completed"})
    assert (state["strategy"], state["seed"], state["derived_from"]) == ("tiny", 3, source)


async def test_a_rerun_the_strategy_refuses_names_the_key_and_submits_nothing(
    stack: Stack, trained: dict[str, Any]
) -> None:
    before = json.loads((await cli(stack, "jobs", "--json")).stdout)["total"]
    bad = await cli(stack, "rerun", trained["job_id"], "--set", "training.learning_rate=fast")
    assert bad.rc == 2 and "training.learning_rate" in bad.stderr, bad.stderr
    missing = await cli(stack, "rerun", trained["job_id"], "--set", "training.nope=1")
    assert missing.rc == 2 and "training.nope" in missing.stderr
    unknown = await cli(stack, "rerun", "run-nosuchjob")
    assert unknown.rc == 1 and "no job" in unknown.stderr
    assert json.loads((await cli(stack, "jobs", "--json")).stdout)["total"] == before

    # The API: the same request, the same verdicts.
    refused = await stack.api.client.post(f"/api/v1/jobs/{trained['job_id']}/rerun",
                                          json={"set": {"training.epochs": 0}})
    assert refused.status_code == 422 and "training.epochs" in refused.text
    accepted = await stack.api.client.post(f"/api/v1/jobs/{trained['job_id']}/rerun",
                                           json={"pool": "host", "epochs": 2})
    assert accepted.status_code == 202, accepted.text
    state = await wait_status(stack.api.client, accepted.json()["job_id"], {"completed"})
    assert (state["derived_from"], state["epochs"], state["worker"]) == (
        trained["job_id"], 2, HOST_WORKER)


async def test_a_code_failure_keeps_its_traceback_and_its_log_lines(stack: Stack) -> None:
    result = await cli(stack, "train", "tiny", "--pool", "host", "--tag", "fail=yes",
                       "--follow", "--json")
    assert result.rc == 1, result.stderr
    final = last_json(result)
    job = final["job_id"]
    assert final["status"] == "failed" and final["error"]["category"] == "code"
    frames = final["error"]["traceback"]
    assert frames[-1].startswith("ValueError: shape mismatch: 17 != 16")
    assert any(f.startswith("tests/harness/scripted.py:") and f.endswith(" shape_check")
               for f in frames)
    assert SECRET not in json.dumps(final) and "password=***" in frames[-1]
    shown = await cli(stack, "show", job)
    assert shown.rc == 0 and "traceback (most recent call last):" in shown.stdout
    assert " shape_check\n" in shown.stdout and SECRET not in shown.stdout

    logs = await cli(stack, "logs", job)
    assert logs.rc == 0, logs.stderr
    assert f"WARNING tests.research: building the model for {job}" in logs.stdout
    assert "failed (code)" in logs.stdout  # the runtime's own record of the job
    assert SECRET not in logs.stdout
    # Following a finished job prints what is stored and ends (its attempt's end line is in).
    followed = await cli(stack, "logs", job, "--follow", "--json")
    assert followed.rc == 0, followed.stderr
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    assert lines[-1]["end"] and lines[-1]["worker_id"] == HOST_WORKER
    api = (await stack.api.client.get(f"/api/v1/jobs/{job}/logs")).json()
    assert [line["message"] for line in api["lines"]] == [line["message"] for line in lines]
    later = (await stack.api.client.get(f"/api/v1/jobs/{job}/logs",
                                        params={"after": api["next_after"]})).json()
    assert later["lines"] == []
    assert (await cli(stack, "logs", "run-nosuchjob")).rc == 1
    assert (await cli(stack, "logs", "not.a.job")).rc == 2


async def test_logs_follow_prints_lines_as_the_job_logs_them(stack: Stack) -> None:
    submitted = await cli(stack, "train", "tiny", "--pool", "host", "--tag", "wait=yes",
                          "--json")
    assert submitted.rc == 0, submitted.stderr
    job = json.loads(submitted.stdout)["job_id"]
    async with start_cli("logs", job, "--follow", env=stack.env) as follower:
        await follower.read_until(f"first line of {job}".encode())
        state = (await stack.api.client.get(f"/api/v1/jobs/{job}")).json()
        assert state["status"] == "running"  # the line came live, not from a finished job
        # Annotating a running job moves the fence of its worker's next event: the worker
        # reads past it (not an owner's event) and finishes the job.
        noted = await cli(stack, "jobs", "annotate", job, "--note", "mid-run")
        assert noted.rc == 0, noted.stderr
        stack.runner.release.set()
        done = await follower.result()
    assert done.rc == 0, done.stderr
    assert f"second line of {job}" in done.stdout
    final = await wait_status(stack.api.client, job, {"completed", "failed"})
    assert (final["status"], final["note"], final["attempt"]) == ("completed", "mid-run", 1)


async def test_the_same_key_retries_a_failed_job_only_when_asked(stack: Stack) -> None:
    key = "nightly-eurusd"
    first = await cli(stack, "train", "tiny", "--pool", "host", "--tag", "fail=yes",
                      "--key", key, "--follow", "--json")
    assert first.rc == 1 and last_json(first)["status"] == "failed"
    failed_id = last_json(first)["job_id"]
    # Without --retry the key names its failed job, and says how to retry.
    same = await cli(stack, "train", "tiny", "--pool", "host", "--key", key)
    assert same.rc == 0 and failed_id in same.stdout and "--retry" in same.stdout
    retried = await cli(stack, "train", "tiny", "--pool", "host", "--key", key, "--retry",
                        "--follow", "--json")
    assert retried.rc == 0, retried.stderr
    final = last_json(retried)
    assert final["job_id"] != failed_id and final["derived_from"] == failed_id
    assert final["status"] == "completed"
    # The chain's newest job completed: the same retried command names it, no third job.
    twice = await cli(stack, "train", "tiny", "--pool", "host", "--key", key, "--retry",
                      "--json")
    assert twice.rc == 0 and json.loads(twice.stdout)["job_id"] == final["job_id"]
    assert json.loads(twice.stdout)["duplicate"]
    no_key = await cli(stack, "train", "tiny", "--retry")
    assert no_key.rc == 2 and "--key" in no_key.stderr


async def test_annotations_and_filters_organise_runs(stack: Stack,
                                                     trained: dict[str, Any]) -> None:
    job = trained["job_id"]
    annotated = await cli(stack, "jobs", "annotate", job, "--tag", "best=yes", "--untag",
                          "stage", "--note", "keep this one")
    assert annotated.rc == 0, annotated.stderr
    seq = int(annotated.stdout.rsplit("sequence ", 1)[1])
    # The CLI returns once the event is stored; the projection follows within moments.
    state = await eventually(
        lambda: _json_of(stack.api.client.get(f"/api/v1/jobs/{job}")),
        lambda s: s["last_seq"] >= seq, what="the annotation projected")
    assert state["status"] == "completed"  # a finished job is organised, not changed
    assert (state["tags"], state["note"]) == ({"arch": "mlp", "best": "yes"}, "keep this one")
    assert (await cli(stack, "jobs", "annotate", job)).rc == 2  # nothing to change
    assert (await cli(stack, "jobs", "annotate", "run-nosuchjob", "--note", "x")).rc == 1

    async def listed(*filters: str) -> list[str]:
        result = await cli(stack, "jobs", "--json", "--limit", "500", *filters)
        assert result.rc == 0, result.stderr
        return [item["job_id"] for item in json.loads(result.stdout)["items"]]

    assert await listed("--tag", "best=yes") == [job]
    assert await listed("--tag", "best", "--experiment", "lr-study") == [job]
    assert job in await listed("--experiment", "lr-study")
    assert job not in await listed("--tag", "best=no")
    assert job in await listed("--symbol", "EURUSD", "--timeframe", "1h", "--pool", "container")
    assert job not in await listed("--symbol", "USDJPY")
    assert job not in await listed("--pool", "host")
    worker = state["worker"]
    assert job in await listed("--worker", worker) and job not in await listed(
        "--worker", HOST_WORKER)
    assert job not in await listed("--since", "2999-01-01")
    assert job in await listed("--since", "2000-01-01", "--until", "2999-01-01")
    bad = await cli(stack, "jobs", "--since", "yesterday")
    assert bad.rc == 2 and "--since" in bad.stderr

    plain = await cli(stack, "jobs", "--plain", "--tag", "best=yes")
    header, row = plain.stdout.splitlines()
    cells = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert cells["experiment"] == "lr-study" and cells["tags"] == "arch=mlp,best=yes"
    assert cells["note"] == "keep this one" and cells["metric"].split()[0] in (
        "macro_f1", "accuracy", "rmse", "direction_accuracy", "mae")

    api = await stack.api.client.get("/api/v1/jobs", params=[
        ("tag", "best=yes"), ("tag", "arch=mlp"), ("experiment", "lr-study")])
    assert api.status_code == 200 and [i["job_id"] for i in api.json()["items"]] == [job]
    assert api.json()["items"][0]["metric_value"] is not None
    assert (await stack.api.client.get("/api/v1/jobs", params={"since": "soon"})).status_code \
        == 422
    posted = await stack.api.client.post(f"/api/v1/jobs/{job}/annotations",
                                         json={"note": "", "experiment": "final"})
    assert posted.status_code == 202, posted.text
    after = (await stack.api.client.get(f"/api/v1/jobs/{job}")).json()
    assert (after["note"], after["experiment"]) == (None, "final")
    refused = await stack.api.client.post(f"/api/v1/jobs/{job}/annotations",
                                          json={"tags": {"bad key": "x"}})
    assert refused.status_code == 422 and "tags" in refused.text
