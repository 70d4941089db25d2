"""Paper-style tables with paired significance tests against a baseline (``table``).

One :class:`Table` per (data setting, metric): rows = models, one block of columns per missing
mode (the metric at a few rates and its AUILC; SMM: the 7 conditions), values mean ± sd over
seeds (ddof=1). Every model is compared with the baseline in every column by a paired permutation
test over (seed, sample) pairs; the p-values of one table are Holm-corrected together.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError
from mer_bench.metrics import Aggregate, CurveWeights, higher_is_better, mean_sd
from mer_bench.protocol import CONDITIONS, Mode, Task, canonical_rate
from mer_bench.report.data import (
    ORACLE,
    PRIMARY,
    VALID,
    Predictions,
    model_order,
    oracle_models,
    seed_auilc,
    seed_relative_robustness,
    select,
)
from mer_bench.report.stats import (
    Comparison,
    bootstrap_values,
    bootstrap_weights,
    compare,
    holm,
    percentile_ci,
)

DEFAULT_RATES: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 1.0)
UP, DOWN = "↑", "↓"
RAW_SCALE = frozenset({"mae", "corr"})
"""Metrics shown on their own scale; every other metric is a fraction shown ×100."""


@dataclass(frozen=True)
class TableOptions:
    metrics: tuple[str, ...] = ()
    """Metrics to tabulate; empty = the task's curve metrics."""
    baseline: str | None = None
    models: tuple[str, ...] = ()
    rates: tuple[float, ...] = DEFAULT_RATES
    selection: str = PRIMARY
    alpha: float = 0.05
    n_resamples: int = 9999
    n_boot: int = 1000
    seed: int = 0
    aggregate: Aggregate = Aggregate.AUILC
    """How a curve becomes one column (AUILC or the mean over rates 0–0.9; never both)."""
    suites: tuple[str, ...] = ()
    """Protocol suites the results come from (named in captions)."""
    robustness: bool = True
    """Add relative (RR) and effective (ER) robustness columns to rate-based modes."""


RR, ER = "RR", "ER"
"""Relative robustness (summary / clean score) and effective robustness (area lost to missing
data minus the baseline's: the gap between the curves once both start at the same clean score)."""
REGIME_BASELINE = "regime="
"""``--baseline regime=clean``: compare each model with its own run under that regime."""


@dataclass(frozen=True)
class Entry:
    """One model in one column."""

    mean: float
    sd: float
    n_seeds: int
    comparison: Comparison | None = None
    p_holm: float = math.nan
    mark: int = 0
    """+1 significantly better than the baseline, −1 significantly worse, 0 neither."""


@dataclass(frozen=True)
class Block:
    mode: str
    columns: tuple[str, ...]
    entries: dict[tuple[str, str], Entry] = field(hash=False)
    """(model, column) → entry; missing when a model lacks that cell."""


@dataclass(frozen=True)
class Table:
    data_id: str
    metric: str
    models: tuple[str, ...]
    baseline: str
    blocks: tuple[Block, ...]
    alpha: float
    n_comparisons: int
    n_resamples: int
    n_seeds: int
    oracle: tuple[str, ...]
    """Models whose numbers use the test-oracle τ (labelled in the caption)."""
    aggregate: str = Aggregate.AUILC.value
    suites: tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def caption(self) -> str:
        scale = "" if self.metric in RAW_SCALE else " (%)"
        text = (
            f"{self.data_id}: {self.metric}{scale}, mean ± sd over {self.n_seeds} seed(s) "
            f"(ddof=1); baseline {self.baseline}; curve summary {self.aggregate}"
            f" ({Aggregate(self.aggregate).description})."
        )
        if self.suites:
            text += f" Protocol suite: {', '.join(self.suites)}."
        if self.oracle:
            text += (
                f" Test-oracle τ for {', '.join(self.oracle)}: τ maximised per metric on test "
                "labels (the paper's protocol, docs/cider.md, Q-3), not a held-out choice."
            )
        return text

    def footnote(self) -> str:
        return (
            f"{UP}/{DOWN}: significantly better/worse than {self.baseline} by a two-sided paired "
            f"permutation test over (seed, sample) pairs on identical masks "
            f"(scipy.stats.permutation_test, {self.n_resamples} resamples), Holm-corrected over "
            f"the {self.n_comparisons} comparisons of this table, α = {self.alpha:g}. "
            "Δ = model − baseline with a 95% CI from a paired bootstrap over seeds and samples; "
            "ASO ε_min < 0.5: the model almost stochastically dominates the baseline across "
            "seeds (Dror et al. 2019, 95% confidence; reported with ≥ 3 seeds). "
            f"{RR}: relative robustness, the curve summary divided by the clean (rate 0) score. "
            f"{ER}: effective robustness, the summary of (curve − clean score) minus the "
            "baseline's, i.e. the gap to the baseline's curve shifted to the same clean score "
            "(MultiBench); tested like any column."
        )


