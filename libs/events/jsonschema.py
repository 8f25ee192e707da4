"""JSON Schema of every command, event and the projected job state, from the Structs.

`nats` CLI users validate what they send against these; `trainbus schema export DIR` writes
them (docs/schemas/ in the repo, kept in sync by a test).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from libs.events.fold import JobState
from libs.events.schema import (
    COMMAND_TYPES,
    EVENT_TYPES,
    REGISTRY_EVENT_TYPES,
    Command,
    tag_of,
)

SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


def _schema(cls: type, title: str, description: str) -> dict[str, Any]:
    schema = msgspec.json.schema(cls)
    ref = schema.pop("$ref", None)
    defs = schema.pop("$defs", {})
    root = defs.pop(ref.rsplit("/", 1)[-1]) if ref else schema
    if issubclass(cls, Command):
        # The subject says which command it is: the tag is accepted but never required.
        root["required"] = [r for r in root.get("required", []) if r != "type"]
    out: dict[str, Any] = {**root, "$schema": SCHEMA_DIALECT, "title": title,
                           "description": description}
    if defs:
        out["$defs"] = defs
    return out


def json_schemas(prefix: str = "trainbus") -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document."""
    docs: dict[str, dict[str, Any]] = {}
    subjects = {
        "train": f"{prefix}.cmd.train.<any|container|host>",
        "cancel": f"{prefix}.cmd.cancel.<job_id>",
    }
    for cls in COMMAND_TYPES:
        tag = tag_of(cls)
        docs[f"command.{tag}.json"] = _schema(
            cls, f"{tag} command", f"Publish to {subjects[tag]}. {_doc(cls)}"
        )
    for event_cls in EVENT_TYPES:
        tag = tag_of(event_cls)
        docs[f"event.{tag}.json"] = _schema(
            event_cls, f"{tag} event",
            f"Published on {prefix}.evt.<job_id>.{tag}. {_doc(event_cls)}",
        )
    for registry_cls in REGISTRY_EVENT_TYPES:
        tag = tag_of(registry_cls)
        docs[f"event.{tag}.json"] = _schema(
            registry_cls, f"{tag} event",
            f"Published on {prefix}.alias.<strategy>.<alias>. {_doc(registry_cls)}",
        )
    docs["job-state.json"] = _schema(
        JobState, "job state", f"Value of KV {prefix}_jobs/<job_id>. {_doc(JobState)}"
    )
    return docs


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def encode_schema(schema: dict[str, Any]) -> bytes:
    """Stable, readable bytes (sorted keys, 2-space indent, trailing newline)."""
    raw = msgspec.json.encode(schema, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"
