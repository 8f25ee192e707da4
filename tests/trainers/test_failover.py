"""Crashes: a trainer process SIGKILLed mid-training, and the NATS server SIGKILLed mid-job.

The trainers here are real processes (`trainbus container-trainer ...`) with a short lease
(ack_wait 4 s) so a dead worker's job is redelivered quickly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.events.bus import Bus, publish_command, publish_event
from libs.events.errors import FencedOut
from libs.events.fold import fold_all
from libs.events.heartbeat import read_workers
from libs.events.log import read_log
from libs.events.schema import CompletedEvent, EpochEvent, decode_event
from services.trainers import container as container_trainer
from tests.harness.bus import open_bus, trainer_bus_config
from tests.harness.nats_server import NatsServer
from tests.harness.polling import wait_until
from tests.harness.processes import TRAINBUS
from tests.harness.workspace import Workspace
from tests.trainers.conftest import JobEvents, command, direct_run, running, stored_job_messages

pytestmark = pytest.mark.anyio
ACK_WAIT = 4.0


@dataclass(frozen=True)
class Logged:
    """One trainer process and its log (what `wait_until` watches)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class TrainerProcesses:
    """`trainbus container-trainer` subprocesses, killed at the end whatever happens."""

    def __init__(self, server: NatsServer, prefix: str, env: Workspace, root: Path) -> None:
        self.server, self.prefix, self.env, self.root = server, prefix, env, root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, worker_id: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{worker_id}.log").open("wb")
        proc = subprocess.Popen(
            [TRAINBUS, "container-trainer", "--nats-url", self.server.url,
             "--worker-id", worker_id, "--data-dir", str(self.env.data_dir),
             "--strategies-dir", str(self.env.strategies_dir),
             "--models-dir", str(self.root / f"models-{worker_id}"),
             "--checkpoint-every", "1", "--checkpoint-interval", "0",
             "--ack-wait", str(ACK_WAIT)],
            env={**os.environ, "TRAINBUS_SUBJECT_PREFIX": self.prefix, "OMP_NUM_THREADS": "1"},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        self.procs[worker_id] = proc
        return proc

    def watched(self, worker_id: str) -> Logged:
        return Logged(worker_id, self.procs[worker_id], self.root / f"{worker_id}.log")

    def log_of(self, worker_id: str) -> str:
        return self.watched(worker_id).log_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def trainer_processes(
    nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace, tmp_path: Path
) -> Iterator[TrainerProcesses]:
    procs = TrainerProcesses(nats_server_module, unique_prefix, trainer_env, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


async def wait_worker(bus: Bus, worker_id: str, procs: TrainerProcesses) -> None:
    async def live() -> bool:
        return worker_id in [w.worker_id for w in await read_workers(bus)]

    await wait_until(live, f"worker {worker_id}'s heartbeat", timeout=90, interval=0.1,
                     procs=(procs.watched(worker_id),))


async def test_a_killed_trainer_s_job_resumes_on_another_and_ends_with_the_same_weights(
    nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
    tmp_path: Path, trainer_processes: TrainerProcesses,
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix, ack_wait=ACK_WAIT)
    cmd = command("crash-1", "long")
    async with open_bus(config) as bus, JobEvents(bus, "crash-1") as events:
        victim = trainer_processes.start("victim")
        await wait_worker(bus, "victim", trainer_processes)
        await publish_command(bus, cmd)
        await events.wait_for("accepted")
        trainer_processes.start("rescuer")  # starts while the victim trains (idle, pulling)
        # Kill the victim once it has stored a checkpoint past the first epoch.
        def checkpointed() -> bool:
            assert "completed" not in events.kinds, "finished before it could be killed"
            return any(c.epoch >= 2 for c in events.of("checkpoint"))

        await events.wait_until(checkpointed, "checkpoint of epoch 2", timeout=120)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at_epoch = max(e.epoch for e in events.of("epoch"))
        done = await events.wait_for("completed", "failed", timeout=120)
        assert isinstance(done, CompletedEvent), (events.kinds, trainer_processes.log_of("rescuer"))

        # Check the rescuer claimed attempt 2 and resumed from the victim's last checkpoint.
        accepted = events.of("accepted")
        assert [(a.attempt, a.worker_id) for a in accepted] == [(1, "victim"), (2, "rescuer")]
        resumed = events.of("resumed")
        assert len(resumed) == 1 and resumed[0].worker_id == "rescuer"
        last_victim_checkpoint = [c for c in events.of("checkpoint") if c.attempt == 1][-1]
        assert resumed[0].from_epoch == last_victim_checkpoint.epoch
        assert resumed[0].from_epoch >= 2 and resumed[0].from_epoch <= killed_at_epoch
        rescuer_epochs = [e.epoch for e in events.of("epoch") if e.attempt == 2]
        assert rescuer_epochs == list(range(resumed[0].from_epoch + 1, 41))

        # Check the dead worker's late events are ignored: a late one is fenced out by the
        # server, and even one forced in unfenced changes nothing in the fold.
        late = EpochEvent(job_id="crash-1", attempt=1, worker_id="victim", time=time.time(),
                          epoch=41, total_epochs=40, train_loss=9.0)
        victim_last = max(s.seq for s in events.items if s.event.worker_id == "victim")
        with pytest.raises(FencedOut):
            await publish_event(bus, late, n=999, expected_last_subject_seq=victim_last)
        await publish_event(bus, late, n=1000)
        messages: list = []
        await read_log(bus.js, bus.names, messages.append)
        state = fold_all(messages)["crash-1"]
        assert state.status == "completed" and state.worker == "rescuer" and state.attempt == 2
        assert [m.epoch for m in state.history] == list(range(1, 41))
        assert state.model is not None
        assert state.model.weights_sha256 == done.model.weights_sha256

    # Check: the same weights as an uninterrupted run of the same command.
    reference = await asyncio.to_thread(direct_run, trainer_env, tmp_path / "direct", cmd)
    assert done.model.weights_sha256 == reference.weights_sha256
    assert [e.train_loss for e in events.of("epoch") if e.attempt == 2] == \
        [h.train_loss for h in reference.history][resumed[0].from_epoch:]


async def test_a_nats_server_killed_and_restarted_mid_job_loses_and_doubles_nothing(
    nats_server: NatsServer, trainer_env: Workspace, tmp_path: Path
) -> None:
    config = trainer_bus_config(nats_server, "restart")
    cmd = command("survive", "long")
    async with open_bus(config) as bus, running(
        container_trainer.serve, config, trainer_env, tmp_path / "models"
    ):
        async with JobEvents(bus, "survive") as events:
            await publish_command(bus, cmd)
            await events.wait_until(lambda: any(e.epoch >= 3 for e in events.of("epoch")),
                                    "epoch 3", timeout=120)
            nats_server.kill()
            await asyncio.sleep(1.5)
            nats_server.start()
            done = await events.wait_for("completed", "failed", timeout=120)
            assert isinstance(done, CompletedEvent), events.kinds
        # Check the stream itself: one claim, one completed, every epoch exactly once, in
        # order, all from the one attempt; no event twice.
        stored = [(seq, subject.rsplit(".", 1)[-1], decode_event(data))
                  for seq, subject, data in await stored_job_messages(bus, "survive")]
        kinds = [k for _, k, _ in stored]
        assert kinds.count("accepted") == 1 and kinds.count("completed") == 1
        assert kinds[-1] == "completed"
        epochs: list[int] = []
        for _, k, e in stored:
            if k == "epoch":
                assert isinstance(e, EpochEvent), e
                epochs.append(e.epoch)
        assert epochs == list(range(1, 41))
        assert {e.attempt for _, _, e in stored} == {1}
        assert len({(k, msgid_key(e)) for _, k, e in stored}) == len(stored)
        messages: list = []
        await read_log(bus.js, bus.names, messages.append)
        assert fold_all(messages)["survive"].status == "completed"
    reference = await asyncio.to_thread(direct_run, trainer_env, tmp_path / "direct", cmd)
    assert done.model.weights_sha256 == reference.weights_sha256


def msgid_key(event: object) -> tuple:
    """What makes an event unique within one attempt (its content, minus nothing)."""
    import msgspec

    return tuple(sorted((k, repr(v)) for k, v in msgspec.to_builtins(event).items()))


async def test_sigterm_drains_a_trainer_and_another_resumes_mid_epoch_to_the_same_weights(
    nats_server_module: NatsServer, unique_prefix: str, trainer_env: Workspace,
    tmp_path: Path, trainer_processes: TrainerProcesses,
) -> None:
    config = trainer_bus_config(nats_server_module, unique_prefix, ack_wait=ACK_WAIT)
    cmd = command("drain-1", "long")
    async with open_bus(config) as bus, JobEvents(bus, "drain-1") as events:
        worker = trainer_processes.start("draining")
        await wait_worker(bus, "draining", trainer_processes)
        await publish_command(bus, cmd)
        def trained_two_epochs() -> bool:
            assert "completed" not in events.kinds
            return any(e.epoch >= 2 for e in events.of("epoch"))

        await events.wait_until(trained_two_epochs, "epoch 2", timeout=120)
        await asyncio.sleep(0.05)  # somewhere inside the next epoch
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(worker.wait, 30)
        # Check a bounded, clean exit, and the drain's checkpoint as the last event.
        assert code == 0, trainer_processes.log_of("draining")
        assert time.monotonic() - started < 10
        assert events.kinds[-2:] == ["checkpoint", "released"], events.kinds
        handed_back = events.of("checkpoint")[-1]
        log = trainer_processes.log_of("draining")
        assert "released for another worker" in log and "stopped" in log
        # Another worker picks it up at once (nak, no ack_wait to sit out) and finishes it.
        async with running(container_trainer.serve, config, trainer_env, tmp_path / "m2"):
            done = await events.wait_for("completed", "failed", timeout=120)
        assert isinstance(done, CompletedEvent)
        resumed = events.of("resumed")[0]
        assert resumed.checkpoint == handed_back.object_name
    # Check: resuming mid-epoch still ends with the uninterrupted run's weights.
    reference = await asyncio.to_thread(direct_run, trainer_env, tmp_path / "direct", cmd)
    assert done.model.weights_sha256 == reference.weights_sha256
    assert [e.train_loss for e in events.of("epoch") if e.attempt == 2] == \
        [h.train_loss for h in reference.history][resumed.from_epoch:]
