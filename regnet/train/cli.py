"""The command line: ``python -m regnet <command>``.

Every command turns a bad input into one sentence on stderr and exit code 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import sys


def cmd_models(args: argparse.Namespace) -> int:
    from regnet.models import format_table, summarize_registry

    print(format_table(summarize_registry()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="regnet", description="Train and inspect RegNet and ResNet models.")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="table of every registered model with parameters and MACs")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)
