"""Reading results: ``export`` (CSV/Parquet), ``table``, ``plot``, ``leaderboard`` and ``site``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mer_bench.cli._common import csv_list, parse_rates, positive
from mer_bench.errors import ConfigError, DataError
from mer_bench.export import metrics_frame, predictions_frame, write_frame
from mer_bench.metrics import Aggregate
from mer_bench.protocol import parse_enum
from mer_bench.report.data import Predictions, load_frame
from mer_bench.report.leaderboard import (
    FORCE_HINT,
    add_reported,
    entries_from_frame,
    merge_conflicts,
    merge_entry,
    render_all,
)
from mer_bench.report.plots import PlotOptions, load_reported_curves, make_plots
from mer_bench.report.site import SiteOptions, build_site
from mer_bench.report.tables import (
    TableOptions,
    build_tables,
    build_tau_comparison,
    render_csv,
    render_latex,
    render_markdown,
    render_tau,
)
from mer_bench.store import ResultsStore
from mer_bench.suites import SUITES


def register(sub: Any) -> None:
    """Add ``export``, ``plot``, ``table``, ``leaderboard`` and ``site`` to the subcommands."""
    _add_export(sub)
    _add_plot(sub)
    _add_table(sub)
    _add_leaderboard(sub)
    _add_site(sub)


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(csv_list(text))


# --------------------------------------------------------------------------- export


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="results or per-sample predictions as CSV/Parquet")
    p.add_argument("--results", default="results")
    p.add_argument("--what", required=True, choices=["metrics", "predictions"])
    p.add_argument("--format", default="csv", choices=["csv", "parquet"])
    p.add_argument("--out", default=None, help="file (csv goes to stdout without it)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    with ResultsStore(args.results, create=False) as store:
        frame = metrics_frame(store) if args.what == "metrics" else predictions_frame(store)
    text = write_frame(frame, args.format, Path(args.out) if args.out else None)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument(
        "--metric", default=None, help="metric(s), comma-separated (default: the task's curve ones)"
    )
    p.add_argument(
        "--models", default=None, help="models to include, in this order (default: all, run order)"
    )
    p.add_argument(
        "--selection",
        default="primary",
        help="primary (each run's headline, default), valid, default or test-oracle",
    )


# --------------------------------------------------------------------------- table


def choose_aggregate(chosen: str | None, suites: tuple[str, ...]) -> Aggregate:
    """``--aggregate``, else the one aggregate of the store's suites, else AUILC."""
    if chosen is not None:
        return parse_enum(Aggregate, chosen, "aggregate")
    found = {SUITES[s].aggregate for s in suites if s in SUITES}
    if len(found) > 1:
        raise ConfigError(
            f"the results hold suites with different curve summaries ({', '.join(suites)}); "
            "choose one with --aggregate AUILC|mean@0-0.9"
        )
    return found.pop() if found else Aggregate.AUILC


