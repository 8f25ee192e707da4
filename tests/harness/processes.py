"""The `trainbus` console script of the venv, and the environment its processes get."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TRAINBUS = str(Path(sys.executable).parent / "trainbus")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any NATS_/TRAINBUS_/USE_TRAINING setting (so a
    developer's own cannot leak in), rich at 200 columns, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NATS_", "TRAINBUS_", "USE_TRAINING"))}
    env["COLUMNS"] = "200"  # rich wraps at 80 columns without a terminal
    env.update(extra)
    return env
