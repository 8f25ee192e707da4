"""The chaos run, small enough for CI (bench/chaos.py runs the long one): tiny jobs over two
container and two host trainers, all real processes under the shipped role config, while
trainers are killed -9 (and restarted), the nats-server is killed -9 and restarted once, and
the projector is killed -9 and restarted once. Afterwards every job is terminal with exactly
one `completed`, every model loads and has the weights of an uninterrupted run, nothing was
lost, and `trainbus audit` finds no difference."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.scenarios import ChaosPlan, ChaosReport, run_chaos

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_chaos_loses_nothing_and_completes_each_job_exactly_once(tmp_path: Path) -> None:
    plan = ChaosPlan(jobs=8, containers=2, hosts=2, trainer_kills=3, seed=20261128)
    report = await run_chaos(tmp_path, plan, say=print)
    print("\n".join(report.lines()))
    kinds = [f.kind for f in report.faults]
    # Check every planned fault happened: 3 trainer kills, the server once, the projector once.
    assert kinds.count("trainer") == 3 and kinds.count("nats") == 1
    assert kinds.count("projector") == 1
    assert_nothing_lost(report, plan)


async def test_chaos_on_a_cluster_survives_the_stream_leader_killed(tmp_path: Path) -> None:
    """The cluster variant, kept small for CI (bench/chaos.py --cluster runs the long one):
    three NATS nodes under the shipped deploy/nats-cluster.conf, three jobs, and the node that
    leads the stream killed -9 mid-job, restarted once the job trained on without it."""
    plan = ChaosPlan(jobs=3, containers=1, hosts=1, trainer_kills=0, nats_kills=1,
                     projector_kills=0, seeds=1, cluster=True, seed=20261202)
    report = await run_chaos(tmp_path, plan, say=print)
    print("\n".join(report.lines()))
    # Check the planned fault happened, and hit the stream leader.
    assert [f.kind for f in report.faults] == ["node"], report.faults
    assert "the stream leader" in report.faults[0].detail, report.faults[0].detail
    assert_nothing_lost(report, plan)


def assert_nothing_lost(report: ChaosReport, plan: ChaosPlan) -> None:
    """Every job terminal with exactly one completed, nothing lost or doubled (a fast machine
    may add jobs so that every planned fault finds one running); each model loads and equals
    the uninterrupted run of the same command; the projection (rebuilt by a killed projector)
    matches the log; no permission violation; every process exits 0 on SIGTERM."""
    assert len(report.jobs) >= plan.jobs
    assert [j.status for j in report.jobs] == ["completed"] * len(report.jobs), report.jobs
    assert report.completed_twice == 0
    assert all(j.completed_events == 1 and j.failed_events == 0 for j in report.jobs)
    assert report.events_lost == 0, [(j.job_id, j.epochs_missing) for j in report.jobs]
    assert all(j.weights_ok for j in report.jobs), report.jobs
    assert report.orphan_models == [] and report.model_objects == len(report.jobs)
    assert report.audit_ok, report.audit
    assert report.violations == 0
    assert set(report.exit_codes.values()) == {0}, report.exit_codes