def _add_table(sub: Any) -> None:
    p = sub.add_parser(
        "table",
        help="paper-style tables with paired significance tests against a baseline",
        description="Rows = models, columns = rates (+ AUILC) per mode or SMM conditions; "
        "mean ± sd over seeds; paired permutation tests vs --baseline on identical masks, "
        "Holm-corrected over each table; Δ with 95% CI; ASO with ≥ 3 seeds.",
    )
    _common(p)
    p.add_argument("--format", default="md", choices=["md", "latex", "csv"])
    p.add_argument("--out", default=None, help="write to FILE instead of stdout")
    p.add_argument(
        "--baseline",
        default=None,
        help="reference model, or regime=R to compare each model with its own run under "
        "regime R (default: the first model; regime=clean when clean and other regimes ran)",
    )
    p.add_argument(
        "--aggregate",
        default=None,
        help="curve summary column: AUILC or mean@0-0.9 (default: the suite's, else AUILC)",
    )
    p.add_argument(
        "--no-robustness",
        action="store_true",
        help="leave out the relative (RR) and effective (ER) robustness columns",
    )
    p.add_argument(
        "--rates", default="0.0,0.3,0.5,0.7,1.0", help="rates shown as columns (AUILC uses all 11)"
    )
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise α (default 0.05)")
    p.add_argument("--resamples", type=int, default=9999, help="permutations per test")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws per CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument(
        "--compare-tau",
        action="store_true",
        help="valid-selected vs test-oracle τ side by side (models with a τ knob)",
    )
    p.set_defaults(handler=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be in (0, 1); got {args.alpha}")
    with ResultsStore(args.results, create=False) as store:
        suites = tuple(store.suites())
    opts = TableOptions(
        aggregate=choose_aggregate(args.aggregate, suites),
        suites=suites,
        robustness=not args.no_robustness,
        metrics=_csv(args.metric),
        baseline=args.baseline,
        models=_csv(args.models),
        rates=parse_rates(args.rates),
        selection=args.selection,
        alpha=args.alpha,
        n_resamples=positive("--resamples", args.resamples),
        n_boot=positive("--bootstrap", args.bootstrap),
        seed=args.seed,
    )
    with ResultsStore(args.results, create=False) as store:
        frame = load_frame(store)
        preds = Predictions(store)
        if args.compare_tau:
            text = render_tau(build_tau_comparison(frame, preds, opts), args.format)
        else:
            tables = build_tables(frame, preds, opts)
            render = {"md": render_markdown, "latex": render_latex, "csv": render_csv}
            text = render[args.format](tables)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# --------------------------------------------------------------------------- plot


def _add_plot(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="degradation curves, SMM heatmaps, AUILC bars, critical-difference diagram",
        description="Figures as PNG and PDF: metric vs missing rate per mode with 95% paired "
        "bootstrap bands, SMM heatmap, AUILC bars, CD diagram (≥ 3 models).",
    )
    _common(p)
    p.add_argument("--out", default="figures", help="output folder (default figures)")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap draws per band point")
    p.add_argument("--formats", default="png,pdf", help="file formats (default png,pdf)")
    p.add_argument("--dpi", type=int, default=300, help="PNG resolution (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reported",
        default=None,
        help="published per-rate curves to overlay dashed on real-data curves (default "
        "leaderboards/reported.json if present; 'none' to leave them out)",
    )
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    metrics = _csv(args.metric)
    if len(metrics) > 1:
        raise ConfigError("plot takes one --metric")
    formats = _csv(args.formats)
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise ConfigError(f"invalid --formats {args.formats!r}; valid: png, pdf, svg")
    opts = PlotOptions(
        metric=metrics[0] if metrics else None,
        models=_csv(args.models),
        selection=args.selection,
        n_boot=positive("--bootstrap", args.bootstrap),
        seed=args.seed,
        formats=formats,
        dpi=positive("--dpi", args.dpi),
        reported=_reported_curves(args.reported),
    )
    with ResultsStore(args.results, create=False) as store:
        paths = make_plots(load_frame(store), Predictions(store), opts, Path(args.out))
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} files under {args.out}", file=sys.stderr)
    return 0


def _reported_curves(choice: str | None) -> tuple:
    if choice == "none":
        return ()
    path = Path(choice) if choice else Path("leaderboards") / "reported.json"
    if choice and not path.is_file():
        raise ConfigError(f"--reported {path} does not exist")
    return load_reported_curves(path) if path.is_file() else ()


# --------------------------------------------------------------------------- leaderboard


def _add_leaderboard(sub: Any) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="merge results into leaderboards/ and render its Markdown tables",
        description="One JSON per model × training setting under ROOT/<dataset>/"
        "<distribution>-<alignment>-<task>/; an entry with better provenance, or computed on "
        "other data (data fingerprint), is never replaced without --force; renders "
        "ROOT/README.md ranked by AUILC.",
    )
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument(
        "--root", default="leaderboards", help="leaderboard folder (default leaderboards)"
    )
    p.add_argument("--models", default=None, help="only these models (comma-separated)")
    p.add_argument(
        "--reported",
        default=None,
        help="JSON of published figures to attach (default ROOT/reported.json if present)",
    )
    p.add_argument(
        "--render-only", action="store_true", help="only re-render the Markdown from the files"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace entries even with worse provenance or computed on other data",
    )
    p.set_defaults(handler=cmd_leaderboard)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        with ResultsStore(args.results, create=False) as store:
            entries = entries_from_frame(load_frame(store), _csv(args.models))
        if not entries:
            raise ConfigError(f"no results for models {args.models} in {args.results}")
        # Checked for every entry before any file is written: a refusal leaves ROOT as it was.
        conflicts = [] if args.force else merge_conflicts(root, entries)
        if conflicts:
            raise DataError(f"not merged, data differ: {'; '.join(conflicts)}; {FORCE_HINT}")
        for entry in entries:
            outcome = merge_entry(root, entry, force=args.force)
            print(f"{outcome.action}\t{outcome.path}\t{outcome.reason}")
    reported = Path(args.reported) if args.reported else root / "reported.json"
    if args.reported and not reported.is_file():
        raise ConfigError(f"--reported {reported} does not exist")
    if reported.is_file():
        for outcome in add_reported(root, reported):
            print(f"{outcome.action}\t{outcome.path}\t{outcome.reason}")
    for path in render_all(root):
        print(f"rendered\t{path}")
    return 0


# --------------------------------------------------------------------------- site


def _add_site(sub: Any) -> None:
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


def cmd_site(args: argparse.Namespace) -> int:
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
