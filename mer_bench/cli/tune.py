"""``tune``: argument parsing, the rich trial table and the summary around ``mer_bench.tune``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mer_bench.cli._common import csv_list, parse_value, values
from mer_bench.errors import ConfigError
from mer_bench.protocol import RATES, Dataset, DataSetting, MaskRng, Precision, parse_enum
from mer_bench.text_encoder import quiet_third_party
from mer_bench.tune import (
    FINISHED,
    TuneOptions,
    export_best,
    load_study,
    redact,
    run_tune,
)

TABLE_ROWS = 12
"""Rows of the live and final trial tables (the latest trials live, the best ones at the end)."""


def register(sub: Any) -> None:
    """Add ``tune`` to the subcommands."""
    p = sub.add_parser(
        "tune",
        help="tune a model's hyperparameters with Optuna on the validation split only",
        description="Optuna study (TPE sampler, median pruner on per-epoch validation scores) "
        "of one model on one data setting. The objective is the task's validation metric "
        "(Non0 Acc-2 binary, Acc-7 seven, MAE regression) under the complete view, or with "
        "--objective robust averaged over a validation RMFM sweep; the test split is never "
        "read. Workers started with the same command (and a shared --storage) join one study.",
    )
    p.add_argument("--model", required=True, help="adapter name or module:Class")
    p.add_argument(
        "--setting",
        required=True,
        help="selector naming ONE data setting, e.g. 'distribution=ood,alignment=aligned,"
        "task=binary'",
    )
    p.add_argument(
        "--trials", type=int, required=True, help="target number of finished trials in the study"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default sqlite in --out)",
    )
    p.add_argument(
        "--study", default=None, help="study name (default: model-setting-seed-objective)"
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after S seconds"
    )
    p.add_argument("--export", default=None, metavar="BEST.json", help="write the best trial")
    p.add_argument("--objective", default="complete", choices=["complete", "robust"])
    p.add_argument(
        "--rates",
        default=None,
        help="robust objective: comma-separated RMFM rates (default 0.0,0.1,…,1.0)",
    )
    p.add_argument("--dataset", default="synth", help="synth (embedded default), mosi or mosei")
    p.add_argument(
        "--data-root", default=None, help="folder with the real data files (or env MER_BENCH_DATA)"
    )
    p.add_argument("--seed", type=int, default=1111, help="training seed of every trial")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default=Precision.FP32.value, choices=values(Precision))
    p.add_argument("--out", default="results", help="folder of the default SQLite storage")
    p.add_argument("--text-encoder", default=None, help="local Hugging Face BERT folder")
    p.add_argument(
        "--mask-rng", default=MaskRng.PER_SAMPLE.value, choices=values(MaskRng), help="robust"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="fix a hyperparameter for every trial (it is then not tuned)",
    )
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    p.add_argument(
        "--prune-startup", type=int, default=3, help="finished trials before pruning starts"
    )
    p.add_argument("--prune-warmup", type=int, default=1, help="epochs never pruned")
    p.add_argument(
        "--startup-trials", type=int, default=10, help="random trials before TPE modelling"
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between trial heartbeats; a worker silent for 2x is failed (default 60)",
    )
    p.add_argument("--max-retry", type=int, default=2, help="re-queues of a killed worker's trial")
    p.add_argument("--quiet", action="store_true", help="no per-trial progress")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="let third-party libraries (transformers) print their warnings and progress bars",
    )
    p.set_defaults(
        handler=cmd_tune,
        interrupted="interrupted; finished trials are stored, rerun the same command to resume",
    )


def tune_options(args: argparse.Namespace) -> TuneOptions:
    """The ``tune`` command line as the tuner's options."""
    rates = RATES
    if args.rates is not None:
        try:
            rates = tuple(float(r) for r in csv_list(args.rates))
        except ValueError:
            raise ConfigError(f"invalid --rates {args.rates!r}; expected numbers") from None
    return TuneOptions(
        model=args.model,
        setting=args.setting,
        trials=args.trials,
        dataset=parse_enum(Dataset, args.dataset, "dataset"),
        data_root=args.data_root,
        seed=args.seed,
        storage=args.storage,
        study=args.study,
        timeout=args.timeout,
        objective=args.objective,
        rates=rates,
        mask_rng=parse_enum(MaskRng, args.mask_rng, "mask rng"),
        device=args.device,
        precision=parse_enum(Precision, args.precision, "precision"),
        out=args.out,
        text_encoder=args.text_encoder,
        overrides=fixed_overrides(args.set or [], args.model),
        pruner=args.pruner,
        prune_startup=args.prune_startup,
        prune_warmup=args.prune_warmup,
        startup_trials=args.startup_trials,
        heartbeat=args.heartbeat,
        max_retry=args.max_retry,
    )


