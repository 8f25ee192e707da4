"""The chaos and load scenarios, shared by the tests (small, in CI) and bench/ (long, by hand).

Everything runs as real processes under the shipped role config: nats-server, `trainbus
backend` (API, auth on, projector external), `trainbus projector`, container and host
trainers, and the CLI for the audit. The scenario functions return a report; the tests assert
on it, bench/chaos.py and bench/load.py print it (docs/reliability.md has the figures).

Either deployment runs on one nats-server (`RoleServer`) or on a 3-node cluster under the
shipped cluster config (`RoleCluster`, tests/reliability/role_cluster.py; the plan's
`cluster`): then every process gets the three URLs and the stream, buckets and object store
are R3, and the chaos run's NATS faults kill one node at a time (the stream leader first,
then a follower, alternately) and restart it once the job it hit has trained another epoch
on the two left.

Faults are triggered by progress, not by the clock: "kill the trainer that runs job J once it
has finished epoch E" (J and E drawn from a seeded RNG), so a run is reproducible in what it
does, if not to the millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats.errors
import nats.js.errors

from libs.events.bus import Bus, connect, publish_command
from libs.events.fold import fold_all
from libs.events.log import LogMessage, read_log
from libs.events.models import fetch_model
from libs.events.schema import (
    AcceptedEvent,
    CompletedEvent,
    EpochEvent,
    FailedEvent,
    TrainCommand,
    decode_event,
)
from libs.events.setup import open_jetstream
from tests.harness.polling import TERMINAL, wait_until
from tests.reliability.cluster import (
    STRATEGIES,
    SYMBOLS,
    Cluster,
    Proc,
    RoleServer,
    Workspace,
    make_workspace,
    wait_http_ok,
    wait_workers,
)
from tests.reliability.role_cluster import RoleCluster

STREAM = "TRAINBUS"
Say = Callable[[str], None]


def _quiet(_text: str) -> None:
    pass


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- a running deployment ----------------------------------------------------------------------


@dataclass
class Deployment:
    cluster: Cluster
    server: RoleServer | RoleCluster
    workspace: Workspace
    admin: Bus
    client: Bus
    backend: Proc
    projector: Proc
    trainers: list[str]

    @property
    def procs(self) -> tuple[Proc, ...]:
        return tuple(self.cluster.procs.values())

    def sample_rss(self) -> None:
        for proc in self.cluster.procs.values():
            proc.sample_rss()

    def nats_rss_kib(self) -> dict[str, int]:
        """Peak RSS (VmHWM, KiB) of each running nats-server, by name."""
        pids = (self.server.pids() if isinstance(self.server, RoleCluster)
                else {"": self.server.pid} if self.server.pid is not None else {})
        out: dict[str, int] = {}
        for name, pid in pids.items():
            key = f"nats-server {name}".strip()
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[key] = int(line.split()[1])
        return out


async def deploy(root: Path, *, containers: int, hosts: int, ack_wait: float,
                 max_deliver: int, cluster: bool = False, say: Say = _quiet) -> Deployment:
    """NATS under the role config (one server, or a 3-node `RoleCluster` when `cluster`),
    backend + projector, then the trainers; all ready."""
    workspace = make_workspace(root / "ws")
    server: RoleServer | RoleCluster
    if cluster:
        server = RoleCluster(root / "nats")
        server.start()
        await server.wait_ready()
        where = f"nats cluster {', '.join(server.urls)}"
    else:
        server = RoleServer(root / "nats")
        server.start()
        where = f"nats {server.url}"
    procs = Cluster(server, workspace, root / "logs", ack_wait=ack_wait,
                    max_deliver=max_deliver)
    backend = procs.backend().start()
    projector = procs.projector().start()
    await wait_http_ok(procs.api_url(), backend)
    say(f"{where}, backend {procs.api_url()}, projector started")
    trainers = [f"c{i + 1}" for i in range(containers)] + [f"h{i + 1}" for i in range(hosts)]
    for name in trainers:
        procs.trainer(name, "host" if name.startswith("h") else "container").start()
    admin = await connect(server.bus_config("admin"))
    await open_jetstream(admin)
    await wait_workers(admin, trainers, tuple(procs.procs.values()), timeout=240)
    client = await connect(server.bus_config("client"))
    await open_jetstream(client)
    say(f"trainers ready: {', '.join(trainers)}")
    return Deployment(procs, server, workspace, admin, client, backend, projector, trainers)


async def undeploy(dep: Deployment) -> dict[str, int]:
    """SIGTERM every process (trainers first), the exit codes by name; then the server."""
    codes: dict[str, int] = {}
    for bus in (dep.client, dep.admin):
        with contextlib.suppress(Exception):
            await bus.close()
    order = [*dep.trainers, "projector", "backend"]
    for name in order:
        proc = dep.cluster.procs[name]
        if proc.running:
            codes[name] = await asyncio.to_thread(proc.terminate, 60.0)
    dep.cluster.stop_all()
    dep.server.stop()
    return codes


async def submit(dep: Deployment, http: httpx.AsyncClient, index: int, *, strategy: str,
                 seed: int, over_api: bool, prefix: str) -> tuple[str, TrainCommand]:
    """One job, over the API (bearer token, pool auto) or raw NATS (client role, pool any)."""
    command = TrainCommand(job_id=f"{prefix}-{index:03d}", strategy=strategy, symbols=SYMBOLS,
                           timeframes=("1h",), seed=seed)
    if over_api:
        response = await http.post("/api/v1/trainings", json={
            "strategy": strategy, "symbols": list(SYMBOLS), "timeframes": ["1h"],
            "seed": seed, "idempotency_key": f"{prefix}-{index}"})
        if response.status_code != 202:
            raise AssertionError(f"API refused job {index}: {response.text}")
        return response.json()["job_id"], command
    receipt = await publish_command(dep.client, command, pool="any")
    return receipt.job_id, command


async def last_event(bus: Bus, subject: str) -> tuple[str, Any] | None:
    """(kind, event) of the last message on `subject`; None when none (or NATS is away)."""
    try:
        raw = await bus.js.get_last_msg(STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return None
    kind = str(raw.subject).rsplit(".", 1)[-1]
    try:
        return kind, decode_event(raw.data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return kind, None


async def is_terminal(bus: Bus, job_id: str) -> bool:
    last = await last_event(bus, f"trainbus.evt.{job_id}.>")
    return last is not None and last[0] in TERMINAL


async def read_all(bus: Bus) -> list[LogMessage]:
    messages: list[LogMessage] = []
    await read_log(bus.js, bus.names, messages.append, stall_timeout=30)
    return messages


async def model_objects(bus: Bus) -> list[str]:
    store = await bus.js.object_store("trainbus_models")
    try:
        infos = await store.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    return sorted(str(i.name) for i in infos if not i.deleted)


def reference_weights(workspace: Workspace, root: Path, commands: list[TrainCommand]
                      ) -> dict[int, str]:
    """weights_sha256 of an uninterrupted TrainingPipeline.run per distinct seed."""
    import torch

    from tests.trainers.conftest import direct_run

    torch.set_num_threads(1)  # beside the trainer processes (same weights, less thrashing)
    out: dict[int, str] = {}
    for command in commands:
        assert command.seed is not None, command.job_id  # `submit` always sets one
        if command.seed not in out:
            result = direct_run(workspace, root / f"direct-{command.seed}", command)
            out[command.seed] = result.weights_sha256
    return out


# --- chaos -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosPlan:
    jobs: int = 8
    containers: int = 2
    hosts: int = 2
    trainer_kills: int = 3
    nats_kills: int = 1
    projector_kills: int = 1
    seed: int = 20261128
    strategy: str = "mid"
    seeds: int = 3  # distinct training seeds: one reference run each
    api_every: int = 4  # every 4th job over the API, the rest over raw NATS
    ack_wait: float = 4.0
    max_deliver: int = 10
    timeout: float = 600.0
    # A 3-node cluster: each of the `nats_kills` kills one node (leader, follower, ...).
    cluster: bool = False


@dataclass
class Fault:
    kind: str  # trainer | nats (the single server) | node (one of the cluster's) | projector
    job: int
    epoch: int
    at: float = 0.0  # seconds into the run when it was injected
    detail: str = ""


@dataclass
class JobOutcome:
    job_id: str
    seed: int
    status: str
    attempts: int
    completed_events: int
    failed_events: int
    failure: str | None
    epochs_missing: list[int]
    weights_ok: bool | None
    workers: list[str]


@dataclass
class ChaosReport:
    plan: ChaosPlan
    duration: float
    faults: list[Fault]
    jobs: list[JobOutcome]
    audit_ok: bool
    audit: dict[str, Any]
    log_messages: int
    model_objects: int
    orphan_models: list[str]
    leftover_checkpoints: int
    exit_codes: dict[str, int]
    violations: int

    @property
    def completed(self) -> int:
        return sum(j.status == "completed" for j in self.jobs)

    @property
    def completed_twice(self) -> int:
        return sum(j.completed_events > 1 for j in self.jobs)

    @property
    def events_lost(self) -> int:
        return sum(len(j.epochs_missing) for j in self.jobs)

    @property
    def redelivered(self) -> int:
        return sum(j.attempts > 1 for j in self.jobs)

    def lines(self) -> list[str]:
        kinds = Counter(f.kind for f in self.faults)
        return [
            f"jobs run: {len(self.jobs)} ({self.completed} completed, "
            f"{sum(j.status == 'failed' for j in self.jobs)} failed), "
            f"{self.redelivered} resumed on another attempt",
            f"faults injected: {len(self.faults)} ({kinds['trainer']} trainer kill -9 + restart, "
            + (f"{kinds['node']} NATS node kill -9 + restart "
               f"({sum('stream leader' in f.detail for f in self.faults)} of the stream "
               f"leader), " if self.plan.cluster else
               f"{kinds['nats']} nats-server kill -9 + restart, ")
            + f"{kinds['projector']} projector kill -9 + restart)",
            f"events lost: {self.events_lost}; jobs completed twice: {self.completed_twice}; "
            f"models with the uninterrupted run's weights: "
            f"{sum(bool(j.weights_ok) for j in self.jobs)}/{self.completed}",
            f"audit: {'no difference' if self.audit_ok else 'DIFFERENCES'} "
            f"({self.audit.get('jobs')} jobs replayed to seq {self.audit.get('replayed_to')}); "
            f"log messages: {self.log_messages}",
            f"models in the object store: {self.model_objects} (orphans: "
            f"{len(self.orphan_models)}); leftover checkpoints: {self.leftover_checkpoints}",
            f"permission violations: {self.violations}; exit codes on SIGTERM: "
            f"{sorted(set(self.exit_codes.values()))}; wall time {self.duration:.0f}s",
        ]


async def run_chaos(root: Path, plan: ChaosPlan = ChaosPlan(), *, say: Say = _quiet
                    ) -> ChaosReport:
    rng = random.Random(plan.seed)
    epochs = int(STRATEGIES[plan.strategy]["epochs"])
    faults = (
        [Fault("trainer", rng.randrange(plan.jobs), rng.randint(2, epochs - 2))
         for _ in range(plan.trainer_kills)]
        + [Fault("node" if plan.cluster else "nats", rng.randrange(plan.jobs),
                 rng.randint(2, epochs - 2))
           for _ in range(plan.nats_kills)]
        + [Fault("projector", rng.randrange(plan.jobs), rng.randint(2, epochs - 2))
           for _ in range(plan.projector_kills)]
    )
    faults.sort(key=lambda f: (f.job, f.epoch))
    dep = await deploy(root, containers=plan.containers, hosts=plan.hosts,
                       ack_wait=plan.ack_wait, max_deliver=plan.max_deliver,
                       cluster=plan.cluster, say=say)
    exit_codes: dict[str, int] = {}
    try:
        started = time.monotonic()
        jobs: list[str] = []
        commands: list[TrainCommand] = []
        http = httpx.AsyncClient(base_url=dep.cluster.api_url(), timeout=60, headers={
            "Authorization": f"Bearer {dep.cluster.api_token}"})
        async with http:
            for i in range(plan.jobs):
                job_id, command = await submit(
                    dep, http, i, strategy=plan.strategy, seed=i % plan.seeds,
                    over_api=i % plan.api_every == plan.api_every - 1, prefix="chaos")
                jobs.append(job_id)
                commands.append(command)
        say(f"submitted {plan.jobs} jobs; faults planned: "
            + ", ".join(f"{f.kind}@{jobs[f.job]}:e{f.epoch}" for f in faults))

        injected: list[Fault] = []
        for fault in faults:
            target = await _wait_for_epoch(dep, jobs, fault, started + plan.timeout)
            if target is None:
                # The workload outran the plan (a fast machine): rather than skip the fault,
                # give it a fresh job to hit (over NATS; checked like every other job).
                job_id, command = await submit(
                    dep, http, len(jobs), strategy=plan.strategy, seed=len(jobs) % plan.seeds,
                    over_api=False, prefix="chaos")
                jobs.append(job_id)
                commands.append(command)
                say(f"every job had finished: submitted {job_id} for the {fault.kind} fault")
                fault.job, fault.epoch = len(jobs) - 1, 1
                target = await _wait_for_epoch(dep, jobs, fault, started + plan.timeout)
                assert target is not None
            fault.at = time.monotonic() - started
            await _inject(dep, fault, target, say, leader=sum(
                f.kind == "node" for f in injected) % 2 == 0)
            injected.append(fault)

        await wait_until(lambda: _all_terminal(dep.admin, jobs), "every job terminal",
                         timeout=max(60.0, plan.timeout - (time.monotonic() - started)),
                         interval=0.25, procs=(dep.backend,))
        duration = time.monotonic() - started
        say(f"all {len(jobs)} jobs terminal after {duration:.0f}s; checking")

        audit_result = await dep.cluster.acli("audit", "--json", "--wait", "60",
                                              role="auditor", timeout=180)
        try:
            audit = json.loads(audit_result.stdout)
        except ValueError:
            audit = {"ok": False, "stdout": audit_result.stdout, "stderr": audit_result.stderr}
        messages = await read_all(dep.admin)
        objects = await model_objects(dep.admin)
        reference = await asyncio.to_thread(reference_weights, dep.workspace, root, commands)
        outcomes = await _outcomes(dep, jobs, commands, messages, reference, epochs)
        named = {s.model.object_name for s in fold_all(messages).values()
                 if s.status == "completed" and s.model is not None}
        models = [o for o in objects if o.startswith("models/")]
        orphans = [o for o in models if o not in named]
        leftover = sum(o.startswith("checkpoints/") for o in objects)
        violations = len(dep.server.violations())
    finally:
        exit_codes = await undeploy(dep)
    return ChaosReport(
        plan=plan, duration=duration, faults=injected, jobs=outcomes,
        audit_ok=bool(audit.get("ok")) and audit_result.returncode == 0, audit=audit,
        log_messages=len(messages), model_objects=len(models), orphan_models=orphans,
        leftover_checkpoints=leftover, exit_codes=exit_codes, violations=violations,
    )


async def _all_terminal(bus: Bus, jobs: list[str]) -> bool:
    for job_id in jobs:
        if not await is_terminal(bus, job_id):
            return False
    return True


async def _wait_for_epoch(dep: Deployment, jobs: list[str], fault: Fault,
                          deadline: float) -> str | None:
    """The job to hit: the planned one once it finished `fault.epoch`; if it ended before
    that, any job still running (None when all have ended)."""
    target = jobs[fault.job]
    while time.monotonic() < deadline:
        if await is_terminal(dep.admin, target):
            running = [j for j in jobs if not await is_terminal(dep.admin, j)
                       and await last_event(dep.admin, f"trainbus.evt.{j}.epoch") is not None]
            if running:
                target = running[0]
                fault.epoch = 1
                continue
            if await _all_terminal(dep.admin, jobs):
                return None
        else:
            last = await last_event(dep.admin, f"trainbus.evt.{target}.epoch")
            if last is not None and isinstance(last[1], EpochEvent) and \
                    last[1].epoch >= fault.epoch:
                return target
        dep.sample_rss()
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting to inject {fault}")


async def _inject(dep: Deployment, fault: Fault, target: str, say: Say, *,
                  leader: bool = True) -> None:
    """Inject `fault` while `target` trains; a `node` fault kills the stream leader when
    `leader`, else a follower."""
    if fault.kind == "trainer":
        accepted = await last_event(dep.admin, f"trainbus.evt.{target}.accepted")
        assert accepted is not None and isinstance(accepted[1], AcceptedEvent)
        worker = accepted[1].worker_id
        name = worker.split("-r")[0]
        what = f"running {target}"
        if dep.cluster.worker_id(name) != worker or not dep.cluster.procs[name].running:
            # The job's last claimant is already dead (the job waits for its redelivery):
            # kill another trainer instead, whatever it is doing.
            name = next(n for n in dep.trainers if dep.cluster.procs[n].running)
            what = f"(busy or idle: {target} was waiting for redelivery)"
        proc = dep.cluster.procs[name]
        victim = dep.cluster.worker_id(name)
        proc.sample_rss()
        proc.kill()
        dep.cluster.restart_trainer(name)
        fault.detail = f"kill -9 {victim} {what}; restarted as {dep.cluster.worker_id(name)}"
    elif fault.kind == "nats":
        assert isinstance(dep.server, RoleServer)
        dep.server.kill()
        dep.server.start()
        fault.detail = f"kill -9 nats-server while {target} trained; restarted"
    elif fault.kind == "node":
        assert isinstance(dep.server, RoleCluster)
        fault.detail = await _kill_node(dep, dep.server, target, leader=leader)
    else:
        dep.projector.kill()
        dep.projector.start()
        fault.detail = f"kill -9 the projector while {target} trained; restarted"
    say(f"fault: {fault.detail}")


async def _kill_node(dep: Deployment, nats_cluster: RoleCluster, target: str, *,
                     leader: bool) -> str:
    """SIGKILL one node (the stream leader or a follower) while `target` trains; restart it
    once `target` has trained another epoch on the other two (or ended), and wait until it
    has caught up, so that the next kill never takes a second replica away.

    Before the kill, every process an earlier fault restarted is up (its heartbeat, the
    projector's start line), so that one fault is injected at a time (a trainer starting
    during a meta leader election waits it out: docs/scaling.md)."""
    await wait_workers(dep.admin, [dep.cluster.worker_id(n) for n in dep.trainers], dep.procs)
    await wait_until(lambda: dep.projector.log_text().count("projector started at sequence")
                     >= dep.projector.starts, "the projector started", procs=dep.procs)
    await nats_cluster.replicas_current(STREAM)
    lead = await nats_cluster.stream_leader(STREAM)
    victim = lead if leader else next(n for n in nats_cluster.running() if n != lead)
    before = await last_event(dep.admin, f"trainbus.evt.{target}.epoch")
    epoch = before[1].epoch if before is not None and isinstance(before[1], EpochEvent) else 0
    nats_cluster.kill(victim)
    new_lead = await nats_cluster.stream_leader(STREAM)

    async def progressed() -> bool:
        if await is_terminal(dep.admin, target):
            return True
        last = await last_event(dep.admin, f"trainbus.evt.{target}.epoch")
        return last is not None and isinstance(last[1], EpochEvent) and last[1].epoch > epoch

    await wait_until(progressed, f"{target} past epoch {epoch} without node {victim}",
                     timeout=180, interval=0.1, procs=dep.procs)
    nats_cluster.restart(victim)
    await nats_cluster.replicas_current(STREAM)
    role = f"the stream leader; {new_lead} took over" if victim == lead else "a follower"
    return (f"kill -9 NATS node {victim} ({role}) while {target} trained (epoch {epoch}); "
            f"restarted after it trained on, caught up")


async def _outcomes(dep: Deployment, jobs: list[str], commands: list[TrainCommand],
                    messages: list[LogMessage], reference: dict[int, str], epochs: int
                    ) -> list[JobOutcome]:
    from libs.pipeline.storage.models import weights_sha256
    from services.trainers.pipeline_runner import load_model_archive

    states = fold_all(messages)
    by_job: dict[str, list[LogMessage]] = defaultdict(list)
    for message in messages:
        if message.job_id is not None:
            by_job[message.job_id].append(message)
    outcomes = []
    for job_id, command in zip(jobs, commands, strict=True):
        assert command.seed is not None, job_id  # `submit` always sets one
        events = [m.body for m in by_job[job_id]]
        completed = [e for e in events if isinstance(e, CompletedEvent)]
        failed = [e for e in events if isinstance(e, FailedEvent)]
        state = states[job_id]
        history = [m.epoch for m in state.history]
        missing = sorted(set(range(1, epochs + 1)) - set(history)) \
            if state.status == "completed" else []
        weights_ok = None
        if state.status == "completed" and state.model is not None:
            archive = await fetch_model(dep.admin, state.model)
            loaded = await asyncio.to_thread(load_model_archive, archive)
            actual = weights_sha256(loaded.model.state_dict())
            weights_ok = actual == reference[command.seed] == state.model.weights_sha256
        outcomes.append(JobOutcome(
            job_id=job_id, seed=command.seed, status=state.status, attempts=state.attempt,
            completed_events=len(completed), failed_events=len(failed),
            failure=failed[-1].reason if failed else None, epochs_missing=missing,
            weights_ok=weights_ok,
            workers=[e.worker_id for e in events if isinstance(e, AcceptedEvent)],
        ))
    return outcomes


# --- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    jobs: int = 20
    containers: int = 2
    hosts: int = 1
    strategy: str = "tiny"
    seeds: int = 5
    ack_wait: float = 60.0
    max_deliver: int = 4
    list_every: float = 0.1  # seconds between GET /api/v1/jobs while jobs run
    timeout: float = 1800.0
    cluster: bool = False  # a 3-node cluster (R3) instead of one nats-server


@dataclass
class LoadReport:
    plan: LoadPlan
    duration: float
    submit_seconds: float
    statuses: dict[str, int]
    completed_twice: int
    queue_wait: list[float]
    list_latency: list[float]
    peak_rss_mib: dict[str, float]
    audit_ok: bool
    exit_codes: dict[str, int]
    attempts: Counter = field(default_factory=Counter)
    stream_bytes: int = 0  # the log's bytes (one replica's) once every job has ended
    log_messages: int = 0

    @property
    def throughput(self) -> float:
        return self.plan.jobs / self.duration if self.duration else float("nan")

    def lines(self) -> list[str]:
        qw, ll = self.queue_wait, [x * 1000 for x in self.list_latency]
        rss = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.peak_rss_mib.items()))
        return [
            f"jobs: {self.plan.jobs} submitted at once in {self.submit_seconds:.1f}s (half API, "
            f"half raw NATS) to {self.plan.containers} container + {self.plan.hosts} host "
            f"trainers; {self.statuses}; completed twice: {self.completed_twice}",
            f"throughput: {self.throughput:.2f} jobs/s ({self.duration:.1f}s from first submit "
            f"to last completion)",
            f"queue wait (command stored -> accepted): p50 {percentile(qw, 50):.1f}s, "
            f"p95 {percentile(qw, 95):.1f}s, p99 {percentile(qw, 99):.1f}s",
            f"GET /api/v1/jobs while running: {len(ll)} requests, p50 {percentile(ll, 50):.0f} "
            f"ms, p95 {percentile(ll, 95):.0f} ms, p99 {percentile(ll, 99):.0f} ms, "
            f"max {max(ll) if ll else float('nan'):.0f} ms",
            f"peak RSS (MiB): {rss}",
            f"the log: {self.log_messages} messages, {self.stream_bytes / 1024:.0f} KiB "
            f"({self.stream_bytes / max(1, self.plan.jobs) / 1024:.1f} KiB per job)",
            f"audit: {'no difference' if self.audit_ok else 'DIFFERENCES'}; exit codes on "
            f"SIGTERM: {sorted(set(self.exit_codes.values()))}",
        ]


async def run_load(root: Path, plan: LoadPlan = LoadPlan(), *, say: Say = _quiet) -> LoadReport:
    dep = await deploy(root, containers=plan.containers, hosts=plan.hosts,
                       ack_wait=plan.ack_wait, max_deliver=plan.max_deliver,
                       cluster=plan.cluster, say=say)
    exit_codes: dict[str, int] = {}
    latencies: list[float] = []
    try:
        http = httpx.AsyncClient(base_url=dep.cluster.api_url(), timeout=60, headers={
            "Authorization": f"Bearer {dep.cluster.api_token}"})
        async with http:
            started = time.monotonic()
            submitted = await asyncio.gather(*(
                submit(dep, http, i, strategy=plan.strategy, seed=i % plan.seeds,
                       over_api=i % 2 == 1, prefix="load")
                for i in range(plan.jobs)))
            submit_seconds = time.monotonic() - started
            jobs = [job_id for job_id, _ in submitted]
            say(f"{plan.jobs} jobs submitted in {submit_seconds:.1f}s")
            done = asyncio.Event()

            async def lister() -> None:
                while not done.is_set():
                    t0 = time.perf_counter()
                    response = await http.get("/api/v1/jobs", params={"limit": 50})
                    latencies.append(time.perf_counter() - t0)
                    assert response.status_code == 200, response.text
                    dep.sample_rss()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), plan.list_every)

            listing = asyncio.create_task(lister())
            try:
                await wait_until(lambda: _all_terminal(dep.admin, jobs), "every job terminal",
                                 timeout=plan.timeout, interval=1.0, procs=(dep.backend,))
            finally:
                done.set()
                await listing
            duration = time.monotonic() - started
        dep.sample_rss()
        nats_rss = dep.nats_rss_kib()
        messages = await read_all(dep.admin)
        stream_bytes = (await dep.admin.js.stream_info(STREAM)).state.bytes
        states = fold_all(messages)
        commands_at = {m.job_id: m.time for m in messages
                       if m.job_id is not None and m.subject.startswith("trainbus.cmd.train")}
        queue_wait = []
        completed_per_job: Counter = Counter()
        attempts: Counter = Counter()
        first_accept: dict[str, float] = {}
        for m in messages:
            if (isinstance(m.body, AcceptedEvent) and m.job_id is not None
                    and m.job_id not in first_accept):
                first_accept[m.job_id] = m.body.time
            if isinstance(m.body, CompletedEvent):
                completed_per_job[m.job_id] += 1
        for job_id in jobs:
            if job_id in first_accept and job_id in commands_at:
                queue_wait.append(max(0.0, first_accept[job_id] - commands_at[job_id]))
            attempts[states[job_id].attempt] += 1
        statuses: Counter[str] = Counter(states[j].status for j in jobs)
        audit_result = await dep.cluster.acli("audit", "--json", "--wait", "60",
                                              role="auditor", timeout=300)
        audit_ok = audit_result.returncode == 0
        rss = {name: proc.peak_rss_kib / 1024 for name, proc in dep.cluster.procs.items()}
        rss.update({name: kib / 1024 for name, kib in nats_rss.items()})
    finally:
        exit_codes = await undeploy(dep)
    for name, proc in dep.cluster.procs.items():
        rss[name] = max(rss.get(name, 0.0), proc.peak_rss_kib / 1024)
    return LoadReport(
        plan=plan, duration=duration, submit_seconds=submit_seconds, statuses=dict(statuses),
        completed_twice=sum(n > 1 for n in completed_per_job.values()),
        queue_wait=queue_wait, list_latency=latencies, peak_rss_mib=rss, audit_ok=audit_ok,
        exit_codes=exit_codes, attempts=attempts, stream_bytes=stream_bytes,
        log_messages=len(messages),
    )


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
