"""An operator ends a stuck job: `trainbus jobs fail JOB --reason TEXT`, POST
`/api/v1/jobs/{id}/fail`.

A job whose worker died mid-run stays `running` (or `cancelling`) until a delivery of its train
command is claimed again; when none will be (the last delivery, a lost consumer), nobody can end
it. `fail_job` records an `OperatorFailedEvent` in the log (schema.py: `worker_id` "operator",
its own subject `<prefix>.evt.<job>.operator_failed`), which the fold accepts from no claimant.

It refuses a job that a live worker holds (its heartbeat lists the job, libs/events/heartbeat.py)
unless forced: that worker would go on writing to a job the log says failed. The decision is
taken on the job's log (not the projection, which may lag), and the publish is fenced on the
job's last event as read *before* the state and the heartbeats, so a worker that claims or
writes to the job in between makes the operator look again instead of failing it blind.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Annotated, Final

import nats.js.errors
from msgspec import Meta, Struct

from libs.events.bus import publish_event
from libs.events.errors import FencedOut, JobAlreadyFinished, ReplayError, ServiceError
from libs.events.fold import TERMINAL, JobState, fold
from libs.events.follow import read_job_log
from libs.events.heartbeat import WorkerHeartbeat, read_workers
from libs.events.jobs import JobService, check_job_id
from libs.events.schema import OPERATOR_WORKER_ID, OperatorFailedEvent

if TYPE_CHECKING:
    from libs.events.bus import Bus
    from libs.events.projector import Projector

# The error category the fold records for a job an operator ended (JobState.error.category).
OPERATOR_CATEGORY: Final = "operator"


class JobHeld(ServiceError):
    """Raised when failing a job that a live worker holds (without force), or that a worker
    wrote to while the operator looked: nothing is published."""


class FailRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of POST /api/v1/jobs/{id}/fail."""

    reason: Annotated[str, Meta(min_length=1, max_length=4096)]
    force: bool = False
    requested_by: Annotated[str, Meta(max_length=128)] = "api"


class FailAccepted(Struct, frozen=True, kw_only=True):
    job_id: str
    status: str
    seq: int
    forced: bool
    held_by: str | None = None
    duplicate: bool = False


def holders(job_id: str, workers: list[WorkerHeartbeat]) -> list[str]:
    """The live workers whose heartbeat says they run `job_id`."""
    return [w.worker_id for w in workers if job_id in w.running]


async def last_event_seq(bus: Bus, job_id: str) -> int:
    """The stream sequence of the job's last event (0: none), the fence of the fail."""
    try:
        last = await bus.js.get_last_msg(bus.names.stream, bus.names.job_events(job_id),
                                         direct=True)
    except nats.js.errors.NotFoundError:
        return 0
    return last.seq or 0


async def state_now(bus: Bus, job_id: str) -> JobState:
    """The job as its log says now: the projection may lag (or no projector may run where an
    operator's CLI runs), and failing a job is decided on the truth."""
    state = await JobService(bus).get(job_id)
    for message in await read_job_log(bus, state.job_id, command_seq=state.command_seq):
        state = fold(state, message) or state
    return state


async def fail_job(
    bus: Bus,
    job_id: str,
    *,
    reason: str,
    by: str,
    force: bool = False,
    projector: Projector | None = None,
    projection_wait: float = 2.0,
) -> FailAccepted:
    """End `job_id` as failed (category "operator"). Raises JobNotFound, JobAlreadyFinished,
    or JobHeld (a live worker holds it and not `force`; or a worker wrote to it meanwhile)."""
    job_id = check_job_id(job_id)
    fence = await last_event_seq(bus, job_id)
    state = await state_now(bus, job_id)
    if state.status in TERMINAL:
        raise JobAlreadyFinished(f"job {state.job_id} is already {state.status}")
    held = holders(state.job_id, await read_workers(bus))
    if held and not force:
        raise JobHeld(f"job {state.job_id} is held by live worker {', '.join(held)}: stop that "
                      "worker (or cancel the job), or force it", field="force")
    event = OperatorFailedEvent(
        job_id=state.job_id, attempt=state.attempt, worker_id=OPERATOR_WORKER_ID,
        time=time.time(), reason=reason, by=by, forced=bool(held),
        held_by=held[0] if held else None,
    )
    try:
        receipt = await publish_event(bus, event, n=OPERATOR_WORKER_ID,
                                      expected_last_subject_seq=fence)
    except FencedOut:
        raise JobHeld(f"job {state.job_id} changed while it was being failed (a worker wrote "
                      "to it): look at it again") from None
    if projector is not None:
        with contextlib.suppress(ReplayError):  # lagging is not failing: the event is stored
            await projector.wait_for(receipt.seq, timeout=projection_wait)
    return FailAccepted(job_id=state.job_id, status="failed", seq=receipt.seq,
                        forced=bool(held), held_by=event.held_by, duplicate=receipt.duplicate)
