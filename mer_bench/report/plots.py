"""Figures (``plot``): degradation curves, SMM heatmaps, AUILC bars, critical-difference diagram.

One consistent style: Okabe–Ito colour-blind-safe palette, 8 pt type, widths of a paper column
(3.4 in) or a full page (7 in); every figure is written as PNG (300 dpi) and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError, DataError
from mer_bench.metrics import Aggregate, auilc, higher_is_better, mean_sd
from mer_bench.params import shorten
from mer_bench.protocol import CONDITIONS, RATES, Mode, Task
from mer_bench.report.data import (
    PRIMARY,
    Predictions,
    model_order,
    seed_auilc,
    seed_relative_robustness,
    select,
)
from mer_bench.report.leaderboard import read_reported
from mer_bench.report.stats import (
    RankResult,
    bootstrap_values,
    bootstrap_weights,
    friedman_nemenyi,
    percentile_ci,
)

OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLUMN_IN = 3.4
PAGE_IN = 7.0
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
}


@dataclass(frozen=True)
class ReportedCurve:
    """A published metric-vs-missing-rate curve (a ``per_rate`` item of reported.json)."""

    model: str
    data_id: str
    """The data setting it was measured on, e.g. ``mosi/iid/unaligned/regression``."""
    mode: str
    """The mer_bench mode whose panel it belongs on (e.g. ``RMFM``)."""
    rates: tuple[float, ...]
    values: Mapping[str, tuple[float, ...]]
    """metric → one value per rate (``nan`` where the paper gives none)."""
    selection: str | None = None
    """How the paper chose its checkpoints, when it is not honest (e.g. ``test-selected``)."""

    @property
    def label(self) -> str:
        return f"{display_name(self.model)} reported" + (
            f" ({self.selection})" if self.selection else ""
        )


def load_reported_curves(path: Path) -> tuple[ReportedCurve, ...]:
    """The per-rate curves of a reported-figures file (items without ``per_rate`` are skipped)."""
    items = read_reported(Path(path))
    try:
        curves = []
        for item in items:
            per_rate = item.get("per_rate")
            if not per_rate:
                continue
            rates = sorted(per_rate["rates"], key=float)
            metrics = sorted({m for r in rates for m in per_rate["rates"][r]})
            curves.append(
                ReportedCurve(
                    model=item["model"],
                    data_id=item["setting"],
                    mode=per_rate["mode"],
                    rates=tuple(float(r) for r in rates),
                    values={
                        m: tuple(float(per_rate["rates"][r].get(m, math.nan)) for r in rates)
                        for m in metrics
                    },
                    selection=item.get("selection"),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"cannot read reported curves from {path}: {shorten(str(exc))}") from None
    return tuple(curves)


@dataclass(frozen=True)
class PlotOptions:
    metric: str | None = None
    """Metric to plot; None = the task's first curve metric."""
    models: tuple[str, ...] = ()
    selection: str = PRIMARY
    n_boot: int = 500
    seed: int = 0
    formats: tuple[str, ...] = ("png", "pdf")
    dpi: int = 300
    reported: tuple[ReportedCurve, ...] = field(default=())
    """Published curves drawn dashed on the curve panels of the same setting and mode."""


def display_name(model: str) -> str:
    """Short legend label: ``pkg.module:Class`` → ``Class``."""
    return model.rsplit(":", 1)[-1]


def _scale(metric: str) -> float:
    return 1.0 if metric in ("mae", "corr") else 100.0


def _axis_label(metric: str) -> str:
    return metric + ("" if metric in ("mae", "corr") else " (%)")


def _slug(text: str) -> str:
    return text.replace("/", "_")


def _save(fig: plt.Figure, out: Path, stem: str, opts: PlotOptions) -> list[Path]:
    paths = []
    for ext in opts.formats:
        path = out / f"{stem}.{ext}"
        fig.savefig(path, dpi=opts.dpi)
        paths.append(path)
    plt.close(fig)
    return paths


def _metric_for(task: Task, opts: PlotOptions) -> str:
    metric = opts.metric or task.info.curve_metrics[0]
    if metric not in task.info.metrics:
        raise ConfigError(
            f"metric {metric!r} is not reported for task {task.value}; "
            f"valid: {', '.join(task.info.metrics)}"
        )
    return metric


def _colours(models: Sequence[str]) -> dict[str, tuple[str, str]]:
    return {m: (OKABE_ITO[i % 8], MARKERS[i % 8]) for i, m in enumerate(models)}


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurvePoint:
    """One point of a degradation curve: the metric at one rate over seeds, with its band."""

    rate: float
    mean: float
    sd: float
    per_seed: tuple[tuple[int, float], ...]
    """(seed, value) pairs, seeds ascending."""
    ci_low: float
    ci_high: float
    """95% paired bootstrap interval over the seeds shared by every rate, and samples."""


