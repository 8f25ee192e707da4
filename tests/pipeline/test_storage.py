"""ModelStorage: layout, round trip, versions under concurrency, tamper and archive safety."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from libs.pipeline.model import build_model
from libs.pipeline.report import REPORT_FILE
from libs.pipeline.storage.layout import ALL_FILES
from libs.pipeline.storage.models import (
    ArchiveError,
    FeatureMismatchError,
    IntegrityError,
    ModelNotFoundError,
    ModelStorage,
    predict,
    weights_sha256,
)
from libs.pipeline.strategy import StrategyConfig
from libs.pipeline.trainer import seed_everything

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_model(strategy: StrategyConfig, splits: Any, seed: int = 3) -> torch.nn.Module:
    seed_everything(seed)
    return build_model(len(splits.feature_names), 3, strategy.model)


def save(
    storage: ModelStorage,
    strategy: StrategyConfig,
    splits: Any,
    model: torch.nn.Module | None = None,
    **overrides: Any,
):
    kwargs: dict[str, Any] = dict(
        timeframe="1h",
        feature_names=splits.feature_names,
        timeframes=["1h"],
        symbols=list(splits.symbols),
        metrics={"history": [], "test": {"accuracy": 0.5}},
        seed=11,
        device="cpu",
        data_window={"start": None, "end": None},
        data_fingerprint="abc123",
    )
    kwargs.update(overrides)
    return storage.save(model or make_model(strategy, splits), strategy, **kwargs)


def softmax(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


# --- layout and round trip ------------------------------------------------------------------


def test_save_writes_the_layout_and_load_predicts_the_same(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    model = make_model(tiny_strategy, tiny_splits)
    ref = save(storage, tiny_strategy, tiny_splits, model)
    assert (ref.strategy, ref.timeframe, ref.version) == ("tiny", "1h", 1)
    version_dir = tmp_path / "tiny" / "1h_v1"
    assert Path(ref.path) == version_dir
    assert sorted(p.name for p in version_dir.iterdir()) == sorted((*ALL_FILES, REPORT_FILE))
    assert json.loads((tmp_path / "tiny" / "1h_latest").read_text())["version"] == 1

    meta = json.loads((version_dir / "metadata.json").read_text())
    for key in (
        "strategy_hash",
        "symbols",
        "timeframes",
        "data_window",
        "data_fingerprint",
        "seed",
        "device",
        "versions",
        "created_at",
        "files",
        "weights_sha256",
    ):
        assert key in meta, key
    assert set(meta["versions"]) >= {"trainbus", "torch", "numpy", "pandas", "TA-Lib"}
    assert set(meta["files"]) == set(ALL_FILES) - {"metadata.json"}
    features = json.loads((version_dir / "features.json").read_text())
    assert features["feature_names"] == list(tiny_splits.feature_names)
    # config.yaml keeps the non-training sections
    assert "description" in (version_dir / "config.yaml").read_text()

    loaded = storage.load("tiny")
    assert not loaded.model.training
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    assert loaded.feature_names == list(tiny_splits.feature_names)
    assert loaded.config == tiny_strategy
    assert weights_sha256(loaded.model.state_dict()) == weights_sha256(model.state_dict())
    np.testing.assert_array_equal(
        predict(loaded, tiny_splits.x_test), softmax(model, tiny_splits.x_test)
    )
    probabilities = predict(loaded, tiny_splits.x_test)
    assert probabilities.shape == (tiny_splits.n_test, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_versions_increment_and_latest_follows(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    refs = [
        save(storage, tiny_strategy, tiny_splits, make_model(tiny_strategy, tiny_splits, s))
        for s in (1, 2, 3)
    ]
    assert [r.version for r in refs] == [1, 2, 3]
    assert storage.resolve("tiny").version == 3
    assert storage.resolve("tiny", "latest", "1h").version == 3
    first = storage.load("tiny", version=1)
    assert weights_sha256(first.model.state_dict()) == weights_sha256(
        make_model(tiny_strategy, tiny_splits, 1).state_dict()
    )
    assert [r.version for r in storage.list_versions("tiny")] == [1, 2, 3]
    # a damaged pointer is only a hint: the directories are the truth
    (tmp_path / "tiny" / "1h_latest").write_text("garbage")
    assert storage.resolve("tiny").version == 3


def test_models_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAINBUS_MODELS_DIR", str(tmp_path / "m"))
    assert ModelStorage().base_dir == tmp_path / "m"
    monkeypatch.delenv("TRAINBUS_MODELS_DIR")
    assert ModelStorage().base_dir == Path("models")


def test_not_found_and_bad_names(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    with pytest.raises(ModelNotFoundError):
        storage.load("tiny")
    save(storage, tiny_strategy, tiny_splits)
    with pytest.raises(ModelNotFoundError):
        storage.load("tiny", version=7)
    with pytest.raises(ModelNotFoundError):
        storage.load("../tiny")
    with pytest.raises(ModelNotFoundError):
        storage.load("tiny", timeframe="../x")
    save(storage, tiny_strategy, tiny_splits, timeframe="4h")
    with pytest.raises(ModelNotFoundError, match="several timeframes"):
        storage.resolve("tiny")
    assert storage.resolve("tiny", timeframe="4h").version == 1


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_saves_in_threads_never_share_a_directory(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    models = [make_model(tiny_strategy, tiny_splits, s) for s in range(8)]
    barrier = threading.Barrier(len(models))
    refs: list[Any] = [None] * len(models)

    def worker(i: int) -> None:
        barrier.wait()
        refs[i] = save(storage, tiny_strategy, tiny_splits, models[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.version for r in refs) == list(range(1, 9))
    # Check: each directory holds the weights of the save that got it
    for i, ref in enumerate(refs):
        loaded = storage.load("tiny", version=ref.version)
        assert weights_sha256(loaded.model.state_dict()) == weights_sha256(models[i].state_dict())
    assert storage.resolve("tiny").version == 8
    assert not [p for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".")]


SAVE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from libs.pipeline.strategy import parse_strategy
    from libs.pipeline.model import build_model
    from libs.pipeline.storage.models import ModelStorage
    from libs.pipeline.features import feature_names
    from libs.pipeline.trainer import seed_everything
    from tests.pipeline.conftest import TINY_STRATEGY_YAML

    strategy = parse_strategy(TINY_STRATEGY_YAML)
    names = feature_names(strategy, ["1h"])
    seed_everything(int(sys.argv[1]))
    model = build_model(len(names), 3, strategy.model)
    go = Path({go!r})
    while not go.exists():  # start together
        time.sleep(0.005)
    for _ in range(3):
        ref = ModelStorage(Path({base!r})).save(
            model, strategy, timeframe="1h", feature_names=names, timeframes=["1h"],
            symbols=["EURUSD"], metrics={{}}, seed=1, device="cpu")
        print(ref.version, flush=True)
    """
)


