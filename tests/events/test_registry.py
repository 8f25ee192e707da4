"""The model registry (libs/events/registry.py) on a real nats-server with real trained models:
aliases promoted and resolved, every change on the log and replayed by the audit, expiry,
delete and prune under the retention rule (disk and object store together, the `_latest`
pointer kept), the leaderboard's sort and the comparison's best values."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from libs.events import registry
from libs.events.audit import alias_timeline, audit
from libs.events.bus import Bus, publish_command, publish_event
from libs.events.catalog import (
    ModelCatalog,
    ModelDetail,
    ModelInfo,
    compare_models,
    headline_metrics,
    sort_models,
)
from libs.events.errors import (
    AliasNotFound,
    BusUnavailable,
    InvalidAlias,
    InvalidRequest,
    ModelExpired,
    ModelInUse,
    ModelNotFound,
)
from libs.events.models import model_object_name, put_bytes
from libs.events.projector import Projector, load_projection
from libs.events.registry import AliasRecord
from libs.events.schema import (
    AcceptedEvent,
    AliasRemovedEvent,
    AliasSetEvent,
    CompletedEvent,
    EventHeader,
    ModelRef,
    TrainCommand,
)
from libs.pipeline.storage.layout import ModelLayout
from tests.harness.strategies import strategy_yaml

pytestmark = pytest.mark.anyio

STRATEGY = "tiny"
SEEDS = (1, 2, 3, 4)  # 1h_v1 .. 1h_v4, the last one with walk-forward folds


def train_models(base: Path) -> Path:
    """Four real tiny models of one strategy (1h_v1..1h_v4), trained once per module."""
    from libs.pipeline.pipeline import TrainingPipeline, TrainingRequest
    from libs.pipeline.storage.models import ModelStorage
    from tests.harness.workspace import write_workspace

    plain = strategy_yaml(STRATEGY, epochs=2)
    folded = plain.replace("  seed: ", "  walk_forward: {folds: 2}\n  seed: ")
    workspace = write_workspace(base / "data", base / "strategies", symbols=["EURUSD", "GBPUSD"],
                                bars=1500, seed=42, strategies={STRATEGY: plain})
    pipeline = TrainingPipeline(data_dir=workspace.data_dir,
                                strategies_dir=workspace.strategies_dir,
                                storage=ModelStorage(base / "models"))
    for seed in SEEDS:
        yaml_text = folded if seed == SEEDS[-1] else plain
        pipeline.run(TrainingRequest(strategy_yaml=yaml_text, seed=seed))
    return base / "models"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_models(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def models_dir(trained: Path, tmp_path: Path) -> Iterator[Path]:
    """This test's own copy of the trained models (deleting them leaves the others')."""
    target = tmp_path / "models"
    shutil.copytree(trained, target)
    yield target


async def _a_trained_job(bus: Bus, models_dir: Path, version: str, job_id: str) -> ModelRef:
    """A job that completed with `version` as its model, as a trainer reports it: the train
    command, `accepted`, the archive in the object store, `completed`. Also a leftover object
    of the job's first attempt (fenced out before it could complete)."""
    layout = ModelLayout(models_dir)
    ref = layout.resolve(STRATEGY, int(version.split("_v")[1]), "1h")
    archive = layout.to_archive(ref)
    receipt = await publish_command(bus, TrainCommand(
        job_id=job_id, strategy=STRATEGY, symbols=("EURUSD", "GBPUSD"), timeframes=("1h",)))
    header: EventHeader = {"job_id": job_id, "attempt": 2, "worker_id": "w-test",
                           "time": time.time()}
    accepted = await publish_event(bus, AcceptedEvent(**header, worker_kind="container"),
                                   n=0, expected_last_subject_seq=0)
    stale = model_object_name(STRATEGY, job_id, 1)
    await put_bytes(bus, stale, archive, description="a zombie attempt's upload")
    name = model_object_name(STRATEGY, job_id, 2)
    await put_bytes(bus, name, archive, description="the model")
    model = ModelRef(strategy=STRATEGY, version=version, local_path=ref.path, object_name=name,
                     sha256=hashlib.sha256(archive).hexdigest())
    await publish_event(bus, CompletedEvent(**header, model=model,
                                            test_metrics={"macro_f1": 0.5}),
                        n=1, expected_last_subject_seq=accepted.seq)
    assert receipt.job_id == job_id
    return model


