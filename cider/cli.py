"""CIDer's own subcommand: ``python -m mer_bench import-checkpoint PATH --out FILE``.

Registered with the harness CLI through ``mer_bench.commands`` (the harness never imports CIDer
by name)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cider.checkpoint import import_checkpoint, save_safetensors
from mer_bench.commands import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path")
    p.add_argument("--out", required=True)


def _import_checkpoint(args: argparse.Namespace) -> int:
    state = import_checkpoint(Path(args.path))
    save_safetensors(state, Path(args.out))
    print(f"imported {len(state)} tensors from {args.path} into {args.out}")
    return 0


IMPORT_CHECKPOINT = Command(
    name="import-checkpoint",
    help="official CIDer checkpoint → safetensors, executing nothing",
    add_arguments=_add_arguments,
    handler=_import_checkpoint,
)
