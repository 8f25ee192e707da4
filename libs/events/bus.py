"""The connection (`Bus`, `connect`) and every publish to the log.

Connection: the first connect fails fast with one clear line (`BusUnavailable`); once connected,
the client reconnects for ever, logs each distinct error as one line (no traceback spam) and
runs registered hooks after every reconnect (the worker re-checks cancels there: core messages
sent during a disconnect are lost).

Publishing: every message carries a namespaced `Nats-Msg-Id`, so a retry after a dropped
connection is stored once (the server answers `duplicate`). Event writers can fence: with
`expected_last_subject_seq` the server refuses the publish (JetStream 10071) when someone else
wrote on the job's events since, and we raise `FencedOut`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
import nats.aio.client
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from libs.events.config import BusConfig
from libs.events.errors import (
    BusClosed,
    BusUnavailable,
    FencedOut,
    PublishRefused,
    PublishTimeout,
)
from libs.events.schema import (
    AnyEvent,
    CancelCommand,
    RejectedEvent,
    TrainCommand,
    encode,
    tag_of,
)
from libs.events.subjects import (
    Names,
    cancel_msg_id,
    derive_job_id,
    event_msg_id,
    new_job_id,
    train_msg_id,
    validate_job_id,
)

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue
    from nats.js.object_store import ObjectStore

    from libs.events.signing import WorkerKey

log = logging.getLogger(__name__)

# nats-py reads its socket DEFAULT_BUFFER_SIZE (32 KiB) at a time, and that is also the limit of
# its asyncio StreamReader, past which asyncio pauses the socket: a 50 MB model arrived in
# ~1,600 reads, each also copying what was left of asyncio's buffer. nats-py has no option for
# it, so its module constant is raised here, before any client connects (it reads the name at
# each read). Measured in an A/B of the object reader (libs/events/objects.py), one process:
# its event-loop CPU per 50 MB fetch 133 -> 99-111 ms; bench/bus.py (d) prints that figure.
READ_BUFFER_BYTES: Final = 1 << 20
nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, READ_BUFFER_BYTES)

MSG_ID: Final = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: Final = "Nats-Expected-Last-Subject-Sequence-Subject"
WRONG_LAST_SEQUENCE: Final = 10071

ReconnectHook = Callable[[], Awaitable[None]]

# Errors after which the same publish (same msg id) may simply be tried again.
_RETRYABLE: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
)


@dataclass
class Bus:
    """One NATS connection and what hangs off it. `jobs`, `workers`, `models` and `aliases`
    are set by `ensure_jetstream` or `open_jetstream` (`aliases` stays None when attaching to a
    setup that predates the model registry)."""

    nc: NATS
    js: JetStreamContext
    config: BusConfig
    names: Names
    jobs: KeyValue | None = None
    workers: KeyValue | None = None
    models: ObjectStore | None = None
    aliases: KeyValue | None = None
    # A trainer's key (libs/events/signing.py): when set, `publish_event` signs every event.
    signer: WorkerKey | None = None
    _reconnect_hooks: list[ReconnectHook] = field(default_factory=list, repr=False)
    _closing: bool = field(default=False, repr=False)

    def on_reconnected(self, hook: ReconnectHook) -> None:
        """Run `hook` after every reconnect (not after the first connect)."""
        self._reconnect_hooks.append(hook)

    async def _reconnected(self) -> None:
        log.warning("reconnected to NATS at %s", _connected_url(self.nc))
        for hook in list(self._reconnect_hooks):
            try:
                await hook()
            except Exception:  # a hook's bug must not stop the other hooks or the client
                log.exception("reconnect hook %r failed", hook)

    async def close(self) -> None:
        """Flush what is pending and close (idempotent)."""
        if self.nc.is_closed:
            return
        self._closing = True
        try:
            await self.nc.drain()
        except (nats.errors.Error, TimeoutError):
            await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _connected_url(nc: NATS) -> str:
    """scheme://host:port of the current server, without credentials."""
    url = nc.connected_url
    if url is None:
        return "(none)"
    return f"{url.scheme}://{url.hostname}:{url.port}"


class _ErrorLog:
    """nats-py error callback: one line per distinct error, repeats folded for 30 s."""

    def __init__(self) -> None:
        self.quiet = True  # during the first connect the BusUnavailable message says it all
        self.last_error: BaseException | None = None
        self._last_line = ""
        self._last_at = 0.0

    async def __call__(self, err: Exception) -> None:
        self.last_error = err
        if self.quiet:
            return
        line = describe_error(err)
        now = time.monotonic()
        if line == self._last_line and now - self._last_at < 30.0:
            return
        self._last_line, self._last_at = line, now
        log.warning("NATS: %s", line)


