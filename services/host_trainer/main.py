"""The native host trainer: the shared worker runtime on pool `host` (then `any`).

Runs natively on the workstation so DeviceManager can pick CUDA or Apple MPS
(`TRAINBUS_DEVICE` overrides), and reports a session view (current job, status, epoch,
metrics) in its heartbeat. Nothing here but configuration and that bookkeeping; pulling,
leases, cancel, events, checkpoints and model transfer are `WorkerRuntime`
(libs/events/worker/runtime.py), and the process edge is services/trainers/process.py.

    trainbus host-trainer [--nats-url URL] [--worker-id ID] [--data-dir DIR] ...

In-process (`trainbus up`/`demo`): `await serve(config, stop)` until `stop` is set.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Final

from libs.events.config import BusConfig
from services.host_trainer.session import HostSession
from services.trainers.process import run_process, serve_kind

KIND: Final = "host"


async def serve(config: BusConfig, stop: asyncio.Event, **options: Any) -> None:
    """Serve `host` and `any` train commands until `stop` is set, then drain.
    Options: those of `services.trainers.process.serve_kind`."""
    await serve_kind(KIND, config, stop, observer=HostSession(), **options)


def run(args: argparse.Namespace) -> int:
    """`trainbus host-trainer` (services/cli/trainers.py parses the options)."""
    return run_process(args, serve)
