"""The error tree of the events library: one root, one family per concern.

Callers catch `TrainbusBusError` at process edges (CLI, service entry points) and print its
message; inside the library each family says precisely what went wrong. Every class states
when it is raised. Messages never contain secrets (passwords, tokens, seeds).
"""

from __future__ import annotations


class TrainbusBusError(Exception):
    """Root of every error raised by `libs.events`."""


# --- configuration and connection ---------------------------------------------------------------


class BusConfigError(TrainbusBusError, ValueError):
    """Raised when a `BusConfig` value or a NATS_*/TRAINBUS_* environment variable is invalid
    (not a number, a missing creds file, a subject prefix that cannot be a subject token)."""


class BusUnavailable(TrainbusBusError):
    """Raised when the first connection to NATS fails (refused, timed out, unknown host,
    authorization). Its message is one line meant for humans:
    `cannot reach NATS at nats://127.0.0.1:4333: connection refused`."""


class BusClosed(TrainbusBusError):
    """Raised when an operation needs a connection that was closed for good (after `close()`)."""


# --- JetStream setup ----------------------------------------------------------------------------


class SetupError(TrainbusBusError):
    """Raised when the stream, consumers, KV buckets or object store cannot be set up or
    checked."""


class DangerousStreamConfig(SetupError):
    """Raised at start when an existing stream differs in a way that loses data or history:
    work-queue or interest retention, memory storage, delete or purge allowed, sealed, no-ack."""


class ConsumerDrift(SetupError):
    """Raised when an existing pool consumer differs in a field that cannot be updated in place
    (filter subject, ack policy, push vs pull). Consumers are never deleted and recreated: that
    re-sends every old command."""


class SetupMissing(SetupError):
    """Raised when attaching (without creating) to a stream or bucket that does not exist."""


# --- publishing ---------------------------------------------------------------------------------


class PublishError(TrainbusBusError):
    """Raised when a publish to the stream fails for good (after retries, or refused)."""


class PublishRefused(PublishError):
    """Raised when the server refuses a publish for a reason a retry cannot fix (subject not
    in the stream, message too large, wrong expected stream)."""


class PublishTimeout(PublishError):
    """Raised when no acknowledgement came back within the retry budget (server down or
    JetStream unavailable for longer than `BusConfig.publish_retry_for`)."""


class FencedOut(PublishError):
    """Raised when a fenced publish is refused with JetStream error 10071 (wrong last
    sequence): another writer has published on the job's event subjects since this writer's
    last event. The caller is a stale (zombie) writer and must stop publishing for that job."""

    def __init__(self, subject: str, expected_seq: int, detail: str) -> None:
        super().__init__(
            f"fenced out on {subject}: expected last sequence {expected_seq}, server says {detail}"
        )
        self.subject = subject
        self.expected_seq = expected_seq


# --- commands -----------------------------------------------------------------------------------


class CommandRejected(TrainbusBusError):
    """Raised when a command body cannot become a valid command: not JSON, wrong types, an
    unknown field, both or neither of strategy/strategy_yaml, a hostile job id, too large.

    `field` names the offending field (None when the whole body is bad), `category` is the
    `rejected` event category, `job_id` is a valid job id found in the body (if any) so the
    rejection can still be attributed to a job."""

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        category: str = "malformed",
        job_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.category = category
        self.job_id = job_id


class InvalidJobId(CommandRejected, ValueError):
    """Raised when a job id could inject subject tokens or is otherwise not allowed
    (`.`, `*`, `>`, whitespace, too long, the reserved `job-<digits>` form)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, field="job_id", category="invalid")


# --- log reading --------------------------------------------------------------------------------


class ReplayError(TrainbusBusError):
    """Raised when reading the log stalls (no message within the stall timeout while the
    stream says more exist) or the projector stopped on an internal error."""


# --- object store -------------------------------------------------------------------------------


class ObjectStoreError(TrainbusBusError):
    """Raised when an object cannot be read from or written to the object store."""


class ObjectNotFound(ObjectStoreError):
    """Raised when the named object does not exist (or was deleted)."""


class ObjectDigestMismatch(ObjectStoreError):
    """Raised when an object's bytes do not match the size or SHA-256 digest in its metadata."""


# --- the application service (libs/events/jobs.py) --------------------------------------------


class ServiceError(TrainbusBusError):
    """Root of what the job operations refuse, for both edges (HTTP maps each class to a status
    in services/backend/problems.py; the CLI prints it). `field` names the request field at
    fault (None when the whole request is)."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidRequest(ServiceError):
    """Raised when a request is well-formed but cannot become a command: both or neither of
    strategy/strategy_yaml, a start not before its end, symbols that cannot be defaulted, or
    anything the trainers would refuse (checked before anything is stored)."""


class JobNotFound(ServiceError):
    """Raised when no job with the id is in the projection or among the log's latest commands."""


class JobAlreadyFinished(ServiceError):
    """Raised when cancelling a job that is already terminal (completed, failed, cancelled,
    rejected): nothing is published."""


class SweepNotFound(JobNotFound):
    """No sweep with that id in the log (a JobNotFound, so both edges say "not found")."""


class ModelNotFound(ServiceError):
    """Raised when no model with the strategy and version exists on disk, in the object store,
    or among completed jobs."""


# --- the model registry (libs/events/registry.py) ---------------------------------------------


class InvalidAlias(InvalidRequest):
    """Raised when an alias name (or the strategy it belongs to) is not allowed: not 1-32 of
    `[a-z0-9_-]` starting with a letter, or the reserved `latest`."""


class AliasNotFound(ServiceError):
    """Raised when `<strategy>@<alias>` names no alias (never set, or removed)."""


class ModelInUse(ServiceError):
    """Raised when deleting a model an alias points to (demote it first) or that a job in the
    projection names as its model; nothing is deleted."""


class ModelExpired(ServiceError):
    """Raised when a model is loaded through an alias whose `expires_at` has passed: promote a
    fresh one."""


class ModelAmbiguous(ServiceError):
    """Raised when `<strategy>/<tf>_v<N>` names models of several jobs: trainers on machines
    without a shared disk number their versions apart. The job id names one."""


class ModelUntrusted(ServiceError):
    """Raised when serving a model whose job's claim is not signed by a trusted worker while
    the operator's trusted-workers bucket holds at least one key (libs/events/trust.py)."""
