"""Leaderboards (``leaderboard``): one JSON per model × training setting, merged and rendered.

Layout (RobustBench style): ``<root>/<dataset>/<distribution>-<alignment>-<task>/<model>.json``
holding the protocol version, metrics at each rate and AUILC per mode (mean, sd, per-seed
values), the seeds, the selection protocol, provenance and, where known, ``reported`` figures
from the model's paper with their source. ``<root>/README.md`` and one ``README.md`` per setting
are rendered from the files, ranked by AUILC.

Merging never silently replaces a better-provenanced entry: see :func:`provenance_key`.
Each entry's provenance names the data it was computed from (``data_fingerprint`` and
``data_files``: base name and SHA-256 of each file). Results from other data than an existing
entry's are refused unless ``--force`` (:func:`data_conflict`); entries written before
fingerprints existed have none (unknown data).
"""

from __future__ import annotations

import html
import json
import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError, DataError, MerBenchError
from mer_bench.metrics import Aggregate, mean_sd
from mer_bench.params import read_json_file, shorten
from mer_bench.protocol import PROTOCOL_VERSION, RATES, DataSetting, Mode, Task
from mer_bench.report.data import ORACLE, PRIMARY, seed_auilc, seed_relative_robustness, select

SCHEMA = "mer_bench.leaderboard/1"


def model_slug(model: str) -> str:
    """A file-system-safe file stem for a model name (``pkg.mod:Class`` → ``pkg.mod__Class``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "__", model)


def entry_path(root: Path, data: DataSetting, model: str) -> Path:
    setting = f"{data.distribution.value}-{data.alignment.value}-{data.task.value}"
    return root / data.dataset.value / setting / f"{model_slug(model)}.json"


def _stat(values: Sequence[float]) -> dict:
    mean, sd = mean_sd(values)
    return {
        "mean": _num(mean),
        "sd": _num(sd),
        "per_seed": [_num(v) for v in values],
    }


def _num(value: float) -> float | None:
    return None if not math.isfinite(float(value)) else round(float(value), 6)


def entry_from_rows(rows: pd.DataFrame, model: str, data: DataSetting) -> dict:
    """The leaderboard entry of one model × data setting from its selected result rows."""
    task = data.task
    metrics = list(task.info.metrics)
    seeds = sorted(int(s) for s in set(rows["seed"]))
    modes: dict[str, dict] = {}
    for mode in Mode:
        rows_m = rows[rows["mode"] == mode.value].sort_values("seed")
        if rows_m.empty:
            continue
        block: dict = {}
        if mode.uses_rate:
            block["rates"] = {
                f"{r:.1f}": {m: _stat(part[m].to_numpy()) for m in metrics}
                for r in RATES
                for part in [rows_m[np.isclose(rows_m["rate"].astype(float), r)]]
                if not part.empty
            }
            areas = {m: seed_auilc(rows_m, m) for m in task.info.curve_metrics}
            block["auilc"] = {m: _stat(a.to_numpy()) for m, a in areas.items() if not a.empty}
            relative = {
                m: seed_relative_robustness(rows_m, m, Aggregate.AUILC)
                for m in task.info.curve_metrics
            }
            block["relative_robustness"] = {
                m: _stat(r.to_numpy()) for m, r in relative.items() if not r.empty
            }
        else:
            block["conditions"] = {
                c: {m: _stat(part[m].to_numpy()) for m in metrics}
                for c, part in rows_m.groupby("condition")
            }
        modes[mode.value] = block
    versions = json.loads(rows["versions"].iloc[0] or "{}")
    selections = sorted(set(rows["selection"]))
    fingerprint, files = _data_of(rows, model, data)
    return {
        "schema": SCHEMA,
        "model": model,
        "setting": {
            "dataset": data.dataset.value,
            "distribution": data.distribution.value,
            "alignment": data.alignment.value,
            "task": data.task.value,
        },
        "protocol_version": PROTOCOL_VERSION,
        "regime": str(rows["regime"].iloc[0]) if "regime" in rows else "native",
        "selection": selections[0] if len(selections) == 1 else selections,
        "seeds": seeds,
        "modes": modes,
        "provenance": {
            "mer_bench": versions.get("mer_bench"),
            "versions": versions,
            "git_hash": str(rows["git_hash"].iloc[0]),
            "hardware": {
                "device": sorted(set(rows["device"].astype(str))),
                "machine": platform.machine(),
                "python": platform.python_version(),
            },
            "date": str(rows["finished_at"].max()),
            "mask_rng": str(rows["mask_rng"].iloc[0]),
            "n_cells": int(rows["cell_id"].nunique()),
            "data_fingerprint": fingerprint,
            "data_files": files,
        },
        "reported": [],
    }


def _data_of(rows: pd.DataFrame, model: str, data: DataSetting) -> tuple[str | None, list[dict]]:
    """The one data fingerprint of an entry's rows (None: unknown, rows stored before
    fingerprints) and its files by base name; DataError if the rows come from different data."""
    column = rows["data_fingerprint"] if "data_fingerprint" in rows else pd.Series([None])
    found = {None if pd.isna(v) else str(v) for v in column}
    if len(found) > 1:
        names = ", ".join(sorted(v or "unknown" for v in found))
        raise DataError(
            f"the results of {model} on {data.id} come from different data (fingerprints "
            f"{names}); rerun `python -m mer_bench run` with the same models, protocol and seeds "
            "on the current data (settings on other data are retrained), then merge again"
        )
    fingerprint = found.pop()
    stored = rows["data_files"].dropna() if "data_files" in rows else pd.Series([], dtype=object)
    files = json.loads(stored.iloc[0]) if fingerprint is not None and len(stored) else []
    # Base names only: a full path would publish where the user keeps their data.
    return fingerprint, [
        {"role": str(f["role"]), "file": Path(str(f["file"])).name, "sha256": str(f["sha256"])}
        for f in files
    ]


def data_fingerprint_of(entry: dict) -> str | None:
    """The entry's data fingerprint; None if unknown (written before fingerprints existed)."""
    value = (entry.get("provenance") or {}).get("data_fingerprint")
    return value if isinstance(value, str) else None


