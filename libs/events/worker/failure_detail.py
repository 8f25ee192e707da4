"""A `code` failure's traceback as it goes into the `failed` event (FailedEvent.traceback).

The event is stored for ever and every role may read it, so it carries where the error was and
what it was, nothing more: each frame as `file:line function` (no source lines, no locals: a
frame's line can hold a literal secret, its locals any data), the exception's type and message
with credentials masked (`password=`, tokens, nkey seeds, user:password in URLs), paths shown
from the package root (no home directory), and at most `MAX_FRAMES` frames (the outermost few
and the innermost rest, where the error is). A chained cause (`raise ... from exc`) adds its
own frames after a `caused by` line.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Final

MAX_FRAMES: Final = 24
MAX_MESSAGE: Final = 500
_OUTER_FRAMES: Final = 3  # how the job got there, kept when the middle is cut
_MAX_CHAIN: Final = 3
_ROOT: Final = Path(__file__).resolve().parents[3]

_SECRETS: Final = (
    # key=value, key: value, 'key': 'value', "key": "value" for names holding a credential word
    # anywhere (NATS_PASSWORD, AWS_SECRET_ACCESS_KEY, access_token, client_secret, api-key)
    re.compile(r"(?i)([\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|seed|credential)"
               r"[\w.-]*['\"]?\s*[=:]\s*['\"]?)([^\s,;'\"&()\[\]{}]+)"),
    # Authorization: Bearer xyz, and a bare "Bearer xyz"
    re.compile(r"(?i)(authorization['\"]?\s*[=:]\s*['\"]?)(\S+(?:\s+[^\s'\",;]+)?)"),
    re.compile(r"(?i)(\bbearer\s+)([^\s'\",;]+)"),
    # user:password@ in a URL
    re.compile(r"(://[^/\s:@]+:)([^@\s/]+)(@)"),
)
_NKEY_SEED: Final = re.compile(r"\bS[A-Z][A-Z2-7]{50,}\b")  # nkey seeds: SU..., SO..., SA...
_JWT: Final = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")  # header.payload.signature


def redact(text: str) -> str:
    """`text` with credentials masked as `***`."""
    for pattern in _SECRETS[:3]:
        text = pattern.sub(lambda m: f"{m.group(1)}***", text)
    text = _SECRETS[3].sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    text = _JWT.sub("***", text)
    return _NKEY_SEED.sub("***", text)


def short_path(filename: str) -> str:
    """A frame's file from the package root: `libs/...` for ours, `<pkg>/...` for an installed
    package, else the last two parts (no home directories in the log)."""
    if "site-packages/" in filename:
        return filename.rsplit("site-packages/", 1)[1]
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(_ROOT))
    except (ValueError, OSError):
        return "/".join(path.parts[-2:])


def _frames(exc: BaseException) -> list[str]:
    frames = [f"{short_path(f.filename)}:{f.lineno} {f.name}"
              for f in traceback.extract_tb(exc.__traceback__)]
    if len(frames) > MAX_FRAMES:
        inner = MAX_FRAMES - _OUTER_FRAMES - 1
        cut = len(frames) - _OUTER_FRAMES - inner
        frames = [*frames[:_OUTER_FRAMES], f"... {cut} frames ...", *frames[-inner:]]
    return frames


def _headline(exc: BaseException) -> str:
    message = " ".join(redact(str(exc)).split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    name = type(exc).__qualname__
    return f"{name}: {message}" if message else name


def traceback_lines(exc: BaseException) -> list[str]:
    """The failure of `exc` as lines, outermost frame first, the exception last; then, for
    each explicit cause, `caused by` and its own."""
    lines: list[str] = []
    current: BaseException | None = exc
    for depth in range(_MAX_CHAIN):
        if current is None:
            break
        if depth:
            lines.append("caused by:")
        lines += [*_frames(current), _headline(current)]
        current = current.__cause__
    return lines
