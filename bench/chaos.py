"""The long chaos run (the CI variant is tests/reliability/test_chaos.py).

    .venv/bin/python bench/chaos.py [--jobs 20] [--containers 2] [--hosts 2]
        [--trainer-kills 6] [--nats-kills N] [--cluster] [--seed 20261128] [--strategy mid]
        [--json out.json]

Real processes under the shipped role config (deploy/nats-server.conf + nats-roles.conf):
nats-server, `trainbus backend` (API auth on, projector external), `trainbus projector`, the
trainers; jobs submitted over raw NATS and the API. Faults are triggered by progress (kill
the trainer running job J once it finished epoch E; J, E from the seeded RNG): trainers
kill -9 + restart, the nats-server kill -9 + restart once, the projector kill -9 + restart
once. `--cluster`: NATS is a 3-node cluster under the shipped deploy/nats-cluster.conf (R3,
every process given the three URLs), and the NATS faults (`--nats-kills`, default 3 there)
each SIGKILL one node, the stream leader first, then a follower, alternately; the node is
restarted once the job it hit has trained another epoch on the other two, and has caught up
before the next node dies. Then: every job terminal, exactly one `completed` each, every model
loaded and compared with an uninterrupted TrainingPipeline.run of the same command, `trainbus
audit` (as the auditor role). Prints the figures docs/reliability.md (one server) and
docs/scaling.md (the cluster) quote; exit 1 if any check fails.
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

from tests.reliability.scenarios import ChaosPlan, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--containers", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--trainer-kills", type=int, default=6)
    parser.add_argument("--nats-kills", type=int, default=None,
                        help="nats-server kills (one node each with --cluster); "
                             "default 1, 3 with --cluster")
    parser.add_argument("--projector-kills", type=int, default=1)
    parser.add_argument("--cluster", action="store_true",
                        help="a 3-node NATS cluster (R3) instead of one nats-server")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--strategy", default="mid", choices=("tiny", "mid", "long"))
    parser.add_argument("--json", type=Path, default=None, help="write the report here too")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this directory and keep it (logs of every process)")
    args = parser.parse_args()
    plan = ChaosPlan(jobs=args.jobs, containers=args.containers, hosts=args.hosts,
                     trainer_kills=args.trainer_kills,
                     nats_kills=args.nats_kills if args.nats_kills is not None
                     else 3 if args.cluster else 1,
                     projector_kills=args.projector_kills, seed=args.seed,
                     strategy=args.strategy, timeout=3600.0, cluster=args.cluster)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run_chaos(args.keep, plan, say=print))
    else:
        with tempfile.TemporaryDirectory(prefix="trainbus-chaos-") as tmp:
            report = asyncio.run(run_chaos(Path(tmp), plan, say=print))
    print()
    for line in report.lines():
        print(line)
    for fault in report.faults:
        print(f"  {fault.at:6.1f}s {fault.kind:9s} {fault.detail}")
    ok = (report.completed == len(report.jobs) and report.completed_twice == 0
          and report.events_lost == 0 and all(j.weights_ok for j in report.jobs)
          and report.audit_ok and not report.orphan_models and report.violations == 0)
    if args.json is not None:
        args.json.write_text(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
