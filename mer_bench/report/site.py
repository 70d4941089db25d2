"""A static results site (``site``): leaderboards and results folders as self-contained pages.

The site opens from ``file://`` or any static host with no network: the charting library
(plotly.js, cartesian bundle) is vendored in ``site_assets/`` and copied next to the pages.

Every model × data setting is a leaderboard *entry* in the format of
:mod:`mer_bench.report.leaderboard`: committed JSON files are read as they are, a results folder
is turned into entries by the same code that ``leaderboard`` merges with, so both render
through one path. Results folders add what only per-sample predictions give: bootstrap bands
on the curves and the significance marks of ``table`` (built by
:func:`mer_bench.report.tables.build_tables`, so the tests and the Holm correction are the same).

Text from result and leaderboard files is data: it is HTML-escaped in the pages, embedded as
JSON that cannot close its ``<script>`` element, and inserted by the page scripts as text.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError, DataError
from mer_bench.metrics import LOWER_IS_BETTER
from mer_bench.protocol import CONDITIONS, RATES, DataSetting, Mode, Task, TrainingSetting
from mer_bench.report.data import AUILC, PRIMARY, Predictions, load_frame, select
from mer_bench.report.leaderboard import (
    entries_from_frame,
    model_slug,
    rank_value,
    read_entry,
)
from mer_bench.report.plots import CurvePoint, curve_band, display_name
from mer_bench.report.tables import (
    DOWN,
    RAW_SCALE,
    UP,
    Table,
    TableOptions,
    build_tables,
    fmt_diff,
    fmt_p,
    fmt_value,
    tables_frame,
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


# --------------------------------------------------------------------------- helpers


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _json_script(element_id: str, payload: object) -> str:
    """JSON inside a ``<script type=application/json>``: no ``<``, ``>``, ``&`` can end it."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_json_default)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f'<script type="application/json" id="{_e(element_id)}">{text}</script>'


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _num(float(value))
    return str(value)


def _num(value: object) -> float | None:
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


def setting_slug(data_id: str) -> str:
    return data_id.replace("/", "-")


def _scale(metric: str) -> float:
    return 1.0 if metric in RAW_SCALE else 100.0


def _stat_text(stat: Mapping | None, metric: str) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    sd = stat.get("sd")
    return fmt_value(metric, float(stat["mean"]), math.nan if sd is None else float(sd))


def _headline(task: Task) -> str:
    return task.info.curve_metrics[0]


def _rate_modes(entries: Iterable[SiteEntry]) -> list[str]:
    present = {m for s in entries for m in (s.entry.get("modes") or {})}
    return [m.value for m in Mode if m.uses_rate and m.value in present]


def _series_label(s: SiteEntry, clash: set[str]) -> str:
    """Legend label: the short model name, with its source where two sources share it."""
    name = display_name(s.model)
    return f"{name} [{s.source.label}]" if name in clash else name


def _page(title: str, depth: int, body: str, scripts: Sequence[str] = ()) -> str:
    up = "../" * depth
    tags = "".join(f'<script src="{up}assets/{_e(s)}"></script>' for s in scripts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)} · mer_bench</title>\n"
        '<link rel="icon" href="data:,">\n'
        f'<link rel="stylesheet" href="{up}assets/site.css">\n</head>\n<body>\n'
        f'<header><a class="home" href="{up}index.html">mer_bench results</a></header>\n'
        f"<main>\n{body}\n</main>\n"
        "<footer>Generated by <code>python -m mer_bench site</code>; opens offline.</footer>\n"
        f'{tags}<script src="{up}assets/site.js"></script>\n</body>\n</html>\n'
    )


# --------------------------------------------------------------------------- setting page


@dataclass(frozen=True)
class _Mark:
    mark: int
    p_holm: float
    text: str


def _marks(tables: Sequence[Table], metric: str) -> dict[tuple[str, str, str], _Mark]:
    """(model, mode, column) → the ``table`` mark of the headline metric."""
    out = {}
    for t in tables:
        if t.metric != metric:
            continue
        for block in t.blocks:
            for (model, col), e in block.entries.items():
                if e.comparison is None:
                    continue
                text = (
                    f"vs {t.baseline}: Δ {fmt_diff(metric, e.comparison)}, "
                    f"p (Holm) {fmt_p(e.p_holm)}"
                )
                out[(model, block.mode, col)] = _Mark(e.mark, e.p_holm, text)
    return out


