"""The NATS role permissions as data, rendered for any subject prefix: one source of truth for
the shipped deploy/nats-roles.conf (role passwords from the server's environment) and for the
embedded server of a secured `trainbus up`/`demo` (nkey users, libs/events/credentials.py).

    python -m libs.events.roles > deploy/nats-roles.conf      # regenerate the shipped file
    python -m libs.events.roles --prefix other                 # the same for another prefix

Every name (stream, buckets, pool consumers) comes from `Names`, so another
TRAINBUS_SUBJECT_PREFIX gets matching permissions instead of a hand-edited copy.
tests/reliability/test_roles.py proves the permissions on a real server; tests/events/
test_roles_render.py checks that the shipped file is this module's rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from libs.events.schema import EVENT_TYPES, tag_of
from libs.events.subjects import DEFAULT_NAMES, POOLS, Names

ROLES: Final[tuple[str, ...]] = ("admin", "backend", "trainer", "client", "auditor", "predictor")


@dataclass(frozen=True, slots=True)
class Group:
    """Subjects allowed (or denied) together, with why (a comment in the rendered config)."""

    why: str
    subjects: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Role:
    """One role's publish and subscribe permissions. `everything`: `>` for both (admin)."""

    name: str
    title: str
    publish_allow: tuple[Group, ...] = ()
    publish_deny: Group | None = None
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    subscribe_why: str = ""
    # answers go to the reply subject of a request it received, once; never to `_INBOX.>`
    allow_responses: bool = False
    everything: bool = False

    @property
    def variable(self) -> str:
        return self.name.upper()

    def allowed_publish(self) -> list[str]:
        return [s for group in self.publish_allow for s in group.subjects]


def read_streams(names: Names) -> tuple[str, ...]:
    """The streams every role may read: the log, the buckets and the object store."""
    return (names.stream, *names.bucket_streams, names.logs_stream)


# A person's annotation of a job (tags, note, experiment): the one event kind the client role
# (and the API) may publish; no trainer's.
ANNOTATED: Final = "annotated"


def worker_event_kinds() -> tuple[str, ...]:
    """Every event kind but the annotation: what a client may never publish."""
    return tuple(tag_of(t) for t in EVENT_TYPES if tag_of(t) != ANNOTATED)


def reading(names: Names) -> Group:
    """Stream info, message and direct gets, ephemeral (ordered) consumers and their
    flow-control replies, on every trainbus stream. `$JS.API.CONSUMER.CREATE.<stream>` exactly:
    the server refuses a durable on that subject, so a reader cannot change a pool consumer."""
    subjects: list[str] = [f"$JS.API.DIRECT.GET.{names.stream}"]
    for stream in read_streams(names):
        subjects += [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}",
                     f"$JS.API.DIRECT.GET.{stream}.>", f"$JS.API.CONSUMER.CREATE.{stream}",
                     f"$JS.FC.{stream}.>"]
    return Group("reading (the same set for every role; the trusted workers too)",
                 tuple(subjects))


