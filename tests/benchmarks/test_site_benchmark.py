"""Building the results site from the committed leaderboards (the README main job's results).

Run with ``pytest tests/benchmarks --benchmark-enable``; under the default
``--benchmark-disable`` it runs once as a check. Target: well under 10 s on a 2-core CPU, and a
data-setting page under 400 kB so that it opens at once.
"""

from __future__ import annotations

from pathlib import Path

from mer_bench.report.site import SiteOptions, build_site
from tests.conftest import ROOT


def test_site_build_from_leaderboards(benchmark, tmp_path: Path) -> None:
    opts = SiteOptions(leaderboards=ROOT / "leaderboards", significance=False, model_sizes=False)
    pages = benchmark(build_site, opts, tmp_path / "site")
    settings = sorted((tmp_path / "site" / "settings").glob("*.html"))
    assert len(settings) == len(list((ROOT / "leaderboards").glob("*/*/")))
    assert pages[0].name == "index.html"
    # Pages stay light: the data of one setting grows with its entries, about 60 kB per entry
    # (curves of every mode and metric at 11 rates, per seed), so bound it per entry.
    for page in settings:
        dataset, setting = page.stem.split("-", 1)
        entries = len(list((ROOT / "leaderboards" / dataset / setting).glob("*.json")))
        assert entries > 0, page.name
        assert page.stat().st_size < 100_000 + 80_000 * entries, (page.name, entries)
