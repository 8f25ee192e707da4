"""`trainbus projector`: the projector in its own process (for TRAINBUS_PROJECTOR=external).

    trainbus projector

Folds the log into job state in KV `<prefix>_jobs` until SIGTERM/SIGINT, then writes what is
pending and exits. Safe to kill at any moment (kill -9 included): the next start resumes after
the checkpoint stored with the projection, and the KV ends as a clean replay would leave it.
Run it beside backends started with TRAINBUS_PROJECTOR=external. Connection settings:
NATS_URL / NATS_* (docs/configuration.md). Exit codes: 0 stopped, 1 NATS unreachable or the
fold stopped on an internal error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "projector", help="run the projector alone (job state in KV)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=run_projector)


def run_projector(args: argparse.Namespace) -> int:
    from services.cli.client import run

    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("nats").setLevel(logging.WARNING)
    return run(_projector)


async def _projector() -> int:
    from libs.events.bus import connect
    from libs.events.config import DEFAULT_PUBLISH_RETRY_FOR
    from libs.events.projector import Projector
    from libs.events.setup import ensure_jetstream
    from services.cli.client import EXIT_OK, bus_config
    from services.signals import drain_on_signals

    stop = asyncio.Event()
    with drain_on_signals(stop):
        bus = await connect(bus_config(client_name="trainbus-projector",
                                       publish_retry_for=DEFAULT_PUBLISH_RETRY_FOR))
        try:
            await ensure_jetstream(bus)
            projector = Projector(bus)
            print(f"trainbus projector on {bus.config.display_urls}", file=sys.stderr,
                  flush=True)
            await projector.run(stop)
        finally:
            await bus.close()
    print("trainbus projector stopped", file=sys.stderr, flush=True)
    return EXIT_OK
