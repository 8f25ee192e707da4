"""Hostile input through a live worker and through the API: the hand-written corpus
(tests/reliability/corpus.py), 10 MB payloads, and models that were tampered with.

Real processes (`trainbus backend` with its projector, `trainbus container-trainer`), their
working directory and every configured directory inside one tree that is snapshotted before
and after: apart from the models directories, nothing in it may change.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import pytest

from libs.events.bus import connect, publish_command
from libs.events.errors import ObjectDigestMismatch
from libs.events.models import fetch_model
from libs.events.schema import TrainCommand
from libs.events.setup import ensure_jetstream
from libs.pipeline.storage.models import ArchiveError, IntegrityError, ModelStorage
from tests.events.rawnats import _open
from tests.harness.nats_server import NatsServer
from tests.harness.polling import wait_job_state
from tests.harness.strategies import ROOT
from tests.reliability.cluster import (
    SYMBOLS,
    Cluster,
    make_workspace,
    snapshot,
    wait_http_ok,
    wait_workers,
)
from tests.reliability.corpus import BAD_STRATEGY_FILES, CORPUS
from tests.trainers.conftest import direct_run

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

def names_the_field(expected: str | None, field: str | None, reason: str) -> bool:
    if expected is None:
        return bool(reason)
    base = expected.split("[")[0]
    return (field or "").split("[")[0] == base or expected in reason


async def test_the_corpus_is_rejected_naming_the_field_and_the_worker_keeps_serving(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    assert len(CORPUS) >= 50
    ws = make_workspace(tmp_path / "ws")
    for name, text in BAD_STRATEGY_FILES.items():
        (ws.strategies_dir / name).write_text(text)
    # The trainers' own state (their signing keys, libs/events/signing.py) is theirs to write.
    own_state = ws.cwd / ".trainbus"
    before = snapshot(ws.root, skip=(ws.models_root, own_state))
    cluster = Cluster(nats_server, ws, tmp_path / "logs")
    backend = cluster.backend(projector="embedded").start()
    trainer = cluster.trainer("hostile-trainer", "container").start()
    bus = await connect(cluster.bus_config())
    try:
        await wait_http_ok(cluster.api_url(), backend)
        await ensure_jetstream(bus)
        await wait_workers(bus, ["hostile-trainer"], (trainer, backend))

        # A bystander job runs while the corpus arrives.
        bystander = TrainCommand(job_id="bystander", strategy="mid", symbols=SYMBOLS,
                                 timeframes=("1h",), seed=8)
        await publish_command(bus, bystander)

        # --- through the worker: raw bytes on the train subject, as `nats req` would ---------
        for i, bad in enumerate(CORPUS):
            await bus.js.publish("trainbus.cmd.train.any", bad.body, stream="TRAINBUS",
                                 headers={"Nats-Msg-Id": f"train:hostile-{i:02d}"})
        wrong = []
        for i, bad in enumerate(CORPUS):
            state = await wait_job_state(bus, f"hostile-{i:02d}", procs=(trainer, backend))
            error = state.error
            if (state.status != "rejected" or error is None
                    or not names_the_field(bad.field, error.field, error.reason)
                    or (bad.mentions and bad.mentions not in error.reason)):
                wrong.append((bad.name, state.status, error))
        assert not wrong, wrong

        # --- through the API, with the bearer token ------------------------------------------
        auth = {"Authorization": f"Bearer {cluster.api_token}",
                "content-type": "application/json"}
        async with httpx.AsyncClient(base_url=cluster.api_url(), timeout=60) as http:
            api_wrong = []
            for bad in (b for b in CORPUS if b.api):
                response = await http.post("/api/v1/trainings", content=bad.api_body(),
                                           headers=auth)
                if response.status_code == 202:  # valid for the API: the worker refuses it
                    state = await wait_job_state(bus, response.json()["job_id"],
                                                 procs=(trainer, backend))
                    field, reason, ok = (state.error.field if state.error else None,
                                         state.error.reason if state.error else "",
                                         state.status == "rejected")
                else:
                    problem = response.json()
                    field, reason = problem.get("field"), problem.get("detail", "")
                    ok = response.status_code in (400, 413, 422) and \
                        response.headers["content-type"].startswith("application/problem+json")
                expected = bad.expected_api_field
                if not ok or not names_the_field(expected, field, reason) or (
                        bad.mentions and bad.mentions not in reason and expected is not None):
                    api_wrong.append((bad.name, response.status_code, field, reason[:200]))
            assert not api_wrong, api_wrong

            # 10 MB: refused by the API before it is read, by the client before it is sent,
            # and by the server when a raw client sends it anyway.
            ten_mb = json.dumps({"strategy_yaml": "#" * (10 * 1024 * 1024),
                                 "symbols": ["EURUSD"], "timeframes": ["1h"]}).encode()
            assert (await http.post("/api/v1/trainings", content=ten_mb,
                                    headers=auth)).status_code == 413
        last = (await bus.js.stream_info("TRAINBUS")).state.last_seq
        with pytest.raises(nats.errors.MaxPayloadError):
            await publish_command(bus, TrainCommand(
                job_id="ten-mb", strategy_yaml="#" * (10 * 1024 * 1024), symbols=("EURUSD",),
                timeframes=("1h",)))
        assert await _raw_oversized_publish(nats_server.url) == b"-ERR 'Maximum Payload Violation'"
        assert (await bus.js.stream_info("TRAINBUS")).state.last_seq == last

        # --- the worker kept serving, and the bystander was not disturbed -------------------
        after_job = await publish_command(bus, TrainCommand(
            job_id="after-corpus", strategy="tiny", symbols=SYMBOLS, timeframes=("1h",)))
        assert (await wait_job_state(bus, after_job.job_id, procs=(trainer,))).status == "completed"
        done = await wait_job_state(bus, "bystander", procs=(trainer,))
        assert done.status == "completed" and done.attempt == 1, done
        assert trainer.running and "Traceback" not in trainer.log_text()
        assert done.model is not None
        reference = await asyncio.to_thread(
            direct_run, ws, tmp_path / "direct",
            bystander)
        assert done.model.weights_sha256 == reference.weights_sha256
    finally:
        await bus.close()
        for proc in (trainer, backend):
            if proc.running:
                assert proc.terminate() == 0, proc.log_text()[-3000:]
        cluster.stop_all()
    # --- nothing written outside the configured models dirs ---------------------------------
    assert snapshot(ws.root, skip=(ws.models_root, own_state)) == before
    assert not await asyncio.to_thread((ROOT / "evil").exists)
    assert not await asyncio.to_thread(Path("/tmp/pwned").exists)


async def _raw_oversized_publish(url: str) -> bytes:
    """A client that ignores the server's max_payload (1 MiB) announces a 2 MiB PUB: the
    server refuses it on the PUB line itself, before reading the payload."""
    reader, writer = await _open(url)
    try:
        writer.write(f"PUB trainbus.cmd.train.any {2 * 1024 * 1024}\r\n".encode())
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if line.startswith(b"-ERR") or not line:
                return line.strip()
    finally:
        writer.close()


# --- models: loading never executes code; tampering is detected --------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "joblib",
                     "cloudpickle"}


def test_no_code_that_can_execute_data_is_used_to_load_anything() -> None:
    """AST scan of libs/ and services/: no pickle-family import, no torch.load / numpy
    allow_pickle / yaml full or unsafe loaders, no eval/exec. PyYAML's `yaml.load` is allowed
    only with the strategy loader's SafeLoader subclass."""
    import yaml

    from libs.pipeline import strategy as strategy_config

    assert issubclass(strategy_config.Loader, yaml.SafeLoader)
    found: list[str] = []
    for path in sorted([*(ROOT / "libs").rglob("*.py"), *(ROOT / "services").rglob("*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{where}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] in FORBIDDEN_MODULES]
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: from {node.module} import")
            elif isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if name in ("eval", "exec", "torch.load", "yaml.unsafe_load", "yaml.full_load",
                            "pickle.loads", "torch.jit.load"):
                    found.append(f"{where}:{node.lineno}: {name}(...)")
                if name == "yaml.load" and keywords.get("Loader") != "Loader":
                    found.append(f"{where}:{node.lineno}: yaml.load without the safe loader")
                if name.endswith("load") and keywords.get("allow_pickle") == "True":
                    found.append(f"{where}:{node.lineno}: {name}(allow_pickle=True)")
    assert found == []


def _rebuild(archive: bytes, change: Any) -> bytes:
    """The archive with its members passed through `change(name, data) -> [(name, data)]`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src, \
            gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            for name, new in change(member.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(new)
                dst.addfile(info, io.BytesIO(new))
    return out.getvalue()


def _reforge(archive: bytes) -> bytes:
    """Other weights, with metadata.json's hashes recomputed to match them."""
    import hashlib

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    weights_name = next(n for n in files if n.endswith("model.safetensors"))
    meta_name = next(n for n in files if n.endswith("metadata.json"))
    weights = bytearray(files[weights_name])
    weights[-1] ^= 0x01  # the last byte of the last tensor: still a valid safetensors file
    metadata = json.loads(files[meta_name])
    metadata["files"]["model.safetensors"]["sha256"] = hashlib.sha256(weights).hexdigest()
    replaced = {weights_name: bytes(weights), meta_name: json.dumps(metadata).encode()}
    return _rebuild(archive, lambda name, data: [(name, replaced.get(name, data))])


async def test_a_tampered_model_is_detected_and_refused(nats_server: NatsServer,
                                                        tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    cluster = Cluster(nats_server, ws, tmp_path / "logs")
    backend = cluster.backend(projector="embedded").start()
    trainer = cluster.trainer("model-trainer", "container").start()
    bus = await connect(cluster.bus_config())
    try:
        await wait_http_ok(cluster.api_url(), backend)
        await ensure_jetstream(bus)
        await wait_workers(bus, ["model-trainer"], (trainer, backend))
        await publish_command(bus, TrainCommand(job_id="genuine", strategy="tiny",
                                                symbols=SYMBOLS, timeframes=("1h",)))
        state = await wait_job_state(bus, "genuine", procs=(trainer,))
        assert state.status == "completed" and state.model is not None
        ref = state.model
        assert ref.object_name is not None
        archive = await fetch_model(bus, ref)
        storage = ModelStorage(tmp_path / "installed")
        assert storage.load_archive(archive).metadata["strategy"] == "tiny"

        # 1. A flipped byte in the weights: the manifest's hash no longer matches.
        def flip(name: str, data: bytes) -> list[tuple[str, bytes]]:
            if name.endswith("model.safetensors"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            return [(name, data)]

        with pytest.raises(IntegrityError, match=r"model\.safetensors"):
            storage.load_archive(_rebuild(archive, flip))
        # 2. A pickle smuggled in beside the weights, or a member that climbs out.
        for extra in ("tiny/1h_v1/model.pt", "../../evil.py", "/etc/cron.d/evil"):
            def smuggle(name: str, data: bytes, extra: str = extra) -> list[tuple[str, bytes]]:
                return [(name, data)] + ([(extra, b"cos\nsystem\n(S'id'\ntR.")]
                                         if name.endswith("metadata.json") else [])

            with pytest.raises(ArchiveError):
                storage.from_archive(_rebuild(archive, smuggle))
        assert not (tmp_path / "evil.py").exists()
        # 3. Weights and manifest changed together (hashes recomputed): the archive is
        #    internally consistent, but it is not the archive the `completed` event names.
        forged = _reforge(archive)
        assert storage.load_archive(forged).metadata["strategy"] == "tiny"
        store = await bus.js.object_store("trainbus_models")
        await store.put(ref.object_name, forged)
        with pytest.raises(ObjectDigestMismatch):
            await fetch_model(bus, ref)
        # ... and the API refuses to serve it.
        async with httpx.AsyncClient(base_url=cluster.api_url(), timeout=30) as http:
            response = await http.get(f"/api/v1/models/tiny/{ref.version}/download")
            assert response.status_code in (404, 409, 502), response.status_code
            assert "SHA-256" in response.text
        # 4. Bytes changed in the store without its metadata: the chunk digest catches it.
        info = await store.get_info(ref.object_name)
        raw = await bus.js.get_last_msg("OBJ_trainbus_models",
                                        f"$O.trainbus_models.C.{info.nuid}")
        await bus.js.publish(f"$O.trainbus_models.C.{info.nuid}",
                             bytes(b ^ 1 for b in (raw.data or b"")))
        with pytest.raises(ObjectDigestMismatch):
            await fetch_model(bus, ref)
    finally:
        await bus.close()
        cluster.stop_all()


def test_the_corpus_is_big_and_varied_enough() -> None:
    assert len(CORPUS) >= 50
    assert len({b.name for b in CORPUS}) == len(CORPUS)
    fields = {b.field for b in CORPUS}
    for needed in ("job_id", "strategy", "strategy_yaml", "symbols", "seed", None):
        assert needed in fields