async def _objects(bus: Bus) -> set[str]:
    return set(await registry._object_names(bus))


# --- aliases ------------------------------------------------------------------------------------


async def test_promote_resolve_and_every_change_is_on_the_log_and_audited(
    bus: Bus, models_dir: Path
) -> None:
    async with Projector(bus) as projector:
        record = await registry.set_alias(bus, STRATEGY, "champion", "1h_v2", by="alice",
                                          expires_after=None, reason="best on the window",
                                          models_dir=models_dir)
        assert (record.version, record.set_by, record.reason, record.expires_at) == (
            "1h_v2", "alice", "best on the window", None)
        assert await registry.resolve(bus, "tiny@champion", models_dir) == ("tiny", "1h_v2")
        assert await registry.resolve(bus, "tiny/latest", models_dir) == ("tiny", "1h_v4")
        assert await registry.resolve(bus, "tiny@latest", models_dir) == ("tiny", "1h_v4")
        assert await registry.resolve(bus, "tiny/1h_v1", models_dir) == ("tiny", "1h_v1")
        resolved = await registry.resolve_ref(bus, "tiny@champion", models_dir)
        assert resolved.alias == record and resolved.model.local

        # The KV holds the alias, keyed <strategy>.<alias>, with the event's stream sequence.
        assert bus.aliases is not None
        stored = msgspec.json.decode((await bus.aliases.get("tiny.champion")).value or b"",
                                     type=AliasRecord)
        assert stored == record and stored.seq > 0

        # A second promotion moves it (the event names the previous version); `latest` as a
        # version promotes the newest.
        moved = await registry.set_alias(bus, STRATEGY, "champion", "1h_v3", by="bob",
                                         expires_after=None, reason=None, models_dir=models_dir)
        candidate = await registry.set_alias(bus, STRATEGY, "candidate", "latest", by="bob",
                                             expires_after=3600, reason="try it",
                                             models_dir=models_dir)
        assert candidate.version == "1h_v4" and candidate.expires_at is not None
        assert [(r.alias, r.version) for r in await registry.list_aliases(bus, STRATEGY)] == [
            ("candidate", "1h_v4"), ("champion", "1h_v3")]
        listed = await registry.list_models(bus, models_dir)
        assert {m.version: m.aliases for m in listed} == {
            "1h_v4": ["candidate"], "1h_v3": ["champion"], "1h_v2": [], "1h_v1": []}

        removed = await registry.remove_alias(bus, STRATEGY, "candidate", by="carol",
                                              reason="done")
        assert removed.version == "1h_v4"
        with pytest.raises(AliasNotFound):
            await registry.resolve(bus, "tiny@candidate", models_dir)
        with pytest.raises(AliasNotFound):
            await registry.remove_alias(bus, STRATEGY, "candidate", by="carol")

        # Every change is on the log, on the alias's own subject, in order.
        changes = await registry.read_alias_events(bus)
        events = [c.event for c in changes]
        assert [type(e) for e in events] == [AliasSetEvent, AliasSetEvent, AliasSetEvent,
                                             AliasRemovedEvent]
        assert [(e.alias, e.by) for e in events] == [
            ("champion", "alice"), ("champion", "bob"), ("candidate", "bob"),
            ("candidate", "carol")]
        first, second = events[0], events[1]
        assert isinstance(first, AliasSetEvent) and isinstance(second, AliasSetEvent)
        assert (first.version, first.previous, second.version, second.previous) == (
            "1h_v2", None, "1h_v3", "1h_v2")
        assert changes[1].seq == moved.seq
        last = await bus.js.get_last_msg(bus.names.stream, "trainbus.alias.tiny.champion")
        assert last.seq == moved.seq
        # The replay of the log leaves what the KV holds.
        assert registry.replay_aliases(changes) == {("tiny", "champion"): moved}

        # The audit replays them too: the log and the KV agree, and the timeline lists them.
        await projector.wait_for(changes[-1].seq)
        report = await audit(bus, catch_up_timeout=5)
        assert report.ok, report.differences
        lines = [e.text for e in await alias_timeline(bus, STRATEGY)]
        assert lines[0] == "tiny@champion -> 1h_v2 (new), by alice: best on the window"
        assert lines[1] == "tiny@champion -> 1h_v3 (was 1h_v2), by bob"
        assert lines[3] == "tiny@candidate removed (was 1h_v4), by carol: done"
        # Alias events are not jobs: the projection has none.
        assert (await load_projection(bus.js, bus.names.jobs_bucket)).states == {}

        # A KV entry that disagrees with the log is a difference the audit names.
        forged = msgspec.structs.replace(moved, version="1h_v1")
        await bus.aliases.put("tiny.champion", msgspec.json.encode(forged))
        report = await audit(bus, catch_up_timeout=5)
        assert [(d.job_id, d.kind, d.field) for d in report.differences] == [
            ("tiny@champion", "alias field", "version")]
        # The registry's sync brings the KV back to the log's last change.
        assert await registry.sync_alias(bus, STRATEGY, "champion") == moved
        assert await registry.get_alias(bus, STRATEGY, "champion") == moved
        assert (await audit(bus, catch_up_timeout=5)).ok