def fixed_overrides(items: Sequence[str], model: str) -> dict[str, Any]:
    """``--set KEY=VALUE`` (or ``MODEL.KEY=VALUE`` for the tuned model) → fixed parameters."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"invalid --set {item!r}; expected KEY=VALUE")
        if key.startswith(f"{model}."):
            key = key[len(model) + 1 :]
        out[key] = parse_value(value)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


class TrialTable:
    """Per-trial progress: a live rich table on a terminal, one line per trial otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = Console(file=sys.stderr)
        self.live: Any = None
        self.rows: list[Any] = []
        self.plan: Any = None

    def on_start(self, study: Any, plan: Any) -> None:
        self.plan = plan
        if self.quiet:
            return
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.console.print(
            f"[bold]tune[/] study [cyan]{plan.study_name}[/] in {redact(plan.storage_url)}: "
            f"{done} finished trials; {plan.direction} validation {plan.metric} "
            f"({plan.config['objective']}); tuning {', '.join(sorted(plan.space))}"
        )
        if self.console.is_terminal:
            self.live = Live(self._table("trials", []), console=self.console, transient=False)
            self.live.start()

    def _table(self, title: str, trials: Sequence[Any]) -> Table:
        names = sorted(self.plan.space) if self.plan is not None else []
        table = Table(title=title)
        for col in ("#", "state", "value", "epochs", "worker", *names):
            table.add_column(col, justify="right" if col not in ("state", "worker") else "left")
        for t in trials:
            table.add_row(
                str(t.number),
                t.state.name.lower(),
                _fmt(t.value),
                _fmt(t.user_attrs.get("epochs")),
                str(t.user_attrs.get("worker", "-")),
                *(_fmt(t.params.get(n)) for n in names),
            )
        return table

    def __call__(self, study: Any, trial: Any) -> None:
        if self.quiet:
            return
        self.rows.append(trial)
        if self.live is not None:
            self.live.update(self._table("trials (this worker)", self.rows[-TABLE_ROWS:]))
            return
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.params.items()))
        self.console.print(
            f"trial {trial.number} {trial.state.name.lower()} value={_fmt(trial.value)} "
            f"epochs={_fmt(trial.user_attrs.get('epochs'))} {params}",
            highlight=False,
        )

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def summary(self, study: Any) -> Any:
        """The best finished trials of the whole study, best first."""
        reverse = self.plan.direction == "maximize"
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.value is not None and not math.isnan(t.value)
        ]
        complete = sorted(
            (t for t in done if t.state.name == "COMPLETE"),
            key=lambda t: t.value,
            reverse=reverse,
        )
        return self._table(f"best trials of {self.plan.study_name}", complete[:TABLE_ROWS])


def cmd_tune(args: argparse.Namespace) -> int:
    if not args.verbose:
        quiet_third_party()
    opts = tune_options(args)
    table = TrialTable(args.quiet)
    try:
        result = run_tune(opts, callbacks=[table], on_start=table.on_start)
    finally:
        table.stop()
    counts = ", ".join(f"{n} {k.lower()}" for k, n in sorted(result.counts.items())) or "none"
    out = Console(file=sys.stdout, width=140)
    if table.plan is not None and not args.quiet:
        out.print(table.summary(load_study(table.plan.storage_url, result.study_name)))
    print(f"study {result.study_name} ({result.storage}): {result.ran} trials run now; {counts}")
    best = result.best
    if best is None:
        print("no completed trial yet")
    else:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"best: trial {best['trial']} {best['metric']} {best['value']:.6g}; {params}")
    if args.export:
        path = export_best(best, args.export)
        print(f"wrote {path}")
        root = f" --data-root {opts.data_root}" if opts.data_root else ""
        print(
            f"Next: python -m mer_bench run --models {opts.model} --dataset {opts.dataset.value}"
            f"{root} --protocol '{_protocol_for(best)}' --seeds {opts.seed} --params {path}"
        )
    print(f"Dashboard (if installed): optuna-dashboard {result.storage}")
    return 0


def _protocol_for(best: dict[str, Any]) -> str:
    data = DataSetting.parse(str(best["setting"]))
    return (
        f"distribution={data.distribution.value},alignment={data.alignment.value},"
        f"task={data.task.value}"
    )
