"""`POST /api/v1/trainings`: submit a training job (202, never waits for training)."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from libs.events.job_types import TrainingAccepted, TrainingRequest
from libs.events.jobs import JobService


class TrainingController(Controller):
    path = "/api/v1/trainings"
    tags = ("trainings",)

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Submit a training job",
        description=(
            "Stores a train command in the log and returns at once with the job id, the pool "
            "it was routed to (and why) and where to follow it. The same `idempotency_key` "
            "always names the same job: a retry returns that job (`duplicate: true`), a "
            "failed one too, unless `retry: true`: then a key whose newest job ended failed, "
            "cancelled or rejected starts the next job of its chain (a new job id, "
            "`derived_from` the ended one). `experiment`, `tags` and `note` organise the run "
            "(changed later with POST /api/v1/jobs/<id>/annotations). "
            "`requested_by` is the authenticated identity when the request carries the API "
            "token (the body's value is ignored); the body's value only with auth off."
        ),
    )
    async def submit(
        self, data: JSONBody[TrainingRequest], jobs: NamedDependency[JobService],
        requester: NamedDependency[str | None],
    ) -> Response[TrainingAccepted]:
        if requester is not None:  # who asked is who authenticated, not what the body claims
            data = msgspec.structs.replace(data, requested_by=requester)
        accepted = await jobs.submit(data)
        return Response(accepted, status_code=HTTP_202_ACCEPTED,
                        headers={"Location": accepted.links.state})
