"""trainbus on a 3-node JetStream cluster (tests/harness/nats_cluster.py): the stream, the buckets
and the object store replicated three times, and a node killed with SIGKILL mid-job.

- The stream leader dies while a job trains: a new leader is elected, the trainer, the backend
  and its projector (all connected to the node that died) move to another node, the job
  completes once with every epoch once, nothing is lost, the weights are those of an
  uninterrupted run, and the killed node, restarted, catches up; the audit is clean.
- A host trainer on a workstation behind NAT joins through a leaf node (its own nats-server,
  dialling out to the cluster, no JetStream of its own: it names the cluster's JetStream
  domain) and serves the `host` pool.
- Trainers on two "machines" (separate working directories, each connected to its own node,
  no shared disk) and a backend on a third: the models reach the backend only through the
  object store, and it lists and serves them; a version both machines made (`tiny/1h_v1`)
  is refused as ambiguous, naming the jobs, and each is served by its job id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.events.audit import audit
from libs.events.bus import publish_command
from libs.events.config import BusConfig
from libs.events.schema import CompletedEvent, EpochEvent, decode_event
from services.host_trainer import main as host_trainer
from services.trainers import container as container_trainer
from tests.harness.api import api_stack
from tests.harness.bus import STREAM_MAX_BYTES, TRAINER_PUBLISH_RETRY_FOR, open_bus
from tests.harness.nats_cluster import JS_DOMAIN, LeafNode, NatsCluster
from tests.harness.polling import wait_until
from tests.harness.workspace import Workspace
from tests.trainers.conftest import JobEvents, command, direct_run, running, stored_job_messages

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster") as running_cluster:
        yield running_cluster


def cluster_config(urls: tuple[str, ...], **overrides: object) -> BusConfig:
    values: dict[str, object] = {
        "urls": urls, "prefix": "ha", "replicas": 3, "stream_max_bytes": STREAM_MAX_BYTES,
        "publish_timeout": 2.0, "publish_retry_for": TRAINER_PUBLISH_RETRY_FOR,
    }
    values.update(overrides)
    return BusConfig(**values)  # type: ignore[arg-type]


async def test_the_stream_leader_killed_mid_job_loses_nothing_and_the_node_catches_up(
    cluster: NatsCluster, trainer_env: Workspace, tmp_path: Path
) -> None:
    await cluster.wait_ready()
    async with open_bus(cluster_config(cluster.urls)) as setup:
        info = await setup.js.stream_info(setup.names.stream)
        assert info.config.num_replicas == 3
        stream = setup.names.stream
    leader = await cluster.stream_leader(stream)
    # Every component connects to the leader's node alone; the others are learnt from the
    # server (its INFO lists the cluster's client URLs) and reconnected to when it dies.
    on_leader = cluster_config((cluster.url(leader),))
    cmd = command("ha-1", "long")
    async with open_bus(on_leader) as bus, api_stack(
        on_leader, trainer_env, tmp_path / "backend-models", trainer=False
    ) as api, running(container_trainer.serve, on_leader, trainer_env, tmp_path / "models"):
        async with JobEvents(bus, "ha-1") as events:
            await publish_command(bus, cmd)
            await events.wait_until(lambda: any(e.epoch >= 3 for e in events.of("epoch")),
                                    "epoch 3", timeout=120)
            assert "completed" not in events.kinds, "finished before the leader was killed"
            cluster.kill(leader)
            new_leader = await cluster.stream_leader(stream)
            assert new_leader != leader
            done = await events.wait_for("completed", "failed", timeout=180)
            assert isinstance(done, CompletedEvent), events.kinds

        # The stream: one claim, one completed, every epoch exactly once and in order.
        stored = [(subject.rsplit(".", 1)[-1], decode_event(data))
                  for _, subject, data in await stored_job_messages(bus, "ha-1")]
        kinds = [kind for kind, _ in stored]
        assert kinds.count("accepted") == 1 and kinds.count("completed") == 1, kinds
        epochs = [e.epoch for _, e in stored if isinstance(e, EpochEvent)]
        assert epochs == list(range(1, 41))

        # The backend's projector, connected to the dead node too, sees the job completed.
        async def projected() -> bool:
            response = await api.client.get("/api/v1/jobs/ha-1")
            return response.status_code == 200 and response.json()["status"] == "completed"

        await wait_until(projected, "the job completed in the API", timeout=60)
        durability = (await api.client.get("/health")).json()["durability"]
        assert durability["servers"] == 3 and set(durability["replicas"].values()) == {3}

        # The killed node comes back and catches up; the audit finds nothing.
        cluster.restart(leader)
        await cluster.replicas_current(stream)
        report = await audit(bus, catch_up_timeout=20)
        assert report.ok, report
    reference = await asyncio.to_thread(direct_run, trainer_env, tmp_path / "direct", cmd)
    assert done.model.weights_sha256 == reference.weights_sha256


async def test_trainers_without_a_shared_disk_reach_a_backend_on_a_third_machine(
    cluster: NatsCluster, trainer_env: Workspace, tmp_path: Path
) -> None:
    await cluster.wait_ready()
    n1, n2, n3 = cluster.names
    machine = {name: tmp_path / f"machine-{name}" for name in cluster.names}
    backend = cluster_config((cluster.url(n3),))
    async with open_bus(backend) as bus, api_stack(
        backend, trainer_env, machine[n3] / "models", trainer=False
    ) as api:
        async def completed(job_id: str) -> bool:
            response = await api.client.get(f"/api/v1/jobs/{job_id}")
            return response.status_code == 200 and response.json()["status"] == "completed"

        # One job per machine, one machine at a time: each numbers its versions from 1.
        for job_id, worker, node in (("far-0", "far-a", n1), ("far-1", "far-b", n2)):
            async with running(container_trainer.serve, cluster_config((cluster.url(node),)),
                               trainer_env, machine[node] / "models", worker_id=worker):
                await publish_command(bus, command(job_id, "tiny"))
                await wait_until(functools.partial(completed, job_id),
                                 f"{job_id} completed", timeout=120)
        jobs = {job_id: (await api.client.get(f"/api/v1/jobs/{job_id}")).json()
                for job_id in ("far-0", "far-1")}
        assert [job["worker"] for job in jobs.values()] == ["far-a", "far-b"]
        assert {job["model"]["version"] for job in jobs.values()} == {"1h_v1"}
        for job_id, job in jobs.items():
            # Nothing on the backend's machine but what it fetched from the object store.
            response = await api.client.get(f"/api/v1/models/tiny/{job_id}/download")
            assert response.status_code == 200, response.text
            assert response.headers["X-Trainbus-Source"] == "object store"
            assert hashlib.sha256(response.content).hexdigest() == job["model"]["sha256"]
        # Both machines made tiny/1h_v1: the version alone names two models.
        ambiguous = await api.client.get("/api/v1/models/tiny/1h_v1/download")
        assert ambiguous.status_code == 409, ambiguous.text
        assert "far-0" in ambiguous.json()["detail"] and "far-1" in ambiguous.json()["detail"]
        listed = (await api.client.get("/api/v1/models")).json()
        assert {m["job_id"] for m in listed} >= set(jobs)
        assert not (machine[n3] / "models").exists() or not any(
            (machine[n3] / "models").rglob("*.safetensors"))


async def test_a_host_trainer_behind_nat_serves_the_host_pool_through_a_leaf_node(
    cluster: NatsCluster, trainer_env: Workspace, tmp_path: Path
) -> None:
    await cluster.wait_ready()
    with LeafNode(tmp_path / "workstation", cluster) as leaf:
        await leaf.wait_connected(cluster)
        through_leaf = cluster_config((leaf.url,), js_domain=JS_DOMAIN)
        cmd = command("laptop-1", "tiny", pool="host")
        async with open_bus(cluster_config(cluster.urls)) as bus, JobEvents(
            bus, "laptop-1"
        ) as events, running(host_trainer.serve, through_leaf, trainer_env,
                             tmp_path / "workstation" / "models", worker_id="laptop"):
            await publish_command(bus, cmd)
            done = await events.wait_for("completed", "failed", timeout=120)
            assert isinstance(done, CompletedEvent), events.kinds
            [accepted] = events.of("accepted")
            assert (accepted.worker_id, accepted.worker_kind, accepted.pool) == (
                "laptop", "host", "host")
            # The model reached the cluster's object store through the leaf.
            assert done.model.object_name is not None
            assert bus.models is not None
            info = await bus.models.get_info(done.model.object_name)
            assert (info.size or 0) > 0
