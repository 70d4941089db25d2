"""What the results site shows: leaderboard entries from JSON files and results folders.

Every model × data setting is an *entry* in the format of :mod:`mer_bench.report.leaderboard`:
committed JSON files are read as they are, and a results folder is turned into entries by the
same code that ``leaderboard`` merges with, so both render through one path. A results folder
adds what only per-sample predictions give: bootstrap bands for the curves
(:func:`mer_bench.report.plots.curve_band`, as ``plot`` draws them) and the tables of ``table``
(:func:`mer_bench.report.tables.build_tables`: same tests, same Holm correction).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pandas as pd

from mer_bench.errors import ConfigError, DataError
from mer_bench.protocol import DataSetting, Mode, Task, TrainingSetting
from mer_bench.report.data import PRIMARY, Predictions, load_frame, select
from mer_bench.report.leaderboard import (
    entries_from_frame,
    read_entry,
)
from mer_bench.report.plots import CurvePoint, curve_band
from mer_bench.report.tables import (
    Table,
    TableOptions,
    build_tables,
)
from mer_bench.store import ResultsStore

ASSETS = Path(__file__).with_name("site_assets")
CHART_JS = "plotly-cartesian.min.js"
ASSET_FILES = (CHART_JS, "LICENSE-plotly.txt", "site.js", "site.css")

SETTING_AXES = ("dataset", "distribution", "alignment", "task")
KNOWN_KEYS = frozenset(
    {
        "schema",
        "model",
        "setting",
        "protocol_version",
        "selection",
        "seeds",
        "modes",
        "provenance",
        "reported",
    }
)
"""Top-level keys of a leaderboard entry that have their own columns; any other scalar key
(and any setting key beyond the four data axes, e.g. a training regime) becomes a column."""


class SourceKind(str, Enum):
    LEADERBOARD = "leaderboard"
    RESULTS = "results"
    REPORTED = "reported"


@dataclass(frozen=True)
class Source:
    """Where an entry came from, shown in its own column and filterable."""

    kind: SourceKind
    label: str


@dataclass(frozen=True)
class SiteOptions:
    results: tuple[Path, ...] = ()
    """Results folders (each a ``run --out``)."""
    leaderboards: Path | None = None
    """Leaderboard folder (``leaderboard --root``); None = none."""
    baseline: str | None = None
    """Reference model of the significance tests where it has results (else the first model)."""
    alpha: float = 0.05
    n_resamples: int = 9999
    n_boot: int = 1000
    """Bootstrap draws per table CI (as ``table``)."""
    n_boot_curves: int = 500
    """Bootstrap draws per curve band point (as ``plot``)."""
    seed: int = 0
    significance: bool = True
    model_sizes: bool = True
    """Build each model once per data setting to count its parameters (model pages)."""


@dataclass(frozen=True)
class SiteEntry:
    """One model's entry for one data setting, from one source."""

    entry: dict = field(hash=False)
    source: Source
    extras: tuple[tuple[str, str], ...]
    bands: dict[tuple[str, str], list[CurvePoint]] = field(hash=False, default_factory=dict)
    """(mode, metric) → curve with bootstrap band; results folders only."""
    configs: tuple[dict, ...] = ()
    """Resolved model parameters of the training runs (results folders only), deduplicated."""

    @property
    def model(self) -> str:
        return str(self.entry["model"])

    @property
    def data_id(self) -> str:
        return "/".join(str(self.entry["setting"][k]) for k in SETTING_AXES)


@dataclass
class SiteData:
    entries: list[SiteEntry] = field(default_factory=list)
    tables: dict[tuple[Source, str], list[Table]] = field(default_factory=dict)
    """(source, data id) → the ``table`` tables of that results folder for that data setting."""
    exports: list[tuple[Source, pd.DataFrame]] = field(default_factory=list)


# --------------------------------------------------------------------------- loading


def _extras(entry: Mapping) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in (entry.get("setting") or {}).items():
        if key not in SETTING_AXES and _is_scalar(value):
            out.append((str(key), str(value)))
    for key, value in entry.items():
        if key not in KNOWN_KEYS and _is_scalar(value):
            out.append((str(key), str(value)))
    return tuple(out)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


def load_leaderboards(root: Path) -> list[SiteEntry]:
    if not root.is_dir():
        raise ConfigError(f"--leaderboards {root} is not a folder")
    source = Source(SourceKind.LEADERBOARD, str(root))
    out = []
    for path in sorted(root.glob("*/*/*.json")):
        entry = read_entry(path)
        setting = entry["setting"]
        if not isinstance(setting, dict) or any(k not in setting for k in SETTING_AXES):
            raise DataError(f"{path}: 'setting' needs {', '.join(SETTING_AXES)}")
        DataSetting.parse("/".join(str(setting[k]) for k in SETTING_AXES))  # valid axis values
        out.append(SiteEntry(entry, source, _extras(entry)))
    return out


