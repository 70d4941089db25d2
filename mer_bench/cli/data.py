"""Data files: ``data check`` (validate one file), ``data synth`` (write the synthetic dataset)
and ``masks`` (the masks a cell applies, for inspection)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mer_bench.cli._common import Parser, add_data_setting_args, data_setting, values
from mer_bench.data import synth
from mer_bench.data.check import check_file
from mer_bench.data.loaders import load_bundle
from mer_bench.errors import MerBenchError
from mer_bench.missing import split_mask_arrays, write_masks_npz
from mer_bench.protocol import Cell, Distribution, MaskRng, Mode, parse_enum


def register(sub: Any) -> None:
    """Add ``data check``, ``data synth`` and ``masks`` to the subcommands."""
    p = sub.add_parser("data", help="data files: check one, or write the synthetic dataset")
    p.set_defaults(needs_subcommand=True)
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=Parser)
    q = data_sub.add_parser("check", help="validate one data file (exit 0 valid, 2 invalid)")
    q.add_argument("path")
    q.add_argument("--kind", default=None, help="iid, ood or cross (default: detect)")
    q.set_defaults(handler=cmd_data_check)
    q = data_sub.add_parser("synth", help="write the synthetic dataset as MMSA pickles")
    q.add_argument("--out", required=True)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--shape",
        default="small",
        help="small (default: the main job's data), mosi or mosei (real shapes and split sizes)",
    )
    q.set_defaults(handler=cmd_data_synth)

    p = sub.add_parser("masks", help="write the masks a cell applies, as .npz, for inspection")
    add_data_setting_args(p, dataset_required=False)
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--mode", required=True, help="RMFM, RMFM_same, RMM, TMFM, STMFM or SMM")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=float, help="missing rate 0.0 … 1.0 (step 0.1)")
    g.add_argument("--condition", help="SMM: kept modalities (T, A, V, TA, TV, AV, TAV)")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--mask-rng", default=MaskRng.PER_SAMPLE.value, choices=values(MaskRng))
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_masks)


def cmd_data_check(args: argparse.Namespace) -> int:
    kind = parse_enum(Distribution, args.kind, "kind") if args.kind else None
    report = check_file(Path(args.path), kind)
    print(report.render())
    if not report.loadable:
        raise MerBenchError(f"{args.path} holds NaN/inf values that runs refuse (see the summary)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    config = synth.shape_config(parse_enum(synth.SynthShape, args.shape, "shape"), seed=args.seed)
    gib = synth.generation_bytes(config) / 2**30
    print(f"generating synth ({args.shape}); needs about {gib:.1f} GiB of memory", file=sys.stderr)
    paths = synth.write_synth(Path(args.out), config)
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} files (MMSA format) under {args.out}")
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    setting = data_setting(args)
    mode = parse_enum(Mode, args.mode, "mode")
    cell = Cell(setting, mode, args.rate, args.condition)  # validates the combination
    bundle = load_bundle(setting, args.data_root)
    arrays = split_mask_arrays(
        bundle.split(args.split),
        mode,
        rate=cell.rate,
        condition=cell.condition,
        seed=args.seed,
        rng=args.mask_rng,
    )
    write_masks_npz(Path(args.out), arrays)
    kept = {k: int(v.sum()) for k, v in arrays.items() if k.endswith("_keep")}
    print(f"{cell.id} seed {args.seed} ({args.mask_rng}): wrote {args.out}; kept positions {kept}")
    return 0
