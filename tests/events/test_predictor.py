"""The NATS prediction service `trainbus-predictor` against a real nats-server, with a real model
(the real-EURUSD strategy) and the real hourly EURUSD bars: replies equal the pipeline called
directly, a model only in the object store is fetched, its digest checked and installed, every
refusal is a micro error with its code, `$SRV` discovery lists the endpoints, `trainbus
predictor` stops cleanly on SIGTERM, and the shipped roles let the client ask and only the
predictor answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from libs.events import registry
from libs.events.config import BusConfig
from libs.events.models import put_bytes
from libs.pipeline.predict import backtest_window, predict_window
from libs.pipeline.storage.layout import ModelRef
from libs.pipeline.storage.models import LoadedModel, ModelStorage
from services.predictor.runner import Running, serve
from tests.harness.api import api_stack
from tests.harness.bus import open_bus
from tests.harness.market import load_real
from tests.harness.nats_server import NatsServer
from tests.harness.polling import Started, wait_status
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.real_model import STRATEGY, real_workspace, train_real_model
from tests.harness.workspace import Workspace
from tests.reliability.cluster import RoleServer

pytestmark = pytest.mark.anyio

WINDOW = {"start": "2018-01-02", "end": "2018-01-31"}
MODEL = f"{STRATEGY}/1h_v1"
ERROR_CODE, ERROR = "Nats-Service-Error-Code", "Nats-Service-Error"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path, ModelRef]:
    base = tmp_path_factory.mktemp("predictor")
    workspace = real_workspace(base / "ws")
    models_dir = base / "models"
    return workspace, models_dir, train_real_model(workspace, models_dir)


@pytest.fixture(scope="module")
def loaded(real: tuple[Workspace, Path, ModelRef]) -> LoadedModel:
    _, models_dir, ref = real
    return ModelStorage(models_dir).load(ref.strategy, ref.version, ref.timeframe)


@contextlib.asynccontextmanager
async def predictor(config: BusConfig, models_dir: Path, data_dir: Path) -> AsyncIterator[Running]:
    stop = asyncio.Event()
    ready: Started[Running] = Started()
    task = asyncio.create_task(serve(config, stop, models_dir=models_dir, data_dir=data_dir,
                                     ready=ready))
    try:
        yield await ready.wait(task, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def ask(nc: Client, subject: str, body: Any, timeout: float = 60.0) -> Msg:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await nc.request(subject, data, timeout=timeout)


async def answer(nc: Client, subject: str, body: Any) -> dict[str, Any]:
    msg = await ask(nc, subject, body)
    assert not (msg.headers or {}).get(ERROR_CODE), msg.headers
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def refusal(nc: Client, subject: str, body: Any, code: int) -> str:
    msg = await ask(nc, subject, body)
    headers = msg.headers or {}
    assert headers.get(ERROR_CODE) == str(code), (body, headers)
    assert msg.data == b""
    return headers[ERROR]


def normalised(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


async def test_predict_and_backtest_reply_what_the_pipeline_gives_and_srv_discovers_them(
    config: BusConfig, real: tuple[Workspace, Path, ModelRef], loaded: LoadedModel
) -> None:
    workspace, models_dir, _ = real
    async with open_bus(config) as bus, predictor(config, models_dir,
                                                  workspace.data_dir) as running:
        subjects = running.subjects
        assert subjects == {"predict": f"{config.prefix}.svc.predict",
                            "backtest": f"{config.prefix}.svc.backtest"}
        reply = await answer(bus.nc, subjects["predict"], {"model": MODEL, **WINDOW})
        direct = predict_window(loaded, data_dir=workspace.data_dir, **WINDOW)
        assert reply["predictions"] == [row for p in direct for row in p.rows()]
        assert reply["model"]["source"] == "disk" and reply["model"]["ref"] == MODEL
        backtest = await answer(bus.nc, subjects["backtest"],
                                {"model": f"{STRATEGY}/latest", **WINDOW, "costs": 0.0001})
        assert backtest["backtest"] == normalised(backtest_window(loaded, direct, costs=0.0001))
        assert running.predictions.models.cached() == [MODEL]  # loaded once, reused

        # Discovery: `nats micro ls|info|stats` ask these.
        ping = json.loads((await ask(bus.nc, "$SRV.PING.trainbus-predictor", b"")).data)
        assert ping["name"] == "trainbus-predictor" and ping["id"] == running.service.id
        info = json.loads((await ask(bus.nc, "$SRV.INFO", b"")).data)
        assert info["name"] == "trainbus-predictor"
        assert [(e["name"], e["subject"], e["queue_group"]) for e in info["endpoints"]] == [
            ("predict", subjects["predict"], "q"), ("backtest", subjects["backtest"], "q")]
        assert info["endpoints"][0]["metadata"]["request"] == "predictor.predict.request.json"
        await refusal(bus.nc, subjects["predict"], {"model": "nope/1h_v1"}, 404)
        stats = json.loads((await ask(bus.nc, f"$SRV.STATS.trainbus-predictor.{running.service.id}",
                                      b"")).data)
        counts = {e["name"]: (e["num_requests"], e["num_errors"]) for e in stats["endpoints"]}
        assert counts == {"predict": (2, 1), "backtest": (1, 0)}


async def test_refusals_are_micro_errors_with_their_code_and_field(
    config: BusConfig, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    prices = load_real("EURUSD", "1h")
    bars = [{"time": t.isoformat(), "open": r.open, "high": r.high, "low": r.low,
             "close": r.close} for t, r in zip(prices.index[:150], prices.itertuples(),
                                                strict=False)]
    async with open_bus(config) as bus, predictor(config, models_dir,
                                                  workspace.data_dir) as running:
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v1", by="test",
                                 expires_after=None, reason=None, models_dir=models_dir)
        await registry.set_alias(bus, STRATEGY, "stale", "1h_v1", by="test",
                                 expires_after=0.2, reason=None, models_dir=models_dir)
        predict = running.subjects["predict"]
        champion = await answer(bus.nc, predict, {"model": f"{STRATEGY}@champion", **WINDOW})
        assert champion["model"]["ref"] == f"{STRATEGY}@champion"
        assert champion["model"]["version"] == "1h_v1"
        await asyncio.sleep(0.3)
        broken = [dict(b) for b in bars]
        del broken[2]["high"]
        for body, code, start in (
            (b"{not json", 400, "the request is not JSON"),
            (WINDOW, 422, "model: Object missing required field `model`"),
            ({"model": MODEL, "when": 1}, 422, "when: Object contains unknown field `when`"),
            ({"model": "no/slash/here"}, 422, "model:"),
            ({"model": MODEL, "bars": broken}, 422, "bars: Object missing required field `high`"),
            ({"model": "nope/1h_v1"}, 404, "version:"),
            ({"model": f"{STRATEGY}/1h_v7"}, 404, "version:"),
            ({"model": f"{STRATEGY}@nobody"}, 404, "alias:"),
            ({"model": f"{STRATEGY}@stale", **WINDOW}, 409, "alias:"),
            ({"model": MODEL, "start": "2019-01-01", "end": "2019-02-01"}, 422, "start:"),
            ({"model": MODEL, "symbols": ["GBPUSD"]}, 422, "symbols: no price data for GBPUSD"),
            ({"model": MODEL, "bars": bars, "start": prices.index[50].isoformat()}, 422,
             "bars: EURUSD: 50 bars before"),
        ):
            description = await refusal(bus.nc, predict, body, code)
            assert description.startswith(start), (body, description)
        expired = await refusal(bus.nc, running.subjects["backtest"],
                                {"model": f"{STRATEGY}@stale"}, 409)
        assert "expired" in expired


async def test_a_model_only_in_the_object_store_is_fetched_checked_and_installed(
    config: BusConfig, real: tuple[Workspace, Path, ModelRef], tmp_path: Path
) -> None:
    workspace = real[0]
    trainer_models = tmp_path / "trainer-models"
    async with api_stack(config, workspace, trainer_models) as stack:
        response = await stack.client.post("/api/v1/trainings", json={"strategy": STRATEGY})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        state = await wait_status(stack.client, job_id, {"completed", "failed"}, timeout=180)
        assert state["status"] == "completed", state
        model = state["model"]
    trained = ModelStorage(trainer_models).load(STRATEGY, "latest")
    direct = predict_window(trained, data_dir=workspace.data_dir, **WINDOW)
    here = tmp_path / "predictor-models"  # nothing on this predictor's disk
    async with open_bus(config) as bus, predictor(config, here, workspace.data_dir) as running:
        first = await answer(bus.nc, running.subjects["predict"],
                             {"model": f"{STRATEGY}/{model['version']}", **WINDOW})
        assert first["predictions"] == [row for p in direct for row in p.rows()]
        assert first["model"]["source"] == "object store" and first["model"]["job_id"] == job_id
        installed = here / STRATEGY / model["version"]
        assert (installed / "model.safetensors").read_bytes() == (
            Path(model["local_path"]) / "model.safetensors").read_bytes()
        # Installed and cached: the version is now on this disk (the load is reused), and the
        # job id still names the fetched model.
        again = await answer(bus.nc, running.subjects["predict"],
                             {"model": f"{STRATEGY}/{model['version']}", **WINDOW})
        assert again["predictions"] == first["predictions"]
        assert again["model"]["source"] == "disk"
        by_job = await answer(bus.nc, running.subjects["predict"],
                              {"model": f"{STRATEGY}/{job_id}", **WINDOW})
        assert by_job["predictions"] == first["predictions"]
        assert len(running.predictions.models.cached()) == 2  # the archive's and the disk's key

        # An object whose bytes are not the ones the job recorded is refused, never served.
        await put_bytes(bus, model["object_name"], b"not the model", description="tampered")
    elsewhere = tmp_path / "other-predictor-models"
    async with open_bus(config) as bus, predictor(config, elsewhere,
                                                  workspace.data_dir) as running:
        detail = await refusal(bus.nc, running.subjects["predict"],
                               {"model": f"{STRATEGY}/{model['version']}", **WINDOW}, 409)
        assert "SHA-256" in detail
    assert not (elsewhere / STRATEGY).exists()


async def test_trainbus_predictor_serves_until_sigterm_then_stops_cleanly(
    nats_server_module: NatsServer, unique_prefix: str, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    env = clean_env(NATS_URL=nats_server_module.url, TRAINBUS_SUBJECT_PREFIX=unique_prefix)
    proc = await asyncio.create_subprocess_exec(
        TRAINBUS, "predictor", "--models-dir", str(models_dir), "--data-dir",
        str(workspace.data_dir), env=env, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        lines: list[str] = []
        while not any(f"{unique_prefix}.svc.predict" in line for line in lines):
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, "".join(lines)
            lines.append(line.decode())
        nc = Client()
        await nc.connect(nats_server_module.url)
        try:
            reply = await answer(nc, f"{unique_prefix}.svc.predict", {"model": MODEL, **WINDOW})
            assert len(reply["predictions"]) == 528
        finally:
            await nc.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = (await proc.stderr.read()).decode()
        assert "trainbus-predictor stopped" in rest, "".join(lines) + rest
        assert "Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="nats-server roles config")
async def test_under_the_shipped_roles_the_client_asks_and_only_the_predictor_answers(
    tmp_path: Path, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    with RoleServer(tmp_path) as server:
        async with open_bus(server.bus_config("backend")):
            pass  # the backend sets JetStream up (its job under roles)
        async with predictor(server.bus_config("predictor"), models_dir, workspace.data_dir):
            client = Client()
            errors: list[Exception] = []

            async def on_error(exc: Exception) -> None:
                errors.append(exc)

            await client.connect(server.url, user="client",
                                 password=server.passwords["client"], error_cb=on_error)
            try:
                reply = await answer(client, "trainbus.svc.predict",
                                     {"model": f"{STRATEGY}/latest", **WINDOW})
                assert reply["model"]["version"] == "1h_v1"
                info = json.loads((await ask(client, "$SRV.INFO.trainbus-predictor", b"")).data)
                assert [e["name"] for e in info["endpoints"]] == ["predict", "backtest"]
                assert server.violations() == []
                # Nobody but the predictor may take prediction requests.
                await client.subscribe("trainbus.svc.predict", queue="q")
                await client.flush()
                await asyncio.sleep(0.2)
            finally:
                await client.close()
        violations = server.violations()
        assert len(violations) == 1 and "Subscription Violation" in violations[0], violations
        assert "trainbus.svc.predict" in violations[0]


def test_docs_schemas_hold_the_predictor_schemas() -> None:
    """docs/schemas/predictor.*.json are `trainbus schema export docs/schemas`'s: regenerate
    them when the predictor's messages change."""
    from libs.events.jsonschema import encode_schema
    from services.predictor.messages import json_schemas
    from tests.harness.strategies import ROOT

    schemas = json_schemas()
    assert sorted(schemas) == ["predictor.backtest.reply.json", "predictor.backtest.request.json",
                               "predictor.predict.reply.json", "predictor.predict.request.json"]
    for name, schema in schemas.items():
        assert (ROOT / "docs" / "schemas" / name).read_bytes() == encode_schema(schema), name
    request = schemas["predictor.predict.request.json"]
    assert "model" in request["required"]
    assert {"model", "start", "end", "symbols", "symbol", "bars"} == set(request["properties"])


async def test_a_reply_over_the_servers_max_payload_is_a_413_naming_end(
    tmp_path: Path, real: tuple[Workspace, Path, ModelRef]
) -> None:
    workspace, models_dir, _ = real
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 32768\n")  # a month of hourly predictions is ~70 KiB
    with NatsServer(tmp_path / "js", extra_args=("-c", str(conf))) as server:
        config = BusConfig(urls=(server.url,), prefix="small")
        async with predictor(config, models_dir, workspace.data_dir) as running:
            nc = Client()
            await nc.connect(server.url)
            try:
                detail = await refusal(nc, running.subjects["predict"],
                                       {"model": MODEL, **WINDOW}, 413)
                assert detail.startswith("end: the reply is ") and "32768" in detail
                small = await answer(nc, running.subjects["predict"],
                                     {"model": MODEL, "start": "2018-01-30", "end": "2018-01-30"})
                assert len(small["predictions"]) == 24
            finally:
                await nc.close()