def describe_error(err: BaseException) -> str:
    """A short human reason for a connection error."""
    if isinstance(err, ConnectionRefusedError) or (
        isinstance(err, OSError) and err.errno == errno.ECONNREFUSED
    ):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return "unknown host"
    if isinstance(err, TimeoutError | asyncio.TimeoutError | nats.errors.TimeoutError):
        return "timed out"
    # nats-py raises AuthorizationError, or a plain Error carrying the server's -ERR text.
    if isinstance(err, nats.errors.AuthorizationError) or "authorization violation" in str(
        err
    ).lower():
        return "authorization violation (check NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_CREDS)"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed: {err.reason or err}"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    text = str(err).strip()
    return text or type(err).__name__


def _tls_context(config: BusConfig) -> ssl.SSLContext | None:
    if not (config.tls_ca or config.tls_cert):
        return None
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert and config.tls_key:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def connect(
    config: BusConfig | None = None,
    *,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> Bus:
    """Connect to NATS. Raises `BusUnavailable` within about `config.connect_timeout` seconds
    when no server answers; afterwards the connection reconnects for ever."""
    config = config or BusConfig.from_env()
    errors = _ErrorLog()
    bus_ref: list[Bus] = []

    async def error_cb(err: Exception) -> None:  # nats-py insists on a coroutine function
        await errors(err)

    async def reconnected() -> None:
        if bus_ref:
            await bus_ref[0]._reconnected()

    async def disconnected() -> None:
        if not bus_ref or bus_ref[0].nc.is_closed or bus_ref[0]._closing:
            return  # the first connect failing, or our own close()
        log.warning("disconnected from NATS; reconnecting")
        if disconnected_cb is not None:
            await disconnected_cb()

    # nats-py's connect takes two dozen keywords: Any, as its own signature is the check.
    options: dict[str, Any] = {
        "servers": list(config.urls),
        "name": config.client_name,
        "error_cb": error_cb,
        "reconnected_cb": reconnected,
        "disconnected_cb": disconnected,
        "connect_timeout": config.connect_timeout,
        # First connect: one retry, quickly; nats-py would otherwise try 60 x 2 s, or for
        # ever with -1, before giving up.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "allow_reconnect": True,
    }
    if config.user is not None:
        options["user"] = config.user
        options["password"] = config.password
    if config.token is not None:
        options["token"] = config.token
    if config.creds_file is not None:
        options["user_credentials"] = config.creds_file
    if config.nkey_seed_file is not None:
        options["nkeys_seed"] = config.nkey_seed_file
    if (context := _tls_context(config)) is not None:
        options["tls"] = context

    nc = NATS()
    try:
        await asyncio.wait_for(nc.connect(**options), timeout=2 * config.connect_timeout + 1)
    except (nats.errors.NoServersError, OSError, TimeoutError, nats.errors.Error) as exc:
        reason = describe_error(errors.last_error or exc)
        if not nc.is_closed:
            await nc.close()
        raise BusUnavailable(f"cannot reach NATS at {config.display_urls}: {reason}") from None
    # From now on reconnect for ever. nats-py reads these options on every reconnect attempt.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = config.reconnect_time_wait
    errors.quiet = False
    bus = Bus(nc=nc, js=nc.jetstream(timeout=config.publish_timeout, domain=config.js_domain),
              config=config,
              names=config.names)
    bus_ref.append(bus)
    return bus


# --- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the stream said about a publish. `duplicate`: the msg id was already stored at
    `seq` (a retry), nothing new was written."""

    seq: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class CommandReceipt:
    job_id: str
    seq: int
    duplicate: bool = False


async def publish(
    bus: Bus,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    expected_last_subject_seq: int | None = None,
    fence_subject: str | None = None,
    retry_for: float | None = None,
    extra_headers: dict[str, str] | None = None,
) -> Receipt:
    """Publish to the stream and wait for its ack, retrying timeouts and outages with the same
    msg id (stored once) for up to `retry_for` seconds (default `config.publish_retry_for`).
    `extra_headers` (the signature) go beside the msg id and fence, never over them."""
    headers = {**(extra_headers or {}), MSG_ID: msg_id}
    if expected_last_subject_seq is not None:
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_subject_seq)
        if fence_subject is not None:
            headers[EXPECTED_LAST_SUBJECT_SEQ_SUBJECT] = fence_subject
    budget = bus.config.publish_retry_for if retry_for is None else retry_for
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        if bus.nc.is_closed:
            raise BusClosed("the NATS connection is closed")
        try:
            ack = await bus.js.publish(
                subject,
                payload,
                timeout=bus.config.publish_timeout,
                stream=bus.names.stream,
                headers=dict(headers),
            )
            return Receipt(seq=ack.seq, duplicate=bool(ack.duplicate))
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                # The server checks the fence before the msg id, so the retry of a publish
                # whose ack was lost lands here too: if the last message in the fence scope
                # is our own, the earlier attempt was stored and nobody wrote after it.
                own = await _own_last_seq(bus, fence_subject or subject, msg_id)
                if own is not None:
                    return Receipt(seq=own, duplicate=True)
                raise FencedOut(
                    fence_subject or subject, expected_last_subject_seq or 0,
                    exc.description or "wrong last sequence",
                ) from None
            raise PublishRefused(f"{subject}: {exc.description} ({exc.err_code})") from None
        except _RETRYABLE as exc:
            if time.monotonic() + delay > deadline:
                raise PublishTimeout(
                    f"no acknowledgement for {subject} within {budget:.0f}s: {describe_error(exc)}"
                ) from None
            log.info("publish to %s not acknowledged (%s); retrying", subject, describe_error(exc))
        except nats.errors.ConnectionClosedError:
            raise BusClosed("the NATS connection is closed") from None
        except nats.js.errors.APIError as exc:
            raise PublishRefused(f"{subject}: {exc.description} ({exc.err_code})") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _own_last_seq(bus: Bus, scope: str, msg_id: str) -> int | None:
    """Sequence of the last message in `scope` when it carries `msg_id`, else None."""
    try:
        last = await bus.js.get_last_msg(bus.names.stream, scope, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    headers = last.headers or {}
    return last.seq if headers.get(MSG_ID) == msg_id else None


async def publish_command(
    bus: Bus, command: TrainCommand, *, pool: str | None = None
) -> CommandReceipt:
    """Publish a train command to its pool (`pool` argument, else `command.pool`, else any).

    The job id is `command.job_id`; without one, the idempotency key when it is a valid job id,
    else a fresh random id. Dedupe id: `train:<job_id>` (or `train:<idempotency_key>`)."""
    target = pool or command.pool or "any"
    if command.job_id is not None:
        validate_job_id(command.job_id)
        key = command.job_id
    elif command.idempotency_key is not None:
        key = command.idempotency_key
        if derive_job_id(None, train_msg_id(key), 0) == key:  # usable as a job id
            command = msgspec.structs.replace(command, job_id=key)
    else:
        key = new_job_id()
        command = msgspec.structs.replace(command, job_id=key)
    msg_id = train_msg_id(key)
    receipt = await publish(bus, bus.names.train_subject(target), encode(command), msg_id=msg_id)
    job_id = derive_job_id(command.job_id, msg_id, receipt.seq)
    return CommandReceipt(job_id=job_id, seq=receipt.seq, duplicate=receipt.duplicate)


async def publish_cancel(
    bus: Bus, job_id: str, command: CancelCommand | None = None
) -> CommandReceipt:
    """Ask for a job to be cancelled (dedupe id `cancel:<job_id>`)."""
    payload = encode(command) if command is not None else b""
    receipt = await publish(
        bus, bus.names.cancel_subject(job_id), payload, msg_id=cancel_msg_id(job_id)
    )
    return CommandReceipt(job_id=job_id, seq=receipt.seq, duplicate=receipt.duplicate)


async def publish_event(
    bus: Bus,
    event: AnyEvent,
    *,
    n: int | str,
    expected_last_subject_seq: int | None = None,
    retry_for: float | None = None,
) -> Receipt:
    """Publish a job event on `<prefix>.evt.<job>.<kind>` with msg id
    `evt:<job>:<attempt>:<n>` (`n` counts this writer's events within the attempt).

    With `expected_last_subject_seq` the publish is fenced on all of the job's events
    (`<prefix>.evt.<job>.>`): pass 0 to claim a job that has no event yet, then the seq of
    your own previous event. Raises `FencedOut` when another writer got in between. With
    `bus.signer` set (a trainer) the event is signed over its subject and bytes."""
    job_id = event.job_id
    subject = bus.names.event_subject(job_id, tag_of(type(event)))
    payload = encode(event)
    return await publish(
        bus,
        subject,
        payload,
        extra_headers=bus.signer.sign(subject, payload) if bus.signer is not None else None,
        msg_id=event_msg_id(job_id, event.attempt, n),
        expected_last_subject_seq=expected_last_subject_seq,
        fence_subject=bus.names.job_events(job_id) if expected_last_subject_seq is not None
        else None,
        retry_for=retry_for,
    )


async def publish_rejection(
    bus: Bus,
    job_id: str,
    *,
    reason: str,
    field: str | None,
    category: str,
    command_seq: int | None,
    worker_id: str,
    retry_for: float | None = None,
) -> Receipt | None:
    """Publish `rejected` for a job that has no event yet (fenced on sequence 0), so the
    projector-side validator and a worker rejecting the same command cannot both write it and
    a job someone already claimed is never rejected. Returns None when fenced out."""
    event = RejectedEvent(
        job_id=job_id,
        attempt=0,
        worker_id=worker_id,
        time=time.time(),
        reason=reason,
        field=field,
        category=category,  # type: ignore[arg-type]
        command_seq=command_seq,
    )
    try:
        return await publish_event(
            bus, event, n="rejected", expected_last_subject_seq=0, retry_for=retry_for
        )
    except FencedOut:
        return None