async def test_two_writers_of_one_alias_leave_the_log_and_the_kv_agreeing(
    bus: Bus, models_dir: Path
) -> None:
    versions = ["1h_v1", "1h_v2", "1h_v3", "1h_v4"] * 2
    await asyncio.gather(*(
        registry.set_alias(bus, STRATEGY, "champion", version, by=f"w{i}", expires_after=None,
                           reason=None, models_dir=models_dir)
        for i, version in enumerate(versions)))
    changes = await registry.read_alias_events(bus)
    assert len(changes) == len(versions)
    previous = [c.event.previous for c in changes]  # each names the one stored before it
    assert previous == [None, *(getattr(c.event, "version", None) for c in changes[:-1])]
    kv = await registry.get_alias(bus, STRATEGY, "champion")
    assert kv == registry.replay_aliases(changes)[("tiny", "champion")]


async def test_bad_names_unknown_versions_and_aliases_are_refused(
    bus: Bus, models_dir: Path
) -> None:
    for name in ("latest", "Champion", "a.b", "1st", "", "x" * 33, "a>", "champion\n"):
        with pytest.raises(InvalidAlias) as bad:
            await registry.set_alias(bus, STRATEGY, name, "1h_v1", by="t", expires_after=None,
                                     reason=None, models_dir=models_dir)
        assert bad.value.field == "alias"
    with pytest.raises(InvalidAlias):
        await registry.set_alias(bus, "my.strat", "champion", "1h_v1", by="t",
                                 expires_after=None, reason=None, models_dir=models_dir)
    with pytest.raises(ModelNotFound) as missing:
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v9", by="t", expires_after=None,
                                 reason=None, models_dir=models_dir)
    assert missing.value.detail == "no model tiny/1h_v9"
    with pytest.raises(ModelNotFound):
        await registry.set_alias(bus, "other", "champion", "latest", by="t",
                                 expires_after=None, reason=None, models_dir=models_dir)
    with pytest.raises(InvalidRequest) as zero:
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v1", by="t", expires_after=0,
                                 reason=None, models_dir=models_dir)
    assert zero.value.field == "expires_after"
    with pytest.raises(AliasNotFound):
        await registry.resolve(bus, "tiny@nobody", models_dir)
    for ref in ("tiny", "tiny/", "/1h_v1", "tiny@Bad"):
        with pytest.raises(InvalidRequest):
            await registry.resolve(bus, ref, models_dir)
    # Nothing reached the log.
    assert await registry.read_alias_events(bus) == []
    # Without NATS the local references still resolve; an alias cannot.
    assert await registry.resolve(None, "tiny/latest", models_dir) == ("tiny", "1h_v4")
    with pytest.raises(BusUnavailable):
        await registry.resolve(None, "tiny@champion", models_dir)


async def test_an_expired_alias_refuses_loading_and_says_when(
    bus: Bus, models_dir: Path
) -> None:
    record = await registry.set_alias(bus, "tiny", "champion", "1h_v3", by="t",
                                      expires_after=registry.parse_duration("1s"), reason=None,
                                      models_dir=models_dir)
    assert record.expires_at is not None
    assert abs(record.expires_at - record.set_at - 1.0) < 1e-6
    registry.check_not_expired(record)  # not yet
    assert await registry.resolve(bus, "tiny@champion", models_dir) == ("tiny", "1h_v3")
    with pytest.raises(ModelExpired) as expired:
        registry.check_not_expired(record, now=record.expires_at + 1)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(record.expires_at)))
    assert expired.value.detail == (
        f"model tiny@champion (1h_v3) expired at {stamp}: promote a fresh one")
    await asyncio.sleep(max(0.0, record.expires_at - time.time()) + 0.05)
    with pytest.raises(ModelExpired):
        await registry.resolve(bus, "tiny@champion", models_dir)
    # Looking (show, compare) still works; a fresh promotion cures it.
    assert await registry.resolve(bus, "tiny@champion", models_dir, check_expiry=False) == (
        "tiny", "1h_v3")
    await registry.set_alias(bus, "tiny", "champion", "1h_v4", by="t",
                             expires_after=registry.parse_duration("30d"), reason=None,
                             models_dir=models_dir)
    assert await registry.resolve(bus, "tiny@champion", models_dir) == ("tiny", "1h_v4")


