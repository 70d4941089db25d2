"""The harness from Python: what ``python -m mer_bench run`` does, reading a results folder back
as pandas frames, and building one model for one data setting.

    from mer_bench import api

    results = api.run("mult", "distribution=iid,alignment=aligned,task=binary,mode=SMM",
                      seeds=(1111,), out="results", overrides={"mult": {"max_epochs": 2}})
    results.metrics          # one row per (setting, cell, selection), the export columns
    results.predictions      # one row per sample behind every number
    adapter = api.build_adapter("cider", "synth/iid/aligned/binary")

Options are the fields of :class:`mer_bench.runner.RunOptions` and take the values the CLI
flags take (strings or the Enums of ``mer_bench.protocol``); user errors raise
``mer_bench.errors.MerBenchError`` subclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mer_bench.adapters import Adapter, AdapterContext, get_adapter
from mer_bench.data.dims import published_spec
from mer_bench.data.loaders import load_bundle
from mer_bench.errors import ConfigError
from mer_bench.export import metrics_frame, predictions_frame
from mer_bench.protocol import Dataset, DataSetting, parse_enum
from mer_bench.runner import DEFAULT_SEEDS, RunOptions, execute, plan, preset_name, resolve_device
from mer_bench.store import ResultsStore
from mer_bench.suites import get_suite
from mer_bench.text_encoder import BERT_BASE_SHAPE

__all__ = ["Results", "build_adapter", "load_results", "protocol_and_seeds", "run"]


@dataclass(frozen=True)
class Results:
    """A results folder as two frames with the export columns (docs/architecture.md, Exports)."""

    metrics: pd.DataFrame
    """One row per (training setting, cell, knob selection): metrics, τ, selection."""
    predictions: pd.DataFrame
    """One row per (training setting, cell, selection, test sample): label and scores."""


def load_results(path: str | Path) -> Results:
    """Read a results folder (``run``'s ``out``); a folder without a store is an error."""
    with ResultsStore(path, create=False) as store:
        return Results(metrics_frame(store), predictions_frame(store))


def protocol_and_seeds(
    protocol: str | None, seeds: Sequence[int] | None, suite: str | None
) -> tuple[str, tuple[int, ...], str | None]:
    """The selector, seeds and suite name a run uses: a suite fixes the protocol (giving one as
    well is an error) and supplies seeds unless they are given; without a suite the protocol
    defaults to ``all`` and the seeds to 1111, 1112, 1113."""
    if suite is None:
        return protocol or "all", tuple(seeds or DEFAULT_SEEDS), None
    chosen = get_suite(suite)
    if protocol is not None:
        raise ConfigError(
            f"--suite {chosen.name} fixes the protocol ({chosen.selector}); drop --protocol"
        )
    return chosen.selector, tuple(seeds or chosen.seeds), chosen.name


_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def run(
    models: str | Sequence[str],
    protocol: str | None = None,
    *,
    suite: str | None = None,
    **options: Any,
) -> Results:
    """Train every selected setting once, evaluate every selected cell, store the results in
    ``out`` (default ``results``; rerunning resumes) and return that folder's results.

    ``models``: adapter names (a comma-separated string or a sequence); ``protocol``: a selector
    such as ``"distribution=ood,mode=RMFM|RMM"`` (default all); ``suite``: a named protocol
    suite instead. Other options are ``RunOptions`` fields, e.g. ``dataset="mosi"``,
    ``data_root=...``, ``seeds=(1111,)``, ``device="cpu"``, ``overrides={"mult": {...}}``,
    ``presets={"mult": "paper"}``, ``tau_selection="test-oracle"``, ``jobs=2``.
    """
    names = tuple(m.strip() for m in models.split(",")) if isinstance(models, str) else models
    names = tuple(m for m in names if m)
    if not names:
        raise ConfigError("run needs at least one model")
    unknown = sorted(set(options) - _FIELDS - {"models", "selector"})
    if unknown or {"models", "selector"} & set(options):
        bad = unknown or sorted({"models", "selector"} & set(options))
        valid = ", ".join(sorted(_FIELDS - {"models", "selector", "suite"}))
        raise ConfigError(f"unknown run option(s) {', '.join(bad)}; valid: {valid}")
    selector, seeds, suite_name = protocol_and_seeds(protocol, options.pop("seeds", None), suite)
    if isinstance(options.get("dataset"), str):
        options["dataset"] = parse_enum(Dataset, options["dataset"], "dataset")
    options.setdefault("quiet", True)
    opts = RunOptions(models=names, selector=selector, seeds=seeds, suite=suite_name, **options)
    for model in names:
        get_adapter(model)  # unknown names fail before any work
    resolve_device(opts.device)
    execute(plan(opts), opts)
    return load_results(opts.out)


def build_adapter(
    name: str,
    data_setting: DataSetting | str,
    *,
    params: Mapping[str, Any] | None = None,
    preset: str | None = None,
    data_root: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 1111,
    text_encoder: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Adapter:
    """One model, built as ``run`` builds it for ``data_setting`` (untrained).

    Shapes come from the data files: the embedded synth files, or ``data_root`` for real data;
    for real data without a ``data_root`` the published shapes are used, with a BERT-base-shaped
    random text encoder unless ``text_encoder`` names a local folder (no weights are
    downloaded). ``params`` override the preset (default: the dataset's); ``options`` are
    adapter options (e.g. ``{"cider_prototypes": DIR}``).
    """
    data = (
        data_setting if isinstance(data_setting, DataSetting) else DataSetting.parse(data_setting)
    )
    cls = get_adapter(name)
    if data.dataset is Dataset.SYNTH or data_root is not None:
        spec = load_bundle(data, None if data_root is None else str(data_root)).spec
    else:
        spec = published_spec(data)
        text_encoder = text_encoder or BERT_BASE_SHAPE
    resolved = cls.resolve_params(preset_name(cls, data.dataset, preset), dict(params or {}))
    ctx = AdapterContext.create(
        spec,
        resolved,
        data=data,
        device=device,
        seed=seed,
        text_encoder=text_encoder,
        options=options,
    )
    return cls(ctx)