def data_conflict(old: dict, new: dict) -> str | None:
    """Why ``new`` must not be merged over ``old`` without ``--force``: their measured results
    come from different data (or one side's data is unknown). None if they may be compared.

    Provenance only ranks evidence about the same data; across data neither entry is "better",
    and keeping either silently would publish a result as if it were the other's."""
    if not old.get("modes") or not new.get("modes"):
        return None
    was, now = data_fingerprint_of(old), data_fingerprint_of(new)
    if was == now:
        return None
    return (
        f"it holds results on other data (data fingerprint {was or 'unknown'}) than the ones "
        f"merged now ({now or 'unknown'})"
    )


def merge_conflicts(root: Path, entries: Sequence[dict]) -> list[str]:
    """One line per entry file whose data differs from the entry that would replace it."""
    problems = []
    for entry in entries:
        path = entry_path(root, DataSetting.from_dict(entry["setting"]), entry["model"])
        if path.is_file():
            why = data_conflict(read_entry(path), entry)
            if why is not None:
                problems.append(f"{path}: {why}")
    return problems


def provenance_key(entry: dict) -> tuple:
    """Ordering of evidence: current protocol, then more seeds, more cells, a known git hash,
    an honest (non-oracle) selection, then the newer date. Reported-only files rank lowest."""
    prov = entry.get("provenance") or {}
    if not entry.get("modes"):
        return (False, 0, 0, False, False, "")
    selection = entry.get("selection")
    return (
        entry.get("protocol_version") == PROTOCOL_VERSION,
        len(entry.get("seeds") or ()),
        int(prov.get("n_cells") or 0),
        prov.get("git_hash") not in (None, "", "unknown"),
        selection != ORACLE,
        str(prov.get("date") or ""),
    )


@dataclass(frozen=True)
class MergeOutcome:
    path: Path
    action: str
    """``new``, ``updated`` or ``kept`` (the file on disk had better provenance)."""
    reason: str


