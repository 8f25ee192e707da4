"""The load run, small enough for CI (bench/load.py submits 200 and reports the figures):
jobs submitted at once, half over the API and half over raw NATS, to two container trainers
and one host trainer, every process real and under the shipped role config. All complete,
none twice, and the API keeps answering `GET /api/v1/jobs` throughout. No timing is asserted:
the figures are reported, not tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.scenarios import LoadPlan, run_load

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_twenty_jobs_at_once_all_complete_once(tmp_path: Path) -> None:
    plan = LoadPlan(jobs=20, containers=2, hosts=1)
    report = await run_load(tmp_path, plan, say=print)
    print("\n".join(report.lines()))
    assert report.statuses == {"completed": plan.jobs}, report.statuses
    assert report.completed_twice == 0
    assert len(report.queue_wait) == plan.jobs
    assert report.list_latency  # the API answered while the jobs ran
    assert report.audit_ok
    assert set(report.exit_codes.values()) == {0}, report.exit_codes
    assert all(rss > 0 for name, rss in report.peak_rss_mib.items()), report.peak_rss_mib