def curve_band(
    rows: pd.DataFrame,
    preds: Predictions,
    task: Task,
    metric: str,
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> list[CurvePoint]:
    """The curve of one model in one (data setting, mode): a point per rate present.

    One set of bootstrap draws serves every rate, so the band is paired across the curve.
    """
    rates = [r for r in RATES if np.isclose(rows["rate"].astype(float), r).any()]
    if not rates:
        return []
    cells = [rows[np.isclose(rows["rate"].astype(float), r)] for r in rates]
    common = sorted(set.intersection(*(set(c["seed"]) for c in cells)))
    views = [preds.view(c[c["seed"].isin(common)], task, metric) for c in cells]
    weights = bootstrap_weights(
        len(common), views[0].truth.shape[1], n_boot, np.random.default_rng(seed)
    )
    points = []
    for rate, cell, view in zip(rates, cells, views):
        cell = cell.sort_values("seed")
        mean, sd = mean_sd(cell[metric].to_numpy())
        lo, hi = percentile_ci(bootstrap_values([view], weights))
        per_seed = tuple((int(s), float(v)) for s, v in zip(cell["seed"], cell[metric]))
        points.append(CurvePoint(rate, mean, sd, per_seed, lo, hi))
    return points


def curve_label(
    model: str,
    rows: pd.DataFrame,
    metric: str,
    rates: Sequence[float],
    means: Sequence[float],
) -> str:
    """A curve's legend entry: the model, its AUILC and its relative robustness RR (AUILC over
    the clean score), both means over seeds as in the leaderboards; the AUILC of the mean curve
    when no seed has every rate, and only the name when the curve is incomplete."""
    scale = _scale(metric)
    area = seed_auilc(rows, metric)
    if not area.empty:
        text = f"AUILC {area.mean() * scale:.1f}"
        relative = seed_relative_robustness(rows, metric, Aggregate.AUILC)
        relative = relative[np.isfinite(relative)]
        if not relative.empty:
            text += f", RR {relative.mean():.2f}"
    elif len(rates) == len(RATES):
        text = f"AUILC {auilc(means) * scale:.1f}"
    else:
        return display_name(model)
    return f"{display_name(model)} ({text})"


def degradation_curves(
    rows_d: pd.DataFrame, preds: Predictions, data_id: str, opts: PlotOptions, out: Path
) -> list[Path]:
    """Metric vs missing rate, one panel per rate-based mode, one line per model, 95% bands."""
    task = Task(rows_d["task"].iloc[0])
    metric = _metric_for(task, opts)
    models = model_order(rows_d, opts.models or None)
    modes = [m for m in Mode if m.uses_rate and (rows_d["mode"] == m.value).any()]
    if not modes:
        return []
    scale = _scale(metric)
    style = _colours(models)
    ncols = min(3, len(modes))
    nrows = math.ceil(len(modes) / ncols)
    width = COLUMN_IN if ncols == 1 else PAGE_IN
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(width, (2.0 + 0.17 * len(models)) * nrows),
            sharey=True,
            squeeze=False,
        )
        for ax, mode in zip(axes.flat, modes):
            rows_m = rows_d[rows_d["mode"] == mode.value]
            for model in models:
                rows = rows_m[rows_m["model"] == model]
                band = curve_band(rows, preds, task, metric, n_boot=opts.n_boot, seed=opts.seed)
                if not band:
                    continue
                rates = [p.rate for p in band]
                means = [p.mean for p in band]
                lows = [p.ci_low for p in band]
                highs = [p.ci_high for p in band]
                colour, marker = style[model]
                label = curve_label(model, rows, metric, rates, means)
                x = np.asarray(rates)
                ax.plot(x, np.asarray(means) * scale, color=colour, marker=marker, label=label)
                ax.fill_between(
                    x,
                    np.asarray(lows) * scale,
                    np.asarray(highs) * scale,
                    color=colour,
                    alpha=0.18,
                    linewidth=0,
                )
            _overlay_reported(ax, opts.reported, data_id, mode, metric, style)
            # the axis name lives in the title so the legend below never collides with it
            ax.set_title(f"{mode.value}: {metric} vs missing rate")
            ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            # below the panel: never hides a curve, and keeps each panel's AUILCs next to it
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        for ax in axes[:, 0]:
            ax.set_ylabel(_axis_label(metric))
        for ax in list(axes.flat)[len(modes) :]:
            ax.set_visible(False)
        fig.suptitle(
            f"{data_id}\n(band: 95% paired bootstrap over seeds and samples)", fontsize=7, y=1.0
        )
        fig.tight_layout()
        return _save(fig, out, f"curves_{_slug(data_id)}_{metric}", opts)