def merge_entry(root: Path, entry: dict, *, force: bool = False) -> MergeOutcome:
    """Write ``entry`` unless the file on disk has strictly better provenance (or ``force``).

    ``reported`` figures already in the file are always carried over. Results on other data
    than the file's are a DataError unless ``force`` (:func:`data_conflict`).
    """
    data = DataSetting.from_dict(entry["setting"])
    path = entry_path(root, data, entry["model"])
    old = read_entry(path) if path.is_file() else None
    if old is not None:
        why = None if force else data_conflict(old, entry)
        if why is not None:
            raise DataError(f"{path}: {why}; {FORCE_HINT}")
        entry = {**entry, "reported": old.get("reported") or entry.get("reported") or []}
        if not force and provenance_key(old) > provenance_key(entry):
            return MergeOutcome(
                path, "kept", f"existing entry has better provenance {_describe(old)}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
    if old is None:
        return MergeOutcome(path, "new", _describe(entry))
    return MergeOutcome(path, "updated", f"{_describe(old)} -> {_describe(entry)}")


FORCE_HINT = "merge into another --root, or pass --force to replace the entry with the new results"


def _describe(entry: dict) -> str:
    prov = entry.get("provenance") or {}
    if not entry.get("modes"):
        return "(reported figures only)"
    return (
        f"({len(entry.get('seeds') or ())} seeds, {prov.get('n_cells', 0)} cells, "
        f"selection {entry.get('selection')}, {prov.get('date', '?')}, "
        f"data {data_fingerprint_of(entry) or 'unknown'})"
    )


MAX_ENTRY_BYTES = 8 << 20


def _read_json(path: Path, what: str) -> object:
    try:
        return read_json_file(path, what, max_bytes=MAX_ENTRY_BYTES)
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def read_entry(path: Path) -> dict:
    """A leaderboard file, checked against the entry schema (DataError naming what is wrong)."""
    entry = _read_json(path, f"leaderboard file {path}")
    if not isinstance(entry, dict) or "model" not in entry or "setting" not in entry:
        raise DataError(f"{path} is not a leaderboard entry (needs 'model' and 'setting')")
    try:
        check_entry(entry)
    except _SchemaError as exc:
        raise DataError(f"{path}: not a valid leaderboard entry: {exc}") from None
    return entry


class _SchemaError(Exception):
    pass


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _SchemaError(what)


def _is_num(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_stat(stat: object, where: str) -> None:
    _need(isinstance(stat, dict), f"{where} must be an object")
    assert isinstance(stat, dict)
    _need(_is_num(stat.get("mean")) and _is_num(stat.get("sd")), f"{where}: mean/sd not numbers")
    per_seed = stat.get("per_seed", [])
    _need(isinstance(per_seed, list) and all(map(_is_num, per_seed)), f"{where}: per_seed")


def _check_stats(block: object, where: str) -> None:
    """``{metric: stat}`` or, for rates/conditions, ``{key: {metric: stat}}``."""
    _need(isinstance(block, dict), f"{where} must be an object")
    assert isinstance(block, dict)
    for key, value in block.items():
        _need(isinstance(key, str), f"{where}: keys must be strings")
        if isinstance(value, dict) and "mean" not in value:
            for metric, stat in value.items():
                _check_stat(stat, f"{where}.{key}.{metric}")
        else:
            _check_stat(value, f"{where}.{key}")


def check_entry(entry: dict) -> None:
    """Raise ``_SchemaError`` unless ``entry`` has the fields and types rendering relies on."""
    _need(isinstance(entry.get("model"), str) and 0 < len(entry["model"]) <= 200, "model")
    setting = entry.get("setting")
    _need(isinstance(setting, dict), "'setting' must be an object")
    _need(all(isinstance(setting.get(k), str) for k in DataSetting.AXES), "setting fields")
    try:
        DataSetting.from_dict(setting)
    except MerBenchError as exc:
        raise _SchemaError(f"setting: {exc}") from None
    seeds = entry.get("seeds", [])
    _need(isinstance(seeds, list) and all(type(s) is int for s in seeds), "'seeds' must be ints")
    selection = entry.get("selection")
    _need(
        selection is None
        or isinstance(selection, str)
        or (isinstance(selection, list) and all(isinstance(x, str) for x in selection)),
        "'selection'",
    )
    modes = entry.get("modes", {})
    _need(isinstance(modes, dict), "'modes' must be an object")
    for mode, block in modes.items():
        _need(isinstance(block, dict), f"modes.{shorten(str(mode))} must be an object")
        for part in ("rates", "auilc", "conditions", "relative_robustness"):
            if part in block:
                _check_stats(block[part], f"modes.{shorten(str(mode))}.{part}")
    _need(isinstance(entry.get("regime", ""), str), "'regime' must be a string")
    provenance = entry.get("provenance")
    _need(provenance is None or isinstance(provenance, dict), "'provenance'")
    if isinstance(provenance, dict):
        _check_data_provenance(provenance)
    reported = entry.get("reported", [])
    _need(isinstance(reported, list), "'reported' must be a list")
    for item in reported:
        _check_reported(item)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_data_provenance(provenance: dict) -> None:
    """``data_fingerprint`` (absent or null: unknown) and ``data_files`` (base names only)."""
    fingerprint = provenance.get("data_fingerprint")
    _need(fingerprint is None or isinstance(fingerprint, str), "'data_fingerprint'")
    files = provenance.get("data_files", [])
    _need(isinstance(files, list), "'data_files' must be a list")
    for item in files:
        _need(isinstance(item, dict), "data_files items must be objects")
        name = item.get("file")
        _need(
            isinstance(name, str)
            and name == Path(name).name
            and name not in ("", ".", "..")
            and "\\" not in name,
            "data_files 'file' must be a base name",
        )
        _need(isinstance(item.get("role"), str), "data_files 'role' must be a string")
        _need(
            isinstance(item.get("sha256"), str) and bool(_SHA256.fullmatch(item["sha256"])),
            "data_files 'sha256' must be a hex SHA-256",
        )


def _check_reported(item: object) -> None:
    _need(isinstance(item, dict), "reported figures must be objects")
    assert isinstance(item, dict)
    _need(isinstance(item.get("source"), str), "reported figure without a 'source' string")
    metrics = item.get("metrics", {})
    _need(isinstance(metrics, dict), "reported 'metrics' must be an object")
    _need(
        all(isinstance(k, str) and _is_num(v) for k, v in metrics.items()),
        "reported metrics must be numbers",
    )
    for text in ("protocol", "selection", "note"):
        _need(isinstance(item.get(text, ""), str), f"reported {text!r} must be a string")
    curve = item.get("per_rate")
    if curve is not None:
        _need(isinstance(curve, dict) and isinstance(curve.get("mode"), str), "per_rate mode")
        rates = curve.get("rates")
        _need(isinstance(rates, dict), "per_rate 'rates' must be an object")
        for rate, values in rates.items():
            _need(isinstance(rate, str) and isinstance(values, dict), "per_rate rows")
            _need(
                all(isinstance(k, str) and _is_num(v) for k, v in values.items()),
                "per_rate figures must be numbers",
            )
            try:
                float(rate)
            except ValueError:
                raise _SchemaError(f"per_rate rate {shorten(rate)!r} is not a number") from None


def md(value: object, limit: int = 200) -> str:
    """Text from a leaderboard file made safe for a Markdown table cell (and the HTML it may be
    rendered as): one line, HTML-escaped (no tags or entities), and the characters that end a
    cell, start a link or code span (``|``, ``[``, ``]``, backtick, backslash) escaped."""
    text = " ".join(str(value).split())[:limit]
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`\[\]|])", r"\\\1", text)


def entries_from_frame(frame: pd.DataFrame, models: Sequence[str] = ()) -> list[dict]:
    """One entry per (model, data setting) of the primary results."""
    rows_all = select(frame, PRIMARY)
    if models:
        rows_all = rows_all[rows_all["model"].isin(models)]
    out = []
    for (model, data_id), rows in rows_all.groupby(["model", "data_id"]):
        out.append(entry_from_rows(rows, str(model), DataSetting.parse(str(data_id))))
    return out


# --------------------------------------------------------------------------- reported figures


def read_reported(reported_file: Path) -> list[dict]:
    """The items of a reported-figures file, each checked against the schema."""
    what = f"reported figures {reported_file}"
    document = _read_json(reported_file, what)
    items = document.get("reported") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise DataError(f"{what}: expected an object with a 'reported' list")
    for item in items:
        try:
            _check_reported(item)
            _need(isinstance(item.get("model"), str) and len(item["model"]) <= 200, "model")
            _need(isinstance(item.get("setting"), str), "'setting' must be a string")
            DataSetting.parse(item["setting"])
        except (_SchemaError, MerBenchError) as exc:
            raise DataError(f"{what}: invalid item: {exc}") from None
    return items


def add_reported(root: Path, reported_file: Path) -> list[MergeOutcome]:
    """Merge the published figures of ``reported_file`` into the entries' ``reported`` lists.

    An existing file keeps its measured results; a reported figure with the same source is
    replaced, others are appended.
    """
    items = read_reported(reported_file)
    outcomes = []
    for item in items:
        data = DataSetting.parse(item["setting"])
        path = entry_path(root, data, item["model"])
        entry = read_entry(path) if path.is_file() else _empty_entry(item["model"], data)
        figures = {k: v for k, v in item.items() if k not in ("model", "setting")}
        kept = [r for r in entry.get("reported", []) if r.get("source") != figures["source"]]
        entry["reported"] = [*kept, figures]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
        outcomes.append(MergeOutcome(path, "reported", figures["source"]))
    return outcomes


def _empty_entry(model: str, data: DataSetting) -> dict:
    return {
        "schema": SCHEMA,
        "model": model,
        "setting": data.as_dict(),
        "protocol_version": PROTOCOL_VERSION,
        "selection": None,
        "seeds": [],
        "modes": {},
        "provenance": None,
        "reported": [],
    }


# --------------------------------------------------------------------------- rendering


def load_entries(root: Path) -> list[dict]:
    return [read_entry(p) for p in sorted(root.glob("*/*/*.json"))]


def _fmt(stat: dict | None, metric: str) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    scale, d = (1.0, 3) if metric in ("mae", "corr") else (100.0, 1)
    text = f"{stat['mean'] * scale:.{d}f}"
    if stat.get("sd") is not None:
        text += f" ± {stat['sd'] * scale:.{d}f}"
    return text


def rank_value(entry: dict, metric: str) -> float:
    """Mean AUILC over the entry's rate-based modes (nan if none)."""
    values = [
        block["auilc"][metric]["mean"]
        for block in entry.get("modes", {}).values()
        if metric in block.get("auilc", {}) and block["auilc"][metric]["mean"] is not None
    ]
    return float(np.mean(values)) if values else math.nan


def _mean_rr(entry: dict, metric: str) -> float:
    """Mean relative robustness (AUILC / clean score) over the rate-based modes (nan if none)."""
    values = [
        block["relative_robustness"][metric]["mean"]
        for block in entry.get("modes", {}).values()
        if metric in block.get("relative_robustness", {})
        and block["relative_robustness"][metric]["mean"] is not None
    ]
    return float(np.mean(values)) if values else math.nan


def _fmt_ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def render_setting(entries: Sequence[dict], data: DataSetting) -> str:
    """Markdown for one setting: measured entries ranked by AUILC, then reported figures."""
    task: Task = data.task
    metric = task.info.curve_metrics[0]
    lower = metric == "mae"
    measured = [e for e in entries if e.get("modes")]

    def order(e: dict) -> tuple[int, float]:
        v = rank_value(e, metric)
        return (1, 0.0) if math.isnan(v) else (0, v if lower else -v)

    measured.sort(key=order)
    modes = [m.value for m in Mode if m.uses_rate and any(m.value in e["modes"] for e in measured)]
    lines = [f"## {data.id}", ""]
    if measured:
        lines += [
            f"Ranked by AUILC of {metric} (mean over the rate-based modes); values mean ± sd "
            "over seeds (ddof=1), %-scaled except MAE/Corr. RR: relative robustness, AUILC over "
            "the clean (rate 0) score, mean over the rate-based modes.",
            "",
            "| rank | model | regime | mean AUILC | "
            + " | ".join(f"AUILC {m}" for m in modes)
            + f" | RR | {metric} @ 0.0 | seeds | selection | date |",
            "|---:|---|---|---:|" + "---:|" * len(modes) + "---:|---:|---|---|---|",
        ]
        for i, e in enumerate(measured, 1):
            score = rank_value(e, metric)
            first_mode = next((e["modes"][m] for m in modes if m in e["modes"]), {})
            clean = first_mode.get("rates", {}).get("0.0", {}).get(metric)
            lines.append(
                f"| {i} | {md(e['model'])} | {md(e.get('regime', 'native'))} | "
                + _fmt({"mean": None if math.isnan(score) else score}, metric)
                + " | "
                + " | ".join(
                    _fmt(e["modes"].get(m, {}).get("auilc", {}).get(metric), metric) for m in modes
                )
                + f" | {_fmt_ratio(_mean_rr(e, metric))}"
                + f" | {_fmt(clean, metric)} | {len(e['seeds'])} | {md(e['selection'])} | "
                + f"{md((e.get('provenance') or {}).get('date', ''))} |"
            )
        lines.append("")
        lines += _mixed_data_note(measured)
    reported = [(e["model"], r) for e in entries for r in e.get("reported", [])]
    if reported:
        lines += _render_reported(reported)
    return "\n".join(lines)


def _mixed_data_note(measured: Sequence[dict]) -> list[str]:
    """A warning under a table whose entries were computed on different data files."""
    by_data: dict[str, list[str]] = {}
    for e in measured:
        by_data.setdefault(data_fingerprint_of(e) or "unknown", []).append(md(e["model"]))
    if len(by_data) < 2:
        return []
    parts = "; ".join(f"{md(fp)}: {', '.join(models)}" for fp, models in sorted(by_data.items()))
    return [
        "**Note:** these entries come from different data files (data fingerprint: models — "
        f"{parts}); compare their ranks with care.",
        "",
    ]


FULL_MODALITY = "complete data, no missing modality"
"""The protocol of a reported figure that states none."""


def _render_reported(reported: Sequence[tuple[str, dict]]) -> list[str]:
    """The reported-figures table (each row with its protocol), then any per-rate curves.

    Every piece of text from the file goes through ``md`` (it is data, not Markdown)."""
    names = sorted({k for _, r in reported for k in r.get("metrics", {})})
    lines = [
        "Reported figures (from the papers / reproductions named; not produced by mer_bench; "
        "each under the protocol stated in its row):",
        "",
        "| model | " + " | ".join(md(n) for n in names) + " | protocol | source |",
        "|---|" + "---:|" * len(names) + "---|---|",
    ]
    for model, r in reported:
        label = md(model) + (f" ({md(r['selection'])})" if r.get("selection") else "")
        lines.append(
            f"| {label} | "
            + " | ".join(_fmt({"mean": r.get("metrics", {}).get(n)}, n) for n in names)
            + f" | {md(r.get('protocol', FULL_MODALITY))} | {md(r['source'])} |"
        )
    lines.append("")
    for model, r in reported:
        curve = r.get("per_rate")
        if not curve:
            continue
        rates = curve["rates"]
        cols = sorted({k for values in rates.values() for k in values})
        label = md(model) + (f" ({md(r['selection'])})" if r.get("selection") else "")
        lines += [
            f"Reported per-rate figures, {label}, mode {md(curve['mode'])} ({md(r['source'])}):",
            "",
            "| rate | " + " | ".join(md(c) for c in cols) + " |",
            "|---:|" + "---:|" * len(cols),
        ]
        for rate in sorted(rates, key=float):
            lines.append(
                f"| {md(rate)} | "
                + " | ".join(_fmt({"mean": rates[rate].get(c)}, c) for c in cols)
                + " |"
            )
        lines.append("")
    return lines


def render_all(root: Path) -> list[Path]:
    """Write ``root/README.md`` and one ``README.md`` per setting; returns the files written."""
    entries = load_entries(root)
    by_setting: dict[str, list[dict]] = {}
    for e in entries:
        key = DataSetting.from_dict(e["setting"]).id
        by_setting.setdefault(key, []).append(e)
    written = []
    sections = []
    for key in sorted(by_setting):
        data = DataSetting.parse(key)
        text = render_setting(by_setting[key], data)
        sections.append(text)
        folder = entry_path(root, data, "x").parent
        path = folder / "README.md"
        path.write_text(
            f"# Leaderboard: {data.id}\n\n(generated by `python -m mer_bench leaderboard`; "
            "do not edit)\n\n" + text + "\n"
        )
        written.append(path)
    head = (
        "# mer_bench leaderboards\n\n"
        "Generated by `python -m mer_bench leaderboard` from the JSON files in this folder "
        "(one per model × training setting, `<dataset>/<distribution>-<alignment>-<task>/"
        f"<model>.json`, protocol version {PROTOCOL_VERSION}). Do not edit by hand.\n\n"
    )
    index = root / "README.md"
    index.write_text(head + "\n".join(sections) + "\n")
    written.append(index)
    return written
