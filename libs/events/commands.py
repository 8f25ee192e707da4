"""Turning raw command bytes (from the backend, `nats req` or anyone) into commands, or into a
`CommandRejected` that says exactly what is wrong.

Shared by the projector (which projects a malformed train command as a rejected job) and the
worker runtime (which consumes the same bytes from its pool consumer), so both reach the same
verdict for the same bytes.

Cancel is lenient on purpose: the subject `<prefix>.cmd.cancel.<job_id>` carries the whole
intent, so a body that does not decode still cancels; the decoding problem becomes the cancel
reason instead of being dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

import msgspec

from libs.events.errors import CommandRejected, InvalidJobId
from libs.events.schema import (
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    CancelCommand,
    PayloadTooDeep,
    PayloadTooLarge,
    TrainCommand,
    decode_cancel_body,
    decode_train_body,
    decode_untrusted,
)
from libs.events.subjects import DEFAULT_NAMES, TRAIN, Names, is_valid_job_id, validate_job_id

_UNKNOWN_FIELD_RE: Final = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
_PATH_RE: Final = re.compile(r" - at `\$\.?([^`]*)`")
_MAX_REASON: Final = 1000


class _JobIdProbe(msgspec.Struct):
    """Lenient view of a body, only to attribute a rejection to the job it names."""

    job_id: object = None


_probe_decoder: Final = msgspec.json.Decoder(_JobIdProbe)


def validate_train_command(
    raw: bytes, subject: str, *, names: Names = DEFAULT_NAMES
) -> TrainCommand:
    """The train command stored on `subject`, with `pool` set from the subject.

    Raises `CommandRejected` (reason, field, category, job_id) for anything that cannot run."""
    info = names.parse(subject)
    if info.kind != TRAIN:
        raise CommandRejected(f"{subject!r} is not a train command subject", category="unsupported")
    if info.pool is None:
        raise CommandRejected(
            f"unknown pool in {subject!r}: use any, container or host",
            field="pool",
            category="invalid",
            job_id=_job_id_hint(raw),
        )
    return validate_train_body(raw, pool=info.pool)


def validate_train_body(raw: bytes, *, pool: str) -> TrainCommand:
    """Strictly decode and check a train command body addressed to `pool`."""
    try:
        command = decode_train_body(raw)
    except PayloadTooLarge:
        raise CommandRejected(
            f"command is {len(raw)} bytes; the limit is {MAX_COMMAND_BYTES} "
            "(store large strategies in the object store)",
            category="too_large",
            job_id=_job_id_hint(raw),
        ) from None
    except PayloadTooDeep as exc:
        raise CommandRejected(f"refused: {exc}", category="malformed") from None
    except msgspec.ValidationError as exc:  # (a subclass of DecodeError: catch it first)
        raise CommandRejected(
            _clip(f"invalid train command: {exc}"),
            field=_field_of(str(exc)),
            category="malformed",
            job_id=_job_id_hint(raw),
        ) from None
    except msgspec.DecodeError as exc:
        raise CommandRejected(f"not valid JSON: {exc}", category="malformed") from None

    job_hint = command.job_id
    if command.job_id is not None:
        try:
            validate_job_id(command.job_id)
        except InvalidJobId as exc:
            raise CommandRejected(exc.reason, field="job_id", category="invalid") from None
    if (command.strategy is None) == (command.strategy_yaml is None):
        raise CommandRejected(
            "give exactly one of 'strategy' (a strategy name) or 'strategy_yaml' (inline YAML)",
            field="strategy",
            category="invalid",
            job_id=job_hint,
        )
    if command.pool is not None and command.pool != pool:
        raise CommandRejected(
            f"pool {command.pool!r} in the body contradicts the subject's pool {pool!r}",
            field="pool",
            category="invalid",
            job_id=job_hint,
        )
    _check_window(command, job_hint)
    if command.pool != pool:
        command = msgspec.structs.replace(command, pool=pool)
    return command


def read_cancel_command(raw: bytes) -> CancelCommand:
    """The cancel command in `raw`; never raises (see the module docstring)."""
    try:
        return decode_cancel_body(raw)
    except PayloadTooLarge:
        return CancelCommand(reason=f"(cancel body ignored: {len(raw)} bytes is over the limit)")
    except msgspec.DecodeError as exc:  # a ValidationError or a too-deep payload too
        return CancelCommand(reason=_clip(f"(cancel body not understood: {exc})"))


def _check_window(command: TrainCommand, job_hint: str | None) -> None:
    bounds: dict[str, datetime] = {}
    for field in ("start", "end"):
        text = getattr(command, field)
        if text is None:
            continue
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise CommandRejected(
                f"{field} {text!r} is not a valid date", field=field, category="invalid",
                job_id=job_hint,
            ) from None
        # Naive dates mean UTC: compare like with like.
        bounds[field] = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if len(bounds) == 2 and bounds["start"] >= bounds["end"]:
        raise CommandRejected(
            f"start {command.start} is not before end {command.end}",
            field="end",
            category="invalid",
            job_id=job_hint,
        )


def _field_of(message: str) -> str | None:
    """The field a msgspec error names: `symbols[0]` for `... - at `$.symbols[0]``, the field
    itself for unknown/missing fields (prefixed with its parent's path when nested)."""
    path_match = _PATH_RE.search(message)
    path = path_match.group(1) if path_match else ""
    field_match = _UNKNOWN_FIELD_RE.search(message)
    if field_match:
        return f"{path}.{field_match.group(1)}" if path else field_match.group(1)
    return path or None


def _job_id_hint(raw: bytes) -> str | None:
    """A valid, non-reserved job id named in a bad body, so the rejection lands on that job."""
    try:
        job_id = decode_untrusted(_probe_decoder, raw, max_bytes=MAX_MESSAGE_BYTES).job_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not is_valid_job_id(job_id):
        return None
    try:
        return validate_job_id(job_id)
    except InvalidJobId:
        return None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
