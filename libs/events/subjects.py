"""Every name on the bus in one place: subjects, stream, consumers, buckets, dedupe ids.

The prefix (default `trainbus`, env `TRAINBUS_SUBJECT_PREFIX`) is the first subject token and
also names the stream (`TRAINBUS`) and buckets (`trainbus_jobs`, ...), so two installations (or
two tests) can share one NATS server without seeing each other.

Job ids end up as subject tokens and KV keys, so they are validated here: no `.`, `*`, `>` or
whitespace can reach a subject. `job-<digits>` is reserved for ids the projector derives from a
stream sequence.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from libs.events.errors import BusConfigError, InvalidAlias, InvalidJobId
from libs.pipeline.types import is_strategy_name

DEFAULT_PREFIX: Final = "trainbus"
Pool = Literal["any", "container", "host"]
POOLS: Final[tuple[str, ...]] = ("any", "container", "host")

# `(?!\n)`: a trailing newline must not pass (see libs/pipeline/types.py).
JOB_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$(?!\n)"
_JOB_ID_RE: Final = re.compile(JOB_ID_PATTERN)
_RESERVED_JOB_ID_RE: Final = re.compile(r"^job-[0-9]+$")
_PREFIX_RE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

# Model aliases (libs/events/registry.py): a subject token and a KV key part. `latest` is
# computed (the newest version), never stored.
ALIAS_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,31}$(?!\n)"
_ALIAS_RE: Final = re.compile(ALIAS_PATTERN)
LATEST_ALIAS: Final = "latest"

# Dedupe namespaces: Nats-Msg-Id is unique per *stream*, not per subject, so a cancel and a
# train command of the same job must not share an id (the second would be dropped as a dup).
TRAIN_ID_PREFIX: Final = "train:"
CANCEL_ID_PREFIX: Final = "cancel:"
EVENT_ID_PREFIX: Final = "evt:"
ALIAS_ID_PREFIX: Final = "alias:"
SWEEP_ID_PREFIX: Final = "sweep:"

# The projector's checkpoint lives in the jobs bucket under a key no job id can take (job ids
# start with a letter or digit).
CHECKPOINT_KEY: Final = "_checkpoint"

# Subject kinds returned by `Names.parse`.
TRAIN: Final = "train"
CANCEL: Final = "cancel"
EVENT: Final = "event"
ALIAS: Final = "alias"  # a model alias change (libs/events/registry.py), not a job's
SWEEP: Final = "sweep"  # a sweep's event (libs/events/sweep_schema.py), not a job's
UNKNOWN: Final = "unknown"


def is_valid_job_id(job_id: object) -> bool:
    """True for a string usable as a subject token and KV key (reserved form included)."""
    return isinstance(job_id, str) and _JOB_ID_RE.fullmatch(job_id) is not None


def validate_job_id(job_id: object, *, allow_reserved: bool = False) -> str:
    """Return `job_id` when it is a safe, user-choosable job id; raise `InvalidJobId` otherwise."""
    if not isinstance(job_id, str):
        raise InvalidJobId(f"job_id must be a string, got {type(job_id).__name__}")
    if not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidJobId(
            f"job_id {job_id[:140]!r} is not allowed: use 1-128 letters, digits, '_' or '-', "
            "starting with a letter or digit (no '.', '*', '>' or spaces)"
        )
    if not allow_reserved and _RESERVED_JOB_ID_RE.fullmatch(job_id):
        raise InvalidJobId(
            f"job_id {job_id!r} is reserved: 'job-<number>' ids are assigned from stream sequences"
        )
    return job_id


def validate_alias(alias: object, *, allow_latest: bool = False) -> str:
    """Return `alias` when it can name a stored alias; raise `InvalidAlias` otherwise
    (`latest` is reserved: it always means the newest version and is never stored)."""
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        shown = alias[:40] if isinstance(alias, str) else type(alias).__name__
        raise InvalidAlias(
            f"alias {shown!r} is not allowed: use 1-32 lowercase letters, digits, '_' or '-', "
            "starting with a letter (e.g. champion, candidate)", field="alias"
        )
    if alias == LATEST_ALIAS and not allow_latest:
        raise InvalidAlias(
            "alias 'latest' is reserved: it always means the newest version of the strategy",
            field="alias",
        )
    return alias


def validate_strategy(strategy: object) -> str:
    """Return `strategy` when it is a strategy name (a safe subject token and KV key part)."""
    if not is_strategy_name(strategy):
        shown = strategy[:40] if isinstance(strategy, str) else type(strategy).__name__
        raise InvalidAlias(f"not a strategy name: {shown!r}", field="strategy")
    assert isinstance(strategy, str)
    return strategy


def alias_msg_id(strategy: str, alias: str, expected_seq: int, nonce: str) -> str:
    """`alias:<strategy>.<alias>:<expected last seq>:<nonce>`: a retry of one change is stored
    once; two writers racing on the same alias never share an id (one of them is fenced)."""
    return f"{ALIAS_ID_PREFIX}{strategy}.{alias}:{expected_seq}:{nonce}"


def new_job_id() -> str:
    """A fresh random job id (never of the reserved `job-<digits>` form)."""
    return f"run-{secrets.token_hex(6)}"


def derive_job_id(body_job_id: str | None, msg_id: str | None, seq: int) -> str:
    """The job id of a train command: its own `job_id`, else its Nats-Msg-Id (without the
    `train:` namespace) when that is a valid job id, else `job-<stream seq>`.

    `body_job_id` must already be validated. Publishers and the projector both use this, so
    a client learns the id the projector will use from its PubAck alone."""
    if body_job_id is not None:
        return body_job_id
    if msg_id:
        candidate = msg_id.removeprefix(TRAIN_ID_PREFIX)
        if is_valid_job_id(candidate) and not _RESERVED_JOB_ID_RE.fullmatch(candidate):
            return candidate
    return f"job-{seq}"


def train_msg_id(key: str) -> str:
    return f"{TRAIN_ID_PREFIX}{key}"


def cancel_msg_id(job_id: str) -> str:
    return f"{CANCEL_ID_PREFIX}{job_id}"


def event_msg_id(job_id: str, attempt: int, n: int | str) -> str:
    """`evt:<job>:<attempt>:<n>`: n counts a writer's events within one attempt."""
    return f"{EVENT_ID_PREFIX}{job_id}:{attempt}:{n}"


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """What a stream subject addresses. `kind` is TRAIN, CANCEL, EVENT, ALIAS or UNKNOWN."""

    kind: str
    pool: str | None = None
    job_id: str | None = None
    event_kind: str | None = None


