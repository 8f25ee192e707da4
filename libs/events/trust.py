"""The trusted workers: which trainer keys the operator vouches for, and the one verdict.

KV `<prefix>_trusted_workers` (setup.py creates it; only the operator, NATS `admin`, may write
it): key = a trainer's nkey public key (libs/events/signing.py, announced in its heartbeat),
value = `TrustedWorker` {name, trusted_at, by}. The first trust also writes `_enforce`
(`Enforcement` {since_seq, at, by}): from then on, for good, a model is listed and served only
when the job that made it was claimed, and so completed, under a trusted key (the fold counts
a signed claim's events only with that key: fold.py). Untrusting every key keeps enforcing
(nothing is trusted then), and jobs whose last claim is at or before `since_seq` (the log's
end when trust began: they were trained before anything was signed) stay servable, so turning
trust on hides no model trained before it. A bucket without `_enforce` enforces nothing
(unsigned development stacks keep working).
"""

from __future__ import annotations

import contextlib
import time
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

__all__ = ["Enforcement", "Trust", "TrustedWorker", "read_trust", "read_trusted",
           "trust_new_worker", "trust_worker", "untrust_worker", "untrusted_reason"]


ENFORCE_KEY: Final = "_enforce"  # no nkey public key starts with `_`


class Enforcement(Struct, frozen=True, kw_only=True):
    """Trust is enforced for every job whose train command is after `since_seq`."""

    since_seq: int
    at: float
    by: str = "operator"


class Trust(Struct, frozen=True, kw_only=True):
    """The trusted keys and whether (and since when) trust is enforced."""

    keys: dict[str, TrustedWorker] = {}
    enforcement: Enforcement | None = None

    @property
    def enforced(self) -> bool:
        return self.enforcement is not None


class TrustedWorker(Struct, frozen=True, kw_only=True):
    """One trusted key. `trusted_at` is Unix epoch seconds; `by` who trusted it."""

    name: Annotated[str, Meta(min_length=1, max_length=128)]
    trusted_at: float
    by: Annotated[str, Meta(min_length=1, max_length=128)] = "operator"


_decoder: Final = msgspec.json.Decoder(TrustedWorker)
_enforcement_decoder: Final = msgspec.json.Decoder(Enforcement)
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
    bucket = await _bucket(bus)
    await _start_enforcing(bus, bucket, record.by)
    await bucket.put(key, _encoder.encode(record))
    return record


async def trust_new_worker(bus: Bus, public_key: str, name: str, *, by: str) -> bool:
    """Trust `public_key` unless the bucket already knows it: trusted (left as is) or
    untrusted by the operator (never trusted again behind their back). True when trusted now.
    What `trainbus up` does for its own trainers at each start."""
    key = _check_key(public_key)
    bucket = await _bucket(bus)
    try:
        await bucket.get(key)
        return False
    except nats.js.errors.KeyNotFoundError as missing:
        if missing.op is not None:  # a delete marker: the operator untrusted it
            return False
    await trust_worker(bus, key, name, by=by)
    return True


async def _start_enforcing(bus: Bus, bucket: KeyValue, by: str) -> None:
    """Write `_enforce` once (create only: the first trust decides since when)."""
    last_seq = (await bus.js.stream_info(bus.names.stream)).state.last_seq
    record = Enforcement(since_seq=int(last_seq), at=time.time(), by=by)
    with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):  # enforced already
        await bucket.create(ENFORCE_KEY, _encoder.encode(record))


async def untrust_worker(bus: Bus, public_key: str) -> bool:
    """Stop trusting `public_key`; False when it was not trusted."""
    key = _check_key(public_key)
    bucket = await _bucket(bus)
    try:
        await bucket.get(key)
    except nats.js.errors.KeyNotFoundError:
        return False
    # A bucket from before `_enforce` existed: record it first (since the start), or removing
    # its last key would switch enforcement off and serve the untrusted key's models.
    with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
        await bucket.create(ENFORCE_KEY, _encoder.encode(
            Enforcement(since_seq=0, at=time.time(), by="untrust")))
    await bucket.delete(key)
    return True


async def read_trusted(bus: Bus) -> dict[str, TrustedWorker]:
    """The trusted keys now ({} when none, or when the bucket does not exist yet: a setup
    older than signing). Entries that do not decode are left out (and trust nothing)."""
    return (await read_trust(bus)).keys


async def read_trust(bus: Bus) -> Trust:
    """The trusted keys and the enforcement (none when the bucket does not exist yet: a setup
    older than signing). Entries that do not decode are left out (and trust nothing)."""
    try:
        values = await read_bucket(bus.js, bus.names.trusted_bucket)
    except nats.js.errors.NotFoundError:
        return Trust()
    trusted: dict[str, TrustedWorker] = {}
    enforcement: Enforcement | None = None
    for key, raw in values.items():
        try:
            if key == ENFORCE_KEY:
                enforcement = decode_stored(_enforcement_decoder, raw)
            else:
                trusted[key] = decode_stored(_decoder, raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    if enforcement is None and trusted:  # keys written before `_enforce` existed
        enforcement = Enforcement(since_seq=0, at=0.0)
    return Trust(keys=trusted, enforcement=enforcement)


def untrusted_reason(state: JobState | None, trust: Trust) -> str | None:
    """Why the model of the job in `state` may not be listed or served: None when trust is
    not enforced, when the job was trained before it was (the claim of its last attempt at
    or before `since_seq`: a job queued then but trained after is judged like any other), or
    when the job's claim was signed by a trusted key."""
    if trust.enforcement is None:
        return None
    if state is None:
        return "its job is not in the log, so no signature vouches for it"
    if state.claim_seq is not None and state.claim_seq <= trust.enforcement.since_seq:
        return None  # trained under a claim made before trust began
    trusted = trust.keys
    if state.signer is None:
        return (f"job {state.job_id} was claimed without a signature (worker "
                f"{state.worker!r}), and trust is configured")
    if state.signer not in trusted:
        return (f"job {state.job_id} was claimed by key {state.signer}, which is not a trusted "
                "worker (trainbus workers trust KEY --name NAME)")
    return None