def roles(names: Names = DEFAULT_NAMES) -> tuple[Role, ...]:
    """Every role's permissions for `names` (admin, backend, trainer, client, auditor,
    predictor)."""
    p, stream = names.prefix, names.stream
    pools = [names.consumer(pool) for pool in POOLS]
    jobs_kv, workers_kv = f"$KV.{names.jobs_bucket}.>", f"$KV.{names.workers_bucket}.>"
    aliases_kv, trusted_kv = f"$KV.{names.aliases_bucket}.>", f"$KV.{names.trusted_bucket}.>"
    read = reading(names)
    inbox_and_log = ("_INBOX.>", f"{p}.>")
    no_svc = (f"{p}.svc.>",)
    readers_deny = ("$KV.>", "$O.>", "$JS.ACK.>", "$JS.API.STREAM.DELETE.>",
                    "$JS.API.STREAM.PURGE.>", "$JS.API.CONSUMER.MSG.NEXT.>")
    return (
        Role("admin", "admin: operators (everything)", everything=True),
        Role(
            "backend", "backend: API, projector, JetStream setup",
            publish_allow=(
                Group("commands from the API, rejections from the projector, an operator "
                      "ending a job no worker holds (POST /api/v1/jobs/<id>/fail, trainbus "
                      "jobs fail); no other event kind",
                      (f"{p}.cmd.train.*", f"{p}.cmd.cancel.*", f"{p}.evt.*.rejected",
                       f"{p}.evt.*.operator_failed")),
                Group("annotating a job (POST /api/v1/jobs/<id>/annotations)",
                      (f"{p}.evt.*.{ANNOTATED}",)),
                Group("the projection (job state) in KV", (jobs_kv,)),
                Group("model aliases (PUT/DELETE /api/v1/models/<strategy>/aliases/<alias>): "
                      "the change on the log, then the alias in KV",
                      (f"{p}.alias.*.*", aliases_kv)),
                Group("owning the setup: create/update the stream, the buckets and the pool "
                      "consumers",
                      ("$JS.API.INFO", f"$JS.API.STREAM.CREATE.{stream}",
                       f"$JS.API.STREAM.UPDATE.{stream}",
                       *(f"$JS.API.STREAM.CREATE.{s}" for s in read_streams(names)[1:]),
                       # scaling the buckets' replicas (setup.py scale_replicas)
                       *(f"$JS.API.STREAM.UPDATE.{s}" for s in names.bucket_streams),
                       *(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{c}" for c in pools),
                       *(f"$JS.API.CONSUMER.INFO.{stream}.{c}" for c in pools))),
                read,
            ),
            publish_deny=Group(
                "explicit, so that a later, wider allow cannot grant them by accident",
                ("$JS.API.STREAM.DELETE.>", f"$JS.API.STREAM.PURGE.{stream}",
                 f"$JS.API.STREAM.MSG.DELETE.{stream}",
                 *(f"$JS.API.CONSUMER.DELETE.{stream}.{c}" for c in pools), trusted_kv)),
            subscribe_allow=inbox_and_log, subscribe_deny=no_svc,
        ),
        Role(
            "trainer", "trainer: container and host trainers",
            publish_allow=(
                Group("job events (every kind: the trainer is the job's writer, fenced per "
                      "job)", (f"{p}.evt.*.*",)),
                Group("pulling the pool consumers and acking (ack, nak, term, in-progress)",
                      (*(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{c}" for c in pools),
                       *(f"$JS.ACK.{stream}.{c}.>" for c in pools),
                       *(f"$JS.API.CONSUMER.INFO.{stream}.{c}" for c in pools))),
                Group("heartbeats", (workers_kv,)),
                Group("each job's log lines (the logs stream: trainbus logs)",
                      (f"{p}.log.*",)),
                Group("models and checkpoints (a replaced or deleted object's chunks are "
                      "purged)", (f"$O.{names.models_bucket}.>",
                                  f"$JS.API.STREAM.PURGE.OBJ_{names.models_bucket}")),
                read,
            ),
            publish_deny=Group(
                "an operator's verdict, job state and the trusted workers are not a trainer's "
                "to write",
                (f"{p}.cmd.>", jobs_kv, trusted_kv, "$JS.API.STREAM.DELETE.>",
                 f"$JS.API.STREAM.PURGE.{stream}", "$JS.API.STREAM.CREATE.>",
                 "$JS.API.STREAM.UPDATE.>", f"{p}.evt.*.operator_failed",
                 f"{p}.evt.*.{ANNOTATED}")),
            subscribe_allow=inbox_and_log, subscribe_deny=no_svc,
            subscribe_why="train subjects: the idle worker's doorbell; cancel subjects: a "
                          "running job's stop signal",
        ),
        Role(
            "client", "client: submit, cancel, read (the CLI)",
            publish_allow=(
                Group("submit and cancel", (f"{p}.cmd.train.*", f"{p}.cmd.cancel.*")),
                Group("annotating a job: tags, note, experiment (trainbus jobs annotate)",
                      (f"{p}.evt.*.{ANNOTATED}",)),
                Group("a sweep's events: `trainbus sweep` is the sweep's coordinator (its "
                      "trials are ordinary train and cancel commands)", (f"{p}.sweep.*.*",)),
                Group("predictions (request/reply with trainbus-predictor) and its discovery",
                      (f"{p}.svc.predict", f"{p}.svc.backtest", "$SRV.PING", "$SRV.INFO",
                       "$SRV.STATS", "$SRV.*.trainbus-predictor",
                       "$SRV.*.trainbus-predictor.*")),
                read,
            ),
            publish_deny=Group("no worker's event (no forged `completed`), no log line, no KV "
                               "or object write, no pool consumer work, no deletion",
                               (*(f"{p}.evt.*.{kind}" for kind in worker_event_kinds()),
                                f"{p}.log.>", *readers_deny)),
            subscribe_allow=inbox_and_log, subscribe_deny=no_svc,
        ),
        Role(
            "auditor", "auditor: read-only (trainbus audit, jobs, show, models)",
            publish_allow=(read,),
            publish_deny=Group("writes nothing at all", (f"{p}.>", *readers_deny)),
            subscribe_allow=inbox_and_log, subscribe_deny=no_svc,
        ),
        Role(
            "predictor", "predictor: the prediction service (trainbus-predictor)",
            publish_allow=(
                Group("its own readiness probe (a request to its own $SRV PING subject at "
                      "start)", ("$SRV.PING.trainbus-predictor.*",)),
                Group("reading: the jobs (which model), the aliases, the object store (the "
                      "model itself)", read.subjects),
            ),
            publish_deny=Group("publishes nothing else", (f"{p}.>", *readers_deny)),
            subscribe_allow=("_INBOX.>", f"{p}.svc.predict", f"{p}.svc.backtest", "$SRV.PING",
                             "$SRV.INFO", "$SRV.STATS", "$SRV.*.trainbus-predictor",
                             "$SRV.*.trainbus-predictor.*"),
            subscribe_why="its endpoints (queue group `q`), the micro discovery of its own "
                          "name, and replies",
            allow_responses=True,
        ),
    )


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is one token, a final `>` one or more."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


def may_publish(role: Role, subject: str) -> bool:
    """Whether `role` may publish to `subject` (an allow matches and no deny does)."""
    if role.everything:
        return True
    denied = role.publish_deny.subjects if role.publish_deny is not None else ()
    return (any(subject_matches(p, subject) for p in role.allowed_publish())
            and not any(subject_matches(p, subject) for p in denied))


def roles_that_may_publish(subject: str, names: Names = DEFAULT_NAMES) -> list[str]:
    """The roles allowed to publish to `subject` (admin always among them): what a permission
    error says would be needed."""
    return [role.name for role in roles(names) if may_publish(role, subject)]


# --- rendering ---------------------------------------------------------------------------------


def _quoted(subjects: Sequence[str], indent: str, width: int = 96) -> list[str]:
    """`"a", "b",` lines, wrapped at `width`."""
    lines: list[str] = []
    line = indent
    for subject in subjects:
        item = json.dumps(subject) + ","
        if line.strip() and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = indent
        line += ("" if not line.strip() else " ") + item
    if line.strip():
        lines.append(line)
    return lines


def _comment(text: str, indent: str, width: int = 96) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(indent) + 2 + len(line) + 1 + len(word) > width:
            lines.append(f"{indent}# {line}")
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(f"{indent}# {line}")
    return lines


def render_role(role: Role) -> list[str]:
    """One role's permissions as a nats-server config variable (`BACKEND = { ... }`)."""
    out = [f"  # --- {role.title} ".ljust(92, "-"), f"  {role.variable} = {{"]
    if role.everything:
        return [*out, '    publish = ">"', '    subscribe = ">"', "  }", ""]
    out += ["    publish = {", "      allow = ["]
    for group in role.publish_allow:
        out += _comment(group.why, "        ")
        out += _quoted(group.subjects, "        ")
    out.append("      ]")
    if role.publish_deny is not None:
        out += _comment(role.publish_deny.why, "      ")
        out += ["      deny = ["]
        out += _quoted(role.publish_deny.subjects, "        ")
        out.append("      ]")
    out.append("    }")
    if role.subscribe_why:
        out += _comment(role.subscribe_why, "    ")
    out.append("    subscribe = {")
    out.append("      allow = [")
    out += _quoted(role.subscribe_allow, "        ")
    out.append("      ]")
    if role.subscribe_deny:
        out.append("      deny = [")
        out += _quoted(role.subscribe_deny, "        ")
        out.append("      ]")
    out.append("    }")
    if role.allow_responses:
        out += ["    # answers go to the reply subject of a request it received, once; never to "
                "`_INBOX.>`", "    allow_responses = true"]
    return [*out, "  }", ""]


def render_authorization(names: Names, users: Mapping[str, str]) -> str:
    """`authorization { <ROLE> = {...} ... users = [...] }`: `users` maps each role to its
    login part (`user: x, password: $X` or `nkey: U...`)."""
    missing = [role for role in ROLES if role not in users]
    if missing:
        raise ValueError(f"no login for the roles {', '.join(missing)}")
    lines = ["authorization {"]
    for role in roles(names):
        lines += render_role(role)
    lines.append("  users = [")
    for role in roles(names):
        lines.append(f"    {{ {users[role.name]}, permissions: ${role.variable} }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


DEPLOY_HEADER: Final = """\
# trainbus roles: one NATS user per role, each with publish/subscribe allow lists.
# Included by nats-server.conf. GENERATED by `python -m libs.events.roles > deploy/nats-roles.conf`
# from libs/events/roles.py (edit that, not this file) for the prefix `{prefix}` (stream
# {stream}, buckets {buckets}); another TRAINBUS_SUBJECT_PREFIX: `--prefix <it>`.
#
# Passwords come from the server's environment (compose passes them through):
#   NATS_ADMIN_PASSWORD, NATS_BACKEND_PASSWORD, NATS_TRAINER_PASSWORD,
#   NATS_CLIENT_PASSWORD, NATS_AUDITOR_PASSWORD, NATS_PREDICTOR_PASSWORD
# Clients log in with NATS_USER=<role> and NATS_PASSWORD=<its password>. There is no
# anonymous user: a connection without credentials is refused. (`trainbus up` renders the same
# permissions with generated nkeys for its embedded server: libs/events/credentials.py.)
#
# What each role may do (docs/reliability.md lists the denials the tests check):
#   admin    everything (operators only: the one user that may delete or purge streams, and
#            the one that writes the trusted workers `{trusted}`: trainbus workers trust)
#   backend  owns the JetStream setup (creates/updates the stream, the pool consumers and the
#            buckets), publishes commands, projects job state into KV, publishes `rejected`
#            and `operator_failed` events (trainbus jobs fail, audit --repair), sets and removes
#            model aliases; cannot publish any other event, cannot delete or purge the stream
#   trainer  pulls its pool consumers, acks, publishes job events (not `annotated`), each
#            job's log lines, heartbeats, models and checkpoints; cannot submit or cancel
#            jobs, cannot write job state, cannot create, update or delete streams or consumers
#   client   submits, cancels and annotates jobs (tags, notes: the `annotated` event) and
#            reads everything (the CLI, `nats req`); cannot publish any other event (no forged
#            `completed`) or job log line, write KV or the object store, or pull
#            or ack the trainers' pool consumers; promoting, deleting and pruning models from
#            the CLI (`trainbus models promote/demote/delete/prune`) needs the admin user
#   auditor  reads only (`trainbus audit`, `trainbus jobs`): no command, event, KV or object
#            write, no stream or consumer change
#   predictor  the prediction service (`trainbus predictor`, nats micro `trainbus-predictor`):
#            receives the requests on `{prefix}.svc.predict|backtest` and the `$SRV` discovery
#            of its own name, answers them (`allow_responses`: only to the reply subject of a
#            request it received), reads the jobs, aliases and the object store to find and
#            fetch models; publishes nothing else (no command, event, KV or object write)
#
# Prediction requests: the client role may send them (`nats req {prefix}.svc.predict ...`) and
# discover the service (`nats micro ls|info|stats`); only the predictor may subscribe to
# `{prefix}.svc.>` (every other role is denied it), so nobody else can take or answer them.
#
# Reading the log and the buckets needs, for every role: stream info, direct/message gets,
# ephemeral (ordered) consumers and their flow-control replies on the trainbus streams, and
# `_INBOX.>` to receive replies and deliveries. Nobody may publish to `_INBOX.>`, so no client
# can forge a reply (a fake stream acknowledgement) to another. JetStream API requests not
# listed here are denied; the server answers a denied request with nothing, so the client sees
# a timeout and the server logs a "Permissions Violation".

"""


def render_deploy(names: Names = DEFAULT_NAMES) -> str:
    """deploy/nats-roles.conf: the role users log in with passwords from the environment."""
    buckets = ", ".join((names.jobs_bucket, names.workers_bucket, names.models_bucket,
                         names.aliases_bucket, names.trusted_bucket))
    header = DEPLOY_HEADER.format(prefix=names.prefix, stream=names.stream, buckets=buckets,
                                  trusted=names.trusted_bucket)
    users = {role: f"user: {role}, password: $NATS_{role.upper()}_PASSWORD" for role in ROLES}
    return header + render_authorization(names, users)


def render_nkeys(names: Names, public_keys: Mapping[str, str]) -> str:
    """The embedded server's `authorization` block: one nkey user (public key) per role."""
    for role, key in public_keys.items():
        if not (key.startswith("U") and key.isalnum()):
            raise ValueError(f"the {role} public key {key[:12]!r}... is not a user nkey")
    return render_authorization(names, {role: f"nkey: {key}"
                                        for role, key in public_keys.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.events.roles",
                                     description="print deploy/nats-roles.conf")
    parser.add_argument("--prefix", default=DEFAULT_NAMES.prefix,
                        help="subject prefix (default trainbus)")
    args = parser.parse_args(argv)
    sys.stdout.write(render_deploy(Names(args.prefix)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