def _overlay_reported(
    ax: plt.Axes,
    curves: Sequence[ReportedCurve],
    data_id: str,
    mode: Mode,
    metric: str,
    style: Mapping[str, tuple[str, str]],
) -> None:
    """Dashed published curves of this setting and mode (real data only: synth has none)."""
    if data_id.startswith("synth/"):
        return
    for curve in curves:
        if curve.data_id != data_id or curve.mode != mode.value or metric not in curve.values:
            continue
        colour = style[curve.model][0] if curve.model in style else "0.35"
        ax.plot(
            np.asarray(curve.rates),
            np.asarray(curve.values[metric]) * _scale(metric),
            color=colour,
            linestyle="--",
            marker="none",
            label=curve.label,
        )


# --------------------------------------------------------------------------- SMM heatmap


def smm_heatmap(rows_d: pd.DataFrame, data_id: str, opts: PlotOptions, out: Path) -> list[Path]:
    """Models × the 7 kept-modality conditions, mean over seeds annotated in each cell."""
    task = Task(rows_d["task"].iloc[0])
    metric = _metric_for(task, opts)
    rows_s = rows_d[rows_d["mode"] == Mode.SMM.value]
    if rows_s.empty:
        return []
    models = model_order(rows_s, opts.models or None)
    table = rows_s.groupby(["model", "condition"])[metric].mean().unstack("condition")
    table = table.reindex(index=models, columns=list(CONDITIONS)) * _scale(metric)
    cmap = "viridis" if higher_is_better(metric) else "viridis_r"
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.45 * len(models) + 1.0))
        values = table.to_numpy(dtype=np.float64)
        image = ax.imshow(values, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(CONDITIONS)), [f"{c}" for c in CONDITIONS])
        ax.set_yticks(range(len(models)), [display_name(m) for m in models])
        ax.set_xlabel("kept modalities (SMM)")
        finite = values[np.isfinite(values)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                light = (v < mid) == higher_is_better(metric)
                ax.text(
                    j,
                    i,
                    f"{v:.1f}" if _scale(metric) > 1 else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if light else "black",
                )
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label(_axis_label(metric))
        ax.set_title(data_id)
        return _save(fig, out, f"smm_{_slug(data_id)}_{metric}", opts)


# --------------------------------------------------------------------------- AUILC bars


def auilc_bars(rows_d: pd.DataFrame, data_id: str, opts: PlotOptions, out: Path) -> list[Path]:
    """AUILC per mode (groups) and model (bars), error bars = sd over seeds (ddof=1)."""
    task = Task(rows_d["task"].iloc[0])
    metric = _metric_for(task, opts)
    models = model_order(rows_d, opts.models or None)
    modes = [m for m in Mode if m.uses_rate and (rows_d["mode"] == m.value).any()]
    stats: dict[tuple[str, str], tuple[float, float]] = {}
    for mode in modes:
        for model in models:
            rows = rows_d[(rows_d["mode"] == mode.value) & (rows_d["model"] == model)]
            area = seed_auilc(rows, metric)
            if not area.empty:
                stats[(mode.value, model)] = mean_sd(area.to_numpy())
    modes = [m for m in modes if any((m.value, x) in stats for x in models)]
    if not modes:
        return []
    scale = _scale(metric)
    style = _colours(models)
    width = 0.8 / len(models)
    with plt.rc_context({**STYLE, "axes.grid.axis": "y"}):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.3))
        for k, model in enumerate(models):
            xs, ys, errs = [], [], []
            for i, mode in enumerate(modes):
                if (mode.value, model) in stats:
                    mean, sd = stats[(mode.value, model)]
                    xs.append(i + (k - (len(models) - 1) / 2) * width)
                    ys.append(mean * scale)
                    errs.append(0.0 if not math.isfinite(sd) else sd * scale)
            ax.bar(
                xs,
                ys,
                width * 0.92,
                yerr=errs,
                capsize=2,
                color=style[model][0],
                label=display_name(model),
                error_kw={"linewidth": 0.8},
            )
        ax.set_xticks(range(len(modes)), [m.value for m in modes])
        ax.set_ylabel(f"AUILC of {_axis_label(metric)}")
        finite = [v for v in (s[0] * scale for s in stats.values()) if math.isfinite(v)]
        if finite and higher_is_better(metric):
            ax.set_ylim(
                max(0.0, min(finite) - 15), min(100.0, max(finite) + 8) if scale > 1 else None
            )
        ax.legend(
            frameon=False, ncols=min(3, len(models)), loc="lower center", bbox_to_anchor=(0.5, 1.0)
        )
        ax.set_title(f"{data_id} — error bars: sd over seeds", pad=18)
        return _save(fig, out, f"auilc_{_slug(data_id)}_{metric}", opts)


