"""`trainbus container-trainer` and `trainbus host-trainer`: run a trainer in this process.

Both serve train commands from the bus until SIGTERM/SIGINT (drain: the running job is handed
back with a checkpoint); a second signal forces the exit. Options: `--help` on either.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.trainers.options import add_worker_arguments


def register(subparsers: Any) -> None:
    container = subparsers.add_parser(
        "container-trainer", help="serve training jobs of pools container and any",
        description="Serve train commands of pools `container` and `any` (device: "
                    "TRAINBUS_DEVICE or auto, normally CPU).",
    )
    add_worker_arguments(container)
    container.set_defaults(kind="container", handler=_container)
    host = subparsers.add_parser(
        "host-trainer", help="serve training jobs of pools host and any (CUDA/MPS if present)",
        description="Serve train commands of pools `host` and `any` on this workstation's "
                    "best device (CUDA > MPS > CPU; TRAINBUS_DEVICE overrides).",
    )
    add_worker_arguments(host)
    host.set_defaults(kind="host", handler=_host)


def _container(args: argparse.Namespace) -> int:
    from services.trainers.container import run

    return run(args)


def _host(args: argparse.Namespace) -> int:
    from services.host_trainer.main import run

    return run(args)
