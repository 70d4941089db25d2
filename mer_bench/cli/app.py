"""The ``python -m mer_bench`` parser, assembled from one module per command group, and ``main``.

Errors a user can cause print one ``error:`` line on stderr and exit 2; internal failures keep
their traceback and exit 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mer_bench import __version__
from mer_bench.cli import adapters, data, report, run, tune
from mer_bench.cli._common import Parser, dispatch

GROUPS = (run, data, report, tune, adapters)
"""Command-group modules; each adds its subcommands through ``register(sub)``."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m mer_bench",
        description="mer_bench: how well does a multimodal emotion model hold up when modalities "
        "go missing and the test distribution shifts?",
    )
    parser.add_argument("--version", action="version", version=f"mer_bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        if getattr(args, "needs_subcommand", False):
            parser.parse_args([args.command, "--help"])  # prints the group's help, exits 0
        parser.print_help()
        return 2
    return dispatch(args)