# --------------------------------------------------------------------------- building


def _columns(
    rows: pd.DataFrame, mode: Mode, rates: Sequence[float], opts: TableOptions | None = None
) -> tuple[str, ...]:
    if not mode.uses_rate:
        present = set(rows["condition"])
        return tuple(c for c in CONDITIONS if c in present)
    agg = opts.aggregate if opts is not None else Aggregate.AUILC
    present = {round(float(r), 1) for r in rows["rate"]}
    cols = [f"{r:.1f}" for r in rates if r in present]
    if set(agg.curve.rates) <= present:
        cols.append(agg.value)
        if opts is not None and opts.robustness:
            cols.extend((RR, ER))
    return tuple(cols)


def _summary(column: str) -> CurveWeights | None:
    """The curve summary behind a column (None for a single cell)."""
    if column in (RR, ER):
        raise ValueError(column)
    return Aggregate(column).curve if column in _AGGREGATES else None


_AGGREGATES = frozenset(a.value for a in Aggregate)


def _cell_rows(rows: pd.DataFrame, mode: Mode, column: str) -> pd.DataFrame:
    if not mode.uses_rate:
        return rows[rows["condition"] == column]
    return rows[np.isclose(rows["rate"].astype(float), float(column))]


def _seed_values(
    rows: pd.DataFrame, mode: Mode, column: str, metric: str, agg: Aggregate = Aggregate.AUILC
) -> pd.Series:
    if column == RR:
        return seed_relative_robustness(rows, metric, agg)
    if column == ER:
        return seed_auilc(rows, metric, agg.curve.minus_clean())
    if column in _AGGREGATES:
        return seed_auilc(rows, metric, Aggregate(column))
    part = _cell_rows(rows, mode, column)
    return pd.Series(part[metric].to_numpy(np.float64), index=part["seed"].to_numpy())


def _views(preds: Predictions, rows: pd.DataFrame, mode: Mode, column: str, task, metric, seeds):
    rows = rows[rows["seed"].isin(seeds)]
    summary = _summary(column)
    if summary is not None:
        return [preds.view(_cell_rows(rows, mode, f"{r:.1f}"), task, metric) for r in summary.rates]
    return [preds.view(_cell_rows(rows, mode, column), task, metric)]


def _no_robustness(opts: TableOptions) -> TableOptions:
    return replace(opts, robustness=False)


def _baselines(rows_d: pd.DataFrame, models: list[str], baseline: str) -> dict[str, str]:
    """Each model's reference: one baseline system, or (``regime=R``) the same model's system
    trained under regime R."""
    if not baseline.startswith(REGIME_BASELINE):
        return {m: baseline for m in models}
    regime = baseline[len(REGIME_BASELINE) :]
    systems = rows_d.drop_duplicates("model").set_index("model")
    out = {}
    for m in models:
        base = systems.loc[m, "base_model"]
        match = systems[(systems["base_model"] == base) & (systems["regime"] == regime)]
        if not match.empty:
            out[m] = str(match.index[0])
    if not out:
        raise ConfigError(
            f"--baseline {baseline}: no model has results under regime {regime!r}; regimes: "
            f"{', '.join(sorted(set(rows_d['regime'])))}"
        )
    return out