def test_durations() -> None:
    assert [registry.parse_duration(t) for t in ("30d", "12h", "90m", "45s", "2w", "10", "1.5h")
            ] == [30 * 86400, 12 * 3600, 90 * 60, 45, 14 * 86400, 10, 5400]
    for bad in ("", "0", "-1d", "3y", "d", "1 day"):
        with pytest.raises(InvalidRequest):
            registry.parse_duration(bad)


# --- delete and prune ---------------------------------------------------------------------------


async def test_prune_keeps_the_newest_the_aliased_and_the_jobs_models_and_deletes_the_rest(
    bus: Bus, models_dir: Path
) -> None:
    async with Projector(bus) as projector:
        job_model = await _a_trained_job(bus, models_dir, "1h_v1", "job-one")
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v2", by="t", expires_after=None,
                                 reason=None, models_dir=models_dir)
        await projector.wait_for((await bus.js.stream_info(bus.names.stream)).state.last_seq)
    stale = model_object_name(STRATEGY, "job-one", 1)
    assert await _objects(bus) == {stale, job_model.object_name}

    plan = await registry.prune(bus, models_dir, keep=1, dry_run=True)
    assert [d.model for d in plan.delete] == ["tiny/1h_v3"]
    assert plan.orphans == [stale]
    assert {k.model: k.reason for k in plan.kept} == {
        "tiny/1h_v2": "alias tiny@champion", "tiny/1h_v1": "the model of job job-one"}
    assert (models_dir / "tiny" / "1h_v3").is_dir() and stale in await _objects(bus)

    done = await registry.prune(bus, models_dir, keep=1)
    assert done.delete == plan.delete and done.orphans == plan.orphans and not done.dry_run
    versions = sorted(p.name for p in (models_dir / "tiny").iterdir())
    assert versions == ["1h_latest", "1h_v1", "1h_v2", "1h_v4"]  # no hidden leftovers either
    assert await _objects(bus) == {job_model.object_name}  # the orphan went, the model stays
    layout = ModelLayout(models_dir)
    assert layout.resolve(STRATEGY, "latest", "1h").version == 4
    # Pruning again finds nothing more.
    again = await registry.prune(bus, models_dir, keep=1)
    assert again.delete == [] and again.orphans == []


async def test_delete_refuses_what_is_kept_and_keeps_the_latest_pointer_in_step(
    bus: Bus, models_dir: Path
) -> None:
    async with Projector(bus) as projector:
        await _a_trained_job(bus, models_dir, "1h_v1", "job-one")
        await registry.set_alias(bus, STRATEGY, "champion", "1h_v2", by="t", expires_after=None,
                                 reason=None, models_dir=models_dir)
        await projector.wait_for((await bus.js.stream_info(bus.names.stream)).state.last_seq)
    with pytest.raises(ModelInUse) as aliased:
        await registry.delete_model(bus, "tiny/1h_v2", models_dir)
    assert "alias tiny@champion" in aliased.value.detail and "demote" in aliased.value.detail
    with pytest.raises(ModelInUse) as job:
        await registry.delete_model(bus, "tiny/1h_v1", models_dir)
    assert "job job-one" in job.value.detail
    with pytest.raises(ModelNotFound):
        await registry.delete_model(bus, "tiny/1h_v9", models_dir)

    pointer = models_dir / "tiny" / "1h_latest"
    assert json.loads(pointer.read_text())["version"] == 4
    dry = await registry.delete_model(bus, "tiny/latest", models_dir, dry_run=True)
    assert dry.model == "tiny/1h_v4" and (models_dir / "tiny" / "1h_v4").is_dir()
    gone = await registry.delete_model(bus, "tiny/1h_v4", models_dir)
    assert gone.local_path == str(models_dir / "tiny" / "1h_v4")
    assert not (models_dir / "tiny" / "1h_v4").exists()
    # The pointer follows the highest version left, and `latest` with it.
    assert json.loads(pointer.read_text())["version"] == 3
    assert await registry.resolve(bus, "tiny@latest", models_dir) == ("tiny", "1h_v3")
    await registry.delete_model(bus, "tiny/1h_v3", models_dir)
    assert json.loads(pointer.read_text())["version"] == 2
    # Demoted, the aliased version can go.
    await registry.remove_alias(bus, STRATEGY, "champion", by="t")
    await registry.delete_model(bus, "tiny/1h_v2", models_dir)
    assert json.loads(pointer.read_text())["version"] == 1
    assert sorted(p.name for p in (models_dir / "tiny").iterdir()) == ["1h_latest", "1h_v1"]


