"""trainbus coordination: everything that touches NATS JetStream.

Modules, one concern each:
  subjects  names of subjects, stream, consumers, buckets, dedupe ids; job id validation
  schema    commands and events (msgspec, versioned, upcast on read)
  commands  raw bytes -> validated command, or CommandRejected
  config    BusConfig (code or env)
  bus       connect -> Bus; publish_command / publish_cancel / publish_event / publish_rejection
  setup     ensure_jetstream / open_jetstream (stream, pool consumers, KV, object store)
  objects   get_object_bytes / put_object_bytes (fast chunk reader, digest checked)
  log       stored message -> LogMessage; ordered reader over the log
  fold      JobState and the pure fold
  projector the runner keeping KV <prefix>_jobs equal to the fold of the log
  audit     replay from sequence 1, diff against KV, timelines
  follow    one job's state, log and live updates for readers
  heartbeat worker heartbeats in KV <prefix>_workers
  models    trained models in the object store
  worker/   the shared worker runtime (runtime, attempt, relay, the JobRunner port)

This package never imports torch or pandas, and of libs.pipeline only its light domain types
(libs/pipeline/types.py): the import contracts in pyproject.toml enforce it.
"""

from libs.events.bus import (
    Bus,
    CommandReceipt,
    Receipt,
    connect,
    publish,
    publish_cancel,
    publish_command,
    publish_event,
    publish_rejection,
)
from libs.events.commands import read_cancel_command, validate_train_command
from libs.events.config import BusConfig
from libs.events.errors import (
    BusClosed,
    BusConfigError,
    BusUnavailable,
    CommandRejected,
    ConsumerDrift,
    DangerousStreamConfig,
    FencedOut,
    InvalidJobId,
    ObjectDigestMismatch,
    ObjectNotFound,
    ObjectStoreError,
    PublishError,
    PublishRefused,
    PublishTimeout,
    ReplayError,
    SetupError,
    SetupMissing,
    TrainbusBusError,
)
from libs.events.fold import JobState, fold
from libs.events.log import LogMessage
from libs.events.objects import StoredObject, get_object_bytes, put_object_bytes
from libs.events.projector import Projector
from libs.events.setup import ensure_jetstream, open_jetstream
from libs.events.subjects import Names, validate_job_id

__all__ = [
    "Bus",
    "BusClosed",
    "BusConfig",
    "BusConfigError",
    "BusUnavailable",
    "CommandReceipt",
    "CommandRejected",
    "ConsumerDrift",
    "DangerousStreamConfig",
    "FencedOut",
    "InvalidJobId",
    "JobState",
    "LogMessage",
    "Names",
    "ObjectDigestMismatch",
    "ObjectNotFound",
    "ObjectStoreError",
    "Projector",
    "PublishError",
    "PublishRefused",
    "PublishTimeout",
    "Receipt",
    "ReplayError",
    "SetupError",
    "SetupMissing",
    "StoredObject",
    "TrainbusBusError",
    "connect",
    "ensure_jetstream",
    "fold",
    "get_object_bytes",
    "open_jetstream",
    "publish",
    "publish_cancel",
    "publish_command",
    "publish_event",
    "publish_rejection",
    "put_object_bytes",
    "read_cancel_command",
    "validate_job_id",
    "validate_train_command",
]
