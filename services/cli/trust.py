"""`trainbus workers trust|untrust`: the operator's trusted trainer keys (libs/events/trust.py).

    trainbus workers trust PUBLIC_KEY --name NAME [--by WHO] [--json]
    trainbus workers untrust PUBLIC_KEY [--json]

PUBLIC_KEY is a trainer's signing key (`U...`), the `key` column of `trainbus workers`. Once
at least one key is trusted, a model is listed and served only when the job that made it was
claimed under a trusted key; with none, nothing is enforced. Writing the bucket takes the NATS
`admin` role under deploy/nats-roles.conf (every role may read it).

Exit codes: 0 done, 1 failed (NATS unreachable, not permitted; untrust: the key was not
trusted), 2 bad input (not a public key, an empty name).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from libs.events.trust import TrustedWorker


def register(subparsers: Any) -> None:
    # `workers` itself (the listing) is services/cli/jobs.py's: its actions are added here.
    workers = subparsers.choices["workers"]
    actions = workers.add_subparsers(dest="workers_action", metavar="{trust,untrust}")
    trust = actions.add_parser("trust", help="trust a trainer's signing key: its models are "
                               "listed and served")
    trust.add_argument("public_key", metavar="PUBLIC_KEY")
    trust.add_argument("--name", required=True, help="who this key is (shown beside it)")
    trust.add_argument("--by", default="operator", help="who trusts it (default operator)")
    trust.add_argument("--json", action="store_true")
    trust.set_defaults(handler=lambda args: _run(_trust, args))
    untrust = actions.add_parser("untrust", help="stop trusting a key")
    untrust.add_argument("public_key", metavar="PUBLIC_KEY")
    untrust.add_argument("--json", action="store_true")
    untrust.set_defaults(handler=lambda args: _run(_untrust, args))


def trust_label(signer: str | None, trusted: Mapping[str, TrustedWorker]) -> str:
    """The `trusted` column of `trainbus workers`."""
    if signer is None:
        return "unsigned"
    record = trusted.get(signer)
    if record is not None:
        return f"yes ({record.name})"
    return "no" if trusted else "no (trust not configured)"


def _run(command: Any, args: argparse.Namespace) -> int:
    from services.cli.client import run

    return run(lambda: command(args))


async def _trust(args: argparse.Namespace) -> int:
    from libs.events.trust import trust_worker
    from services.cli.client import EXIT_OK, open_bus, print_json

    async with open_bus() as bus:
        record = await trust_worker(bus, args.public_key, args.name, by=args.by)
    if args.json:
        print_json({"public_key": args.public_key.strip(), **_builtins(record)})
    else:
        print(f"trusted {args.public_key.strip()} as {record.name!r}")
    return EXIT_OK


async def _untrust(args: argparse.Namespace) -> int:
    from libs.events.trust import untrust_worker
    from services.cli.client import EXIT_FAILED, EXIT_OK, error, open_bus, print_json

    async with open_bus() as bus:
        removed = await untrust_worker(bus, args.public_key)
    if args.json:
        print_json({"public_key": args.public_key.strip(), "removed": removed})
    elif removed:
        print(f"no longer trusted: {args.public_key.strip()}")
    else:
        error(f"{args.public_key.strip()} was not trusted")
    return EXIT_OK if removed else EXIT_FAILED


def _builtins(record: TrustedWorker) -> dict[str, Any]:
    import msgspec

    value = msgspec.to_builtins(record)
    assert isinstance(value, dict)
    return value