_UNKNOWN_SUBJECT: Final = SubjectInfo(UNKNOWN)


@dataclass(frozen=True, slots=True)
class Names:
    """All names derived from one subject prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise BusConfigError(
                f"subject prefix {self.prefix!r} is not allowed: use 1-32 lowercase letters, "
                "digits, '_' or '-', starting with a letter"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Names:
        env = os.environ if environ is None else environ
        return cls(env.get("TRAINBUS_SUBJECT_PREFIX", DEFAULT_PREFIX) or DEFAULT_PREFIX)

    # --- JetStream objects ---

    @property
    def stream(self) -> str:
        return self.prefix.upper().replace("-", "_")

    @property
    def logs_stream(self) -> str:
        """The jobs' trainer log lines (`<prefix>.log.<job>`): a stream of its own, kept with
        limits (setup.py), apart from the event log that is kept for ever and replayed."""
        return f"{self.stream}_LOGS"

    @property
    def jobs_bucket(self) -> str:
        return f"{self.prefix}_jobs"

    @property
    def workers_bucket(self) -> str:
        return f"{self.prefix}_workers"

    @property
    def models_bucket(self) -> str:
        return f"{self.prefix}_models"

    @property
    def aliases_bucket(self) -> str:
        """Model aliases (libs/events/registry.py): key `<strategy>.<alias>`."""
        return f"{self.prefix}_aliases"

    @property
    def bucket_streams(self) -> tuple[str, ...]:
        """The streams behind the KV buckets and the object store."""
        return (f"KV_{self.jobs_bucket}", f"KV_{self.workers_bucket}",
                f"OBJ_{self.models_bucket}", f"KV_{self.aliases_bucket}",
                f"KV_{self.trusted_bucket}")

    @property
    def trusted_bucket(self) -> str:
        """The trainers whose signed events the operator trusts: key = the trainer's nkey
        public key (libs/events/signing.py). Only the operator (NATS `admin`) writes it."""
        return f"{self.prefix}_trusted_workers"

    @staticmethod
    def consumer(pool: str) -> str:
        """Durable pull consumer handing out one pool's train commands."""
        return f"pool-{pool}"

    # --- subjects ---

    @property
    def stream_subjects(self) -> list[str]:
        """Pools listed one by one (not `cmd.train.>`), so a command to an unknown pool is
        refused at publish time instead of being stored and never consumed."""
        p = self.prefix
        return [
            *(f"{p}.cmd.train.{pool}" for pool in POOLS),
            f"{p}.cmd.cancel.*",
            f"{p}.evt.*.*",
            f"{p}.alias.*.*",
            f"{p}.sweep.*.*",
        ]

    def train_subject(self, pool: str) -> str:
        if pool not in POOLS:
            raise BusConfigError(f"unknown pool {pool!r}: use one of {', '.join(POOLS)}")
        return f"{self.prefix}.cmd.train.{pool}"

    @property
    def train_commands(self) -> str:
        """Every pool's train commands (one filter)."""
        return f"{self.prefix}.cmd.train.*"

    def cancel_subject(self, job_id: str) -> str:
        return f"{self.prefix}.cmd.cancel.{validate_job_id(job_id, allow_reserved=True)}"

    def event_subject(self, job_id: str, kind: str) -> str:
        return f"{self.prefix}.evt.{validate_job_id(job_id, allow_reserved=True)}.{kind}"

    def job_events(self, job_id: str) -> str:
        """All events of one job; also the fencing scope of
        Nats-Expected-Last-Subject-Sequence-Subject."""
        return f"{self.prefix}.evt.{validate_job_id(job_id, allow_reserved=True)}.>"

    def log_subject(self, job_id: str) -> str:
        """One job's trainer log lines (the logs stream, not the event log)."""
        return f"{self.prefix}.log.{validate_job_id(job_id, allow_reserved=True)}"

    @property
    def log_subjects(self) -> str:
        return f"{self.prefix}.log.*"

    def alias_subject(self, strategy: str, alias: str) -> str:
        """One alias's changes (`alias_set`, `alias_removed`): its last message is the alias's
        state, and writers fence on it."""
        return f"{self.prefix}.alias.{validate_strategy(strategy)}.{validate_alias(alias)}"

    def alias_events(self, strategy: str | None = None) -> str:
        """Every alias change (of one strategy)."""
        if strategy is None:
            return f"{self.prefix}.alias.>"
        return f"{self.prefix}.alias.{validate_strategy(strategy)}.*"

    def sweep_subject(self, sweep_id: str, kind: str) -> str:
        """One event of a sweep (`started`, `asked`, `told`, `cancelled`, `finished`)."""
        return f"{self.prefix}.sweep.{validate_job_id(sweep_id, allow_reserved=True)}.{kind}"

    def sweep_events(self, sweep_id: str | None = None) -> str:
        """Every event of one sweep (of all sweeps)."""
        if sweep_id is None:
            return f"{self.prefix}.sweep.>"
        return f"{self.prefix}.sweep.{validate_job_id(sweep_id, allow_reserved=True)}.*"

    def parse(self, subject: str) -> SubjectInfo:
        """Classify a stream subject. Job ids are returned only when valid; anything else is
        UNKNOWN. Hot path of every replay: the same few subjects per job repeat, so each
        subject's reading is cached (one dict lookup, whatever the prefix)."""
        entry = _PARSED.get(subject)
        if entry is None:
            entry = _parse(subject)
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()  # a flood of distinct subjects costs re-parsing, not memory
            _PARSED[subject] = entry
        return entry[1] if entry[0] == self.prefix else _UNKNOWN_SUBJECT


# subject -> (its first token, what it addresses when that token is the prefix)
_PARSED: Final[dict[str, tuple[str, SubjectInfo]]] = {}
_PARSED_MAX: Final = 1 << 16


def _parse(subject: str) -> tuple[str, SubjectInfo]:
    tokens = subject.split(".")
    if len(tokens) != 4:
        return "", _UNKNOWN_SUBJECT  # never a prefix (the prefix rule refuses "")
    prefix, family, kind, last = tokens
    if family == "evt":
        if not _JOB_ID_RE.fullmatch(kind):
            return prefix, _UNKNOWN_SUBJECT
        return prefix, SubjectInfo(EVENT, job_id=kind, event_kind=last)
    if family == "cmd" and kind == "train":
        return prefix, SubjectInfo(TRAIN, pool=last if last in POOLS else None)
    if family == "cmd" and kind == "cancel":
        return prefix, SubjectInfo(CANCEL, job_id=last if _JOB_ID_RE.fullmatch(last) else None)
    if family == "alias":
        return prefix, SubjectInfo(ALIAS)
    if family == "sweep":
        return prefix, SubjectInfo(SWEEP)
    return prefix, _UNKNOWN_SUBJECT


DEFAULT_NAMES: Final = Names()
