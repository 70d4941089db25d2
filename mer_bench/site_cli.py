"""``site``: argparse setup and handler (wired in by cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mer_bench.errors import ConfigError


def add_site_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "site",
        help="a static results site (leaderboards, curves, significance) that opens offline",
        description="Self-contained HTML pages: a sortable, filterable leaderboard per data "
        "setting with the significance marks of `table`, interactive degradation curves and "
        "SMM heatmaps, a page per model and CSV downloads. No network is needed to view it.",
    )
    p.add_argument(
        "--results",
        action="extend",
        nargs="+",
        default=None,
        metavar="DIR",
        help="results folder(s) (default: none)",
    )
    p.add_argument(
        "--leaderboards",
        default=None,
        metavar="DIR",
        help="leaderboard folder (default: leaderboards if it exists; 'none' to leave it out)",
    )
    p.add_argument("--out", default="site", help="output folder (default site)")
    p.add_argument("--baseline", default=None, help="reference model of the significance tests")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise α (default 0.05)")
    p.add_argument("--resamples", type=int, default=9999, help="permutations per test")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws per table CI")
    p.add_argument(
        "--curve-bootstrap", type=int, default=500, help="bootstrap draws per curve band point"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument(
        "--no-significance", action="store_true", help="skip the permutation tests (faster)"
    )
    p.add_argument(
        "--no-model-sizes",
        action="store_true",
        help="skip building each model to count its parameters (model pages)",
    )
    p.set_defaults(handler=cmd_site)
    return p


def cmd_site(args: argparse.Namespace) -> int:
    from mer_bench.report.site import SiteOptions, build_site

    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1); got {args.alpha}")
    for name, value in (
        ("--resamples", args.resamples),
        ("--bootstrap", args.bootstrap),
        ("--curve-bootstrap", args.curve_bootstrap),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1; got {value}")
    if args.leaderboards is None:
        boards = Path("leaderboards") if Path("leaderboards").is_dir() else None
    elif args.leaderboards.lower() == "none":
        boards = None
    else:
        boards = Path(args.leaderboards)
    opts = SiteOptions(
        results=tuple(Path(r) for r in args.results or ()),
        leaderboards=boards,
        baseline=args.baseline,
        alpha=args.alpha,
        n_resamples=args.resamples,
        n_boot=args.bootstrap,
        n_boot_curves=args.curve_bootstrap,
        seed=args.seed,
        significance=not args.no_significance,
        model_sizes=not args.no_model_sizes,
    )
    out = Path(args.out)
    pages = build_site(opts, out)
    print(f"wrote {len(pages)} pages under {out}; open {pages[0]}", file=sys.stderr)
    print(pages[0])
    return 0