async def test_deleting_needs_nats(models_dir: Path) -> None:
    with pytest.raises(BusUnavailable):
        await registry.delete_model(None, "tiny/1h_v1", models_dir)
    with pytest.raises(BusUnavailable):
        await registry.prune(None, models_dir, keep=1)
    assert (models_dir / "tiny" / "1h_v1").is_dir()


# --- the leaderboard and compare ----------------------------------------------------------------


async def test_models_sort_by_a_headline_metric_and_refuse_an_unknown_key(
    models_dir: Path
) -> None:
    models = await registry.list_models(None, models_dir)
    assert [m.version for m in models] == ["1h_v4", "1h_v3", "1h_v2", "1h_v1"]  # newest first
    assert all("backtest_sharpe" in m.test_metrics and "lift_macro_f1_vs_majority"
               in m.test_metrics for m in models)
    by_f1 = await registry.list_models(None, models_dir, sort="macro_f1")
    scores = [m.test_metrics["macro_f1"] for m in by_f1]
    assert scores == sorted(scores, reverse=True)
    ascending = await registry.list_models(None, models_dir, sort="macro_f1", order="asc")
    assert [m.test_metrics["macro_f1"] for m in ascending] == sorted(scores)
    lift = await registry.list_models(None, models_dir, sort="lift_macro_f1_vs_majority")
    assert len(lift) == 4
    for bad in ("bogus", "macro_f1; drop", "baseline_x_loss"):
        with pytest.raises(InvalidRequest) as refused:
            await registry.list_models(None, models_dir, sort=bad)
        assert refused.value.field == "sort"
    # A model without the metric goes last, whatever the order.
    bare = ModelInfo(strategy="x", version="1h_v1")
    assert sort_models([bare, *by_f1], "macro_f1", "asc")[-1] is bare


async def test_compare_puts_models_side_by_side_and_marks_the_best(
    bus: Bus, models_dir: Path
) -> None:
    await registry.set_alias(bus, STRATEGY, "champion", "1h_v2", by="t", expires_after=None,
                             reason=None, models_dir=models_dir)
    refs = ["tiny/1h_v1", "tiny@champion", "tiny/latest"]
    comparison = await registry.compare(bus, refs, models_dir)
    assert comparison.refs == refs
    assert comparison.models == ["tiny/1h_v1", "tiny/1h_v2", "tiny/1h_v4"]
    rows = {row.key: row for row in comparison.rows}
    heads = [headline_metrics(json.loads((models_dir / "tiny" / v / "metrics.json")
                                         .read_text())["test"]) for v in ("1h_v1", "1h_v2",
                                                                          "1h_v4")]
    f1 = [h["macro_f1"] for h in heads]
    assert rows["macro_f1"].values == f1
    assert rows["macro_f1"].best == [i for i, v in enumerate(f1) if v == max(f1)]
    drawdowns = [h["backtest_max_drawdown"] for h in heads]
    smallest = min(abs(d) for d in drawdowns)
    assert rows["backtest_max_drawdown"].best == [i for i, d in enumerate(drawdowns)
                                                  if abs(d) == smallest]
    assert rows["backtest_max_drawdown"].better == "smaller_magnitude"
    for key in ("accuracy", "weighted_f1", "lift_macro_f1_vs_majority",
                "lift_macro_f1_vs_last_confirmed", "backtest_net_return", "backtest_sharpe",
                "backtest_trades", "buy_and_hold_net_return", "data_window", "strategy_hash",
                "seed", "aliases"):
        assert key in rows, key
    assert rows["backtest_trades"].best == [] and rows["buy_and_hold_net_return"].best == []
    # Only 1h_v4 has walk-forward folds: its mean ± std, nothing to compare it with.
    walk = rows["walk_forward_macro_f1"]
    assert walk.values[:2] == [None, None] and isinstance(walk.values[2], float)
    assert walk.spread is not None and isinstance(walk.spread[2], float) and walk.best == []
    assert rows["seed"].values == [1, 2, 4]
    assert rows["aliases"].values == [None, "champion", None]
    assert rows["data_window"].values[0] == "2020-01-02 .. 2020-03-27"
    hashes = rows["strategy_hash"].values  # 1h_v4's strategy adds walk-forward folds
    assert hashes[0] == hashes[1] != hashes[2] and len(str(hashes[0])) == 12
    with pytest.raises(InvalidRequest):
        await registry.compare(bus, ["tiny/1h_v1"], models_dir)


