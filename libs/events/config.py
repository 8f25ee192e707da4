"""`BusConfig`: how to reach NATS and how the JetStream objects are sized, from code or env.

Environment (all optional):
  NATS_URL                  comma-separated server URLs (default nats://127.0.0.1:4222)
  NATS_USER, NATS_PASSWORD  user/password auth
  NATS_PASSWORD_FILE, NATS_TOKEN_FILE  the same secrets read from a file (docker/compose
                            secrets); one of the variable or the file, not both
  NATS_TOKEN                token auth
  NATS_CREDS                path of a .creds file (JWT + nkey seed)
  NATS_NKEY_SEED            path of an nkey seed file
                            (with none of these set, the CLI logs in with a local secured
                            `trainbus up`'s seed of the role it needs: services/cli/client.py)
  NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY   TLS trust and client certificate files
  TRAINBUS_SUBJECT_PREFIX   first subject token and name stem (default trainbus)
  TRAINBUS_STREAM_MAX_AGE   seconds a log message is kept (default 365 days; 0 = for ever)
  TRAINBUS_STREAM_MAX_BYTES bytes the log may use (default 4 GiB; -1 = unlimited)
  TRAINBUS_DUPLICATE_WINDOW seconds Nats-Msg-Id dedupe remembers ids (default 120)
  TRAINBUS_ACK_WAIT         seconds a worker holds a command between in_progress() (default 120)
  TRAINBUS_MAX_DELIVER      attempts that may run one train command (default 4)
  TRAINBUS_MAX_HANDBACKS    graceful hand-backs (drains) of one job that spend no attempt
                            (default 10; 0 = every drain spends one)
  TRAINBUS_WORKERS_TTL      seconds a worker heartbeat lives in KV (default 15)
  TRAINBUS_REPLICAS         replicas of the stream, buckets and object store (default: 3 when
                            the server is one of a cluster of three or more, else 1)
  TRAINBUS_JS_DOMAIN        the JetStream domain to address (a leaf node's clients name the
                            cluster's domain, docs/scaling.md); default none

Secrets (password, token) are kept out of `repr` and never logged; URLs are shown redacted.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from libs.events.errors import BusConfigError
from libs.events.subjects import DEFAULT_PREFIX, Names

DEFAULT_URL: Final = "nats://127.0.0.1:4222"
# Host names of this machine in a NATS URL (urlsplit's `hostname`: IPv6 without brackets).
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
DAY: Final = 86_400.0
GIB: Final = 1024**3

_T = TypeVar("_T")


# Seconds a service keeps retrying one publish through an outage (the CLI: fewer).
DEFAULT_PUBLISH_RETRY_FOR: Final = 60.0

@dataclass(frozen=True, slots=True, kw_only=True)
class BusConfig:
    urls: tuple[str, ...] = (DEFAULT_URL,)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_name: str = "trainbus"
    prefix: str = DEFAULT_PREFIX

    # Connection behaviour: the first connect fails fast, later ones retry for ever.
    connect_timeout: float = 3.0
    reconnect_time_wait: float = 0.5

    # Stream limits are deliberate: without them the log grows for ever; with them the oldest
    # messages (and unconsumed commands) are dropped, so keep them generous. The server
    # reserves max_bytes up front: more than the disk allows fails the setup.
    stream_max_age: float = 365 * DAY
    stream_max_bytes: int = 4 * GIB
    duplicate_window: float = 120.0
    # None: decided at setup from the cluster the server reports (durability.py).
    replicas: int | None = None
    js_domain: str | None = None

    # Pool consumers: a lease is ack_wait, renewed by in_progress() every <= ack_wait/4.
    ack_wait: float = 120.0
    # Attempts that may run a job. The pool consumers allow one delivery more: on it a worker
    # runs nothing and only records `failed`, so a job whose last attempt died (SIGKILL, OOM)
    # still ends; the server's max-deliveries advisory is core NATS and lost if nobody listens.
    max_deliver: int = 4
    # Drains (`released`, fold.py `handed_back`) that do not spend an attempt: the consumers
    # allow this many deliveries more (setup.py `pool_consumer_config`). Past it a drain
    # spends an attempt again, so the consumer's deliveries always suffice.
    max_handbacks: int = 10

    # Worker heartbeats: TTL plus limit markers so watchers see a worker vanish.
    workers_ttl: float = 15.0
    workers_marker_ttl: float = 5.0

    # Publishing: one request timeout, and how long to keep retrying across a reconnect.
    publish_timeout: float = 5.0
    publish_retry_for: float = DEFAULT_PUBLISH_RETRY_FOR

    def __post_init__(self) -> None:
        if not self.urls:
            raise BusConfigError("no NATS URL given")
        if (self.creds_file or self.nkey_seed_file) and (self.token or self.password):
            raise BusConfigError("use one of creds/nkey seed or user/password/token, not both")
        for name in ("creds_file", "nkey_seed_file", "tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise BusConfigError(f"{name} {path!r} is not a readable file")
        if (self.creds_file or self.nkey_seed_file) and importlib.util.find_spec("nkeys") is None:
            raise BusConfigError(
                "NATS_CREDS/NATS_NKEY_SEED need the nkeys package: pip install 'nats-py[nkeys]'"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise BusConfigError("TLS client auth needs both a certificate and a key")
        if self.duplicate_window <= 0:
            raise BusConfigError("duplicate_window must be > 0 seconds")
        if self.stream_max_age and self.duplicate_window > self.stream_max_age:
            raise BusConfigError("duplicate_window cannot exceed stream_max_age")
        if self.ack_wait <= 0 or self.max_deliver < 1:
            raise BusConfigError("ack_wait must be > 0 and max_deliver >= 1")
        if self.max_handbacks < 0:
            raise BusConfigError(f"max_handbacks must be >= 0, got {self.max_handbacks}")
        if self.replicas is not None and not 1 <= self.replicas <= 5:
            raise BusConfigError(f"replicas must be 1 to 5 (JetStream's limit), got "
                                 f"{self.replicas}")
        if self.workers_ttl <= 0 or not self.workers_marker_ttl >= 1:
            raise BusConfigError("workers_ttl must be > 0 and workers_marker_ttl >= 1 second")
        Names(self.prefix)  # validates the prefix

    def __repr__(self) -> str:
        # Never show secrets: URLs redacted, password/token only as "set".
        shown = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("urls", "password", "token")}
        secrets = [name for name in ("password", "token") if getattr(self, name)]
        body = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return (f"BusConfig(urls={self.display_urls!r}, {body}"
                f"{', secrets set: ' + '/'.join(secrets) if secrets else ''})")

    @property
    def names(self) -> Names:
        return Names(self.prefix)

    @property
    def display_urls(self) -> str:
        """The server URLs with any credentials masked, for messages and logs."""
        return ", ".join(redact_url(u) for u in self.urls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> BusConfig:
        """Build from NATS_* / TRAINBUS_* variables; keyword overrides win."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        values: dict[str, object] = {}
        if (urls := get("NATS_URL")) is not None:
            values["urls"] = tuple(u.strip() for u in urls.split(",") if u.strip())
        for key, var in (
            ("user", "NATS_USER"),
            ("password", "NATS_PASSWORD"),
            ("token", "NATS_TOKEN"),
            ("creds_file", "NATS_CREDS"),
            ("nkey_seed_file", "NATS_NKEY_SEED"),
            ("tls_ca", "NATS_TLS_CA"),
            ("tls_cert", "NATS_TLS_CERT"),
            ("tls_key", "NATS_TLS_KEY"),
            ("prefix", "TRAINBUS_SUBJECT_PREFIX"),
            ("js_domain", "TRAINBUS_JS_DOMAIN"),
        ):
            if (value := get(var)) is not None:
                values[key] = value
        for key, var in (("password", "NATS_PASSWORD"), ("token", "NATS_TOKEN")):
            if (path := get(f"{var}_FILE")) is not None:
                if key in values:
                    raise BusConfigError(f"set {var} or {var}_FILE, not both")
                values[key] = _read_secret(f"{var}_FILE", path)
        for key, var, parse in (
            ("stream_max_age", "TRAINBUS_STREAM_MAX_AGE", float),
            ("stream_max_bytes", "TRAINBUS_STREAM_MAX_BYTES", int),
            ("duplicate_window", "TRAINBUS_DUPLICATE_WINDOW", float),
            ("ack_wait", "TRAINBUS_ACK_WAIT", float),
            ("max_deliver", "TRAINBUS_MAX_DELIVER", int),
            ("max_handbacks", "TRAINBUS_MAX_HANDBACKS", int),
            ("workers_ttl", "TRAINBUS_WORKERS_TTL", float),
            ("replicas", "TRAINBUS_REPLICAS", int),
        ):
            if (value := get(var)) is not None:
                values[key] = _parse(var, value, parse)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _read_secret(var: str, path: str) -> str:
    """The secret in a file (trailing newline dropped); the error names the file, never the
    content."""
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        raise BusConfigError(f"{var} {path!r} cannot be read: {exc.strerror}") from None
    if not secret:
        raise BusConfigError(f"{var} {path!r} is empty")
    return secret


def _parse(var: str, value: str, parse: Callable[[str], _T]) -> _T:
    try:
        return parse(value)
    except ValueError:
        raise BusConfigError(f"{var}={value!r} is not a valid number") from None


def redact_url(url: str) -> str:
    """nats://user:secret@host:4222 -> nats://user:***@host:4222 (token-only: ***@host)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    masked = f"{user}:***" if user else "***"
    return urlunsplit(parts._replace(netloc=f"{masked}@{host}"))
