"""How a worker serves unless told otherwise, in one place: `WorkerSettings`
(libs/events/worker/runtime.py), the trainers' serve functions, their command-line options,
the in-process stack (services/stack.py) and `trainbus up` read these. Outside libs/events on
purpose: that package's import loads nats-py, and this module imports nothing, so
`trainbus --help` stays instant."""

from __future__ import annotations

from typing import Final

CAPACITY: Final = 1  # jobs at once
CHECKPOINT_EVERY: Final = 1  # epochs between checkpoints; 0 = only on shutdown
# ... and at least this many seconds apart: each one is a few object-store round trips whose
# wake-ups cost the training thread (short epochs made ~270 loop wake-ups a second)
CHECKPOINT_INTERVAL: Final = 30.0
DRAIN_TIMEOUT: Final = 30.0  # seconds to wait for the running jobs at shutdown
