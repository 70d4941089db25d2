"""Subcommands that packages other than the harness add to ``python -m mer_bench``.

A model package may need a command of its own (CIDer imports official checkpoints). It
describes the command as a :class:`Command` and makes it known in one of three ways, mirroring
how adapters are found:

- a ``"module:ATTRIBUTE"`` string in :data:`BUILTIN_COMMANDS` (this repository's packages;
  resolved lazily, so the harness never imports them by name),
- the entry-point group ``mer_bench.commands`` (``name = "module:ATTRIBUTE"``) for installed
  packages,
- :func:`register_command` for code that is imported anyway.

The harness parser adds every known command after its own (``mer_bench.cli``); a handler's
``MerBenchError`` is printed as one ``error:`` line like every other command's.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from mer_bench.errors import ConfigError

ENTRY_POINT_GROUP = "mer_bench.commands"

BUILTIN_COMMANDS: dict[str, str] = {
    "import-checkpoint": "cider.cli:IMPORT_CHECKPOINT",
}
"""Commands of this repository's model packages: name → ``module:ATTRIBUTE`` of a Command."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help text, arguments and handler."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the command's arguments to its (already created) parser."""
    handler: Callable[[argparse.Namespace], int]
    """Runs the command; returns the exit code. Raise ``MerBenchError`` for user errors."""
    description: str | None = None


_REGISTERED: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Make ``command`` part of the CLI (call it before the parser is built)."""
    _REGISTERED[command.name] = command
    return command


def _load(target: str) -> Command:
    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load command {target!r}: {exc}") from None
    if not isinstance(obj, Command):
        raise ConfigError(f"command target {target!r} is not a mer_bench.commands.Command")
    return obj


def _entry_points() -> dict[str, str]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not break the CLI
        return {}
    return {ep.name: ep.value for ep in eps}


def plugin_commands() -> list[Command]:
    """Every known plugin command (built-in, entry point, registered), in name order. A command
    that cannot be loaded is left out with a warning: one broken plugin must not take the other
    commands down with it."""
    found = {**_entry_points(), **BUILTIN_COMMANDS}
    commands: dict[str, Command] = {}
    for name, target in found.items():
        try:
            commands[name] = _load(target)
        except ConfigError as exc:
            sys.stderr.write(f"warning: command {name!r} left out: {exc}\n")
    commands.update(_REGISTERED)
    return [commands[name] for name in sorted(commands)]