def build_tables(frame: pd.DataFrame, preds: Predictions, opts: TableOptions) -> list[Table]:
    """Every (data setting, metric) table of the selected results, tests included."""
    rows_all = select(frame, opts.selection)
    rates = tuple(canonical_rate(r) for r in opts.rates)
    tasks = sorted({Task(t) for t in rows_all["task"]}, key=list(Task).index)
    reported = {m for t in tasks for m in t.info.metrics}
    missing = [m for m in opts.metrics if m not in reported]
    if missing:
        valid = ", ".join(dict.fromkeys(m for t in tasks for m in t.info.metrics))
        raise ConfigError(
            f"metric {', '.join(map(repr, missing))} is not reported for "
            f"{'task' if len(tasks) == 1 else 'tasks'} {', '.join(t.value for t in tasks)} in "
            f"these results; valid: {valid}"
        )
    tables = []
    for data_id in sorted(set(rows_all["data_id"])):
        rows_d = rows_all[rows_all["data_id"] == data_id]
        task = Task(rows_d["task"].iloc[0])
        models = model_order(rows_d, opts.models or None)
        baseline = opts.baseline or _default_baseline(rows_d, opts, models[0])
        if not baseline.startswith(REGIME_BASELINE):
            if baseline not in models:
                raise ConfigError(
                    f"--baseline {baseline!r} has no results for {data_id}; models: "
                    f"{', '.join(models)}"
                )
            models = [baseline, *[m for m in models if m != baseline]]
        for metric in opts.metrics or task.info.curve_metrics:
            if metric not in task.info.metrics:
                continue  # e.g. non0_acc2 on a seven-class setting: tables where it exists
            tables.append(
                _build_one(rows_d, preds, task, data_id, metric, models, baseline, rates, opts)
            )
    return tables


def _default_baseline(rows_d: pd.DataFrame, opts: TableOptions, first: str) -> str:
    """The first model, or each model's clean-trained run when the results hold clean and
    other regimes of the same models (the ``fair`` suite)."""
    regimes = set(rows_d["regime"])
    if "clean" in regimes and len(regimes) > 1:
        return REGIME_BASELINE + "clean"
    return first


def _build_one(rows_d, preds, task, data_id, metric, models, baseline, rates, opts) -> Table:
    blocks: list[Block] = []
    base_of = _baselines(rows_d, models, baseline)
    agg = opts.aggregate
    pending: list[tuple[int, tuple[str, str], Entry]] = []
    n_seeds = int(rows_d.groupby("model")["seed"].nunique().max())
    for mode in Mode:
        rows_m = rows_d[rows_d["mode"] == mode.value]
        if rows_m.empty:
            continue
        columns = _columns(rows_m, mode, rates, opts)
        entries: dict[tuple[str, str], Entry] = {}
        for model in models:
            rows = rows_m[rows_m["model"] == model]
            base = base_of.get(model)
            base_rows = rows_m[rows_m["model"] == base]
            for col in columns:
                if col == ER:
                    entry = _effective(
                        rows, base_rows, model, base, mode, task, metric, preds, opts
                    )
                    if entry is not None:
                        entries[(model, col)] = entry
                        if entry.comparison is not None:
                            pending.append((len(blocks), (model, col), entry))
                    continue
                values = _seed_values(rows, mode, col, metric, agg)
                if values.empty:
                    continue
                mean, sd = mean_sd(values.to_numpy())
                entry = Entry(mean, sd, len(values))
                if base is not None and model != base and col != RR:
                    base_values = _seed_values(base_rows, mode, col, metric, agg)
                    seeds = sorted(set(values.index) & set(base_values.index))
                    if seeds:
                        comp = compare(
                            _views(preds, rows, mode, col, task, metric, seeds),
                            _views(preds, base_rows, mode, col, task, metric, seeds),
                            _summary(col),
                            n_resamples=opts.n_resamples,
                            n_boot=opts.n_boot,
                            seed=opts.seed,
                        )
                        entry = Entry(mean, sd, len(values), comp)
                        pending.append((len(blocks), (model, col), entry))
                entries[(model, col)] = entry
        blocks.append(Block(mode.value, columns, entries))
    reject, adjusted = holm([e.comparison.p_value for _, _, e in pending], opts.alpha)
    sign = 1 if higher_is_better(metric) else -1
    for (b, key, entry), rej, p_adj in zip(pending, reject, adjusted):
        better = sign * entry.comparison.diff > 0
        mark = (1 if better else -1) if rej else 0
        blocks[b].entries[key] = Entry(
            entry.mean, entry.sd, entry.n_seeds, entry.comparison, float(p_adj), mark
        )
    return Table(
        data_id=data_id,
        metric=metric,
        models=tuple(models),
        baseline=baseline,
        blocks=tuple(blocks),
        alpha=opts.alpha,
        n_comparisons=len(pending),
        n_resamples=opts.n_resamples,
        n_seeds=n_seeds,
        oracle=tuple(m for m in oracle_models(rows_d) if m in models),
        aggregate=agg.value,
        suites=opts.suites,
    )