# --------------------------------------------------------------------------- CD diagram


def cd_diagram(
    result: RankResult, title: str, out: Path, stem: str, opts: PlotOptions
) -> list[Path]:
    """Demšar-style diagram: mean ranks on an axis, bars join groups within the Nemenyi CD."""
    k = len(result.models)
    order = np.argsort(result.mean_ranks)
    ranks = np.asarray(result.mean_ranks)[order]
    names = [display_name(result.models[i]) for i in order]
    half = math.ceil(k / 2)
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.9 + 0.22 * half))
        ax.set_xlim(0.5, k + 0.5)
        ax.set_ylim(-(half + 1.5) * 0.22 - 0.1, 0.3)
        for side in ("left", "right", "bottom"):
            ax.spines[side].set_visible(False)
        ax.spines["top"].set_visible(True)
        ax.xaxis.set_ticks_position("top")
        ax.set_xticks(range(1, k + 1))
        ax.set_yticks([])
        # CD scale bar
        ax.plot([1, 1 + result.critical_difference], [0.12, 0.12], color="black", linewidth=1)
        ax.text(
            1 + result.critical_difference / 2,
            0.14,
            f"CD = {result.critical_difference:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
        for i, (rank, name) in enumerate(zip(ranks, names)):
            left = i < half
            row = (i if left else k - 1 - i) + 1
            y = -row * 0.22
            # best half labelled on the left (rank 1 is leftmost, as in Demšar 2006)
            x_edge = 0.5 if left else k + 0.5
            ax.plot([rank, rank, x_edge], [0, y, y], color="black", linewidth=0.7)
            ax.text(
                x_edge + (-0.05 if left else 0.05),
                y,
                f"{name} ({rank:.2f})",
                ha="right" if left else "left",
                va="center",
                fontsize=7,
            )
        # cliques: maximal runs of models whose rank span is within the CD
        cliques = []
        for i in range(k):
            j = i
            while j + 1 < k and ranks[j + 1] - ranks[i] <= result.critical_difference:
                j += 1
            if j > i and not any(a <= i and j <= b for a, b in cliques):
                cliques.append((i, j))
        for n, (i, j) in enumerate(cliques):
            y = -0.08 - 0.06 * n
            ax.plot([ranks[i] - 0.06, ranks[j] + 0.06], [y, y], color="#D55E00", linewidth=2.2)
        ax.set_title(
            f"{title}\nFriedman p = {result.friedman_p:.2g} over {result.n_blocks} cells; "
            f"Nemenyi α = {result.alpha:g}",
            fontsize=7,
            pad=14,
        )
        return _save(fig, out, stem, opts)


def rank_result(rows: pd.DataFrame, metric: str, models: Sequence[str]) -> RankResult:
    """Friedman/Nemenyi over every cell (seed-averaged) where all ``models`` have a value."""
    table = rows.groupby(["cell_id", "model"])[metric].mean().unstack("model")
    table = table.reindex(columns=list(models)).dropna()
    return friedman_nemenyi(models, table.to_numpy(), higher_is_better(metric))


# --------------------------------------------------------------------------- driver


def make_plots(frame: pd.DataFrame, preds: Predictions, opts: PlotOptions, out: Path) -> list[Path]:
    """Every figure for the selected results; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    rows_all = select(frame, opts.selection)
    paths: list[Path] = []
    for data_id in sorted(set(rows_all["data_id"])):
        rows_d = rows_all[rows_all["data_id"] == data_id]
        paths += degradation_curves(rows_d, preds, data_id, opts, out)
        paths += smm_heatmap(rows_d, data_id, opts, out)
        paths += auilc_bars(rows_d, data_id, opts, out)
    for task_value, rows_t in rows_all.groupby("task"):
        task = Task(task_value)
        models = model_order(rows_t, opts.models or None)
        if len(models) < 3:
            continue
        metric = _metric_for(task, opts)
        result = rank_result(rows_t, metric, models)
        paths += cd_diagram(
            result,
            f"{task.value}: {metric}, all cells",
            out,
            f"cd_{task.value}_{metric}",
            opts,
        )
    return paths
