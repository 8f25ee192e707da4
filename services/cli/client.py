"""What every bus-facing CLI command shares: the connection, error handling at the process
edge, JSON output, and following a job live (progress display + Ctrl-C handling).

Exit codes (all commands): 0 done, 1 failed (NATS unreachable, job failed, not found),
2 bad input (invalid arguments, the command would be rejected), 130 cancelled or interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # nats, msgspec and rich are imported when a command runs, not for --help
    from rich.console import Console

    from libs.events.bus import Bus
    from libs.events.config import BusConfig
    from libs.events.fold import JobState
    from libs.events.follow import JobUpdate

from services.cli.args import (  # re-exported: the bus commands import them from here
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    csv_list,
    positive_int,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_CANCELLED", "EXIT_FAILED", "EXIT_OK", "csv_list", "positive_int"]
OUTCOME_EXIT: Final = {"completed": EXIT_OK, "failed": EXIT_FAILED, "rejected": EXIT_BAD_INPUT,
                       "cancelled": EXIT_CANCELLED}




def error(message: str) -> None:
    print(f"trainbus: {message}", file=sys.stderr, flush=True)


# --- which NATS user a command logs in as ------------------------------------------------------

# The role each command needs on a secured `trainbus up` (deploy/nats-roles.conf says why):
# (command, sub-action attribute, sub-actions) -> role; anything else is `client`.
ROLE_OF_COMMAND: Final[tuple[tuple[str, str, frozenset[str], str], ...]] = (
    ("audit", "repair", frozenset({"True"}), "backend"),  # rewrites the projection (KV)
    ("audit", "", frozenset(), "auditor"),
    ("jobs", "jobs_action", frozenset({"fail"}), "backend"),  # an operator_failed event
    # aliases, deleting models (object store), the trusted workers bucket
    ("models", "models_command", frozenset({"promote", "demote", "delete", "prune"}), "admin"),
    ("workers", "workers_action", frozenset({"trust", "untrust"}), "admin"),
    ("sweep", "sweep_action", frozenset({"promote"}), "admin"),  # an alias
    # the services, against a local `trainbus up`
    ("projector", "", frozenset(), "backend"),
    ("predictor", "", frozenset(), "predictor"),
)
DEFAULT_ROLE: Final = "client"
# NATS credentials from the environment: with any of them set, the local ones are not used.
_CREDENTIAL_VARS: Final = ("NATS_USER", "NATS_PASSWORD", "NATS_PASSWORD_FILE", "NATS_TOKEN",
                           "NATS_TOKEN_FILE", "NATS_CREDS", "NATS_NKEY_SEED")


@dataclass
class _Login:
    """The role this command needs, and the local seed it logged in with (None: the
    environment's credentials, or none)."""

    role: str = DEFAULT_ROLE
    seed: str | None = None
    refused: list[str] = field(default_factory=list)  # subjects NATS refused to this process


_login = _Login()


def role_for(args: argparse.Namespace) -> str:
    """The role a parsed command line needs (ROLE_OF_COMMAND)."""
    command = getattr(args, "command", None)
    for name, attr, actions, role in ROLE_OF_COMMAND:
        if name != command:
            continue
        if not attr or str(getattr(args, attr, None)) in actions:
            return role
    return DEFAULT_ROLE


def use_role_for(args: argparse.Namespace) -> None:
    """Called once by main() after parsing: later `bus_config()` calls log in as that role."""
    _login.role = role_for(args)
    _login.seed = None
    _login.refused.clear()


def _local_seed(values: Mapping[str, object]) -> str | None:
    """The seed of the needed role from the local `trainbus up` (TRAINBUS_STORE or
    ./.trainbus), when nothing else says how to log in and the server is on this machine."""
    import os
    from urllib.parse import urlsplit

    from libs.events.config import LOCAL_HOSTS
    from libs.events.credentials import local_credentials

    if any(os.environ.get(var, "").strip() for var in _CREDENTIAL_VARS):
        return None
    if any(values.get(k) for k in ("user", "password", "token", "creds_file", "nkey_seed_file")):
        return None
    urls = values.get("urls") or tuple(
        u.strip() for u in os.environ.get("NATS_URL", "").split(",") if u.strip()
    ) or ("nats://127.0.0.1:4222",)
    assert isinstance(urls, tuple | list)
    if not all(urlsplit(str(u) if "://" in str(u) else f"nats://{u}").hostname in LOCAL_HOSTS
               for u in urls):
        return None
    creds = local_credentials()
    if creds is None or not creds.has_seed(_login.role):
        return None
    return str(creds.seed_file(_login.role))


class _RefusalLog(logging.Filter):
    """Keeps the subjects NATS refused to this process (the bus logs each once), so the
    command's error can say which role was used and which would be needed."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        marker = "permissions violation for publish to "
        if marker in text.lower():
            subject = text[text.lower().index(marker) + len(marker):].strip().strip("'\"")
            if subject not in _login.refused:
                _login.refused.append(subject)
        return True


_REFUSAL_LOG: Final = _RefusalLog()


def bus_config(**overrides: object) -> BusConfig:
    """The CLI's connection: NATS_* from the environment; with none of NATS_USER/PASSWORD/
    TOKEN/CREDS/NKEY_SEED set and a local `trainbus up`'s credentials present, the seed of the
    role this command needs (`use_role_for`)."""
    from libs.events.config import BusConfig

    # A CLI answers within seconds: don't keep retrying a publish for a minute.
    values: dict[str, object] = {"client_name": "trainbus-cli", "publish_retry_for": 10.0}
    values.update(overrides)
    seed = _local_seed(values)
    if seed is not None:
        values["nkey_seed_file"] = seed
        _login.seed = seed
        bus_log = logging.getLogger("libs.events.bus")
        if _REFUSAL_LOG not in bus_log.filters:
            bus_log.addFilter(_REFUSAL_LOG)
    return BusConfig.from_env(None, **values)


def permission_hint() -> str | None:
    """After a failure: which role this command used and what would be needed, when it logged
    in with a local seed (None otherwise)."""
    if _login.seed is None:
        return None
    from libs.events.roles import roles_that_may_publish

    used = f"logged in as the `{_login.role}` role ({_login.seed})"
    if not _login.refused:
        return used
    subject = _login.refused[-1]
    needed = [r for r in roles_that_may_publish(subject) if r != _login.role]
    return (f"NATS refused {subject} to the `{_login.role}` role ({_login.seed}); that needs "
            f"the {' or '.join(f'`{r}`' for r in needed)} role: "
            f"NATS_NKEY_SEED={Path(_login.seed).parent}/{needed[-1] if needed else 'admin'}.nk")


@contextlib.asynccontextmanager
async def open_bus(config: BusConfig | None = None) -> AsyncIterator[Bus]:
    """A connected bus attached to the existing stream and buckets (creates nothing)."""
    from libs.events.bus import connect
    from libs.events.errors import SetupMissing
    from libs.events.setup import open_jetstream

    bus = await connect(config or bus_config())
    try:
        try:
            await open_jetstream(bus)
        except SetupMissing as exc:
            raise SetupMissing(
                f"{exc} at {bus.config.display_urls}: start the stack first (trainbus up)"
            ) from None
        yield bus
    finally:
        await bus.close()


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command's coroutine; every expected failure is one line on stderr, no traceback."""
    import nats.errors

    from libs.events.errors import InvalidRequest, ServiceError, TrainbusBusError
    from services.settings import SettingsError

    try:
        return asyncio.run(main())
    except InvalidRequest as exc:
        error(f"{exc.field}: {exc.detail}" if exc.field else exc.detail)
        return EXIT_BAD_INPUT
    except SettingsError as exc:  # a TRAINBUS_*/USE_TRAINING_HOST_SERVICE value is unusable
        error(str(exc))
        return EXIT_BAD_INPUT
    except ServiceError as exc:
        error(_with_hint(exc.detail))
        return EXIT_FAILED
    except TrainbusBusError as exc:
        error(_with_hint(str(exc)))
        return EXIT_FAILED
    except (nats.errors.Error, TimeoutError) as exc:
        error(_with_hint(f"NATS: {exc or type(exc).__name__}"))
        return EXIT_FAILED
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_CANCELLED


def _with_hint(message: str) -> str:
    """A failure's message, with the role it used and the one needed when NATS refused a
    publish to this command's local credential (or its login failed)."""
    hint = permission_hint()
    if hint is None:
        return message
    if _login.refused or "authorization violation" in message.lower():
        return f"{message} ({hint})"
    return message


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
    sys.stdout.flush()


def print_json_line(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


# Off a terminal (a pipe, a file) rich would fit tables into 80 columns and cut values with
# `…`: job ids could not be copied. This width never binds, so every value prints whole.
PIPE_WIDTH: Final = 100_000


def stdout_console() -> Console:
    """The console for a command's output: rich's own on a terminal, unbounded in a pipe."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def tsv_cell(value: object) -> str:
    """One TSV field: rich markup removed, tabs and line breaks made spaces."""
    from rich.errors import MarkupError
    from rich.text import Text

    text = str(value)
    if isinstance(value, str):
        with contextlib.suppress(MarkupError):  # not markup after all: keep it as it is
            text = Text.from_markup(value).plain
    return " ".join(text.replace("\t", " ").splitlines())


def print_table(table: Any, *, plain: bool = False, console: Console | None = None) -> None:
    """A rich Table on stdout; `plain` (`--plain`): TSV instead, a header line and one line per
    row, no title, for `cut`, `sort`, `awk` and spreadsheets."""
    if not plain:
        (console or stdout_console()).print(table)
        return
    columns = table.columns
    lines = ["\t".join(tsv_cell(c.header) for c in columns)]
    lines += ["\t".join(tsv_cell(c._cells[i]) for c in columns) for i in range(table.row_count)]
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, secs = divmod(round(value), 60)
    return f"{minutes}:{secs:02d}"


# --- following a job ------------------------------------------------------------------------


class JobDisplay:
    """Shows a job's updates: a live rich bar on a terminal (phase, epoch x/y, batch, loss,
    val accuracy, ETA), one plain line per phase/epoch otherwise, or JSON lines (`--json`)."""

    def __init__(self, console: Console, *, mode: str) -> None:
        self.console = console
        self.mode = mode  # "live", "plain" or "json"
        self._progress: Any = None
        self._task: Any = None
        self._val = ""
        self._phase = "queued"
        self._epochs = ""

    def __enter__(self) -> JobDisplay:
        if self.mode == "live":
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.fields[phase]:<10}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
            )
            self._task = self._progress.add_task("job", total=100.0, phase="queued",
                                                 info="waiting for a trainer", eta="-")
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()

    def pause(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def resume(self) -> None:
        if self._progress is not None:
            self._progress.start()

    def note(self, text: str) -> None:
        if self.mode == "json":
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def show(self, update: JobUpdate) -> None:
        from libs.events.schema import (
            AcceptedEvent,
            CheckpointEvent,
            EpochEvent,
            PhaseEvent,
            ProgressEvent,
            ReleasedEvent,
            ResumedEvent,
        )

        if self.mode == "json":
            message = update.message
            print_json_line({
                "seq": message.seq if message else update.state.last_seq,
                "kind": _kind(update),
                "event": message.body if message else None,
                "status": update.state.status,
            })
            return
        body = update.message.body if update.message is not None else None
        state = update.state
        if isinstance(body, AcceptedEvent):
            self._phase = "accepted"
            self.note(f"accepted by {body.worker_id} ({body.worker_kind} trainer, "
                      f"{body.device}) on {body.host or '?'}, attempt {body.attempt}")
            for warning in body.warnings:
                self.note(f"warning: {warning}")
            self._update(phase="accepted", info="", completed=0.0)
        elif isinstance(body, ResumedEvent | ReleasedEvent):
            self._attempt_note(body)
        elif isinstance(body, PhaseEvent):
            self._phase = body.phase
            fold = (f"fold {body.fold}/{body.folds}: epoch {body.epoch}/{body.total_epochs}"
                    if body.fold else "")
            if self.mode == "plain":
                self.note(f"[{body.phase}] {fold}".rstrip())
            if fold:
                self._update(phase=body.phase, info=fold)
            else:
                self._update(phase=body.phase)
        elif isinstance(body, ProgressEvent):
            self._epochs = f"epoch {body.epoch}/{body.total_epochs}"
            loss = f" loss {body.train_loss:.4f}" if body.train_loss is not None else ""
            batch = (f" batch {body.batch}/{body.total_batches}" if body.total_batches else "")
            self._update(phase="training", completed=body.percent,
                         info=f"{self._epochs}{batch}{loss}{self._val}",
                         eta=seconds(body.eta_seconds))
        elif isinstance(body, EpochEvent):
            if body.val_accuracy is not None:
                self._val = f" val_acc {body.val_accuracy:.3f}"
            self._epochs = f"epoch {body.epoch}/{body.total_epochs}"
            loss = f" loss {body.train_loss:.4f}" if body.train_loss is not None else ""
            if self.mode == "plain":
                val_loss = f" val_loss {body.val_loss:.4f}" if body.val_loss is not None else ""
                self.note(f"{self._epochs}{loss}{val_loss}{self._val} ({body.duration:.2f}s)")
            percent = 100.0 * body.epoch / body.total_epochs if body.total_epochs else None
            self._update(phase="training", completed=percent,
                         info=f"{self._epochs}{loss}{self._val}",
                         eta=seconds(state.eta_seconds))
        elif isinstance(body, CheckpointEvent) and self.mode == "plain":
            self.note(f"checkpoint after epoch {body.epoch}")
        if state.status == "cancelling" and self._phase != "cancelling":
            self._phase = "cancelling"
            self._update(phase="cancelling")
        if update.terminal:
            self._update(phase=state.status, completed=100.0 if state.status == "completed"
                         else None, eta="0:00" if state.status == "completed" else "-")

    def _attempt_note(self, body: Any) -> None:
        """A resume or a hand-back: the attempt's story, one line."""
        from libs.events.schema import ReleasedEvent

        if isinstance(body, ReleasedEvent):
            self.note(f"handed back by {body.worker_id} ({body.reason}): queued again, no "
                      "attempt spent")
            self._update(phase="queued", info="")
        else:
            self.note(f"resumed from epoch {body.from_epoch} ({body.checkpoint})")

    def _update(self, **fields: Any) -> None:
        if self._progress is None:
            return
        if fields.get("completed") is None:
            fields.pop("completed", None)
        self._progress.update(self._task, **fields)


def _kind(update: JobUpdate) -> str:
    if update.message is None:
        return "state"
    return str(update.message.body.__struct_config__.tag)


def display_mode(console: Console, *, json_output: bool) -> str:
    if json_output:
        return "json"
    return "live" if console.is_terminal else "plain"


class _Prompt:
    """input() in a daemon thread: the loop keeps running, and a process that exits while the
    question is open is not held up by the blocked thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def ask(self, question: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = self.loop.create_future()

        def read() -> None:
            try:
                answer = input(question)
            except (EOFError, OSError):
                answer = ""
            self.loop.call_soon_threadsafe(_set_once, future, answer)

        threading.Thread(target=read, name="trainbus-prompt", daemon=True).start()
        return future


def _set_once(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


async def follow(
    bus: Bus,
    state: JobState,
    display: JobDisplay,
    *,
    interactive: bool,
) -> tuple[JobState, bool]:
    """Follow the job until it is terminal; returns (last state, whether it is terminal).

    Ctrl-C: on a terminal, asks whether to cancel the job (then keeps following until it ends)
    or to stop watching (the job goes on); without a terminal, just stops watching. A second
    Ctrl-C while the question is open stops watching."""
    from services.signals import on_signals

    interrupted = asyncio.Event()
    # SIGINT only (SIGTERM keeps whatever the caller installed, e.g. the demo's drain); the
    # handler only sets a flag, what to do is decided in _follow, in the loop. Leaving restores
    # the enclosing handler.
    with on_signals(lambda _sig: interrupted.set(), (signal.SIGINT,)):
        return await _follow(bus, state, display, interactive=interactive,
                             interrupted=interrupted)


async def _follow(
    bus: Bus,
    state: JobState,
    display: JobDisplay,
    *,
    interactive: bool,
    interrupted: asyncio.Event,
) -> tuple[JobState, bool]:
    from libs.events.bus import publish_cancel
    from libs.events.follow import follow_job
    from libs.events.schema import CancelCommand

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(follow_job(bus, state)) as updates:
                async for update in updates:
                    queue.put_nowait(update)
        except Exception as exc:  # handed to the loop below, which re-raises it
            queue.put_nowait(exc)
            return
        queue.put_nowait(done)

    pump_task = asyncio.create_task(pump(), name="follow")
    last = state
    cancel_sent = False
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            stopper = asyncio.ensure_future(interrupted.wait())
            finished, _ = await asyncio.wait({getter, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
            for pending in (getter, stopper):
                if pending not in finished:
                    pending.cancel()
            if getter in finished:
                item = getter.result()
                if item is done:
                    return last, True
                if isinstance(item, Exception):
                    raise item
                last = item.state
                display.show(item)
                if item.terminal:
                    return last, True
                continue
            interrupted.clear()
            if not interactive or cancel_sent:
                display.note(f"stopped watching job {last.job_id}; it goes on "
                             f"(trainbus watch {last.job_id} / trainbus cancel {last.job_id})")
                return last, False
            display.pause()
            answer_future = _Prompt(loop).ask(
                f"\njob {last.job_id}: [c] cancel the job, [w] stop watching (default), "
                "[r] resume watching? "
            )
            second = asyncio.ensure_future(interrupted.wait())
            either: set[asyncio.Future[Any]] = {answer_future, second}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            second.cancel()
            answer = answer_future.result().strip().lower() if answer_future.done() else "w"
            interrupted.clear()
            display.resume()
            if answer.startswith("c"):
                command = CancelCommand(reason="cancelled from the CLI", requested_by="cli")
                await publish_cancel(bus, last.job_id, command)
                cancel_sent = True
                display.note(f"cancel sent for {last.job_id}; waiting for it to stop "
                             "(Ctrl-C again: stop watching)")
            elif answer.startswith("r"):
                continue
            else:
                display.note(f"stopped watching job {last.job_id}; it goes on "
                             f"(trainbus watch {last.job_id} / trainbus cancel {last.job_id})")
                return last, False
    finally:
        pump_task.cancel()


async def follow_to_exit(bus: Bus, console: Console, state: JobState, *, json_output: bool) -> int:
    """Follow the job on the live display, then print its outcome (a table, or one JSON line)
    and return its exit code (EXIT_CANCELLED when the user stopped watching first)."""
    display = JobDisplay(console, mode=display_mode(console, json_output=json_output))
    with display:
        final, terminal = await follow(bus, state, display, interactive=sys.stdin.isatty())
    if json_output:
        print_json_line(final)
    elif terminal:
        report(console, final)
    return OUTCOME_EXIT.get(final.status, EXIT_CANCELLED) if terminal else EXIT_CANCELLED


def report(console: Console, state: JobState) -> None:
    """The end of a job: a metrics table and where the model is."""
    from rich.table import Table

    if state.status != "completed":
        reason = ""
        if state.error is not None:
            where = f" ({state.error.field})" if state.error.field else ""
            reason = f": {state.error.category}{where}: {state.error.reason}"
        elif state.status == "cancelled" and state.cancel_reason:
            reason = f": {state.cancel_reason}"
        console.print(f"job {state.job_id} {state.status}{reason}", highlight=False)
        frames = state.error.traceback if state.error is not None else ()
        if frames:  # a `code` failure: where it broke (frames and exception, no source)
            from rich.markup import escape

            console.print("traceback (most recent call last):", highlight=False)
            for line in frames:
                console.print(f"  {escape(line)}", highlight=False)
        return
    table = Table(title=f"job {state.job_id}: {state.strategy or '(inline strategy)'}")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def row(name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # counts (test samples) arrive as floats in the metrics dict
        table.add_row(name, f"{value:.4f}" if isinstance(value, float) else str(value))

    last = state.history[-1] if state.history else None
    row("epochs trained", len(state.history) or None)
    row("best epoch", state.best_epoch)
    if last is not None:
        row("train loss", last.train_loss)
        row("train accuracy", last.train_accuracy)
        row("val loss", last.val_loss)
        row("val accuracy", last.val_accuracy)
    for name, text in headline_rows(state.test_metrics):
        row(name, text)
    row("trainer", f"{state.worker_kind} on {state.device}" if state.worker_kind else None)
    if state.started_at and state.finished_at:
        row("duration (s)", round(state.finished_at - state.started_at, 2))
    console.print(table)
    from rich.markup import escape

    for warning in getattr(state, "warnings", None) or ():
        console.print(f"[yellow]warning:[/yellow] {escape(str(warning))}", highlight=False)
    model = state.model
    if model is not None:
        print(f"model: {model.strategy} {model.version}"
              + (f" at {model.local_path}" if model.local_path else "")
              + (f" (object store: {model.object_name})" if model.object_name else ""),
              flush=True)


# The headline numbers of a completed job (libs/pipeline/evaluate.py `headline`), in the order
# they matter: the model's score, its baselines and lifts, the backtest, then the rest.
_SCORES: Final = ("macro_f1", "accuracy", "rmse", "direction_accuracy", "mae")
_TAIL: Final = ("weighted_f1", "loss", "samples")
_METRICS: Final = ("direction_accuracy", "macro_f1", "accuracy", "rmse", "mae")  # longest first
_BACKTEST: Final = ("backtest_net_return", "backtest_sharpe", "backtest_max_drawdown",
                    "backtest_trades", "buy_and_hold_net_return", "buy_and_hold_sharpe",
                    "backtest_lift_vs_buy_and_hold")
_LABELS: Final = {
    "macro_f1": "macro F1", "weighted_f1": "weighted F1", "rmse": "RMSE", "mae": "MAE",
    "backtest_net_return": "backtest net return", "backtest_sharpe": "backtest Sharpe",
    "backtest_max_drawdown": "backtest max drawdown", "backtest_trades": "backtest trades",
    "buy_and_hold_net_return": "buy & hold net return",
    "buy_and_hold_sharpe": "buy & hold Sharpe",
    "backtest_lift_vs_buy_and_hold": "backtest lift vs buy & hold (annualised)",
}


def _metric_label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def _split_metric(rest: str, *, metric_first: bool) -> tuple[str, str] | None:
    """(name, metric) of `<name>_<metric>` or `<metric>_vs_<name>`."""
    for metric in _METRICS:
        if metric_first and rest.startswith(f"{metric}_vs_"):
            return rest[len(metric) + 4:], metric
        if not metric_first and rest.endswith(f"_{metric}"):
            return rest[: -len(metric) - 1], metric
    return None


def _baseline_keys(metrics: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Per baseline, in order of appearance: [(key, label)] of its scores then of the lifts
    over it, each in the order of _SCORES."""
    groups: dict[str, list[tuple[bool, int, str, str]]] = {}
    for key in metrics:
        lift = key.startswith("lift_")
        if not lift and not key.startswith("baseline_"):
            continue
        parsed = _split_metric(key.split("_", 1)[1], metric_first=lift)
        if parsed is None:
            continue
        name, metric = parsed
        fmt = "{metric} lift vs {name}" if lift else "baseline {name} {metric}"
        label = fmt.format(name=name.replace("_", " "), metric=_metric_label(metric))
        groups.setdefault(name, []).append((lift, _SCORES.index(metric), key, label))
    return {name: [(key, label) for _, _, key, label in sorted(entries)]
            for name, entries in groups.items()}


def _headline_value(key: str, value: Any) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if key.endswith(("_return", "_drawdown", "_vs_buy_and_hold")):
        return f"{value * 100:+.2f}%"
    if key.startswith("lift_"):
        return f"{value:+.4f}"
    return value


def headline_rows(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of a job's headline numbers: (label, value), the most telling first."""
    order: list[tuple[str, str]] = [(k, f"test {_metric_label(k)}") for k in _SCORES
                                    if k in metrics]
    for entries in _baseline_keys(metrics).values():
        order += entries
    order += [(k, _metric_label(k)) for k in _BACKTEST if k in metrics]
    order += [(k, f"test {_metric_label(k)}") for k in _TAIL if k in metrics]
    seen = {k for k, _ in order}
    order += [(k, f"test {_metric_label(k)}") for k in metrics if k not in seen]
    return [(label, _headline_value(key, metrics[key])) for key, label in order]


def age(moment: float | None) -> str:
    if not moment:
        return "-"
    delta = max(0.0, time.time() - moment)
    if delta < 90:
        return f"{delta:.0f}s ago"
    if delta < 5400:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400 * 2:
        return f"{delta / 3600:.0f}h ago"
    return f"{delta / 86400:.0f}d ago"