def _effective(rows, base_rows, model, base, mode, task, metric, preds, opts) -> Entry | None:
    """Effective robustness of ``model`` against its baseline: per seed, the summary of
    (curve − clean score) minus the baseline's; tested and bootstrapped as one linear summary
    of both curves (paired on identical masks)."""
    if base is None or model == base:
        return None
    lost = opts.aggregate.curve.minus_clean()
    own, other = seed_auilc(rows, metric, lost), seed_auilc(base_rows, metric, lost)
    seeds = sorted(set(own.index) & set(other.index))
    if not seeds:
        return None
    per_seed = own[seeds].to_numpy() - other[seeds].to_numpy()
    mean, sd = mean_sd(per_seed)
    col = opts.aggregate.value
    comp = compare(
        _views(preds, rows, mode, col, task, metric, seeds),
        _views(preds, base_rows, mode, col, task, metric, seeds),
        lost,
        n_resamples=opts.n_resamples,
        n_boot=opts.n_boot,
        seed=opts.seed,
    )
    return Entry(mean, sd, len(seeds), comp)


# --------------------------------------------------------------------------- formatting


def _scale(metric: str) -> float:
    return 1.0 if metric in RAW_SCALE else 100.0


def _digits(metric: str) -> int:
    return 3 if metric in RAW_SCALE else 1


def fmt_value(metric: str, mean: float, sd: float) -> str:
    s, d = _scale(metric), _digits(metric)
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean * s:.{d}f}"
    return text + (f" ± {sd * s:.{d}f}" if math.isfinite(sd) else "")


def fmt_diff(metric: str, comp: Comparison) -> str:
    s, d = _scale(metric), _digits(metric)
    return f"{comp.diff * s:+.{d}f} [{comp.ci_low * s:+.{d}f}, {comp.ci_high * s:+.{d}f}]"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _best(table: Table, block: Block, col: str) -> frozenset[str]:
    """The models to print in bold in a column: every model whose mean, as printed, equals the
    best printed mean (ties are all marked); none when fewer than two models have a value."""
    means = {
        m: block.entries[(m, col)].mean
        for m in table.models
        if (m, col) in block.entries and math.isfinite(block.entries[(m, col)].mean)
    }
    if len(means) < 2:
        return frozenset()
    pick = max if table.higher_is_better else min
    shown = fmt_value(table.metric, means[pick(means, key=means.get)], math.nan)
    return frozenset(m for m, v in means.items() if fmt_value(table.metric, v, math.nan) == shown)


