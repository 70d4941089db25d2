"""``run`` (train every setting, evaluate every cell, with progress and a closing summary),
``protocols`` (the cell ids a selector selects) and ``suites`` (the named protocol suites)."""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mer_bench.adapters import get_adapter
from mer_bench.api import protocol_and_seeds
from mer_bench.cli._common import csv_list, overrides, parse_seeds, values
from mer_bench.errors import ConfigError
from mer_bench.metrics import Aggregate
from mer_bench.params import read_params_file
from mer_bench.protocol import (
    Cell,
    Dataset,
    DataSetting,
    Executor,
    MaskRng,
    Precision,
    Task,
    TauSelection,
    parse_enum,
    select_cells,
)
from mer_bench.report.data import with_systems
from mer_bench.runner import (
    Discarded,
    Hooks,
    RunOptions,
    SettingOutcome,
    SettingPlan,
    execute,
    plan,
    resolve_device,
)
from mer_bench.store import ResultsStore
from mer_bench.suites import SUITES, get_suite
from mer_bench.text_encoder import quiet_third_party
from mer_bench.tune import default_storage, params_from_study


def register(sub: Any) -> None:
    """Add ``run``, ``protocols`` and ``suites`` to the subcommands."""
    p = sub.add_parser(
        "run",
        help="train every setting once and evaluate every protocol cell",
        description="Train each model once per training setting and seed, evaluate "
        "it in every selected protocol cell, store per-sample predictions.",
    )
    p.add_argument(
        "--models", default="cider,mult", help="comma-separated adapter names (default cider,mult)"
    )
    p.add_argument(
        "--protocol",
        default=None,
        help="selector, e.g. 'distribution=ood,mode=RMFM|RMM' or 'regime=clean|mixture' "
        "(default all)",
    )
    p.add_argument(
        "--suite",
        default=None,
        help="a named protocol suite (cells, training regimes, seeds, aggregate): "
        "cider, lnln, emt-dlfr, fair; see `suites`",
    )
    p.add_argument("--dataset", default="synth", help="synth (embedded default), mosi or mosei")
    p.add_argument(
        "--data-root", default=None, help="folder with the real data files (or env MER_BENCH_DATA)"
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="comma-separated seeds (default 1111,1112,1113, or the suite's)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--precision",
        default=Precision.FP32.value,
        choices=values(Precision),
        help="bf16 autocast on CUDA",
    )
    p.add_argument("--out", default="results", help="results folder (default results)")
    p.add_argument("--executor", default=Executor.LOCAL.value, help="local (default) or ray")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster")
    p.add_argument(
        "--jobs",
        default="auto",
        help="worker processes for independent settings (local executor); auto = one per CPU "
        "core (at most 8) on CPU, 1 on CUDA",
    )
    p.add_argument(
        "--text-encoder",
        default=None,
        help="local Hugging Face BERT folder (default: tiny random BERT)",
    )
    p.add_argument(
        "--tau-selection",
        default=TauSelection.VALID.value,
        choices=values(TauSelection),
        help="how CIDer's τ is chosen for the headline numbers (both are always stored)",
    )
    p.add_argument(
        "--mask-rng",
        default=MaskRng.PER_SAMPLE.value,
        choices=values(MaskRng),
        help="mask draws: pure per-sample function, or the reference's NumPy draws",
    )
    p.add_argument(
        "--set", action="append", metavar="[MODEL.]KEY=VALUE", help="override a hyperparameter"
    )
    p.add_argument(
        "--params", default=None, help="JSON file of hyperparameters (e.g. from tune --export)"
    )
    p.add_argument(
        "--preset",
        action="append",
        metavar="[MODEL.]NAME",
        help="hyperparameter preset (e.g. mult.paper); default: synth / the dataset's / default",
    )
    p.add_argument(
        "--params-from-study",
        default=None,
        metavar="STUDY",
        help="use the best trial of a tune study (provenance is recorded)",
    )
    p.add_argument(
        "--study-storage",
        default=None,
        metavar="URL",
        help="Optuna storage of --params-from-study (default: OUT/tune.sqlite)",
    )
    p.add_argument(
        "--cider-prototypes",
        default=None,
        help="CIDer checkout folder with the shipped *_feats/*_probs .npy files",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="let third-party libraries (transformers) print their warnings and progress bars",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("protocols", help="list the cell ids a selector selects, then a count")
    p.add_argument("selector", nargs="?", default="all", help="selector (default all)")
    p.add_argument("--dataset", default=None, help="restrict to datasets (comma-separated)")
    p.add_argument("--task", default=None, help="restrict to tasks (comma-separated)")
    p.set_defaults(handler=cmd_protocols)

    p = sub.add_parser("suites", help="list the named protocol suites (run with --suite NAME)")
    p.set_defaults(handler=cmd_suites)


def cmd_protocols(args: argparse.Namespace) -> int:
    datasets = (
        [parse_enum(Dataset, d, "dataset") for d in csv_list(args.dataset)]
        if args.dataset
        else None
    )
    tasks = [parse_enum(Task, t, "task") for t in csv_list(args.task)] if args.task else None
    cells = select_cells(args.selector, datasets, tasks)
    out = sys.stdout
    for cell in cells:
        out.write(cell.id + "\n")
    out.write(f"{len(cells)} cells\n")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    for suite in SUITES.values():
        print(f"{suite.name}\t{suite.aggregate.value}\tseeds {','.join(map(str, suite.seeds))}")
        print(f"  protocol: {suite.selector}")
        print(f"  {suite.summary}")
        print(f"  source: {suite.source}")
    print(f"{len(SUITES)} suites (run one with `run --suite NAME --models ...`)")
    return 0


def run_options(args: argparse.Namespace) -> RunOptions:
    """The ``run`` command line as the runner's options."""
    models = tuple(csv_list(args.models))
    if not models:
        raise ConfigError("--models needs at least one adapter name")
    jobs = _jobs(args.jobs, args.device)
    record, source = None, None
    if args.params and args.params_from_study:
        raise ConfigError("use either --params or --params-from-study, not both")
    if args.params:
        source = {
            "file": str(Path(args.params).resolve()),
            **_provenance(read_params_file(args.params)),
        }
    if args.params_from_study:
        storage = args.study_storage or default_storage(args.out)
        record = params_from_study(storage, args.params_from_study)
        source = _provenance(record)
    selector, seeds, suite = protocol_and_seeds(
        args.protocol, parse_seeds(args.seeds) if args.seeds is not None else None, args.suite
    )
    options = {}
    if args.cider_prototypes:
        options["cider_prototypes"] = args.cider_prototypes
    return RunOptions(
        models=models,
        selector=selector,
        dataset=parse_enum(Dataset, args.dataset, "dataset"),
        data_root=args.data_root,
        seeds=seeds,
        device=args.device,
        out=args.out,
        text_encoder=args.text_encoder,
        tau_selection=parse_enum(TauSelection, args.tau_selection, "tau selection"),
        mask_rng=parse_enum(MaskRng, args.mask_rng, "mask rng"),
        precision=parse_enum(Precision, args.precision, "precision"),
        jobs=jobs,
        executor=parse_enum(Executor, args.executor, "executor"),
        ray_address=args.ray_address,
        overrides=overrides(args.set or [], args.params, models, record),
        params_source=source,
        presets=_presets(args.preset or [], models),
        options=options,
        quiet=args.quiet,
        suite=suite,
    )


def _jobs(value: str, device: str) -> int:
    """``--jobs``: an integer >= 1, or ``auto`` (one per core, capped, on CPU; 1 on CUDA)."""
    if value == "auto":
        if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
            return 1
        return max(1, min(os.cpu_count() or 1, 8))
    try:
        jobs = int(value)
    except ValueError:
        raise ConfigError(f"invalid --jobs {value!r}; expected an integer >= 1 or auto") from None
    if jobs < 1:
        raise ConfigError("--jobs must be >= 1")
    return jobs


def _presets(items: list[str], models: tuple[str, ...]) -> dict[str, str]:
    """``--preset NAME`` (every model) or ``--preset MODEL.NAME``."""
    chosen: dict[str, str] = {}
    for item in items:
        model, dot, name = item.rpartition(".")
        targets = [model] if dot and model in models else list(models)
        for m in targets:
            chosen[m] = name if dot and model in models else item
    return chosen


def _provenance(record: dict) -> dict:
    """Where tuned parameters came from (recorded with every setting they trained)."""
    keys = ("model", "study", "storage", "trial", "value", "metric", "objective", "setting", "seed")
    return {k: record[k] for k in keys if k in record}


def cmd_run(args: argparse.Namespace) -> int:
    if not args.verbose:
        quiet_third_party()
    opts = run_options(args)
    for model in opts.models:
        get_adapter(model)  # unknown names fail before any work
    resolve_device(opts.device)
    plans = plan(opts)
    n_cells = sum(len(p.cells) for p in plans)
    start = time.perf_counter()
    if opts.quiet or not sys.stderr.isatty():
        if not opts.quiet:
            print(
                f"mer_bench run: {len(plans)} training settings, {n_cells} cells -> {opts.out}",
                file=sys.stderr,
            )
        outcomes = execute(plans, opts, _log_hooks(opts.quiet, len(plans)))
    else:
        outcomes = _run_with_progress(plans, opts, n_cells)
    elapsed = time.perf_counter() - start
    trained = sum(o.trained for o in outcomes)
    evaluated = sum(o.cells_done for o in outcomes)
    # ru_maxrss is in KiB on Linux; worker processes count through RUSAGE_CHILDREN.
    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    _print_summary(opts)
    print(
        f"\n{len(plans)} training settings ({trained} trained now), {n_cells} cells "
        f"({evaluated} evaluated now) in {elapsed:.1f} s; peak memory per process {peak_mb:.0f} MB."
    )
    print(f"Results: {opts.out}/results.sqlite")
    print(
        "Next: python -m mer_bench plot --results "
        + opts.out
        + "   |   python -m mer_bench table --results "
        + opts.out
        + "   |   python -m mer_bench export --results "
        + opts.out
        + " --what metrics"
    )
    return 0


def data_changed_message(d: Discarded) -> str:
    """One line saying that a stored setting is retrained because its data changed."""
    old = d.old or "unknown (stored before data fingerprints)"
    return (
        f"{d.setting_id}: data changed since it was stored (fingerprint {old} -> {d.new}); "
        f"discarded its {d.cells} stored cells, training it again"
    )


def _print_data_changed(d: Discarded) -> None:
    print(data_changed_message(d), file=sys.stderr, flush=True)


def _log_hooks(quiet: bool, total: int) -> Hooks:
    # Discarded results are reported even with --quiet: it only silences progress.
    if quiet:
        return Hooks(on_data_changed=_print_data_changed)
    done = {"n": 0}

    def on_setting_done(outcome: SettingOutcome) -> None:
        done["n"] += 1
        what = "trained and evaluated" if outcome.trained else "evaluated"
        if not outcome.cells_done and not outcome.trained:
            what = "already done"
        print(
            f"[{done['n']}/{total}] {outcome.setting_id}: {what}, {outcome.cells_done} cells "
            f"({outcome.seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    return Hooks(on_setting_done=on_setting_done, on_data_changed=_print_data_changed)


def _run_with_progress(
    plans: list[SettingPlan], opts: RunOptions, n_cells: int
) -> list[SettingOutcome]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        t_settings = progress.add_task("settings", total=len(plans))
        t_epochs = progress.add_task("epochs", total=1)
        t_cells = progress.add_task("cells", total=n_cells)
        planned = {p.setting.id: len(p.cells) for p in plans}

        def on_cells_planned(sid: str, n: int) -> None:
            progress.advance(t_cells, planned.get(sid, 0) - n)  # done in an earlier run
            progress.update(t_epochs, description=f"epochs {sid}", completed=0)

        def on_epoch(sid: str, epoch: int, max_epochs: int) -> None:
            progress.update(t_epochs, total=max_epochs, completed=epoch)

        def on_cell(sid: str, cell_id: str) -> None:
            progress.advance(t_cells)

        def on_setting_done(outcome: SettingOutcome) -> None:
            progress.advance(t_settings)

        def on_data_changed(d: Discarded) -> None:
            progress.console.print(data_changed_message(d), markup=False, highlight=False)

        def on_worker_setting_done(outcome: SettingOutcome) -> None:
            # Worker processes report only when a whole setting is finished.
            progress.advance(t_settings)
            progress.advance(t_cells, planned.get(outcome.setting_id, 0))

        if opts.jobs > 1 and len(plans) > 1:
            progress.update(t_epochs, description=f"{opts.jobs} worker processes", total=1)
            worker_hooks = Hooks(
                on_setting_done=on_worker_setting_done, on_data_changed=on_data_changed
            )
            return execute(plans, opts, worker_hooks)
        hooks = Hooks(
            on_epoch=on_epoch,
            on_cell=on_cell,
            on_cells_planned=on_cells_planned,
            on_setting_done=on_setting_done,
            on_data_changed=on_data_changed,
        )
        return execute(plans, opts, hooks)


def _print_summary(opts: RunOptions) -> None:
    """Per system (model × training regime) × data setting: headline metric at rate 0 and the
    curve summary per mode (the suite's: AUILC, or the mean over rates 0–0.9), mean over seeds."""
    agg = get_suite(opts.suite).aggregate if opts.suite else Aggregate.AUILC
    curve_rates = agg.curve.rates
    with ResultsStore(opts.out) as store:
        frame = store.results_frame(primary_only=True)
    if frame.empty:
        return
    frame = with_systems(frame[frame["model"].isin(opts.models)])
    table = Table(title=f"mer_bench summary ({opts.out}; {agg.value} per mode, mean over seeds)")
    for col in ("model", "setting", "metric", "@0", "RMFM", "RMFM_same", "RMM", "TMFM", "STMFM"):
        table.add_column(col, justify="left" if col in ("model", "setting", "metric") else "right")
    groups = defaultdict(dict)
    for row in frame.itertuples(index=False):
        data_id = Cell.parse(row.cell_id).data.id
        metrics = json.loads(row.metrics)
        # per seed: matched-regime runs (one rate each) join into one curve
        groups[(row.model, data_id)].setdefault(row.seed, []).append((row.mode, row.rate, metrics))
    for (model, data_id), seeds in sorted(groups.items()):
        metric = DataSetting.parse(data_id).task.info.curve_metrics[0]
        cols = {}
        at0 = []
        for mode in ("RMFM", "RMFM_same", "RMM", "TMFM", "STMFM"):
            areas = []
            for rows in seeds.values():
                curve = {r: m[metric] for md, r, m in rows if md == mode and r is not None}
                if all(r in curve for r in curve_rates):
                    areas.append(agg.curve.of([curve[r] for r in curve_rates]))
                if mode == "RMFM" and 0.0 in curve:
                    at0.append(curve[0.0])
            cols[mode] = f"{sum(areas) / len(areas):.3f}" if areas else "-"
        zero = f"{sum(at0) / len(at0):.3f}" if at0 and not math.isnan(sum(at0)) else "-"
        # escape: a system name such as ``mult[clean]`` is not rich markup
        table.add_row(escape(model), data_id, metric, zero, *cols.values())
    Console(file=sys.stdout, width=140).print(table)
