"""The torch-free half of the model storage: where models live, what a version directory holds,
and the archive that carries one (libs/pipeline/storage/models.py adds the weights on top).

Layout (base = `TRAINBUS_MODELS_DIR`, default `./models`):

    <base>/<strategy>/<tf>_v<N>/model.safetensors   weights (CPU tensors; safetensors, no pickle)
                                config.yaml         the resolved strategy, extras included
                                features.json       ordered feature names, timeframes, lags, outputs
                                metrics.json        history + test metrics
                                metadata.json       reproducibility manifest + sha256 of each file
                                report.html         curves, confusion matrix, manifest (a view:
                                                    not hashed, not archived; report.py)
    <base>/<strategy>/<tf>_latest                   pointer: a small JSON file {"version": N, ...}

The `_latest` pointer is a regular file, not a symlink: symlinks need privileges on Windows and
do not survive every archive or object store. Readers treat it as a hint and fall back to
scanning the `_vN` directories.

Atomicity: a save writes everything into a hidden temp directory beside the final one, fsyncs,
then renames it to `<tf>_v<N>`. A rename onto an existing (non-empty) directory fails on every
OS, so the loser of a race simply retries with N+1: two concurrent saves (threads or processes)
never share a directory, and nobody ever sees a half-written version.

Loading parses JSON/YAML and safetensors only, verifies every file against the sha256 in
metadata.json (a changed file is refused), and refuses a model whose feature list differs from
what its config builds today. Nothing on the load path can execute code.

This module imports msgspec and the standard library only: the backend's model catalog lists,
reads and archives models without torch.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from libs.pipeline.types import TIMEFRAMES, is_strategy_name

ENV_VAR = "TRAINBUS_MODELS_DIR"
FORMAT = "trainbus-model"
FORMAT_VERSION = 1

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
FEATURES_FILE = "features.json"
METRICS_FILE = "metrics.json"
METADATA_FILE = "metadata.json"
HASHED_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, FEATURES_FILE, METRICS_FILE)
ALL_FILES: tuple[str, ...] = (*HASHED_FILES, METADATA_FILE)
# report.html (libs/pipeline/report.py) is also written into every version directory: a view
# rendered from metadata.json + metrics.json, so it is not hashed (it shows the hashes), not
# archived, and re-rendered whenever an archive is installed.

_VERSION_DIR = re.compile(r"^(?P<tf>[0-9]+[a-z])_v(?P<n>[1-9][0-9]{0,8})$")


class StorageError(Exception):
    """Root of the storage errors."""


class ModelNotFoundError(StorageError, LookupError):
    """Raised when no saved model matches the strategy/timeframe/version asked for."""


class IntegrityError(StorageError):
    """Raised when a model's files do not match the sha256 recorded in its metadata.json."""


class FeatureMismatchError(StorageError):
    """Raised when a model's features differ from what its config builds, or from the input."""


class ArchiveError(StorageError):
    """Raised when archive bytes are malformed, oversized, or try to escape their directory."""


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    timeframe: str
    version: int
    path: str  # the version directory ("" for a model loaded from archive bytes only)

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.timeframe}_v{self.version}"



def parse_version_dir(name: str) -> tuple[str, int] | None:
    """(timeframe, N) of a `<tf>_v<N>` directory name; None for anything else (temp dirs,
    pointers, strangers)."""
    m = _VERSION_DIR.match(name)
    if m is None or m["tf"] not in TIMEFRAMES:
        return None
    return m["tf"], int(m["n"])


def default_models_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or "models")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj: Any) -> bytes:
    # msgspec writes NaN/inf as null: metrics.json stays valid JSON even if a loss diverged.
    return msgspec.json.format(msgspec.json.encode(obj), indent=2) + b"\n"


def check_name(strategy: str) -> str:
    if not is_strategy_name(strategy):
        raise ModelNotFoundError(f"not a strategy name: {strategy!r}")
    return strategy


def check_timeframe(timeframe: str) -> str:
    if timeframe not in TIMEFRAMES:
        raise ModelNotFoundError(f"not a timeframe: {timeframe!r} (one of {', '.join(TIMEFRAMES)})")
    return timeframe


def fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename durable on POSIX; Windows cannot open directories.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def verify_hashes(files: Mapping[str, bytes], metadata: Mapping[str, Any], where: str) -> None:
    listed = metadata.get("files")
    if not isinstance(listed, dict):
        raise IntegrityError(f"{where}: metadata.json has no file hashes")
    for name in HASHED_FILES:
        entry = listed.get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise IntegrityError(f"{where}: metadata.json does not list {name}")
        if name not in files:
            raise IntegrityError(f"{where}: {name} is missing")
        if sha256_bytes(files[name]) != entry["sha256"]:
            raise IntegrityError(
                f"{where}: {name} was modified (sha256 differs from metadata.json)"
            )



def _member_path(path: str) -> tuple[tuple[str, str, int], str]:
    """((strategy, timeframe, N), file name) of an archive member `<strategy>/<tf>_v<N>/<file>`;
    ArchiveError for any other path (absolute, `..`, backslashes, another depth)."""
    parts = path.split("/")
    if (
        len(parts) != 3
        or path.startswith("/")
        or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ArchiveError(f"archive member {path!r} has a bad path")
    strategy, version_dir, name = parts
    version = parse_version_dir(version_dir)
    if not is_strategy_name(strategy) or version is None:
        raise ArchiveError(f"archive member {path!r} has a bad path")
    return (strategy, *version), name


class ModelLayout:
    """Versioned model directories under `base_dir` (default: $TRAINBUS_MODELS_DIR or ./models)."""

    max_archive_bytes: int = 1 << 30  # compressed input
    max_file_bytes: int = 1 << 30  # one member, uncompressed
    max_total_bytes: int = 2 << 30  # all members, uncompressed
    max_members: int = 16

    def __init__(self, base_dir: Path | str | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else default_models_dir()

    # --- naming -------------------------------------------------------------------------------

    def strategy_dir(self, strategy: str) -> Path:
        return self.base_dir / check_name(strategy)

    def version_dir(self, strategy: str, timeframe: str, version: int) -> Path:
        return self.strategy_dir(strategy) / f"{check_timeframe(timeframe)}_v{int(version)}"

    def _pointer(self, strategy: str, timeframe: str) -> Path:
        return self.strategy_dir(strategy) / f"{timeframe}_latest"

    def list_versions(self, strategy: str, timeframe: str | None = None) -> list[ModelRef]:
        """Complete saved versions, oldest first (temp dirs are hidden and never listed)."""
        root = self.strategy_dir(strategy)
        refs = []
        if root.is_dir():
            for entry in root.iterdir():
                parsed = parse_version_dir(entry.name)
                if parsed and entry.is_dir() and timeframe in (None, parsed[0]):
                    refs.append(ModelRef(strategy=strategy, timeframe=parsed[0],
                                         version=parsed[1], path=str(entry)))
        return sorted(refs, key=lambda r: (r.timeframe, r.version))

    def resolve(
        self, strategy: str, version: int | str | None = None, timeframe: str | None = None
    ) -> ModelRef:
        """The ModelRef for version N, or the latest (None / 'latest')."""
        if timeframe is None:
            tfs = sorted({r.timeframe for r in self.list_versions(strategy)})
            if not tfs:
                raise ModelNotFoundError(
                    f"no saved model for strategy {strategy!r} in {self.base_dir}"
                )
            if len(tfs) > 1:
                raise ModelNotFoundError(
                    f"strategy {strategy!r} has models for several timeframes ({', '.join(tfs)}): "
                    "say which one"
                )
            timeframe = tfs[0]
        check_timeframe(timeframe)
        if version is None or version == "latest":
            number = self._latest_version(strategy, timeframe)
            if number is None:
                raise ModelNotFoundError(
                    f"no saved model {strategy}/{timeframe} in {self.base_dir}"
                )
        else:
            try:
                number = int(version)
            except ValueError as exc:
                raise ModelNotFoundError(f"not a version: {version!r}") from exc
        path = self.version_dir(strategy, timeframe, number)
        if not path.is_dir():
            raise ModelNotFoundError(f"no saved model {strategy}/{timeframe}_v{number}")
        return ModelRef(strategy=strategy, timeframe=timeframe, version=number, path=str(path))

    def _scan_latest(self, strategy: str, timeframe: str) -> int | None:
        versions = [r.version for r in self.list_versions(strategy, timeframe)]
        return max(versions) if versions else None

    def _latest_version(self, strategy: str, timeframe: str) -> int | None:
        try:
            pointed = int(json.loads(self._pointer(strategy, timeframe).read_bytes())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            pointed = None  # missing or damaged pointer: the directories are the truth
        if pointed is not None and self.version_dir(strategy, timeframe, pointed).is_dir():
            return pointed
        return self._scan_latest(strategy, timeframe)

    def _update_latest(self, strategy: str, timeframe: str) -> None:
        """Point `<tf>_latest` at the highest version, converging under concurrent saves.

        Write, re-scan, rewrite if a newer version appeared meanwhile: the last writer always
        confirms after writing, so the pointer ends at the maximum.
        """
        pointer = self._pointer(strategy, timeframe)
        written = None
        for _ in range(100):
            newest = self._scan_latest(strategy, timeframe)
            if newest is None or newest == written:
                return
            tmp = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex}")
            tmp.write_bytes(json_bytes({"version": newest, "path": f"{timeframe}_v{newest}"}))
            os.replace(tmp, pointer)  # atomic on POSIX and Windows
            written = newest

    def read_files(self, ref: ModelRef) -> dict[str, bytes]:
        path = (
            Path(ref.path)
            if ref.path
            else self.version_dir(ref.strategy, ref.timeframe, ref.version)
        )
        files = {}
        for name in ALL_FILES:
            with contextlib.suppress(FileNotFoundError):
                files[name] = (path / name).read_bytes()
        return files

    # --- archives (bytes for an object store) -------------------------------------------------

    def to_archive(self, ref: ModelRef) -> bytes:
        """The version directory as a deterministic .tar.gz (`<strategy>/<tf>_v<N>/<file>`)."""
        files = self.read_files(ref)
        missing = [n for n in ALL_FILES if n not in files]
        if missing:
            raise IntegrityError(f"{ref.name}: cannot archive, missing {missing}")
        buf = io.BytesIO()
        # mtime=0 everywhere: the same model always gives the same bytes (dedupe, hashing).
        with (
            gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in ALL_FILES:
                data = files[name]
                info = tarfile.TarInfo(f"{ref.strategy}/{ref.timeframe}_v{ref.version}/{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def read_archive(self, data: bytes) -> tuple[ModelRef, dict[str, bytes]]:
        """Parse and check an archive in memory. Only regular files with the expected names
        under one `<strategy>/<tf>_v<N>/` are accepted; links, devices, absolute or `..` paths,
        unknown names, duplicates and oversized members are refused before anything is written."""
        if len(data) > self.max_archive_bytes:
            raise ArchiveError(f"archive is {len(data)} bytes, more than {self.max_archive_bytes}")
        files: dict[str, bytes] = {}
        prefix: tuple[str, str, int] | None = None
        total = 0
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for count, member in enumerate(tar, start=1):
                    if count > self.max_members:
                        raise ArchiveError(f"archive has more than {self.max_members} members")
                    if not member.isreg():
                        raise ArchiveError(f"archive member {member.name!r} is not a regular file")
                    here, name = _member_path(member.name)
                    if prefix is None:
                        prefix = here
                    elif here != prefix:
                        raise ArchiveError("archive holds more than one model directory")
                    if name not in ALL_FILES or name in files:
                        raise ArchiveError(f"archive member {member.name!r} is unexpected")
                    if member.size > self.max_file_bytes:
                        raise ArchiveError(f"archive member {member.name!r} is too large")
                    total += member.size
                    if total > self.max_total_bytes:
                        raise ArchiveError("archive expands to more than the size cap")
                    fh = tar.extractfile(member)
                    assert fh is not None  # isreg() members always have data
                    files[name] = fh.read(self.max_file_bytes + 1)
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ArchiveError(f"not a model archive: {exc}") from exc
        if prefix is None:
            raise ArchiveError("archive is empty")
        strategy, timeframe, version = prefix
        missing = [n for n in ALL_FILES if n not in files]
        if missing:
            raise ArchiveError(f"archive is missing {missing}")
        ref = ModelRef(strategy=strategy, timeframe=timeframe, version=version, path="")
        try:
            metadata = json.loads(files[METADATA_FILE])
        except ValueError as exc:
            raise IntegrityError(f"{ref.name}: metadata.json is not JSON ({exc})") from exc
        verify_hashes(files, metadata, ref.name)
        if metadata.get("strategy") != strategy or metadata.get("timeframe") != timeframe:
            raise ArchiveError(f"archive path {ref.name} disagrees with its metadata.json")
        return ref, files

