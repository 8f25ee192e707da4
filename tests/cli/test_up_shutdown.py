"""`trainbus up` stops cleanly, in order, however it is stopped: real `up` processes with their
embedded nats-server, signalled the way a terminal, a dead `tee` and `kill -9` do.

- Ctrl-C in a terminal goes to the whole foreground process group: the nats-server must not be
  in it (it used to die first: tracebacks, no drain), and it stops last;
- `up 2>&1 | tee log` and Ctrl-C: tee dies, every later write of `up` is a broken pipe; `up`
  must still drain and exit (it used to stay up, deaf to every signal);
- `kill -9` of `up`: its nats-server exits too, and a server left over anyway (no death signal
  on that platform) is stopped by the next start on the same store.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
import pytest

from libs.events.embedded import (
    PID_FILE_NAME,
    EmbeddedNatsServer,
    EmbeddedServerError,
    PidRecord,
    find_nats_server,
    free_port,
    process_alive,
    read_pid_record,
)
from services.signals import drain_on_signals
from tests.harness.bus import STREAM_MAX_BYTES
from tests.harness.polling import wait_until
from tests.harness.processes import TRAINBUS, clean_env
from tests.harness.workspace import Workspace

STOP_TIMEOUT = 60.0


class Up:
    """One `trainbus up` process in its own session (as a shell runs a foreground job), with
    its store under `tmp_path/store`."""

    def __init__(self, tmp_path: Path, workspace: Workspace, *, stdout: int, stderr: int,
                 host_trainer: bool = True, nats_port: int | None = None) -> None:
        self.store = tmp_path / "store"
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.kinds = ["container", "host"] if host_trainer else ["container"]
        env = clean_env(NATS_URL=f"nats://127.0.0.1:{nats_port or free_port()}",
                        TRAINBUS_DATA_DIR=str(workspace.data_dir),
                        TRAINBUS_STRATEGIES_DIR=str(workspace.strategies_dir),
                        TRAINBUS_MODELS_DIR=str(tmp_path / "models"),
                        TRAINBUS_STREAM_MAX_BYTES=str(STREAM_MAX_BYTES))
        argv = [TRAINBUS, "up", "--port", self.api_url.rsplit(":", 1)[1],
                "--store", str(self.store), *([] if host_trainer else ["--no-host-trainer"])]
        self.proc = subprocess.Popen(argv, cwd=tmp_path, env=env, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)

    @property
    def pid_file(self) -> Path:
        return self.store / "nats" / PID_FILE_NAME

    def wait_ready(self) -> int:
        """Until the API lists every trainer; the embedded server's pid."""

        async def ready() -> bool:
            assert self.proc.poll() is None, f"`up` exited with {self.proc.returncode}"
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    workers = (await http.get(f"{self.api_url}/api/v1/workers")).json()
            except (httpx.HTTPError, ValueError):
                return False
            return sorted(w["kind"] for w in workers) == self.kinds

        asyncio.run(wait_until(ready, "trainbus up ready", timeout=120, interval=0.2))
        record = read_pid_record(self.pid_file)
        assert record is not None and record.parent == self.proc.pid, record
        assert process_alive(record.server)
        return record.server

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`up` still running {STOP_TIMEOUT:g}s after the signal; "
                                 "it ignores signals") from None

    def kill(self) -> None:
        """After a failed test: `up` and anything left in its group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def wait_gone(pid: int, what: str, timeout: float = 15.0) -> None:
    asyncio.run(wait_until(lambda: not process_alive(pid), what, timeout=timeout,
                           interval=0.05))


@pytest.mark.slow
def test_ctrl_c_to_the_terminal_group_drains_the_trainers_and_stops_nats_last(
    tmp_path: Path, workspace: Workspace
) -> None:
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log_file:
        up = Up(tmp_path, workspace, stdout=log_file.fileno(), stderr=log_file.fileno())
    try:
        server = up.wait_ready()
        os.killpg(up.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert up.wait_exit() == 0, log_path.read_text()[-3000:]
    finally:
        up.kill()
    log = log_path.read_text()
    lines = log.splitlines()

    def line_of(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert len(found) == 1, (pattern, log[-3000:])
        return found[0]

    trainers_stopped = [i for i, line in enumerate(lines)
                        if re.search(r"worker \S+ stopped$", line)]
    assert len(trainers_stopped) == 2, log[-3000:]
    # The server was still up while the trainers drained (it received nothing itself), and
    # was stopped by `up`, after them.
    assert line_of(r"stopping nats-server pid \d+") > max(trainers_stopped)
    assert line_of(r"nats-server stopped$") > line_of(r"stopping nats-server pid \d+")
    assert "had already exited" not in log and "Traceback" not in log
    assert lines[-1].endswith("trainbus up: stopped")
    assert not process_alive(server) and not up.pid_file.exists()


@pytest.mark.slow
def test_ctrl_c_with_a_dead_tee_on_stdout_and_stderr_still_stops_up(
    tmp_path: Path, workspace: Workspace
) -> None:
    # `trainbus up 2>&1 | tee`: one pipe for both; the Ctrl-C kills tee, closing its end.
    read_end, write_end = os.pipe()
    up = Up(tmp_path, workspace, stdout=write_end, stderr=write_end, host_trainer=False)
    os.close(write_end)
    try:
        server = up.wait_ready()  # startup lines wait in the pipe's buffer (well under 64 KiB)
        os.close(read_end)  # tee is gone: every later write of `up` is EPIPE
        os.killpg(up.proc.pid, signal.SIGINT)
        assert up.wait_exit() == 0
    finally:
        up.kill()
    wait_gone(server, "the embedded nats-server to exit")
    assert not up.pid_file.exists()


@pytest.mark.slow
def test_the_next_up_stops_a_killed_ups_server_and_a_killed_up_takes_its_own_along(
    tmp_path: Path, workspace: Workspace
) -> None:
    # Where no death signal exists, `kill -9` of `up` leaves its server running: before the
    # fix the next `up` found it answering on NATS_URL and ran on it, and nobody stopped it.
    # And on Linux, `kill -9` of `up` itself takes its server with it (PR_SET_PDEATHSIG).
    nats_port = free_port()
    orphan, _ = start_orphan_server(tmp_path / "store" / "nats", nats_port)
    try:
        asyncio.run(wait_until(lambda: not _port_free(nats_port), "the orphan listening",
                               timeout=15))
        up = Up(tmp_path, workspace, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                host_trainer=False, nats_port=nats_port)
        try:
            server = up.wait_ready()  # its own embedded server, on the same port and store
            assert server != orphan and not process_alive(orphan)
            up.proc.kill()  # `up` only, not its group: the server is in a session of its own
            up.proc.wait(timeout=10)
            wait_gone(server, "the orphaned nats-server to exit (PR_SET_PDEATHSIG)")
        finally:
            up.kill()
    finally:
        if process_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


# --- the pid file: one store, one server -------------------------------------------------------


def start_orphan_server(store: Path, port: int) -> tuple[int, int]:
    """A nats-server on `store` whose parent has exited (as after `kill -9` where no death
    signal exists), with the pid file a start writes; (server pid, dead parent pid)."""
    store.mkdir(parents=True)
    shell = subprocess.run(
        ["sh", "-c", f'"$0" -js -sd "$1" -a 127.0.0.1 -p {port} >/dev/null 2>&1 & echo $!',
         find_nats_server(), str(store)],
        capture_output=True, text=True, check=True, timeout=10)
    server = int(shell.stdout)
    parent = _dead_pid()
    (store / PID_FILE_NAME).write_text(
        PidRecord(server, parent, f"nats://127.0.0.1:{port}").encode())
    return server, parent


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.anyio
async def test_a_start_stops_a_server_a_dead_parent_left_on_its_store(tmp_path: Path) -> None:
    store, port = tmp_path / "nats", free_port()
    orphan, _ = start_orphan_server(store, port)
    try:
        await wait_until(lambda: not _port_free(port), "the orphan listening", timeout=15)
        server = EmbeddedNatsServer(store, port=port)
        await asyncio.wait_for(server.start(), 30)  # same port: only free once it is stopped
        try:
            assert not process_alive(orphan)
            record = read_pid_record(store / PID_FILE_NAME)
            assert record == PidRecord(server.pid or 0, os.getpid(), server.url)
        finally:
            await server.stop()
        assert not (store / PID_FILE_NAME).exists()
    finally:
        if process_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def _port_free(port: int) -> bool:
    from libs.events.embedded import port_is_free

    return port_is_free("127.0.0.1", port)


@pytest.mark.anyio
async def test_a_second_start_on_a_store_in_use_is_refused_naming_the_owner(
    tmp_path: Path,
) -> None:
    first = EmbeddedNatsServer(tmp_path / "nats")
    await first.start()
    try:
        second = EmbeddedNatsServer(tmp_path / "nats")
        with pytest.raises(EmbeddedServerError, match=(
                rf"store .*nats is in use: nats-server pid {first.pid} .* started by pid "
                rf"{os.getpid()}, which still runs")):
            await second.start()
        assert first.running and not second.running
    finally:
        await first.stop()


# --- a message that cannot be written does not make the process deaf ---------------------------


@pytest.fixture
def usr_handlers() -> Iterator[None]:
    def fail(_signum: int, _frame: FrameType | None) -> None:
        raise AssertionError("the Python-level handler ran while a loop handler was installed")

    before = {sig: signal.signal(sig, fail) for sig in (signal.SIGUSR1,)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.anyio
async def test_a_broken_pipe_while_saying_stopping_still_stops_then_forces(
    usr_handlers: None,
) -> None:
    stop, force = asyncio.Event(), asyncio.Event()

    def broken(_sig: signal.Signals) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with drain_on_signals(stop, force, on_stop=broken, on_force=broken,
                          signals=(signal.SIGUSR1,)):
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(stop.wait(), 10)
        assert not force.is_set()
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(force.wait(), 10)