def _mark_html(mark: _Mark | None) -> str:
    if mark is None:
        return ""
    symbol = {1: UP, -1: DOWN}.get(mark.mark, "")
    cls = {1: "better", -1: "worse"}.get(mark.mark, "ns")
    return f' <span class="sig {cls}" title="{_e(mark.text)}">{symbol or "·"}</span>'


def _td(col: str, text: str, sort: object = None, extra: str = "") -> str:
    sort_attr = "" if sort is None else f' data-sort="{_e(sort)}"'
    return f'<td data-col="{_e(col)}"{sort_attr}>{text}{extra}</td>'


def _setting_page(data_id: str, entries: list[SiteEntry], data: SiteData) -> tuple[str, list[dict]]:
    """HTML of one data setting's page and the rows of its CSV."""
    setting = DataSetting.parse(data_id)
    task = setting.task
    metric = _headline(task)
    lower = metric in LOWER_IS_BETTER
    measured = [s for s in entries if s.entry.get("modes")]

    def order(s: SiteEntry) -> tuple[int, float]:
        v = rank_value(s.entry, metric)
        return (1, 0.0) if math.isnan(v) else (0, v if lower else -v)

    measured.sort(key=order)
    modes = _rate_modes(measured)
    extra_cols = sorted({k for s in entries for k, _ in s.extras})
    names = [display_name(s.model) for s in measured]
    clash = {m for m in names if names.count(m) > 1}
    marks: dict[Source, dict] = {
        src: _marks(tables, metric) for (src, d), tables in data.tables.items() if d == data_id
    }

    head = ["rank", "model", *extra_cols, "source", "mean AUILC"]
    head += [f"AUILC {m}" for m in modes]
    head += [f"{metric} @ 0.0", "seeds", "selection", "provenance"]
    numeric = {"rank", "mean AUILC", "seeds", f"{metric} @ 0.0", *(f"AUILC {m}" for m in modes)}
    ths = "".join(
        f'<th data-col="{_e(h)}" data-type="{"num" if h in numeric else "text"}" '
        f'aria-sort="none" tabindex="0">{_e(h)}</th>'
        for h in head
    )
    body_rows = []
    csv_rows: list[dict] = []
    for rank, s in enumerate(measured, 1):
        e = s.entry
        extras = dict(s.extras)
        mk = marks.get(s.source, {})
        score = rank_value(e, metric)
        cells = [
            _td("rank", str(rank), rank),
            _td(
                "model",
                f'<a href="../models/{_e(model_slug(s.model))}.html">{_e(s.model)}</a>',
                s.model,
            ),
            *(_td(c, _e(extras.get(c, "")), extras.get(c, "")) for c in extra_cols),
            _td(
                "source",
                _e(s.source.kind.value),
                s.source.kind.value,
                f"<br><small>{_e(s.source.label)}</small>",
            ),
            _td(
                "mean AUILC",
                _e(_stat_text({"mean": _num(score)}, metric)),
                "" if math.isnan(score) else score,
            ),
        ]
        for m in modes:
            stat = (e["modes"].get(m) or {}).get("auilc", {}).get(metric)
            cells.append(
                _td(
                    f"AUILC {m}",
                    _e(_stat_text(stat, metric)),
                    "" if not stat or stat.get("mean") is None else stat["mean"],
                    _mark_html(mk.get((s.model, m, AUILC))),
                )
            )
        first = next((m for m in modes if m in e["modes"]), None)
        clean = (e["modes"][first].get("rates") or {}).get("0.0", {}).get(metric) if first else None
        cells.append(
            _td(
                f"{metric} @ 0.0",
                _e(_stat_text(clean, metric)),
                "" if not clean or clean.get("mean") is None else clean["mean"],
                _mark_html(mk.get((s.model, first, "0.0"))) if first else "",
            )
        )
        prov = e.get("provenance") or {}
        prov_text = " · ".join(
            str(x)
            for x in (
                str(prov.get("date") or "")[:10],
                f"git {str(prov.get('git_hash'))[:7]}" if prov.get("git_hash") else None,
                f"mer_bench {prov.get('mer_bench')}" if prov.get("mer_bench") else None,
                f"{prov.get('n_cells')} cells" if prov.get("n_cells") else None,
                f"protocol {e.get('protocol_version')}",
            )
            if x
        )
        selection = e.get("selection")
        sel_text = ", ".join(selection) if isinstance(selection, list) else str(selection)
        cells += [
            _td("seeds", str(len(e.get("seeds") or [])), len(e.get("seeds") or [])),
            _td("selection", _e(sel_text), sel_text),
            _td("provenance", f"<small>{_e(prov_text)}</small>", prov_text),
        ]
        body_rows.append(f'<tr class="measured">{"".join(cells)}</tr>')
        csv_rows += _csv_rows(s, data_id, extras, mk)

    reported = [(s, r) for s in entries for r in (s.entry.get("reported") or [])]
    reported_rows = []
    for s, r in reported:
        value = (r.get("metrics") or {}).get(metric)
        extras = dict(s.extras)
        cells = [
            _td("rank", "", ""),
            _td(
                "model",
                f'<a href="../models/{_e(model_slug(s.model))}.html">{_e(s.model)}</a>',
                s.model,
            ),
            *(_td(c, _e(extras.get(c, "")), extras.get(c, "")) for c in extra_cols),
            _td("source", SourceKind.REPORTED.value, SourceKind.REPORTED.value),
            _td("mean AUILC", "–", ""),
            *(_td(f"AUILC {m}", "–", "") for m in modes),
            _td(
                f"{metric} @ 0.0",
                _e(_stat_text({"mean": value}, metric)),
                "" if value is None else value,
            ),
            _td("seeds", "–", ""),
            _td("selection", "reported", "reported"),
            _td("provenance", f"<small>{_e(r.get('source', ''))}</small>", r.get("source", "")),
        ]
        reported_rows.append(f'<tr class="reported">{"".join(cells)}</tr>')
        for name, v in (r.get("metrics") or {}).items():
            csv_rows.append(
                {
                    "data_setting": data_id,
                    "model": s.model,
                    "source": SourceKind.REPORTED.value,
                    "source_detail": r.get("source", ""),
                    **extras,
                    "mode": "",
                    "column": "complete data",
                    "metric": name,
                    "mean": v,
                }
            )
    width = len(head)
    table = (
        f'<div class="scroll"><table class="board" id="leaderboard"><thead><tr>{ths}</tr></thead>\n'
        f'<tbody class="measured">{"".join(body_rows)}</tbody>\n'
    )
    if reported_rows:
        table += (
            '<tbody class="reported"><tr class="group"><th colspan="'
            f'{width}">Reported figures: published complete-data numbers, not measured by '
            f"mer_bench</th></tr>{''.join(reported_rows)}</tbody>\n"
        )
    table += "</table></div>"

    filters = ['<input type="search" id="filter" placeholder="filter rows (any text)">']
    for col in ["source", *extra_cols, "selection"]:
        values = sorted(
            {_cell_value(s, col) for s in measured}
            | (
                {SourceKind.REPORTED.value}
                if reported and col in ("source", "selection")
                else set()
            )
        )
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        filters.append(
            f'<label>{_e(col)} <select data-filter="{_e(col)}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    slug = setting_slug(data_id)
    downloads = [f'<a href="../data/{_e(slug)}.csv" download>CSV of this page</a>']
    sig_html = _significance_html(data_id, data)
    if sig_html:
        downloads.append(
            f'<a href="../data/{_e(slug)}-significance.csv" download>significance tests (CSV)</a>'
        )
    scale_note = "" if metric in RAW_SCALE else " (%)"
    intro = (
        f"<p>Measured entries ranked by the AUILC of <b>{_e(metric)}</b>{scale_note} "
        "(area under the metric-vs-missing-rate curve, mean over the rate-based modes); values "
        "are mean ± sd over seeds (ddof=1). "
        f"{UP}/{DOWN}: significantly better/worse than the baseline of <code>table</code> "
        "(paired permutation test on identical masks, Holm-corrected over the table); hover a "
        "mark for Δ and p. Click a column header to sort.</p>"
    )
    chart_payload = _chart_payload(setting, measured, clash)
    charts = (
        '<section id="curves"><h2>Degradation curves</h2>'
        "<p>Hover a point for mean, sd, 95% band and per-seed values; click a legend entry to "
        "hide or show a model (double-click: only that model). Bands: 95% paired bootstrap over "
        "seeds and samples (results folders only; leaderboard files hold no predictions).</p>"
        '<label>metric <select id="curve-metric"></select></label>'
        '<div id="curve-charts"></div></section>'
    )
    if not measured:
        charts = (
            "<p>No measured entries for this data setting yet: run "
            "<code>python -m mer_bench run</code> on it, then build the site with "
            "<code>--results</code>.</p>"
        )
    elif chart_payload["smm"]["series"]:
        charts += (
            '<section id="smm"><h2>Specific-modality missing (SMM)</h2>'
            "<p>Rows: models; columns: the modalities kept. Mean over seeds.</p>"
            '<div id="smm-chart" class="chart"></div></section>'
        )
    body = (
        f"<h1>{_e(data_id)}</h1>\n{intro}\n"
        f'<div class="controls">{"".join(filters)}'
        f'<span id="row-count"></span><span class="downloads">{" · ".join(downloads)}</span>'
        f"</div>\n{table}\n{_reported_html(reported)}\n{charts}\n{sig_html}\n"
        + (_json_script("page-data", chart_payload) if measured else "")
    )
    return _page(data_id, 1, body, (CHART_JS,)), csv_rows


def _reported_html(reported: Sequence[tuple[SiteEntry, Mapping]]) -> str:
    """Every published figure of the setting, all metrics, with its source and note."""
    if not reported:
        return ""
    names = sorted({k for _, r in reported for k in (r.get("metrics") or {})})
    head = "".join(
        f'<th data-col="{_e(h)}" data-type="{"num" if h in names else "text"}" '
        f'aria-sort="none" tabindex="0">{_e(h)}</th>'
        for h in ["model", *names, "source", "note"]
    )
    rows = []
    for s, r in reported:
        metrics = r.get("metrics") or {}
        cells = [_td("model", _e(s.model), s.model)]
        for n in names:
            v = metrics.get(n)
            cells.append(_td(n, _e(_stat_text({"mean": v}, n)), "" if v is None else v))
        cells.append(_td("source", f"<small>{_e(r.get('source', ''))}</small>", r.get("source")))
        cells.append(_td("note", f"<small>{_e(r.get('note', ''))}</small>", r.get("note", "")))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        "<details><summary>Reported figures, all metrics</summary>"
        f'<table class="board detail"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


def _cell_value(s: SiteEntry, col: str) -> str:
    if col == "source":
        return s.source.kind.value
    if col == "selection":
        sel = s.entry.get("selection")
        return ", ".join(sel) if isinstance(sel, list) else str(sel)
    return dict(s.extras).get(col, "")


def _csv_rows(s: SiteEntry, data_id: str, extras: dict, marks: dict) -> list[dict]:
    rows = []
    base = {
        "data_setting": data_id,
        "model": s.model,
        "source": s.source.kind.value,
        "source_detail": s.source.label,
        **extras,
    }
    for mode, block in (s.entry.get("modes") or {}).items():
        groups = [
            *((r, st) for r, st in (block.get("rates") or {}).items()),
            *((AUILC, st) for st in [block.get("auilc") or {}]),
            *((c, st) for c, st in (block.get("conditions") or {}).items()),
        ]
        for column, stats in groups:
            for metric, stat in stats.items():
                band = {f"{p.rate:.1f}": p for p in s.bands.get((mode, metric), [])}.get(column)
                mark = marks.get((s.model, mode, column))
                rows.append(
                    {
                        **base,
                        "mode": mode,
                        "column": column,
                        "metric": metric,
                        "mean": stat.get("mean"),
                        "sd": stat.get("sd"),
                        "per_seed": ";".join(str(v) for v in stat.get("per_seed") or []),
                        "ci_low": band.ci_low if band else None,
                        "ci_high": band.ci_high if band else None,
                        "significant": (
                            {1: "better", -1: "worse"}.get(mark.mark, "") if mark else None
                        ),
                        "p_holm": mark.p_holm if mark else None,
                    }
                )
    return rows


def _per_seed(stat: Mapping, seeds: Sequence[int]) -> list[list]:
    values = stat.get("per_seed") or []
    ids: Sequence[int | None] = seeds if len(seeds) == len(values) else [None] * len(values)
    return [[i, _num(v)] for i, v in zip(ids, values)]


def _chart_payload(setting: DataSetting, measured: list[SiteEntry], clash: set[str]) -> dict:
    task = setting.task
    modes = _rate_modes(measured)
    series = []
    smm_series = []
    for s in measured:
        seeds = [int(x) for x in s.entry.get("seeds") or []]
        curves: dict[str, dict[str, list[dict]]] = {}
        for mode in modes:
            block = (s.entry["modes"].get(mode) or {}).get("rates") or {}
            if not block:
                continue
            curves[mode] = {}
            for metric in task.info.metrics:
                band = {f"{p.rate:.1f}": p for p in s.bands.get((mode, metric), [])}
                points = []
                for rate in RATES:
                    stat = (block.get(f"{rate:.1f}") or {}).get(metric)
                    if not stat or stat.get("mean") is None:
                        continue
                    p = band.get(f"{rate:.1f}")
                    points.append(
                        {
                            "rate": rate,
                            "mean": _num(stat["mean"]),
                            "sd": _num(stat.get("sd")),
                            "per_seed": (
                                [[sd, _num(v)] for sd, v in p.per_seed]
                                if p
                                else _per_seed(stat, seeds)
                            ),
                            "ci": [_num(p.ci_low), _num(p.ci_high)] if p else None,
                        }
                    )
                if points:
                    curves[mode][metric] = points
        label = _series_label(s, clash)
        series.append(
            {"name": label, "model": s.model, "source": s.source.kind.value, "curves": curves}
        )
        smm = (s.entry["modes"].get(Mode.SMM.value) or {}).get("conditions") or {}
        if smm:
            smm_series.append(
                {
                    "name": label,
                    "values": {
                        metric: {
                            c: {
                                "mean": _num(st[metric].get("mean")),
                                "sd": _num(st[metric].get("sd")),
                                "per_seed": _per_seed(st[metric], seeds),
                            }
                            for c, st in smm.items()
                            if metric in st
                        }
                        for metric in task.info.metrics
                    },
                }
            )
    return {
        "data_setting": setting.id,
        "metrics": list(task.info.metrics),
        "default_metric": _headline(task),
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "scale": {m: _scale(m) for m in task.info.metrics},
        "modes": modes,
        "series": series,
        "smm": {"conditions": list(CONDITIONS), "series": smm_series},
    }


def _significance_html(data_id: str, data: SiteData) -> str:
    parts = []
    for (src, d), tables in data.tables.items():
        if d != data_id:
            continue
        for t in tables:
            rows = [
                (m, b.mode, c, b.entries[(m, c)])
                for b in t.blocks
                for m in t.models
                for c in b.columns
                if (m, c) in b.entries and b.entries[(m, c)].comparison is not None
            ]
            if not rows:
                continue
            trs = "".join(
                "<tr>"
                + _td("model", _e(m), m)
                + _td("mode", _e(mode), mode)
                + _td("column", _e(c), c)
                + _td(
                    "Δ [95% CI]",
                    _e(fmt_diff(t.metric, e.comparison)) + _mark_html(_Mark(e.mark, e.p_holm, "")),
                    e.comparison.diff,
                )
                + _td("p", _e(fmt_p(e.comparison.p_value)), e.comparison.p_value)
                + _td("p (Holm)", _e(fmt_p(e.p_holm)), e.p_holm)
                + _td(
                    "ASO ε_min",
                    "n/a" if e.comparison.aso_eps is None else f"{e.comparison.aso_eps:.2f}",
                    "" if e.comparison.aso_eps is None else e.comparison.aso_eps,
                )
                + "</tr>"
                for m, mode, c, e in rows
            )
            head = "".join(
                f'<th data-col="{h}" data-type="{ty}" aria-sort="none" tabindex="0">{_e(h)}</th>'
                for h, ty in (
                    ("model", "text"),
                    ("mode", "text"),
                    ("column", "text"),
                    ("Δ [95% CI]", "num"),
                    ("p", "num"),
                    ("p (Holm)", "num"),
                    ("ASO ε_min", "num"),
                )
            )
            parts.append(
                f"<details><summary>{_e(t.metric)} — results {_e(src.label)}</summary>"
                f"<p>{_e(t.caption())}</p>"
                f'<table class="board detail"><thead><tr>{head}</tr></thead>'
                f"<tbody>{trs}</tbody></table><p><small>{_e(t.footnote())}</small></p></details>"
            )
    if not parts:
        return ""
    return (
        '<section id="significance"><h2>Significance against the baseline</h2>'
        "<p>The tests of <code>python -m mer_bench table</code> on the same results.</p>"
        + "".join(parts)
        + "</section>"
    )


# --------------------------------------------------------------------------- model pages


def _cells_of(entry: Mapping) -> list[str]:
    data_id = "/".join(str(entry["setting"][k]) for k in SETTING_AXES)
    cells = []
    for mode, block in (entry.get("modes") or {}).items():
        cells += [f"{data_id}/{mode}@{r}" for r in (block.get("rates") or {})]
        cells += [f"{data_id}/{mode}[{c}]" for c in (block.get("conditions") or {})]
    return cells


def _adapter_info(model: str) -> str:
    from mer_bench.adapters import available_adapters, get_adapter
    from mer_bench.errors import MerBenchError

    try:
        cls = get_adapter(model)
    except MerBenchError as exc:
        return f"<p>Adapter not available here: {_e(exc)}</p>"
    source = available_adapters().get(model, f"{cls.__module__}:{cls.__qualname__}")
    presets = json.dumps({k: dict(v) for k, v in cls.presets.items()}, indent=1, default=str)
    return (
        f"<p>Adapter <code>{_e(source)}</code>; tasks: "
        f"{_e(', '.join(t.value for t in cls.tasks))}.</p>"
        f"<details><summary>presets ({len(cls.presets)})</summary><pre>{_e(presets)}</pre></details>"
    )


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
    from mer_bench.adapters import AdapterContext, get_adapter
    from mer_bench.protocol import Dataset
    from mer_bench.runner import preset_name
    from mer_bench.text_encoder import BERT_BASE_SHAPE

    setting = DataSetting.parse(data_id)
    cls = get_adapter(model)
    built_from = "stored run parameters"
    if params is None:
        preset = preset_name(cls, setting.dataset)
        params = cls.resolve_params(preset, {})
        built_from = f"preset {preset}"
    if setting.dataset is Dataset.SYNTH:
        from mer_bench.data.loaders import load_bundle

        spec, encoder = load_bundle(setting).spec, None
    else:
        from mer_bench.data.dims import published_spec

        spec, encoder = published_spec(setting), BERT_BASE_SHAPE
    adapter = cls(AdapterContext(spec=spec, task=setting.task, params=params, text_encoder=encoder))
    prefixes = tuple(getattr(adapter, "text_encoder_prefixes", ("text_model.", "text_encoder.")))
    named = dict(adapter.model.named_parameters())
    text = sum(p.numel() for k, p in named.items() if k.startswith(prefixes))
    return ModelSize(sum(p.numel() for p in named.values()) - text, text, built_from)


def _sizes_html(model: str, entries: Sequence[SiteEntry]) -> str:
    from mer_bench.errors import MerBenchError

    rows = []
    done: set[tuple[str, str]] = set()
    for s in sorted(entries, key=lambda s: s.data_id):
        if not s.entry.get("modes"):
            continue
        params = s.configs[0]["params"] if len(s.configs) == 1 else None
        key = (s.data_id, json.dumps(params, sort_keys=True, default=str))
        if key in done:
            continue
        done.add(key)
        try:
            size = model_size(model, s.data_id, params)
        except MerBenchError as exc:
            rows.append(f"<tr><td>{_e(s.data_id)}</td><td colspan=3>n/a: {_e(exc)}</td></tr>")
            continue
        rows.append(
            f"<tr>{_td('data setting', _e(s.data_id))}"
            f"{_td('parameters', f'{size.parameters:,}', size.parameters)}"
            f"{_td('text encoder', f'{size.text_encoder:,}', size.text_encoder)}"
            f"{_td('built from', _e(size.built_from))}</tr>"
        )
    if not rows:
        return ""
    return (
        "<h2>Parameter counts</h2>"
        '<table class="board detail"><thead><tr><th>data setting</th>'
        "<th>parameters (without text encoder)</th><th>text encoder</th><th>built from</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _model_page(model: str, entries: list[SiteEntry], sizes: bool = True) -> str:
    rows = []
    configs = []
    cells_html = []
    for s in sorted(entries, key=lambda s: (s.data_id, s.source.label)):
        e = s.entry
        prov = e.get("provenance") or {}
        slug = setting_slug(s.data_id)
        cells = _cells_of(e)
        kind = s.source.kind.value if e.get("modes") else "reported only"
        rows.append(
            "<tr>"
            + _td(
                "data setting",
                f'<a href="../settings/{_e(slug)}.html">{_e(s.data_id)}</a>',
                s.data_id,
            )
            + "".join(_td(k, _e(v), v) for k, v in s.extras)
            + _td("source", f"{_e(kind)}<br><small>{_e(s.source.label)}</small>", kind)
            + _td(
                "seeds",
                _e(", ".join(str(x) for x in e.get("seeds") or [])),
                len(e.get("seeds") or []),
            )
            + _td("selection", _e(e.get("selection") or "–"), str(e.get("selection") or ""))
            + _td("cells", str(len(cells)), len(cells))
            + _td("date", _e(prov.get("date", "")), prov.get("date", ""))
            + _td("git", _e(str(prov.get("git_hash") or "")[:10]), prov.get("git_hash") or "")
            + "</tr>"
        )
        for config in s.configs:
            configs.append(
                f"<details><summary>{_e(s.data_id)} ({_e(s.source.label)})</summary>"
                f"<pre>{_e(json.dumps(config, indent=1, sort_keys=True, default=str))}</pre></details>"
            )
        if cells:
            items = "".join(f"<li><code>{_e(c)}</code></li>" for c in cells)
            cells_html.append(
                f"<details><summary>{_e(s.data_id)} · {_e(s.source.label)}: {len(cells)} cells"
                f'</summary><ul class="cells">{items}</ul></details>'
            )
    extras = sorted({k for s in entries for k, _ in s.extras})
    head = ["data setting", *extras, "source", "seeds", "selection", "cells", "date", "git"]
    ths = "".join(
        f'<th data-col="{_e(h)}" data-type="{"num" if h in ("seeds", "cells") else "text"}" '
        f'aria-sort="none" tabindex="0">{_e(h)}</th>'
        for h in head
    )
    body = (
        f"<h1>{_e(model)}</h1>\n{_adapter_info(model)}\n"
        + (_sizes_html(model, entries) if sizes else "")
        + "\n"
        f'<h2>Entries</h2><table class="board"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>\n"
        "<h2>Configuration</h2>"
        + ("".join(configs) or "<p>Resolved parameters are stored with results folders only.</p>")
        + "<h2>Cells evaluated</h2>"
        + ("".join(cells_html) or "<p>None (reported figures only).</p>")
    )
    return _page(model, 1, body)


# --------------------------------------------------------------------------- index


def _index_page(data: SiteData, by_setting: dict[str, list[SiteEntry]], exports: list[str]) -> str:
    rows = []
    for data_id, entries in by_setting.items():
        task = DataSetting.parse(data_id).task
        metric = _headline(task)
        measured = [s for s in entries if s.entry.get("modes")]
        scores = [(rank_value(s.entry, metric), s.model) for s in measured]
        scores = [x for x in scores if not math.isnan(x[0])]
        best = ""
        if scores:
            pick = min if metric in LOWER_IS_BETTER else max
            v, name = pick(scores)
            best = f"{name} ({_stat_text({'mean': v}, metric)})"
        n_reported = sum(len(s.entry.get("reported") or []) for s in entries)
        rows.append(
            "<tr>"
            + _td(
                "data setting",
                f'<a href="settings/{_e(setting_slug(data_id))}.html">{_e(data_id)}</a>',
                data_id,
            )
            + _td("models", str(len({s.model for s in measured})), len({s.model for s in measured}))
            + _td("reported", str(n_reported), n_reported)
            + _td("ranking metric", _e(metric), metric)
            + _td("best mean AUILC", _e(best), best)
            + "</tr>"
        )
    models = sorted({s.model for s in data.entries})
    model_links = "".join(
        f'<li><a href="models/{_e(model_slug(m))}.html">{_e(m)}</a></li>' for m in models
    )
    sources = sorted({(s.source.kind.value, s.source.label) for s in data.entries})
    src_html = "".join(f"<li>{_e(k)}: <code>{_e(label)}</code></li>" for k, label in sources)
    ths = "".join(
        f'<th data-col="{h}" data-type="{ty}" aria-sort="none" tabindex="0">{_e(h)}</th>'
        for h, ty in (
            ("data setting", "text"),
            ("models", "num"),
            ("reported", "num"),
            ("ranking metric", "text"),
            ("best mean AUILC", "text"),
        )
    )
    downloads = "".join(f'<li><a href="{_e(p)}" download>{_e(p)}</a></li>' for p in exports)
    body = (
        "<h1>mer_bench results</h1>\n"
        "<p>Robustness of multimodal emotion recognition under missing modalities and "
        "distribution shift: one page per data setting (dataset / distribution / alignment / "
        "task), one per model.</p>\n"
        f"<h2>Sources</h2><ul>{src_html}</ul>\n"
        '<h2>Data settings</h2><div class="controls"><input type="search" id="filter" '
        'placeholder="filter rows (any text)"><span id="row-count"></span></div>'
        f'<table class="board" id="settings"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>\n"
        f"<h2>Models</h2><ul>{model_links}</ul>\n"
        + (f"<h2>Downloads</h2><ul>{downloads}</ul>\n" if downloads else "")
    )
    return _page("results", 0, body)


# --------------------------------------------------------------------------- driver


def build_site(opts: SiteOptions, out: Path) -> list[Path]:
    """Write the site under ``out``; returns the pages written (index first)."""
    data = collect(opts)
    for sub in ("assets", "settings", "models", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        shutil.copyfile(ASSETS / name, out / "assets" / name)
    by_setting: dict[str, list[SiteEntry]] = {}
    for s in data.entries:
        by_setting.setdefault(s.data_id, []).append(s)
    by_setting = dict(sorted(by_setting.items()))
    pages: list[Path] = []
    for data_id, entries in by_setting.items():
        slug = setting_slug(data_id)
        page, csv_rows = _setting_page(data_id, entries, data)
        path = out / "settings" / f"{slug}.html"
        path.write_text(page, encoding="utf-8")
        pages.append(path)
        pd.DataFrame.from_records(csv_rows).to_csv(out / "data" / f"{slug}.csv", index=False)
        tables = [t for (_, d), ts in data.tables.items() if d == data_id for t in ts]
        if tables and any(t.n_comparisons for t in tables):
            frames = []
            for (src, d), ts in data.tables.items():
                if d == data_id and ts:
                    frames.append(tables_frame(ts).assign(source=src.label))
            pd.concat(frames, ignore_index=True).to_csv(
                out / "data" / f"{slug}-significance.csv", index=False
            )
    by_model: dict[str, list[SiteEntry]] = {}
    for s in data.entries:
        by_model.setdefault(s.model, []).append(s)
    for model, entries in sorted(by_model.items()):
        path = out / "models" / f"{model_slug(model)}.html"
        path.write_text(_model_page(model, entries, opts.model_sizes), encoding="utf-8")
        pages.append(path)
    exports = []
    for i, (_, frame) in enumerate(data.exports, 1):
        name = f"data/results-{i}-metrics.csv"
        frame.to_csv(out / name, index=False)
        exports.append(name)
        try:
            frame.to_parquet(out / f"data/results-{i}-metrics.parquet", index=False)
            exports.append(f"data/results-{i}-metrics.parquet")
        except ImportError:
            pass  # parquet is optional (the ``parquet`` extra); the CSV carries the same data
    index = out / "index.html"
    index.write_text(_index_page(data, by_setting, exports), encoding="utf-8")
    return [index, *pages]
