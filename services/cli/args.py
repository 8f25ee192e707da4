"""What every `trainbus` command shares: exit codes and argument types (no heavy imports).

Exit codes: 0 done, 1 failed, 2 bad input or usage, 130 cancelled or interrupted.
"""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


def csv_list(text: str) -> list[str]:
    """`A,B` -> ["A", "B"]; empty items dropped, an empty list refused."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def job_id(text: str) -> str:
    """A job id argument: not one at all is a usage error (exit 2) naming why; an unknown but
    well-formed one is the command's to report (not found, 1)."""
    from libs.events.errors import CommandRejected
    from libs.events.subjects import validate_job_id

    try:
        return validate_job_id(text, allow_reserved=True)
    except CommandRejected as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def tag_pair(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value) for `--tag` (the value may be empty, the key not)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def add_organising(parser: argparse.ArgumentParser) -> None:
    """`--experiment`, `--tag k=v` (repeatable) and `--note`, shared by train and rerun."""
    parser.add_argument("--experiment", default=None, help="the experiment this run belongs to")
    parser.add_argument("--tag", dest="tags", type=tag_pair, action="append", default=[],
                        metavar="KEY=VALUE", help="a tag (repeatable)")
    parser.add_argument("--note", default=None, help="free text kept with the job")
