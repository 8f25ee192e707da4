"""`trainbus schema export DIR`: write the JSON Schema of every command, event and job state, of
the canonical strategy document, and of the predictor's requests and replies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STRATEGY_SCHEMA_FILE = "strategy.json"
GRAMMAR_FILE = "strategy-grammar.md"


def grammar_path(directory: Path) -> Path:
    """Where the grammar reference goes: beside the schemas directory."""
    return directory.resolve().parent / GRAMMAR_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schema", help="JSON Schemas of commands and events")
    actions = parser.add_subparsers(dest="schema_command", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write one JSON Schema file per message type")
    export.add_argument("directory", type=Path, help="where to write (e.g. docs/schemas)")
    export.set_defaults(handler=export_schemas)


def export_schemas(args: argparse.Namespace) -> int:
    from libs.events.jsonschema import encode_schema, json_schemas
    from libs.pipeline.strategy import json_schema as strategy_schema
    from libs.pipeline.strategy.docs import grammar_markdown
    from services.predictor.messages import json_schemas as predictor_schemas

    directory: Path = args.directory
    schemas = {**json_schemas(), STRATEGY_SCHEMA_FILE: strategy_schema(),
               **predictor_schemas()}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (directory / name).write_bytes(encode_schema(schema))
        grammar = grammar_path(directory)
        grammar.write_text(grammar_markdown(), encoding="utf-8")
    except OSError as exc:
        print(f"trainbus: cannot write schemas to {directory}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {len(schemas)} schemas to {directory} and the grammar to {grammar}")
    return 0