def test_concurrent_saves_in_processes_never_share_a_directory(tmp_path: Path) -> None:
    base, go = tmp_path / "models", tmp_path / "go"
    script = SAVE_SCRIPT.format(root=str(REPO_ROOT), base=str(base), go=str(go))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for i in range(3)
    ]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    versions = [int(v) for out, _ in outputs for v in out.split()]
    assert sorted(versions) == list(range(1, 10))
    assert sorted(p.name for p in (base / "tiny").iterdir()) == sorted(
        [f"1h_v{n}" for n in range(1, 10)] + ["1h_latest"]
    )
    assert json.loads((base / "tiny" / "1h_latest").read_text())["version"] == 9


# --- integrity --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "victim", ["model.safetensors", "config.yaml", "features.json", "metrics.json"]
)
def test_a_modified_file_is_refused(
    victim: str, tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    ref = save(storage, tiny_strategy, tiny_splits)
    path = Path(ref.path) / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=victim):
        storage.load("tiny")


def test_a_missing_file_is_refused(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    ref = save(storage, tiny_strategy, tiny_splits)
    (Path(ref.path) / "features.json").unlink()
    with pytest.raises(IntegrityError, match=r"features\.json"):
        storage.load("tiny")


def test_features_that_differ_from_the_config_are_refused(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    # saved with the right count but the wrong order: hashes are consistent, features are not
    save(
        storage, tiny_strategy, tiny_splits, feature_names=list(reversed(tiny_splits.feature_names))
    )
    with pytest.raises(FeatureMismatchError, match="different order"):
        storage.load("tiny")
    assert (
        storage.load("tiny", verify_features=False).feature_names[0]
        == (tiny_splits.feature_names[-1])
    )


def test_predict_refuses_the_wrong_width(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path)
    save(storage, tiny_strategy, tiny_splits)
    loaded = storage.load("tiny")
    with pytest.raises(FeatureMismatchError):
        predict(loaded, tiny_splits.x_test[:, :-1])
    assert predict(loaded, tiny_splits.x_test[:0]).shape == (0, 3)


def test_a_few_rows_predict_bit_for_bit_what_the_whole_prediction_says_of_them(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    """The latest bar alone (a live prediction) and the same bar in a whole file's prediction
    (a backtest) must agree: torch's CPU matrix product rounds a handful of rows otherwise."""
    storage = ModelStorage(tmp_path)
    save(storage, tiny_strategy, tiny_splits)
    loaded = storage.load("tiny")
    x = np.random.default_rng(0).standard_normal((200, len(tiny_splits.feature_names)))
    whole = predict(loaded, x.astype(np.float32))
    for rows in (1, 2, 3, 5, 10, 17, 63, 64, 65):
        for start in (0, 7, 200 - rows):
            np.testing.assert_array_equal(
                predict(loaded, x[start : start + rows]), whole[start : start + rows],
                err_msg=f"{rows} rows from {start}")
    # ... and a chunked prediction whose last chunk is a few rows
    np.testing.assert_array_equal(predict(loaded, x, chunk=99), whole)


# --- archives ---------------------------------------------------------------------------------


def test_archive_round_trip(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    source = ModelStorage(tmp_path / "a")
    model = make_model(tiny_strategy, tiny_splits)
    save(source, tiny_strategy, tiny_splits)  # v1
    ref = save(source, tiny_strategy, tiny_splits, model)  # v2
    data = source.to_archive(ref)
    assert data == source.to_archive(ref)  # deterministic bytes
    # in memory, no disk
    in_memory = source.load_archive(data)
    np.testing.assert_array_equal(
        predict(in_memory, tiny_splits.x_test), softmax(model, tiny_splits.x_test)
    )
    # installed elsewhere: keeps its version number, idempotent on a second install
    target = ModelStorage(tmp_path / "b")
    installed = target.from_archive(data)
    assert (installed.strategy, installed.timeframe, installed.version) == ("tiny", "1h", 2)
    assert target.from_archive(data).version == 2
    assert target.resolve("tiny").version == 2
    np.testing.assert_array_equal(
        predict(target.load("tiny"), tiny_splits.x_test), softmax(model, tiny_splits.x_test)
    )
    # a different model already at that number: installed under the next free one
    other = ModelStorage(tmp_path / "c")
    save(other, tiny_strategy, tiny_splits, make_model(tiny_strategy, tiny_splits, 50))
    save(other, tiny_strategy, tiny_splits, make_model(tiny_strategy, tiny_splits, 51))
    assert other.from_archive(data).version == 3


def tar_gz(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def file_member(name: str, payload: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def test_archive_refuses_traversal_links_and_junk(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path / "models")
    symlink = tarfile.TarInfo("tiny/1h_v1/model.safetensors")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("tiny/1h_v1/config.yaml")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "tiny/1h_v1/metrics.json"
    cases = {
        "dotdot": tar_gz([file_member("../../evil/1h_v1/metadata.json")]),
        "inner dotdot": tar_gz([file_member("tiny/../1h_v1/metadata.json")]),
        "absolute": tar_gz([file_member("/tmp/tiny/1h_v1/metadata.json")]),
        "symlink": tar_gz([(symlink, None)]),
        "hardlink": tar_gz([(hardlink, None)]),
        "unknown file": tar_gz([file_member("tiny/1h_v1/run.sh", b"rm -rf /")]),
        "two dirs": tar_gz(
            [file_member("tiny/1h_v1/metadata.json"), file_member("tiny/1h_v2/metrics.json")]
        ),
        "empty": tar_gz([]),
        "not gzip": b"PK\x03\x04 this is a zip, not a tar.gz",
        "missing files": tar_gz([file_member("tiny/1h_v1/metadata.json")]),
    }
    for name, data in cases.items():
        with pytest.raises(ArchiveError):
            storage.from_archive(data)
        assert not (tmp_path / "evil").exists(), name
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.json"))

    # size caps
    good = ModelStorage(tmp_path / "src")
    data = good.to_archive(save(good, tiny_strategy, tiny_splits))
    capped = ModelStorage(tmp_path / "capped")
    capped.max_file_bytes = 100
    with pytest.raises(ArchiveError, match="too large"):
        capped.from_archive(data)
    capped = ModelStorage(tmp_path / "capped")
    capped.max_archive_bytes = 10
    with pytest.raises(ArchiveError, match="more than"):
        capped.from_archive(data)


def test_archive_with_a_modified_file_is_refused(
    tmp_path: Path, tiny_strategy: StrategyConfig, tiny_splits: Any
) -> None:
    storage = ModelStorage(tmp_path / "a")
    ref = save(storage, tiny_strategy, tiny_splits)
    members = []
    for name in ALL_FILES:
        payload = (Path(ref.path) / name).read_bytes()
        if name == "metrics.json":
            payload = payload.replace(b"0.5", b"0.9")
        members.append(file_member(f"tiny/1h_v1/{name}", payload))
    with pytest.raises(IntegrityError, match=r"metrics\.json"):
        ModelStorage(tmp_path / "b").from_archive(tar_gz(members))
    assert not (tmp_path / "b" / "tiny" / "1h_v1").exists()
