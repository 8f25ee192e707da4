"""`trainbus models` as a user runs it (the real console script as a subprocess) on real trained
models: listing, show and compare without NATS, and promote / aliases / delete / prune against
a real nats-server, checked on disk, in the log (`trainbus audit`) and in the output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from libs.events.config import BusConfig
from libs.events.embedded import free_port
from libs.events.projector import Projector
from tests.cli.conftest import run_cli
from tests.events.test_registry import train_models
from tests.harness.bus import open_bus
from tests.harness.processes import clean_env

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_models(tmp_path_factory.mktemp("trained-cli"))


@pytest.fixture
def models_dir(trained: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(trained, target)
    return target


def models_env(models_dir: Path, nats_url: str, prefix: str = "trainbus",
               **extra: str) -> dict[str, str]:
    return clean_env(NATS_URL=nats_url, TRAINBUS_SUBJECT_PREFIX=prefix,
                     TRAINBUS_MODELS_DIR=str(models_dir), **extra)


async def test_models_without_nats_lists_shows_and_compares_the_local_models(
    models_dir: Path
) -> None:
    env = models_env(models_dir, f"nats://127.0.0.1:{free_port()}")
    listing = await run_cli("models", env=env)
    assert listing.rc == 0, listing.stderr
    for version in ("1h_v1", "1h_v2", "1h_v3", "1h_v4"):
        assert version in listing.stdout
    # One (yellow) line says why the aliases are missing; nothing else, no traceback.
    assert listing.stderr.count("\n") == 1
    assert "NATS was not reachable" in listing.stderr and "aliases unknown" in listing.stderr

    ranked = await run_cli("models", "--sort", "macro_f1", "--order", "asc", "--json", env=env)
    assert ranked.rc == 0
    scores = [m["test_metrics"]["macro_f1"] for m in json.loads(ranked.stdout)]
    assert len(scores) == 4 and scores == sorted(scores)
    bad = await run_cli("models", "--sort", "bogus", env=env)
    assert bad.rc == 2 and "sort: cannot sort by 'bogus'" in bad.stderr

    shown = await run_cli("models", "show", "tiny/latest", env=env)
    assert shown.rc == 0, shown.stderr
    for text in ("model tiny/1h_v4", "data window", "2020-01-02 .. 2020-03-27",
                 "strategy hash", "seed", "test macro F1", "test accuracy",
                 "macro F1 lift vs majority", "backtest Sharpe", "walk-forward macro F1", "±"):
        assert text in shown.stdout, text

    compared = await run_cli("models", "compare", "tiny/1h_v1", "tiny/1h_v2", "tiny/1h_v4",
                             "--json", env=env)
    assert compared.rc == 0, compared.stderr
    rows = {row["key"]: row for row in json.loads(compared.stdout)["rows"]}
    f1 = rows["macro_f1"]["values"]
    assert rows["macro_f1"]["best"] == [f1.index(max(f1))]
    assert rows["walk_forward_macro_f1"]["values"][2] is not None  # 1h_v4 has folds
    pair = json.loads((await run_cli("models", "compare", "tiny/1h_v1", "tiny/1h_v2",
                                     "--json", env=env)).stdout)
    (best,) = next(r["best"] for r in pair["rows"] if r["key"] == "macro_f1")
    table = await run_cli("models", "compare", "tiny/1h_v1", "tiny/1h_v2", env=env)
    assert table.rc == 0
    line = next(li for li in table.stdout.splitlines() if "test macro F1" in li)
    cells = [c.strip() for c in line.strip().strip("│").split("│")]
    assert cells[0] == "test macro F1"
    assert cells[1 + best].endswith("*") and not cells[2 - best].endswith("*")
    assert "walk-forward" not in table.stdout  # neither has folds: no row

    alias = await run_cli("models", "show", "tiny@champion", env=env)
    assert alias.rc == 1 and "needs NATS" in alias.stderr


async def test_promote_aliases_audit_delete_and_prune(
    config: BusConfig, models_dir: Path
) -> None:
    env = models_env(models_dir, ",".join(config.urls), config.prefix,
                     TRAINBUS_STREAM_MAX_BYTES=str(config.stream_max_bytes))
    root = models_dir / "tiny"
    async with open_bus(config) as bus, Projector(bus):
        promoted = await run_cli("models", "promote", "tiny/1h_v2", "champion",
                                 "--expires-after", "30d", "--reason", "best so far", env=env)
        assert promoted.rc == 0, promoted.stderr
        assert promoted.stdout.startswith("tiny@champion -> tiny/1h_v2, expires 20")
        missing = await run_cli("models", "promote", "tiny/1h_v9", "champion", env=env)
        assert missing.rc == 1 and "no model tiny/1h_v9" in missing.stderr
        bad = await run_cli("models", "promote", "tiny/1h_v2", "Champion", env=env)
        assert bad.rc == 2 and "alias: alias 'Champion' is not allowed" in bad.stderr

        listed = json.loads((await run_cli("models", "--json", env=env)).stdout)
        assert {m["version"]: m["aliases"] for m in listed} == {
            "1h_v4": [], "1h_v3": [], "1h_v2": ["champion"], "1h_v1": []}
        shown = await run_cli("models", "show", "tiny@champion", env=env)
        assert "model tiny/1h_v2" in shown.stdout and "champion" in shown.stdout
        history = await run_cli("models", "aliases", "tiny", "--history", env=env)
        assert "tiny@champion -> 1h_v2 (new), expires 20" in history.stdout
        assert history.stdout.rstrip().endswith(", by cli: best so far")
        audited = await run_cli("audit", env=env)
        assert audited.rc == 0, audited.stdout + audited.stderr

        kept = await run_cli("models", "delete", "tiny/1h_v2", env=env)
        assert kept.rc == 1 and "alias tiny@champion" in kept.stderr
        dry = await run_cli("models", "prune", "--keep", "1", "--dry-run", env=env)
        assert dry.rc == 0, dry.stderr
        assert "would delete tiny/1h_v3" in dry.stdout and "would delete tiny/1h_v1" in dry.stdout
        assert "kept tiny/1h_v2: alias tiny@champion" in dry.stdout
        assert (root / "1h_v3").is_dir() and (root / "1h_v1").is_dir()
        pruned = await run_cli("models", "prune", "--keep", "1", env=env)
        assert pruned.rc == 0 and "deleted tiny/1h_v3" in pruned.stdout
        assert sorted(p.name for p in root.iterdir()) == ["1h_latest", "1h_v2", "1h_v4"]

        demoted = await run_cli("models", "demote", "tiny@champion", env=env)
        assert demoted.rc == 0 and "tiny@champion removed (it pointed at 1h_v2)" in demoted.stdout
        gone = await run_cli("models", "delete", "tiny/1h_v2", env=env)
        assert gone.rc == 0 and "deleted tiny/1h_v2: disk" in gone.stdout
        assert sorted(p.name for p in root.iterdir()) == ["1h_latest", "1h_v4"]
        audited = await run_cli("audit", env=env)
        assert audited.rc == 0, audited.stdout + audited.stderr
