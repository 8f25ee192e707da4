"""`/api/v1/jobs`: job state (the projection), the job's log, live events (SSE), cancel, and an
operator's fail of a stuck job (libs/events/operator.py)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import ServerSentEvent
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT

from libs.events.fold import JobState, Status
from libs.events.job_types import CancelAccepted, CancelRequest, JobLog, JobPage
from libs.events.jobs import JobService
from libs.events.operator import FailAccepted, FailRequest, JobHeld, fail_job
from services.backend.runtime import Runtime
from services.backend.sse import job_event_stream

EVENT_STREAM = "text/event-stream"


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get("/", summary="List jobs, newest first")
    async def list_jobs(
        self,
        jobs: NamedDependency[JobService],
        status: FromQuery[Status | None] = None,
        strategy: FromQuery[str | None] = None,
        pool: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> JobPage:
        return await jobs.list(status=status, strategy=strategy, pool=pool, limit=limit,
                               offset=offset)

    @get("/{job_id:str}", summary="One job's projected state")
    async def get_job(self, job_id: FromPath[str], jobs: NamedDependency[JobService]) -> JobState:
        return await jobs.get(job_id)

    @get(
        "/{job_id:str}/events",
        summary="The job's log, or its live events (SSE)",
        description=(
            "JSON: the job's train command, cancels and events in log order (`after` skips "
            "entries up to that sequence). With `Accept: text/event-stream`: a `state` frame "
            "(the job's state), then one frame per new entry of the log, named by its kind, "
            "with `{\"entry\": <the log entry>, \"state\": <the job's state after it>}`, "
            "then an `end` frame with the terminal state."
        ),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        runtime: NamedDependency[Runtime],
        after: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> Response[JobLog] | ServerSentEvent:
        # JSON unless the client asks for a stream (`*/*` gets JSON; EventSource sends the header).
        if request.accept.best_match(["application/json", EVENT_STREAM]) == EVENT_STREAM:
            state = await jobs.get(job_id)
            return job_event_stream(jobs.bus, state, stopping=runtime.stopping,
                                    keepalive=runtime.settings.sse_keepalive)
        return Response(await jobs.log(job_id, after=after))

    @post(
        "/{job_id:str}/cancel",
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a queued or running job",
        description="409 when the job is already terminal.",
    )
    async def cancel(
        self,
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        data: JSONBody[CancelRequest | None] = None,
    ) -> CancelAccepted:
        return await jobs.cancel(job_id, data)

    @post(
        "/{job_id:str}/fail",
        status_code=HTTP_202_ACCEPTED,
        summary="End a stuck job as failed (an operator's decision, recorded in the log)",
        description=(
            "For a job no live worker holds (its worker died, no delivery is left): records an "
            "`operator_failed` event; the job becomes `failed` with error category `operator`. "
            "409 when the job is already terminal, or when a live worker's heartbeat lists it "
            "(send `force: true` to fail it anyway) or a worker wrote to it meanwhile."
        ),
    )
    async def fail(
        self,
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        data: JSONBody[FailRequest],
    ) -> FailAccepted:
        try:
            return await fail_job(jobs.bus, job_id, reason=data.reason, by=data.requested_by,
                                  force=data.force, projector=jobs.projector,
                                  projection_wait=jobs.projection_wait)
        except JobHeld as exc:
            # The refusal's status lives here until services/backend/problems.py lists it.
            raise ProblemDetailsException(
                status_code=HTTP_409_CONFLICT, title="job held by a live worker",
                detail=exc.detail, extra={"field": exc.field} if exc.field else None,
            ) from None