def _mark(entry: Entry) -> str:
    return {1: UP, -1: DOWN}.get(entry.mark, "")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render_markdown(tables: Sequence[Table]) -> str:
    out = io.StringIO()
    for t in tables:
        out.write(f"## {t.data_id} — {t.metric}\n\n{t.caption()}\n\n")
        for block in t.blocks:
            out.write(f"**{block.mode}**\n\n")
            head = "rate" if block.mode != Mode.SMM.value else "kept"
            out.write(_md_row([f"model \\ {head}", *block.columns]) + "\n")
            out.write(_md_row(["---", *(["---:"] * len(block.columns))]) + "\n")
            best = {c: _best(t, block, c) for c in block.columns}
            for m in t.models:
                cells = []
                for c in block.columns:
                    e = block.entries.get((m, c))
                    if e is None:
                        cells.append("–")
                        continue
                    v = fmt_value(t.metric, e.mean, e.sd) + _mark(e)
                    cells.append(f"**{v}**" if m in best[c] else v)
                name = f"{m} (baseline)" if m == t.baseline else m
                out.write(_md_row([name, *cells]) + "\n")
            out.write("\n")
        rows = _comparison_rows(t)
        if rows:
            out.write(f"Differences to {t.baseline} (Δ [95% CI]):\n\n")
            out.write(
                _md_row(["model", "mode", "column", "Δ [95% CI]", "p", "p (Holm)", "ASO ε_min"])
                + "\n"
            )
            out.write(_md_row(["---", "---", "---", "---:", "---:", "---:", "---:"]) + "\n")
            for model, mode, col, e in rows:
                c = e.comparison
                out.write(
                    _md_row(
                        [
                            model,
                            mode,
                            col,
                            fmt_diff(t.metric, c) + _mark(e),
                            fmt_p(c.p_value),
                            fmt_p(e.p_holm),
                            "n/a" if c.aso_eps is None else f"{c.aso_eps:.2f}",
                        ]
                    )
                    + "\n"
                )
            out.write("\n")
        out.write(t.footnote() + "\n\n")
    return out.getvalue()


def _comparison_rows(t: Table) -> list[tuple[str, str, str, Entry]]:
    return [
        (m, b.mode, c, b.entries[(m, c)])
        for b in t.blocks
        for m in t.models
        for c in b.columns
        if (m, c) in b.entries and b.entries[(m, c)].comparison is not None
    ]


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return (
        text.replace("±", r"$\pm$")
        .replace("τ", r"$\tau$")
        .replace("α", r"$\alpha$")
        .replace("ε", r"$\varepsilon$")
        .replace("Δ", r"$\Delta$")
        .replace("≥", r"$\geq$")
        .replace("—", "---")
        .replace("−", "-")
        .replace("§", r"\S{}")
        .replace(UP, r"$^{\uparrow}$")
        .replace(DOWN, r"$^{\downarrow}$")
    )


def render_latex(tables: Sequence[Table]) -> str:
    """booktabs tables, best mean per column in bold; needs only ``\\usepackage{booktabs}``."""
    out = io.StringIO()
    out.write("% generated by `python -m mer_bench table --format latex`; needs booktabs\n")
    for t in tables:
        width = max(len(b.columns) for b in t.blocks)
        out.write("\\begin{table}[t]\n\\centering\n\\small\n")
        out.write(f"\\caption{{{latex_escape(t.caption())}}}\n")
        out.write(f"\\label{{tab:{t.data_id.replace('/', '-')}-{t.metric.replace('_', '-')}}}\n")
        out.write(f"\\begin{{tabular}}{{l{'r' * width}}}\n\\toprule\n")
        for i, block in enumerate(t.blocks):
            if i:
                out.write("\\midrule\n")
            head = "rate" if block.mode != Mode.SMM.value else "kept"
            pad = [""] * (width - len(block.columns))
            out.write(
                f"\\textbf{{{latex_escape(block.mode)}}} ({head}) & "
                + " & ".join([latex_escape(c) for c in block.columns] + pad)
                + " \\\\\n"
            )
            out.write(f"\\cmidrule(lr){{2-{len(block.columns) + 1}}}\n")
            best = {c: _best(t, block, c) for c in block.columns}
            for m in t.models:
                cells = []
                for c in block.columns:
                    e = block.entries.get((m, c))
                    if e is None:
                        cells.append("--")
                        continue
                    v = latex_escape(fmt_value(t.metric, e.mean, e.sd))
                    v = f"\\textbf{{{v}}}" if m in best[c] else v
                    cells.append(v + latex_escape(_mark(e)))
                name = latex_escape(m) + (" (base)" if m == t.baseline else "")
                out.write(" & ".join([name, *cells, *pad]) + " \\\\\n")
        out.write("\\bottomrule\n\\end{tabular}\n")
        rows = _comparison_rows(t)
        if rows:
            out.write("\n\\vspace{4pt}\n\\begin{tabular}{lllrrr}\n\\toprule\n")
            out.write(
                "model & mode & column & $\\Delta$ [95\\% CI] & $p_{\\mathrm{Holm}}$ & "
                "ASO $\\varepsilon_{\\min}$ \\\\\n\\midrule\n"
            )
            for model, mode, col, e in rows:
                c = e.comparison
                aso = "n/a" if c.aso_eps is None else f"{c.aso_eps:.2f}"
                out.write(
                    " & ".join(
                        [
                            latex_escape(model),
                            latex_escape(mode),
                            latex_escape(col),
                            latex_escape(fmt_diff(t.metric, c) + _mark(e)),
                            fmt_p(e.p_holm),
                            aso,
                        ]
                    )
                    + " \\\\\n"
                )
            out.write("\\bottomrule\n\\end{tabular}\n")
        out.write(f"\n\\par\\smallskip\\footnotesize {latex_escape(t.footnote())}\n")
        out.write("\\end{table}\n\n")
    return out.getvalue()


