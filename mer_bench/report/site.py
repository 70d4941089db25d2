"""A static results site (``site``): leaderboards and results folders as self-contained pages.

The site opens from ``file://`` or any static host with no network: the charting library
(plotly.js, cartesian bundle, from the npm registry) is vendored in ``site_assets/`` and copied
next to the pages. :mod:`mer_bench.report.site_data` gathers what is shown,
:mod:`mer_bench.report.site_pages` writes the HTML; this module lays out the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mer_bench.report.leaderboard import model_slug
from mer_bench.report.site_data import (
    ASSET_FILES,
    ASSETS,
    SiteEntry,
    SiteOptions,
    collect,
    model_size,
)
from mer_bench.report.site_pages import index_page, model_page, setting_page, setting_slug
from mer_bench.report.tables import tables_frame

__all__ = ["SiteOptions", "build_site", "model_size"]

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
        page, csv_rows = setting_page(data_id, entries, data)
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
        path.write_text(model_page(model, entries, opts.model_sizes), encoding="utf-8")
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
    index.write_text(index_page(data, by_setting, exports), encoding="utf-8")
    return [index, *pages]
