"""The trusted workers: which trainer keys the operator vouches for, and the one verdict.

KV `<prefix>_trusted_workers` (setup.py creates it; only the operator, NATS `admin`, may write
it): key = a trainer's nkey public key (libs/events/signing.py, announced in its heartbeat),
value = `TrustedWorker` {name, trusted_at, by}. An empty bucket means trust is not configured
and nothing is enforced (unsigned development stacks keep working); with at least one key, a
model is listed and served only when the job that made it was claimed, and so completed, under
a trusted key (the fold counts a signed claim's events only with that key: fold.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Final

import msgspec
import nats.js.errors
from msgspec import Meta, Struct

from libs.events.errors import InvalidRequest, SetupMissing
from libs.events.projector import read_bucket
from libs.events.schema import decode_stored
from libs.events.signing import is_public_key

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from libs.events.bus import Bus
    from libs.events.fold import JobState

__all__ = ["TrustedWorker", "read_trusted", "trust_worker", "untrust_worker",
           "untrusted_reason"]


class TrustedWorker(Struct, frozen=True, kw_only=True):
    """One trusted key. `trusted_at` is Unix epoch seconds; `by` who trusted it."""

    name: Annotated[str, Meta(min_length=1, max_length=128)]
    trusted_at: float
    by: Annotated[str, Meta(min_length=1, max_length=128)] = "operator"


_decoder: Final = msgspec.json.Decoder(TrustedWorker)
_encoder: Final = msgspec.json.Encoder()


def _check_key(public_key: str) -> str:
    key = public_key.strip()
    if not is_public_key(key):
        raise InvalidRequest(f"public_key {key[:80]!r} is not an nkey user public key (U..., "
                             "56 characters: the `signer` a trainer's heartbeat shows)",
                             field="public_key")
    return key


async def _bucket(bus: Bus) -> KeyValue:
    try:
        return await bus.js.key_value(bus.names.trusted_bucket)
    except nats.js.errors.BucketNotFoundError:
        raise SetupMissing(f"KV bucket {bus.names.trusted_bucket} does not exist (a setup "
                           "older than signed events: start the stack once to create it)"
                           ) from None


async def trust_worker(bus: Bus, public_key: str, name: str, *, by: str = "operator"
                       ) -> TrustedWorker:
    """Trust `public_key` as `name` (re-trusting renames it). Raises InvalidRequest for a key
    that is not a user public key or an empty name."""
    key = _check_key(public_key)
    if not name.strip() or len(name) > 128:
        raise InvalidRequest("name must be 1 to 128 characters", field="name")
    record = TrustedWorker(name=name.strip(), trusted_at=time.time(), by=by[:128] or "operator")
    await (await _bucket(bus)).put(key, _encoder.encode(record))
    return record


async def untrust_worker(bus: Bus, public_key: str) -> bool:
    """Stop trusting `public_key`; False when it was not trusted."""
    key = _check_key(public_key)
    bucket = await _bucket(bus)
    try:
        await bucket.get(key)
    except nats.js.errors.KeyNotFoundError:
        return False
    await bucket.delete(key)
    return True


async def read_trusted(bus: Bus) -> dict[str, TrustedWorker]:
    """The trusted keys now ({} when none, or when the bucket does not exist yet: a setup
    older than signing). Entries that do not decode are left out (and trust nothing)."""
    try:
        values = await read_bucket(bus.js, bus.names.trusted_bucket)
    except nats.js.errors.NotFoundError:
        return {}
    trusted: dict[str, TrustedWorker] = {}
    for key, raw in values.items():
        try:
            trusted[key] = decode_stored(_decoder, raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return trusted


def untrusted_reason(state: JobState | None, trusted: Mapping[str, TrustedWorker]
                     ) -> str | None:
    """Why the model of the job in `state` may not be listed or served: None when trust is
    not configured (an empty `trusted`) or when the job's claim was signed by a trusted key."""
    if not trusted:
        return None
    if state is None:
        return "its job is not in the log, so no signature vouches for it"
    if state.signer is None:
        return (f"job {state.job_id} was claimed without a signature (worker "
                f"{state.worker!r}), and trust is configured")
    if state.signer not in trusted:
        return (f"job {state.job_id} was claimed by key {state.signer}, which is not a trusted "
                "worker (trainbus workers trust KEY --name NAME)")
    return None
