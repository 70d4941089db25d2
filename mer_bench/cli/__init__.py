"""``python -m mer_bench``: the command-line interface.

One module per command group (``run``, ``data``, ``report``, ``tune``, ``adapters``), shared
argument helpers and the one error-handling path in ``_common``, the parser assembled in
``app``. Adapter packages add their own subcommands through ``mer_bench.commands``.
"""

from __future__ import annotations

from mer_bench.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
