"""`/api/v1/jobs`: job state (the projection), the job's log, live events (SSE), cancel, an
operator's fail of a stuck job (libs/events/operator.py), a rerun with changes
(libs/events/rerun.py), annotations (tags, note, experiment), and the trainer's log lines."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.response import ServerSentEvent
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT

from libs.events.fold import JobState, Status
from libs.events.job_logs import JobLines, read_lines
from libs.events.job_query import JobQuery, parse_moment
from libs.events.job_types import (
    AnnotateAccepted,
    AnnotateRequest,
    CancelAccepted,
    CancelRequest,
    JobLog,
    JobPage,
    RerunRequest,
    TrainingAccepted,
)
from libs.events.jobs import JobService
from libs.events.operator import FailAccepted, FailRequest, JobHeld, fail_job
from libs.events.rerun import rerun_request, source_command, strategy_file_text
from services.backend.runtime import Runtime
from services.backend.sse import job_event_stream

EVENT_STREAM = "text/event-stream"


class JobController(Controller):
    path = "/api/v1/jobs"
    tags = ("jobs",)

    @get(
        "/",
        summary="List jobs, newest first",
        description=(
            "Every filter given must hold. `tag` repeats: `key=value` (that value) or `key` "
            "(any value). `since`/`until` bound the creation time: an ISO date or date-time "
            "(UTC when naive) or epoch seconds. Each item has the headline test metric of a "
            "completed job (`metric`, `metric_value`)."
        ),
    )
    async def list_jobs(
        self,
        jobs: NamedDependency[JobService],
        status: FromQuery[Status | None] = None,
        strategy: FromQuery[str | None] = None,
        pool: FromQuery[str | None] = None,
        experiment: FromQuery[str | None] = None,
        tag: FromQuery[list[str] | None] = None,
        symbol: FromQuery[str | None] = None,
        timeframe: FromQuery[str | None] = None,
        worker: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
    ) -> JobPage:
        query = JobQuery(status=status, strategy=strategy, pool=pool, experiment=experiment,
                         tags=tuple(tag or ()), symbol=symbol, timeframe=timeframe,
                         worker=worker, since=parse_moment(since, field="since"),
                         until=parse_moment(until, field="until"))
        return await jobs.list(query=query, limit=limit, offset=offset)

    @post(
        "/{job_id:str}/rerun",
        status_code=HTTP_202_ACCEPTED,
        summary="A new job from this job's command, with changes",
        description=(
            "The job's train command with `seed`, `epochs` and `set` (dotted strategy keys: "
            "the new job trains the changed strategy inline, checked first: 422 naming the "
            "key) changed; `derived_from` is this job. Re-running a failed job after its "
            "cause was fixed is the retry."
        ),
    )
    async def rerun(
        self,
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        runtime: NamedDependency[Runtime],
        requester: NamedDependency[str | None],
        data: JSONBody[RerunRequest | None] = None,
    ) -> Response[TrainingAccepted]:
        request = data or RerunRequest()
        if requester is not None:  # who asked is who authenticated
            request = msgspec.structs.replace(request, requested_by=requester)
        state = await jobs.get(job_id)
        command = await source_command(jobs.bus, state)
        training = rerun_request(command, state.job_id, request,
                                 strategy_text=strategy_file_text(runtime.settings.strategies_dir))
        accepted = await jobs.submit(training)
        return Response(accepted, status_code=HTTP_202_ACCEPTED,
                        headers={"Location": accepted.links.state})

    @post(
        "/{job_id:str}/annotations",
        status_code=HTTP_202_ACCEPTED,
        summary="Set tags, the note or the experiment of a job (any status)",
        description=(
            "Records an `annotated` event: `tags` set those keys, `untag` removes keys, `note` "
            "replaces the note and `experiment` the experiment (\"\" clears either)."
        ),
    )
    async def annotate(
        self,
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        requester: NamedDependency[str | None],
        data: JSONBody[AnnotateRequest],
    ) -> AnnotateAccepted:
        if requester is not None:
            data = msgspec.structs.replace(data, requested_by=requester)
        return await jobs.annotate(job_id, data)

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

    @get(
        "/{job_id:str}/logs",
        summary="The job's trainer log lines",
        description=(
            "What the worker logged while it ran the job (its attempt and training thread), "
            "oldest first, kept with limits in the logs stream. `after`: only lines after that "
            "logs-stream sequence (poll with the previous answer's `next_after`). Lines with "
            "`end: true` mark the end of an attempt."
        ),
    )
    async def logs(
        self,
        job_id: FromPath[str],
        jobs: NamedDependency[JobService],
        after: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Annotated[int, QueryParameter(ge=1, le=5000)] = 1000,
    ) -> JobLines:
        state = await jobs.get(job_id)
        lines = await read_lines(jobs.bus, state.job_id, after=after, limit=limit)
        return JobLines(job_id=state.job_id, status=state.status, lines=lines,
                        next_after=lines[-1].seq if lines else after)

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