def tables_frame(tables: Sequence[Table]) -> pd.DataFrame:
    """Long format: one row per (table, mode, column, model) with every statistic."""
    records = []
    for t in tables:
        for b in t.blocks:
            for m in t.models:
                for c in b.columns:
                    e = b.entries.get((m, c))
                    if e is None:
                        continue
                    comp = e.comparison
                    records.append(
                        {
                            "data_setting": t.data_id,
                            "metric": t.metric,
                            "mode": b.mode,
                            "column": c,
                            "model": m,
                            "baseline": t.baseline,
                            "mean": e.mean,
                            "sd": e.sd,
                            "n_seeds": e.n_seeds,
                            "diff": comp.diff if comp else math.nan,
                            "ci_low": comp.ci_low if comp else math.nan,
                            "ci_high": comp.ci_high if comp else math.nan,
                            "p": comp.p_value if comp else math.nan,
                            "p_holm": e.p_holm,
                            "aso_eps": comp.aso_eps
                            if comp and comp.aso_eps is not None
                            else math.nan,
                            "significant": {1: "better", -1: "worse"}.get(e.mark, ""),
                            "test_oracle": m in t.oracle,
                        }
                    )
    return pd.DataFrame.from_records(records)


def render_csv(tables: Sequence[Table]) -> str:
    return tables_frame(tables).to_csv(index=False)


# --------------------------------------------------------------------------- τ comparison


@dataclass(frozen=True)
class TauRow:
    model: str
    data_id: str
    metric: str
    mode: str
    column: str
    valid: tuple[float, float]
    oracle: tuple[float, float]
    optimism: float
    """test-oracle − valid mean over seeds, from the stored metrics."""
    ci_low: float
    ci_high: float


