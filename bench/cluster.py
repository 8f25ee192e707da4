"""The load bench on a 3-node NATS cluster vs one nats-server, in one run, as ratios.

    .venv/bin/python bench/cluster.py [--jobs 60] [--containers 2] [--hosts 1]
        [--strategy tiny] [--json out.json]

Runs tests/reliability/scenarios.py `run_load` twice with the same plan: first on one
nats-server under the shipped deploy/nats-server.conf (R1), then on three nodes under the
shipped deploy/nats-cluster.conf (R3, `sync_interval: always`, every process given the three
URLs). Each run: real processes under the role config, every job submitted at once (half over
the API, half over raw NATS), `GET /api/v1/jobs` every 0.1 s while they run, then the audit.
Prints both runs' figures and cluster / single ratios of throughput, queue wait p50/p95 and
the API's p95 latency, then a verdict. Exit 1 unless every job completed once in both runs.

The verdict: the cluster "keeps up" when its throughput is at least 0.8 of one node's, and its
queue wait p95 and API p95 at most 1.5x and 2x (plus 50 ms of slack for the API, whose
latencies are a few ms). Training dominates a job's time, so replication should cost little;
on a shared 2-core machine the three nodes compete with the trainers for the same CPUs, so a
run on separate machines does no worse. Run it when the machine is otherwise idle: figures
taken beside other CPU-heavy work say more about that work than about NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.scenarios import LoadPlan, LoadReport, percentile, run_load

MIN_THROUGHPUT = 0.8
MAX_QUEUE_P95 = 1.5
MAX_API_P95 = 2.0
API_SLACK_S = 0.05


def figures(report: LoadReport) -> dict[str, float]:
    return {
        "throughput_jobs_per_s": report.throughput,
        "queue_wait_p50_s": percentile(report.queue_wait, 50),
        "queue_wait_p95_s": percentile(report.queue_wait, 95),
        "api_p95_s": percentile(report.list_latency, 95),
        "stream_bytes_per_job": report.stream_bytes / max(1, report.plan.jobs),
    }


def ratio(cluster: float, single: float) -> float:
    return cluster / single if single else float("nan")


def verdict(single: dict[str, float], cluster: dict[str, float]) -> tuple[bool, list[str]]:
    """(keeps up, why not): the thresholds in this module's docstring."""
    problems = []
    if ratio(cluster["throughput_jobs_per_s"], single["throughput_jobs_per_s"]) \
            < MIN_THROUGHPUT:
        problems.append(f"throughput below {MIN_THROUGHPUT} of one node's")
    # A queue wait of a fraction of a second in both is noise, whatever its ratio.
    if cluster["queue_wait_p95_s"] > max(MAX_QUEUE_P95 * single["queue_wait_p95_s"], 1.0):
        problems.append(f"queue wait p95 above {MAX_QUEUE_P95}x one node's")
    if cluster["api_p95_s"] > MAX_API_P95 * single["api_p95_s"] + API_SLACK_S:
        problems.append(f"API p95 above {MAX_API_P95}x one node's (+{API_SLACK_S * 1000:.0f} ms)")
    return not problems, problems


async def both(root: Path, plan: LoadPlan) -> tuple[LoadReport, LoadReport]:
    print(f"--- one nats-server (R1): {plan.jobs} {plan.strategy} jobs")
    single = await run_load(root / "single", plan, say=print)
    print(f"--- three nodes (R3): {plan.jobs} {plan.strategy} jobs")
    clustered = await run_load(root / "cluster", dataclasses.replace(plan, cluster=True),
                               say=print)
    return single, clustered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--containers", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--strategy", default="tiny", choices=("tiny", "mid", "long"))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    plan = LoadPlan(jobs=args.jobs, containers=args.containers, hosts=args.hosts,
                    strategy=args.strategy)
    with tempfile.TemporaryDirectory(prefix="trainbus-cluster-") as tmp:
        single, clustered = asyncio.run(both(Path(tmp), plan))
    for title, report in (("one nats-server (R1)", single), ("3-node cluster (R3)", clustered)):
        print(f"\n{title}:")
        for line in report.lines():
            print(f"  {line}")
    one, three = figures(single), figures(clustered)
    print("\ncluster / one node:")
    for key, label in (("throughput_jobs_per_s", "throughput"),
                       ("queue_wait_p50_s", "queue wait p50"),
                       ("queue_wait_p95_s", "queue wait p95"), ("api_p95_s", "API p95"),
                       ("stream_bytes_per_job", "log bytes per job")):
        scale = 1000.0 if key == "api_p95_s" else 1.0
        unit = " ms" if key == "api_p95_s" else ""
        print(f"  {label:18s} {one[key] * scale:10.3f}{unit} -> {three[key] * scale:10.3f}"
              f"{unit}   ratio {ratio(three[key], one[key]):.2f}")
    keeps_up, problems = verdict(one, three)
    print("\nverdict: " + ("the cluster keeps up with one node" if keeps_up
                           else "the cluster falls behind: " + "; ".join(problems)))
    ok = all(r.statuses == {"completed": plan.jobs} and r.completed_twice == 0 and r.audit_ok
             for r in (single, clustered))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "jobs": plan.jobs, "single": one, "cluster": three,
            "ratios": {k: ratio(three[k], one[k]) for k in one}, "keeps_up": keeps_up,
            "problems": problems, "ok": ok}, indent=2))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
