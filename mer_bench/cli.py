"""``python -m mer_bench``: the command-line interface (DESIGN.md §6).

Errors a user can cause print one ``error:`` line on stderr and exit 2; internal failures keep
their traceback and exit 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from mer_bench.errors import ConfigError, MerBenchError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``error:`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in _csv(text))
    except ValueError:
        raise ConfigError(f"invalid --seeds {text!r}; expected comma-separated integers") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    return seeds


def _parse_value(text: str) -> Any:
    from mer_bench.params import parse_set_value

    return parse_set_value(text)


def read_params_file(path: str) -> dict[str, Any]:
    from mer_bench.params import read_params_file as read

    return read(path)


def _overrides(
    sets: Sequence[str],
    params_file: str | None,
    models: Sequence[str],
    params_record: dict[str, Any] | None = None,
) -> dict:
    """``--set [model.]key=value`` and ``--params FILE.json`` (or a tune record) → overrides."""
    out: dict[str, dict[str, Any]] = {m: {} for m in models}
    data = params_record if params_record is not None else None
    if params_file:
        data = read_params_file(params_file)
    if data is not None:
        model = data.get("model")
        params = data.get("params", data)
        targets = [model] if model in out else list(out)
        for m in targets:
            out[m].update({k: v for k, v in params.items() if k != "model"})
    # ``--set a=1,b=2`` and repeated ``--set`` both work; a comma starts a new term only when
    # a ``key=`` follows it, so JSON list values like ``[1,2]`` survive.
    terms = [t for item in sets for t in re.split(r",(?=\s*[\w.:]+=)", item) if t.strip()]
    for item in terms:
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise ConfigError(f"invalid --set {item!r}; expected [model.]key=value")
        # rpartition: model names may contain dots (``pkg.mod:Class.lr``).
        model, dot, name = key.rpartition(".")
        targets = [model] if dot and model in out else list(out)
        if not (dot and model in out):
            name = key
        for m in targets:
            out[m][name] = _parse_value(value)
    return out


# --------------------------------------------------------------------------- commands


def cmd_protocols(args: argparse.Namespace) -> int:
    from mer_bench.protocol import Dataset, Task, parse_enum, select_cells

    datasets = (
        [parse_enum(Dataset, d, "dataset") for d in _csv(args.dataset)] if args.dataset else None
    )
    tasks = [parse_enum(Task, t, "task") for t in _csv(args.task)] if args.task else None
    cells = select_cells(args.selector, datasets, tasks)
    out = sys.stdout
    for cell in cells:
        out.write(cell.id + "\n")
    out.write(f"{len(cells)} cells\n")
    return 0


def cmd_suites(args: argparse.Namespace) -> int:
    from mer_bench.suites import SUITES

    for suite in SUITES.values():
        print(f"{suite.name}\t{suite.aggregate.value}\tseeds {','.join(map(str, suite.seeds))}")
        print(f"  protocol: {suite.selector}")
        print(f"  {suite.summary}")
        print(f"  source: {suite.source}")
    print(f"{len(SUITES)} suites (run one with `run --suite NAME --models ...`)")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from mer_bench.adapters import available_adapters

    for name, source in available_adapters().items():
        print(f"{name}\t{source}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from mer_bench.data.check import check_file
    from mer_bench.protocol import Distribution, parse_enum

    kind = parse_enum(Distribution, args.kind, "kind") if args.kind else None
    report = check_file(Path(args.path), kind)
    print(report.render())
    if not report.loadable:
        raise MerBenchError(f"{args.path} holds NaN/inf values that runs refuse (see the summary)")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mer_bench.data.synth import SynthShape, generation_bytes, shape_config, write_synth
    from mer_bench.protocol import parse_enum

    config = shape_config(parse_enum(SynthShape, args.shape, "shape"), seed=args.seed)
    gib = generation_bytes(config) / 2**30
    print(f"generating synth ({args.shape}); needs about {gib:.1f} GiB of memory", file=sys.stderr)
    paths = write_synth(Path(args.out), config)
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} files (MMSA format) under {args.out}")
    return 0


def cmd_masks(args: argparse.Namespace) -> int:
    from mer_bench.data.loaders import load_bundle
    from mer_bench.missing import split_mask_arrays, write_masks_npz
    from mer_bench.protocol import (
        Alignment,
        Cell,
        Dataset,
        DataSetting,
        Distribution,
        Mode,
        Task,
        parse_enum,
    )

    setting = DataSetting(
        parse_enum(Dataset, args.dataset, "dataset"),
        parse_enum(Distribution, args.distribution, "distribution"),
        parse_enum(Alignment, args.alignment, "alignment"),
        parse_enum(Task, args.task, "task"),
    )
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


def cmd_describe(args: argparse.Namespace) -> int:
    from mer_bench.adapters import AdapterContext, get_adapter
    from mer_bench.data.dims import published_spec
    from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task, parse_enum
    from mer_bench.runner import preset_name

    setting = DataSetting(
        parse_enum(Dataset, args.dataset, "dataset"),
        parse_enum(Distribution, args.distribution, "distribution"),
        parse_enum(Alignment, args.alignment, "alignment"),
        parse_enum(Task, args.task, "task"),
    )
    cls = get_adapter(args.model)
    if setting.dataset is Dataset.SYNTH:
        from mer_bench.data.loaders import load_bundle

        spec = load_bundle(setting).spec
    else:
        spec = published_spec(setting)
    overrides = _overrides(args.set or [], None, [args.model])[args.model]
    preset = preset_name(cls, setting.dataset, args.preset)
    params = cls.resolve_params(preset, overrides)
    from mer_bench.text_encoder import BERT_BASE_SHAPE

    encoder = args.text_encoder
    if encoder is None and setting.dataset is not Dataset.SYNTH:
        encoder = BERT_BASE_SHAPE  # real data: shapes of bert-base-uncased, no weights needed
    adapter = cls(AdapterContext.create(spec, params, data=setting, text_encoder=encoder))
    model = adapter.model
    bert_prefixes = getattr(adapter, "text_encoder_prefixes", ("text_model.", "text_encoder."))
    state = model.state_dict()
    params_named = dict(model.named_parameters())
    # A module registered at several paths (shared weights) repeats in the state dict; every
    # path of a parameter is still a parameter, while the counts below stay de-duplicated.
    param_paths = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    non_bert = {k: v for k, v in state.items() if not k.startswith(tuple(bert_prefixes))}
    n_non_bert = sum(
        p.numel() for k, p in params_named.items() if not k.startswith(tuple(bert_prefixes))
    )
    n_bert = sum(p.numel() for k, p in params_named.items() if k.startswith(tuple(bert_prefixes)))
    if args.state_dict:
        print("name\tshape\tkind")
        for name, tensor in non_bert.items():
            shape = "x".join(str(s) for s in tensor.shape) or "1"
            print(f"{name}\t{shape}\t{'param' if name in param_paths else 'buffer'}")
        return 0
    print(f"model\t{cls.name}")
    print(f"setting\t{setting.id}")
    print(f"preset\t{preset}")
    print(f"non_bert_parameters\t{n_non_bert}")
    print(f"bert_parameters\t{n_bert}")
    print(f"non_bert_state_entries\t{len(non_bert)}")
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from cider.checkpoint import import_checkpoint, save_safetensors

    state = import_checkpoint(Path(args.path))
    save_safetensors(state, Path(args.out))
    print(f"imported {len(state)} tensors from {args.path} into {args.out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mer_bench.cli_run import run_main

    return run_main(args)


def cmd_export(args: argparse.Namespace) -> int:
    from mer_bench.export import metrics_frame, predictions_frame, write_frame
    from mer_bench.store import ResultsStore

    with ResultsStore(args.results, create=False) as store:
        frame = metrics_frame(store) if args.what == "metrics" else predictions_frame(store)
    text = write_frame(frame, args.format, Path(args.out) if args.out else None)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


def cmd_check_adapter(args: argparse.Namespace) -> int:
    from mer_bench.conformance import run_conformance

    return run_conformance(args.target, text_encoder=args.text_encoder)


# --------------------------------------------------------------------------- parser


def _add_data_setting(p: argparse.ArgumentParser, *, dataset_required: bool = True) -> None:
    p.add_argument(
        "--dataset",
        required=dataset_required,
        default=None if dataset_required else "synth",
        help="mosi, mosei or synth",
    )
    p.add_argument("--distribution", default="iid", help="iid, ood or cross (default iid)")
    p.add_argument(
        "--alignment", default="unaligned", help="aligned or unaligned (default unaligned)"
    )
    p.add_argument("--task", default="binary", help="binary, seven or regression (default binary)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m mer_bench",
        description="mer_bench: how well does a multimodal emotion model hold up when modalities "
        "go missing and the test distribution shifts?",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
        "--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 autocast on CUDA"
    )
    p.add_argument("--out", default="results", help="results folder (default results)")
    p.add_argument("--executor", default="local", help="local (default) or ray")
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
        default="valid",
        choices=["valid", "test-oracle"],
        help="how CIDer's τ is chosen for the headline numbers (both are always stored)",
    )
    p.add_argument(
        "--mask-rng",
        default="per-sample",
        choices=["per-sample", "reference"],
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
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("protocols", help="list the cell ids a selector selects, then a count")
    p.add_argument("selector", nargs="?", default="all", help="selector (default all)")
    p.add_argument("--dataset", default=None, help="restrict to datasets (comma-separated)")
    p.add_argument("--task", default=None, help="restrict to tasks (comma-separated)")
    p.set_defaults(handler=cmd_protocols)

    p = sub.add_parser("suites", help="list the named protocol suites (run with --suite NAME)")
    p.set_defaults(handler=cmd_suites)

    p = sub.add_parser("data", help="data files: check one, or write the synthetic dataset")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser)
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
    _add_data_setting(p, dataset_required=False)
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--mode", required=True, help="RMFM, RMFM_same, RMM, TMFM, STMFM or SMM")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--rate", type=float, help="missing rate 0.0 … 1.0 (step 0.1)")
    g.add_argument("--condition", help="SMM: kept modalities (T, A, V, TA, TV, AV, TAV)")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--mask-rng", default="per-sample", choices=["per-sample", "reference"])
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_masks)

    p = sub.add_parser("export", help="results or per-sample predictions as CSV/Parquet")
    p.add_argument("--results", default="results")
    p.add_argument("--what", required=True, choices=["metrics", "predictions"])
    p.add_argument("--format", default="csv", choices=["csv", "parquet"])
    p.add_argument("--out", default=None, help="file (csv goes to stdout without it)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("adapters", help="registered model adapters and their source")
    p.set_defaults(handler=cmd_adapters)

    p = sub.add_parser(
        "check-adapter", help="conformance suite for an adapter (NAME or module:Class)"
    )
    p.add_argument("target")
    p.add_argument("--text-encoder", default=None)
    p.set_defaults(handler=cmd_check_adapter)

    p = sub.add_parser(
        "describe", help="parameter counts and state-dict table of a model for a setting"
    )
    p.add_argument("model")
    _add_data_setting(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--text-encoder", default=None)
    p.add_argument("--state-dict", action="store_true", help="print the non-BERT state dict as TSV")
    p.add_argument("--preset", default=None, help="preset name (default: the dataset's / default)")
    p.set_defaults(handler=cmd_describe)

    p = sub.add_parser(
        "import-checkpoint", help="official CIDer checkpoint → safetensors, executing nothing"
    )
    p.add_argument("path")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_import_checkpoint)

    from mer_bench.report_cli import add_leaderboard_parser, add_plot_parser, add_table_parser
    from mer_bench.site_cli import add_site_parser
    from mer_bench.tune_cli import add_tune_parser

    add_plot_parser(sub)
    add_table_parser(sub)
    add_leaderboard_parser(sub)
    add_site_parser(sub)
    add_tune_parser(sub)

    return parser


def _version() -> str:
    from mer_bench import __version__

    return f"mer_bench {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        if args.command == "data":
            parser.parse_args(["data", "--help"])
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except MerBenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(
            "error: interrupted; finished cells are saved, rerun the same command to resume\n"
        )
        return 130
    except BrokenPipeError:
        return 0
