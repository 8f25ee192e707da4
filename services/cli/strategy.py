"""`trainbus strategy check FILE... [--json]` and `trainbus strategy list [--strategies-dir]`.

`check` reports every problem of every file in one pass (path, reason, a fix where one is
obvious) and the warnings (keys accepted but ignored, with why); exit 2 if any file has
problems, 0 otherwise. `list` shows each strategy of a directory with its symbols, timeframes,
labels source and model type, or its error. Neither needs the bus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.cli.args import EXIT_BAD_INPUT, EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("strategy", help="check and list strategy files")
    actions = parser.add_subparsers(dest="strategy_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="every problem and warning of strategy files, in one pass",
        description="Check strategy YAML files without training: every problem of every file "
                    "(exit 2 if any), and the keys accepted but ignored (warnings).",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true", help="one JSON document on stdout")
    check.set_defaults(handler=check_files)
    listing = actions.add_parser("list", help="the strategies of a directory")
    listing.add_argument("--strategies-dir", type=Path, default=None,
                         help="default: TRAINBUS_STRATEGIES_DIR or ./strategies")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=list_files)


def check_report(path: Path) -> dict[str, Any]:
    from libs.pipeline.strategy import check_strategy_file

    result = check_strategy_file(path)
    return {
        "file": str(path),
        "ok": not result.problems,
        "problems": [issue.to_dict() for issue in result.problems],
        "warnings": [issue.to_dict() for issue in result.warnings],
    }


def check_files(args: argparse.Namespace) -> int:
    reports = [check_report(path) for path in args.files]
    failed = sum(not report["ok"] for report in reports)
    if args.json:
        print(json.dumps({"ok": not failed, "files": reports}, indent=2))
    else:
        for report in reports:
            status = "ok" if report["ok"] else f"{len(report['problems'])} problem(s)"
            print(f"{report['file']}: {status}")
            for item in report["problems"]:
                print(f"  error: {_line(item)}")
            for item in report["warnings"]:
                print(f"  warning: {_line(item)}")
        print(f"{len(reports)} file(s), {failed} with problems",
              file=sys.stderr if failed else sys.stdout)
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _line(item: dict[str, str]) -> str:
    hint = item.get("hint")
    return f"{item['path']}: {item['message']}" + (f" (fix: {hint})" if hint else "")


def list_files(args: argparse.Namespace) -> int:
    from libs.pipeline.strategy import (
        check_strategy_file,
        strategies_dir,
        strategy_files,
        symbols_of,
        timeframes_of,
    )

    base: Path = args.strategies_dir if args.strategies_dir is not None else strategies_dir()
    if not base.is_dir():
        print(f"trainbus: {base} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows: list[dict[str, Any]] = []
    for path in strategy_files(base):
        result = check_strategy_file(path)
        config = result.config
        if config is None:
            rows.append({"file": path.name, "name": path.stem,
                         "error": "; ".join(str(issue) for issue in result.problems)})
            continue
        rows.append({
            "file": path.name,
            "name": config.name,
            "symbols": symbols_of(config),
            "timeframes": timeframes_of(config),
            "labels": type(config.training.labels).__struct_config__.tag,
            "model": config.model.type,
            "warnings": len(result.warnings),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        if "error" in row:
            print(f"{row['name']}: error: {row['error']}")
        else:
            print(f"{row['name']}: {','.join(row['symbols'])} {','.join(row['timeframes'])} "
                  f"labels={row['labels']} model={row['model']}"
                  + (f" ({row['warnings']} warning(s))" if row["warnings"] else ""))
    if not rows:
        print(f"no strategy files in {base}")
    return EXIT_OK