def test_lower_is_better_for_errors_and_ties_mark_every_best() -> None:
    def detail(version: str, **test: float) -> ModelDetail:
        return ModelDetail(model=ModelInfo(strategy="reg", version=version),
                           metrics={"test": dict(test)})

    comparison = compare_models(["a", "b", "c"], [
        detail("1h_v1", rmse=0.2, mae=0.1, direction_accuracy=0.55),
        detail("1h_v2", rmse=0.1, mae=0.1, direction_accuracy=0.6),
        detail("1h_v3", rmse=0.3, mae=0.3),
    ])
    rows = {row.key: row for row in comparison.rows}
    assert (rows["rmse"].best, rows["rmse"].better) == ([1], "lower")
    assert rows["mae"].best == [0, 1]
    assert rows["direction_accuracy"].best == [1]
    assert "macro_f1" not in rows  # no model has it: no row


async def test_a_model_only_in_the_object_store_can_be_promoted_and_compared(
    bus: Bus, models_dir: Path, tmp_path: Path
) -> None:
    async with Projector(bus) as projector:
        await _a_trained_job(bus, models_dir, "1h_v1", "job-remote")
        await projector.wait_for((await bus.js.stream_info(bus.names.stream)).state.last_seq)
    elsewhere = tmp_path / "elsewhere"  # a backend on another machine: no local copy
    record = await registry.set_alias(bus, STRATEGY, "champion", "job-remote", by="t",
                                      expires_after=None, reason=None, models_dir=elsewhere)
    assert record.version == "1h_v1"
    detail = await registry.model_detail(bus, "tiny@champion", elsewhere)
    assert not detail.model.local and detail.model.aliases == ["champion"]
    assert detail.metadata["strategy"] == "tiny"
    catalog = ModelCatalog(bus, elsewhere)
    assert [m.job_id for m in await catalog.models()] == ["job-remote"]


# --- under the shipped role permissions (deploy/nats-roles.conf) --------------------------------


async def test_under_the_roles_the_backend_owns_aliases_and_every_role_reads_them(
    tmp_path: Path, models_dir: Path
) -> None:
    from libs.events.bus import connect
    from libs.events.setup import ensure_jetstream, open_jetstream
    from tests.reliability.cluster import RoleServer
    from tests.reliability.test_roles import Raw

    with RoleServer(tmp_path) as server:
        backend = await connect(server.bus_config("backend"))
        try:
            await ensure_jetstream(backend)  # creates KV trainbus_aliases too
            assert backend.aliases is not None
            await registry.set_alias(backend, STRATEGY, "champion", "1h_v2", by="api",
                                     expires_after=None, reason=None, models_dir=models_dir)
        finally:
            await backend.close()
        for role in ("trainer", "client", "auditor", "admin"):
            bus = await connect(server.bus_config(role))
            try:
                await (ensure_jetstream(bus) if role == "trainer" else open_jetstream(bus))
                assert (await registry.get_alias(bus, STRATEGY, "champion")).version == "1h_v2"
                assert [c.event.alias for c in await registry.read_alias_events(bus)] == [
                    "champion"]
                if role == "auditor":  # no projector runs here; the aliases agree
                    report = await audit(bus, catch_up_timeout=0.5)
                    assert [d.kind for d in report.differences] == ["behind"]
            finally:
                await bus.close()
        for role in ("trainer", "client", "auditor"):
            raw = await Raw.open(server, role)
            try:
                await raw.denied("trainbus.alias.tiny.champion", b"{}")
                await raw.denied("$KV.trainbus_aliases.tiny.champion", b"{}")
            finally:
                await raw.close()
