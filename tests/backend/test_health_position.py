"""`/health` reports whether the projection's position can be trusted, not only its lag: a
forged `_checkpoint` beyond the stream's end used to read as "ok, lag 0". Real app (uvicorn),
real nats-server, real projector."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from libs.events.bus import publish_command
from libs.events.config import BusConfig
from libs.events.projector import Checkpoint, Projector
from libs.events.subjects import CHECKPOINT_KEY
from tests.events.builders import train_command
from tests.harness.api import api_stack
from tests.harness.bus import open_bus
from tests.harness.polling import eventually
from tests.harness.workspace import Workspace

pytestmark = pytest.mark.anyio
FORGED_SEQ = 999_999_999


def forged(stream: str) -> bytes:
    return msgspec.json.encode(Checkpoint(seq=FORGED_SEQ, stream=stream, time=0.0))


async def test_health_is_not_ok_while_the_stored_position_is_beyond_the_stream(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    async with open_bus(config) as bus, api_stack(
        config, workspace, tmp_path / "models", trainer=False, projector="external"
    ) as stack:
        receipt = await publish_command(bus, train_command("health-job"))
        async with Projector(bus) as projector:
            await projector.wait_for(receipt.seq)
        healthy = await stack.client.get("/health")
        assert healthy.status_code == 200, healthy.text
        expected = {"position": receipt.seq, "stream_last_seq": receipt.seq,
                    "consistent": True, "lag": 0, "problems": []}
        assert expected.items() <= healthy.json()["projector"].items()

        assert bus.jobs is not None
        await bus.jobs.put(CHECKPOINT_KEY, forged(bus.names.stream))
        blinded = await stack.client.get("/health")
        assert blinded.status_code == 503
        body = blinded.json()
        assert body["status"] == "unavailable" and body["stream"]["ok"] is True
        assert body["projector"]["consistent"] is False
        assert body["projector"]["position"] == FORGED_SEQ
        assert body["projector"]["stream_last_seq"] == receipt.seq
        assert body["projector"]["problems"] == [
            f"_checkpoint is at sequence {FORGED_SEQ}, beyond the stream's last sequence "
            f"{receipt.seq}"]

        await bus.jobs.put(CHECKPOINT_KEY, b"garbage")
        garbled = (await stack.client.get("/health")).json()["projector"]
        assert garbled["consistent"] is False and "does not decode" in garbled["problems"][0]

        # A projector (re)start rebuilds from the log and health is ok again.
        async with Projector(bus) as projector:
            await projector.wait_for(receipt.seq)
            again = await eventually(lambda: stack.client.get("/health"),
                                     lambda r: r.status_code == 200, what="/health 200")
        assert again.json()["projector"]["consistent"] is True


async def test_the_embedded_projector_rebuilds_at_start_and_health_says_when(
    config: BusConfig, workspace: Workspace, tmp_path: Path
) -> None:
    async with open_bus(config) as bus:
        receipt = await publish_command(bus, train_command("before-start"))
        assert bus.jobs is not None
        await bus.jobs.put(CHECKPOINT_KEY, forged(bus.names.stream))
        async with api_stack(config, workspace, tmp_path / "models", trainer=False) as stack:
            health = await eventually(
                lambda: stack.client.get("/health"),
                lambda r: r.json()["projector"].get("position") == receipt.seq,
                what="the rebuild to reach the command")
            assert health.status_code == 200, health.text
            projector = health.json()["projector"]
            assert projector["mode"] == "embedded" and projector["consistent"] is True
            job = await stack.client.get("/api/v1/jobs/before-start")
            assert job.json()["status"] == "queued"
            assert projector["rebuilt_at"] is not None
            assert f"sequence {FORGED_SEQ}" in projector["rebuild_reason"]