def load_results(folder: Path, opts: SiteOptions, data: SiteData) -> None:
    """Entries, curve bands, significance tables and the metrics export of one results folder."""
    from mer_bench.export import metrics_frame

    source = Source(SourceKind.RESULTS, str(folder))
    with ResultsStore(folder, create=False) as store:
        frame = load_frame(store)
        preds = Predictions(store)
        rows_all = select(frame, PRIMARY)
        for entry in entries_from_frame(frame):
            data_id = "/".join(entry["setting"][k] for k in SETTING_AXES)
            rows = rows_all[
                (rows_all["model"] == entry["model"]) & (rows_all["data_id"] == data_id)
            ]
            data.entries.append(
                SiteEntry(
                    entry,
                    source,
                    _extras(entry),
                    _bands(rows, preds, DataSetting.parse(data_id).task, opts),
                    _configs(store, rows),
                )
            )
        if opts.significance:
            for data_id in sorted(set(rows_all["data_id"])):
                data.tables[(source, data_id)] = _tables(frame, preds, data_id, opts)
        data.exports.append((source, metrics_frame(store)))


def _bands(
    rows: pd.DataFrame, preds: Predictions, task: Task, opts: SiteOptions
) -> dict[tuple[str, str], list[CurvePoint]]:
    bands = {}
    for mode in Mode:
        rows_m = rows[rows["mode"] == mode.value]
        if not mode.uses_rate or rows_m.empty:
            continue
        for metric in task.info.curve_metrics:
            bands[(mode.value, metric)] = curve_band(
                rows_m, preds, task, metric, n_boot=opts.n_boot_curves, seed=opts.seed
            )
    return bands


def _configs(store: ResultsStore, rows: pd.DataFrame) -> tuple[dict, ...]:
    seen: dict[str, dict] = {}
    for model, data_id, seed in (
        rows[["model", "data_id", "seed"]].drop_duplicates().itertuples(index=False)
    ):
        record = store.setting_record(
            TrainingSetting(str(model), DataSetting.parse(str(data_id)), int(seed))
        )
        if record is None:
            continue
        config = {"params": record["params"], "params_source": record["params_source"]}
        seen.setdefault(json.dumps(config, sort_keys=True, default=str), config)
    return tuple(seen.values())


def _tables(
    frame: pd.DataFrame, preds: Predictions, data_id: str, opts: SiteOptions
) -> list[Table]:
    """The tables ``table`` prints for this data setting, with the same defaults."""
    part = frame[frame["data_id"] == data_id]
    models = set(select(part, PRIMARY)["model"])
    baseline = opts.baseline if opts.baseline in models else None
    return build_tables(
        part,
        preds,
        TableOptions(
            baseline=baseline,
            alpha=opts.alpha,
            n_resamples=opts.n_resamples,
            n_boot=opts.n_boot,
            seed=opts.seed,
        ),
    )


def collect(opts: SiteOptions) -> SiteData:
    data = SiteData()
    if opts.leaderboards is not None:
        data.entries += load_leaderboards(opts.leaderboards)
    for folder in opts.results:
        load_results(folder, opts, data)
    if not data.entries:
        raise DataError("nothing to show: no leaderboard entries and no results")
    return data


@dataclass(frozen=True)
class ModelSize:
    """Parameter counts of a model as built for one data setting."""

    parameters: int
    """Everything but the text encoder."""
    text_encoder: int
    built_from: str
    """``stored run parameters`` or ``preset NAME``."""


def model_size(model: str, data_id: str, params: Mapping | None = None) -> ModelSize:
    """Build the model on CPU as ``describe`` does and count its parameters.

    ``params`` are a run's resolved parameters; without them the dataset's preset is used.
    Real data uses the published file dimensions and BERT-base shapes (no weights); synthetic
    data the default synthetic files and the tiny random text encoder of a plain ``run``.
    """
    from mer_bench.adapters import get_adapter
    from mer_bench.api import build_adapter
    from mer_bench.runner import preset_name

    setting = DataSetting.parse(data_id)
    built_from, preset = "stored run parameters", None
    if params is None:
        preset = preset_name(get_adapter(model), setting.dataset)
        built_from = f"preset {preset}"
    adapter = build_adapter(model, setting, params=params, preset=preset)
    prefixes = tuple(getattr(adapter, "text_encoder_prefixes", ("text_model.", "text_encoder.")))
    named = dict(adapter.model.named_parameters())
    text = sum(p.numel() for k, p in named.items() if k.startswith(prefixes))
    return ModelSize(sum(p.numel() for p in named.values()) - text, text, built_from)
