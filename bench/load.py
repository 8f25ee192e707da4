"""The load run (the CI variant is tests/reliability/test_load.py).

    .venv/bin/python bench/load.py [--jobs 200] [--containers 2] [--hosts 1] [--cluster]
        [--json out.json]

Real processes under the shipped role config: nats-server, `trainbus backend` (API auth on,
projector external), `trainbus projector`, the trainers. All jobs are submitted at once, half
over the API (bearer token) and half over raw NATS (the client role). While they run, the API
is asked `GET /api/v1/jobs` every 0.1 s. Reports throughput, queue wait (command stored ->
`accepted`) p50/p95/p99, the API's p50/p95/p99 latency, the peak RSS (VmHWM) of every
process, completions per job, the log's bytes per job, and `trainbus audit`. `--cluster`: on
a 3-node cluster under deploy/nats-cluster.conf (R3) instead (bench/cluster.py runs both and
prints the ratios). Exit 1 unless every job completed once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.scenarios import LoadPlan, percentile, run_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--containers", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--strategy", default="tiny", choices=("tiny", "mid", "long"))
    parser.add_argument("--cluster", action="store_true",
                        help="a 3-node NATS cluster (R3) instead of one nats-server")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    plan = LoadPlan(jobs=args.jobs, containers=args.containers, hosts=args.hosts,
                    strategy=args.strategy, cluster=args.cluster)
    with tempfile.TemporaryDirectory(prefix="trainbus-load-") as tmp:
        report = asyncio.run(run_load(Path(tmp), plan, say=print))
    print()
    for line in report.lines():
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "jobs": plan.jobs, "statuses": report.statuses,
            "completed_twice": report.completed_twice, "duration_s": report.duration,
            "throughput_jobs_per_s": report.throughput,
            "queue_wait_s": {q: percentile(report.queue_wait, q) for q in (50, 95, 99)},
            "list_latency_ms": {q: 1000 * percentile(report.list_latency, q)
                                for q in (50, 95, 99)},
            "peak_rss_mib": report.peak_rss_mib, "audit_ok": report.audit_ok,
            "stream_bytes": report.stream_bytes, "log_messages": report.log_messages,
        }, indent=2))
    ok = report.statuses == {"completed": plan.jobs} and report.completed_twice == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
