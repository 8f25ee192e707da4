#!/usr/bin/env python3
"""One entry point for a fresh machine with only Python.

    python3 dev.py demo    # train the example strategy on the embedded stack
    python3 dev.py test    # ruff, mypy, the import contracts, then the whole test suite

Each command creates or refreshes ./.venv first (torch pinned to the CPU wheel by constraints.txt).
Anything after the command is passed on: `python3 dev.py test -k storage`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".dev-stamp"


def _inputs_hash() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "dev.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create the venv, and reinstall only when pyproject/constraints changed."""
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    wanted = _inputs_hash()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing trainbus and its dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]"], check=True
    )
    STAMP.write_text(wanted)


def ensure_browser() -> None:
    """The dashboard's browser tests drive Debian's Chromium. Install it when we can (root with
    apt-get, as on CI); otherwise those tests skip and say why."""
    if shutil.which("chromium") or os.environ.get("TRAINBUS_NO_BROWSER_INSTALL"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    print("installing chromium + chromium-driver for the browser tests (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> int:
        done = subprocess.run(
            ["apt-get", *args],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return done.returncode

    apt_get("update", "-q")
    returncode = apt_get(
        "install", "-y", "-q", "--no-install-recommends", "chromium",
        "chromium-driver", "fonts-dejavu-core",
    )
    if returncode != 0:
        print("could not install chromium: the browser tests will skip", flush=True)


def run(argv: list[str]) -> int:
    return subprocess.run(argv, cwd=ROOT).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test"}:
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if command == "demo":
        return run([str(BIN / "trainbus"), "demo", *extra])
    ensure_browser()
    # The static checks first (seconds), each must be clean before the suite (minutes) runs.
    for check in (["ruff", "check", "."], ["mypy"], ["lint-imports"]):
        print(f"--- {' '.join(check)}", flush=True)
        rc = run([str(BIN / check[0]), *check[1:]])
        if rc != 0:
            return rc
    return run([str(BIN / "python"), "-m", "pytest", *extra])


if __name__ == "__main__":
    sys.exit(main())
