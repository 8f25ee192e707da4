"""`trainbus predictor`: the NATS prediction service `trainbus-predictor`.

    trainbus predictor [--models-dir DIR] [--data-dir DIR] [--cache-size N] [--concurrency N]

Answers `<prefix>.svc.predict` and `<prefix>.svc.backtest` (requests: the HTTP bodies of
POST /api/v1/models/{strategy}/{version}/predict|backtest plus `"model": "strategy/1h_v3"` or
`"strategy@alias"`; JSON Schemas in docs/schemas/predictor.*.json) until SIGTERM/SIGINT, then
answers the requests in hand and exits. A model this machine's disk lacks is fetched from the
object store, its SHA-256 checked, and installed into the models dir. `nats micro ls` and
`nats micro info trainbus-predictor` list it; more predictors share the load (queue group).
Recipes: docs/nats-cli.md. Connection: NATS_URL / NATS_* (docs/configuration.md; under the
shipped roles, NATS_USER=predictor). Exit codes: 0 stopped, 1 NATS unreachable, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from services.cli.args import positive_int


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predictor", help="serve predictions and backtests over NATS (trainbus-predictor)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="default $TRAINBUS_MODELS_DIR or ./models")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="price files for windows; default $TRAINBUS_DATA_DIR or ./data")
    parser.add_argument("--cache-size", type=positive_int, default=4,
                        help="loaded models kept in memory (default 4)")
    parser.add_argument("--concurrency", type=positive_int, default=2,
                        help="predictions computed at once (default 2)")
    parser.set_defaults(handler=run_predictor)


def run_predictor(args: argparse.Namespace) -> int:
    from services.cli.client import run

    if not args.verbose:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("nats").setLevel(logging.WARNING)
    return run(lambda: _predictor(args))


async def _predictor(args: argparse.Namespace) -> int:
    from libs.events.config import DEFAULT_PUBLISH_RETRY_FOR
    from services.cli.client import EXIT_OK, bus_config
    from services.predictor.runner import Running, serve
    from services.settings import SharedSettings
    from services.signals import drain_on_signals

    shared = SharedSettings.from_env()
    # A service: the library's publish retries, not the CLI's short ones.
    config = bus_config(client_name="trainbus-predictor",
                        publish_retry_for=DEFAULT_PUBLISH_RETRY_FOR)
    models_dir: Path = args.models_dir or shared.models_dir
    data_dir: Path = args.data_dir or shared.data_dir

    def announce(running: Running) -> None:
        print(f"trainbus-predictor {running.service.id} on {config.display_urls}: "
              f"{', '.join(running.subjects.values())} (models {models_dir}, data {data_dir})",
              file=sys.stderr, flush=True)

    stop = asyncio.Event()
    with drain_on_signals(stop):
        await serve(config, stop, models_dir=models_dir, data_dir=data_dir,
                    cache_size=args.cache_size, concurrency=args.concurrency, ready=announce)
    print("trainbus-predictor stopped", file=sys.stderr, flush=True)
    return EXIT_OK
