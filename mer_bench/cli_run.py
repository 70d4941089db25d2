"""``run``: progress display and the closing summary around ``mer_bench.runner``."""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

from mer_bench.errors import ConfigError
from mer_bench.runner import Hooks, RunOptions, execute, plan


def _options(args: argparse.Namespace) -> RunOptions:
    from mer_bench.cli import _csv, _overrides, _seeds
    from mer_bench.protocol import Dataset, parse_enum

    models = tuple(_csv(args.models))
    if not models:
        raise ConfigError("--models needs at least one adapter name")
    jobs = _jobs(args.jobs, args.device)
    record, source = None, None
    if args.params and args.params_from_study:
        raise ConfigError("use either --params or --params-from-study, not both")
    if args.params:
        from mer_bench.cli import read_params_file

        source = {
            "file": str(Path(args.params).resolve()),
            **_provenance(read_params_file(args.params)),
        }
    if args.params_from_study:
        from mer_bench.tune import default_storage, params_from_study

        storage = args.study_storage or default_storage(args.out)
        record = params_from_study(storage, args.params_from_study)
        source = _provenance(record)
    selector, seeds, suite = args.protocol, args.seeds, None
    if args.suite:
        from mer_bench.suites import get_suite

        suite = get_suite(args.suite)
        if args.protocol is not None:
            raise ConfigError(
                f"--suite {suite.name} fixes the protocol ({suite.selector}); drop --protocol"
            )
        selector = suite.selector
        seeds = args.seeds or ",".join(str(s) for s in suite.seeds)
    options = {}
    if args.cider_prototypes:
        options["cider_prototypes"] = args.cider_prototypes
    return RunOptions(
        models=models,
        selector=selector or "all",
        dataset=parse_enum(Dataset, args.dataset, "dataset"),
        data_root=args.data_root,
        seeds=_seeds(seeds or "1111,1112,1113"),
        device=args.device,
        out=args.out,
        text_encoder=args.text_encoder,
        tau_selection=args.tau_selection,
        mask_rng=args.mask_rng,
        precision=args.precision,
        jobs=jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        overrides=_overrides(args.set or [], args.params, models, record),
        params_source=source,
        presets=_presets(args.preset or [], models),
        options=options,
        quiet=args.quiet,
        suite=None if suite is None else suite.name,
    )


def _jobs(value: str, device: str) -> int:
    """``--jobs``: an integer >= 1, or ``auto`` (one per core, capped, on CPU; 1 on CUDA)."""
    if value == "auto":
        import os

        import torch

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


def run_main(args: argparse.Namespace) -> int:
    from mer_bench.adapters import get_adapter
    from mer_bench.runner import resolve_device

    opts = _options(args)
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


def _log_hooks(quiet: bool, total: int) -> Hooks:
    if quiet:
        return Hooks()
    done = {"n": 0}

    def on_setting_done(outcome) -> None:
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

    return Hooks(on_setting_done=on_setting_done)


def _run_with_progress(plans, opts: RunOptions, n_cells: int):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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

        def on_setting_done(outcome) -> None:
            progress.advance(t_settings)

        def on_worker_setting_done(outcome) -> None:
            # Worker processes report only when a whole setting is finished.
            progress.advance(t_settings)
            progress.advance(t_cells, planned.get(outcome.setting_id, 0))

        if opts.jobs > 1 and len(plans) > 1:
            progress.update(t_epochs, description=f"{opts.jobs} worker processes", total=1)
            return execute(plans, opts, Hooks(on_setting_done=on_worker_setting_done))
        hooks = Hooks(
            on_epoch=on_epoch,
            on_cell=on_cell,
            on_cells_planned=on_cells_planned,
            on_setting_done=on_setting_done,
        )
        return execute(plans, opts, hooks)


def _print_summary(opts: RunOptions) -> None:
    """Per system (model × training regime) × data setting: headline metric at rate 0 and the
    curve summary per mode (the suite's: AUILC, or the mean over rates 0–0.9), mean over seeds."""
    from rich.console import Console
    from rich.table import Table

    from mer_bench.metrics import Aggregate
    from mer_bench.protocol import Task
    from mer_bench.report.data import with_systems
    from mer_bench.store import ResultsStore
    from mer_bench.suites import get_suite

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
        data_id = "/".join(row.cell_id.split("/")[:4])
        metrics = json.loads(row.metrics)
        key = (row.model, data_id)
        groups[key].setdefault(row.setting_id, []).append((row.mode, row.rate, metrics))
    for (model, data_id), runs in sorted(groups.items()):
        task = Task(data_id.split("/")[3])
        metric = task.info.curve_metrics[0]
        # matched-regime runs hold one rate each: join them into one curve per seed
        seeds: dict[str, list] = defaultdict(list)
        for setting_id, rows in runs.items():
            seeds[setting_id.split("/seed")[1].split("/")[0]].extend(rows)
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
        table.add_row(model, data_id, metric, zero, *cols.values())
    Console(file=sys.stdout, width=140).print(table)
