"""Helpers every command module shares: the parser class, argument parsing of lists, seeds,
``--set`` terms and parameter files, the data-setting arguments, and the one error-handling
path that turns a user error into a single ``error:`` line."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, NoReturn

from mer_bench.errors import ConfigError, MerBenchError
from mer_bench.params import parse_set_value, read_params_file
from mer_bench.protocol import (
    Alignment,
    Dataset,
    DataSetting,
    Distribution,
    Task,
    canonical_rate,
    parse_enum,
)

Handler = Callable[[argparse.Namespace], int]

INTERRUPTED = "interrupted; finished cells are saved, rerun the same command to resume"
"""What an interrupted command says by default; a command may set its own ``interrupted``."""


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``error:`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def dispatch(args: argparse.Namespace) -> int:
    """Run the handler a parsed command line chose: user errors print one ``error:`` line and
    return their exit code (2); an interrupt says how to resume (130); internal errors keep
    their traceback."""
    try:
        return int(args.handler(args) or 0)
    except MerBenchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {getattr(args, 'interrupted', INTERRUPTED)}\n")
        return 130
    except BrokenPipeError:
        return 0


def values(enum: type[Enum]) -> list[str]:
    """An enum's values, for ``choices=``."""
    return [m.value for m in enum]


def csv_list(text: str | None) -> list[str]:
    """``a, b,,c`` → ``["a", "b", "c"]``."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in csv_list(text))
    except ValueError:
        raise ConfigError(f"invalid --seeds {text!r}; expected comma-separated integers") from None
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    return seeds


def parse_rates(text: str) -> tuple[float, ...]:
    """Comma-separated missing rates on the protocol's 0.1 grid."""
    rates = tuple(canonical_rate(r) for r in csv_list(text))
    if not rates:
        raise ConfigError("--rates needs at least one rate")
    return rates


def positive(name: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1; got {value}")
    return value


def parse_value(text: str) -> Any:
    """A ``--set`` value (bounded JSON when it parses, else the string; see mer_bench.params)."""
    return parse_set_value(text)


def overrides(
    sets: Sequence[str],
    params_file: str | None,
    models: Sequence[str],
    params_record: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``--set [model.]key=value`` and ``--params FILE.json`` (or a tune record) → overrides."""
    out: dict[str, dict[str, Any]] = {m: {} for m in models}
    data = params_record
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
            out[m][name] = parse_value(value)
    return out


def add_data_setting_args(p: argparse.ArgumentParser, *, dataset_required: bool = True) -> None:
    """``--dataset --distribution --alignment --task`` (one data setting)."""
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


def data_setting(args: argparse.Namespace) -> DataSetting:
    """The data setting named by :func:`add_data_setting_args`' arguments."""
    return DataSetting(
        parse_enum(Dataset, args.dataset, "dataset"),
        parse_enum(Distribution, args.distribution, "distribution"),
        parse_enum(Alignment, args.alignment, "alignment"),
        parse_enum(Task, args.task, "task"),
    )
