"""Every problem of a strategy document, reported at once, each with the path of its key
(`training.epochs: expected int, got "ten"`). msgspec says where a value failed only in its
message (`... - at $.a.b`), so `add_validation` reads the path from there, once, here."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from libs.pipeline.strategy.schema import StrategyError

PathT = tuple[str | int, ...]


def fmt_path(path: PathT) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out or "(top level)"


def show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem or warning: the dotted path of the key, what is wrong (or was ignored and
    why), and a fix when one is obvious."""

    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" + (f" ({self.hint})" if self.hint else "")

    def to_dict(self) -> dict[str, str]:
        out = {"path": self.path, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    return f"did you mean {close[0]}?" if close else None


class Problems:
    """The problems of one document (errors: it cannot load) and its warnings (keys accepted
    but ignored: what and why). Warnings never change the resolved strategy or its hash."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.warnings: list[Issue] = []

    @property
    def items(self) -> list[str]:
        return [str(issue) for issue in self.issues]

    def add(self, path: PathT, message: str, hint: str | None = None) -> None:
        self.issues.append(Issue(fmt_path(path), message, hint))

    def warn(self, path: PathT, message: str) -> None:
        self.warnings.append(Issue(fmt_path(path), message))

    def raise_if_any(self, source: str) -> None:
        if len(self.items) == 1:
            raise StrategyError(f"{source}: {self.items[0]}")
        if self.items:
            raise StrategyError(
                f"{source}: {len(self.items)} problems:\n  " + "\n  ".join(self.items)
            )

    def add_validation(self, exc: msgspec.ValidationError, path: PathT, raw: Any, typ: Any) -> None:
        """msgspec's `Expected int, got str - at $.a.b` as `path.a.b: expected int, got "x"`."""
        text = str(exc)
        sub: list[str | int] = []
        match = re.search(r" - at `(key` in `)?\$([^`]*)`$", text)
        if match:
            text = text[: match.start()]
            for key, index in re.findall(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]", match.group(2)):
                sub.append(key if key else (int(index) if index.isdigit() else "..."))
        if (m := re.match(r"Object contains unknown field `(.*)`$", text)) is not None:
            keys = _keys_at(typ, sub, raw)
            expected = f"; expected one of: {', '.join(keys)}" if keys else ""
            self.add((*path, *sub, m.group(1)), f"unknown key{expected}",
                     did_you_mean(m.group(1), keys))
            return
        if (m := re.match(r"Object missing required field `(.*)`$", text)) is not None:
            self.add((*path, *sub, m.group(1)), "required key missing")
            return
        message = text.replace("`", "")
        message = message[:1].lower() + message[1:]
        found, value = _lookup(raw, sub)
        if message.startswith("expected") and found:
            message = re.sub(r", got \w+$", "", message) + f", got {show(value)}"
        if message.startswith(("invalid enum value", "invalid value")):
            allowed = _literal_at(typ, sub, raw) or _tags_at(typ, sub[:-1], raw)
            if allowed:
                message += f"; expected one of: {', '.join(map(str, allowed))}"
        self.add((*path, *sub), message)


def _lookup(raw: Any, sub: list[str | int]) -> tuple[bool, Any]:
    for seg in sub:
        in_dict = isinstance(raw, dict) and seg in raw
        in_list = isinstance(raw, list) and isinstance(seg, int) and seg < len(raw)
        if not (in_dict or in_list):
            return False, None
        raw = raw[seg]
    return True, raw


def _type_at(typ: Any, sub: list[str | int], raw: Any) -> Any:
    """Walk msgspec's type info along `sub`, picking union members by the raw tag value."""
    info: Any = msgspec.inspect.type_info(typ)
    for seg in [*sub, None]:
        while isinstance(info, msgspec.inspect.UnionType):
            members: list[Any] = [
                t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)
            ]
            structs = [t for t in members if isinstance(t, msgspec.inspect.StructType)]
            if len(structs) > 1 and isinstance(raw, dict):
                tag_field = structs[0].tag_field
                chosen = [t for t in structs if raw.get(tag_field) == t.tag]
                members = chosen or structs[:1]
            info = members[0] if members else None
        if seg is None or info is None:
            break
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == seg), None)
        elif isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        else:
            return None
        _, raw = _lookup(raw, [seg])
    return info


def _keys_at(typ: Any, sub: list[str | int], raw: Any) -> list[str]:
    info = _type_at(typ, sub, _lookup(raw, [])[1])
    if isinstance(info, msgspec.inspect.StructType):
        return sorted(f.encode_name for f in info.fields)
    return []


def _literal_at(typ: Any, sub: list[str | int], raw: Any) -> list[Any]:
    info = _type_at(typ, sub, raw)
    if isinstance(info, msgspec.inspect.LiteralType):
        return list(info.values)
    return []


def _tags_at(typ: Any, sub: list[str | int], raw: Any) -> list[str]:
    """The tags of a tagged union at `sub` (labels `source`, lr_scheduler `type`)."""
    info: Any = msgspec.inspect.type_info(typ)
    for seg in sub:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), None)
        if isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.encode_name == seg), None)
        elif isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        else:
            return []
    if isinstance(info, msgspec.inspect.UnionType):
        return [str(t.tag) for t in info.types if isinstance(t, msgspec.inspect.StructType)]
    return []


def decode(value: Any, typ: Any, path: PathT, problems: Problems) -> Any:
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        problems.add_validation(exc, path, value, typ)
        return None


def mapping(value: Any, path: PathT, problems: Problems) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(path, f"expected a mapping, got {show(value)}")
    return None