def build_tau_comparison(
    frame: pd.DataFrame, preds: Predictions, opts: TableOptions
) -> list[TauRow]:
    """valid-selected vs test-oracle τ for every model that stored both (the paper's optimism)."""
    both = frame[frame["selection"].isin([VALID, ORACLE])]
    models = [m for m, part in both.groupby("model") if {VALID, ORACLE} <= set(part["selection"])]
    if not models:
        raise ConfigError(
            "--compare-tau needs a model with a post-hoc knob (e.g. cider), which stores both "
            "the valid-selected and the test-oracle τ; none in these results"
        )
    rates = tuple(canonical_rate(r) for r in opts.rates)
    out: list[TauRow] = []
    for model in models:
        rows_model = both[both["model"] == model]
        for data_id in sorted(set(rows_model["data_id"])):
            rows_d = rows_model[rows_model["data_id"] == data_id]
            task = Task(rows_d["task"].iloc[0])
            for metric in opts.metrics or (task.info.selection_metric,):
                for mode in Mode:
                    rows_m = rows_d[rows_d["mode"] == mode.value]
                    if rows_m.empty:
                        continue
                    v_rows = rows_m[rows_m["selection"] == VALID]
                    o_rows = rows_m[rows_m["selection"] == ORACLE]
                    for col in _columns(rows_m, mode, rates, _no_robustness(opts)):
                        vv = _seed_values(v_rows, mode, col, metric, opts.aggregate)
                        ov = _seed_values(o_rows, mode, col, metric, opts.aggregate)
                        seeds = sorted(set(vv.index) & set(ov.index))
                        if not seeds:
                            continue
                        va = _views(preds, v_rows, mode, col, task, metric, seeds)
                        oa = _views(preds, o_rows, mode, col, task, metric, seeds)
                        weights = bootstrap_weights(
                            len(seeds),
                            va[0].truth.shape[1],
                            opts.n_boot,
                            np.random.default_rng(opts.seed),
                        )
                        r = _summary(col)
                        reps = bootstrap_values(oa, weights, r) - bootstrap_values(va, weights, r)
                        lo, hi = percentile_ci(reps)
                        optimism = float(np.mean(ov[seeds].to_numpy() - vv[seeds].to_numpy()))
                        out.append(
                            TauRow(
                                model,
                                data_id,
                                metric,
                                mode.value,
                                col,
                                mean_sd(vv.to_numpy()),
                                mean_sd(ov.to_numpy()),
                                optimism,
                                lo,
                                hi,
                            )
                        )
    return out


TAU_NOTE = (
    "valid: τ chosen on the validation split under the same cell (honest default). test-oracle: "
    "τ maximised per metric on test labels (the paper's protocol, docs/cider.md, Q-3). Optimism = "
    "test-oracle − valid; 95% CI from a paired bootstrap over seeds and samples of the stored "
    "predictions (test-oracle predictions are stored under the selection metric's τ)."
)


def render_tau(rows: Sequence[TauRow], fmt: str) -> str:
    records = [
        {
            "model": r.model,
            "data_setting": r.data_id,
            "metric": r.metric,
            "mode": r.mode,
            "column": r.column,
            VALID: fmt_value(r.metric, *r.valid),
            ORACLE: fmt_value(r.metric, *r.oracle),
            "optimism [95% CI]": fmt_diff(
                r.metric, Comparison(r.optimism, r.ci_low, r.ci_high, math.nan)
            ),
        }
        for r in rows
    ]
    if fmt == "csv":
        return pd.DataFrame.from_records(
            [
                {
                    "model": r.model,
                    "data_setting": r.data_id,
                    "metric": r.metric,
                    "mode": r.mode,
                    "column": r.column,
                    "valid_mean": r.valid[0],
                    "valid_sd": r.valid[1],
                    "oracle_mean": r.oracle[0],
                    "oracle_sd": r.oracle[1],
                    "optimism": r.optimism,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                }
                for r in rows
            ]
        ).to_csv(index=False)
    keys = list(records[0])
    if fmt == "latex":
        body = "".join(
            " & ".join(latex_escape(str(rec[k])) for k in keys) + " \\\\\n" for rec in records
        )
        return (
            "\\begin{table}[t]\n\\centering\n\\small\n"
            f"\\caption{{{latex_escape('CIDer τ: valid-selected vs test-oracle. ' + TAU_NOTE)}}}\n"
            f"\\begin{{tabular}}{{lllll rrr}}\n\\toprule\n"
            + " & ".join(latex_escape(k) for k in keys)
            + " \\\\\n\\midrule\n"
            + body
            + "\\bottomrule\n\\end{tabular}\n\\end{table}\n"
        )
    lines = [_md_row(keys), _md_row(["---"] * 5 + ["---:"] * 3)]
    lines += [_md_row([str(rec[k]) for k in keys]) for rec in records]
    return "## τ selection: valid vs test-oracle\n\n" + "\n".join(lines) + f"\n\n{TAU_NOTE}\n"
