"""The results site in a real headless Chromium (the system package, driven by Selenium).

The site is built by the CLI from a tiny real run on synth (one model) plus the committed
leaderboards/ (three more models on the same data setting), opened from ``file://``.
Skipped, loudly, only where Chromium, its driver or Selenium is not installed (``.ci/run``
installs them).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from mer_bench.cli import main
from mer_bench.protocol import Dataset
from mer_bench.runner import RunOptions, execute, plan
from tests.conftest import MEANPOOL, ROOT
from tests.report.test_site import HOSTILE, hostile_leaderboards

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE = "settings/synth-iid-aligned-binary.html"
LEADERBOARD_MODELS = ("cider", "mult", "self_mm")
# a tiny training run and a browser: ~1 min on 2 cores (still run in CI)
pytestmark = pytest.mark.slow

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium not installed: the browser tests are SKIPPED"
)
if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip(
        "chromium / chromium-driver not installed (apt-get install chromium chromium-driver): "
        "the results-site browser tests are SKIPPED",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def site(tiny_synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("site_e2e")
    opts = RunOptions(
        models=(MEANPOOL,),
        selector="distribution=iid,alignment=aligned,task=binary,mode=RMFM|RMM|SMM",
        dataset=Dataset.SYNTH,
        data_root=str(tiny_synth_root),
        seeds=(1, 2),
        device="cpu",
        out=str(work / "results"),
        quiet=True,
    )
    execute(plan(opts), opts)
    # A fixed copy of three committed entries, so the counts below do not move when models
    # are added to the committed leaderboards.
    boards = work / "boards" / "synth" / "iid-aligned-binary"
    boards.mkdir(parents=True)
    for model in LEADERBOARD_MODELS:
        name = f"{model}.json"
        shutil.copy(ROOT / "leaderboards" / "synth" / "iid-aligned-binary" / name, boards / name)
    out = work / "site"
    argv = [
        "site",
        "--results",
        str(work / "results"),
        "--leaderboards",
        str(work / "boards"),
    ]
    argv += [
        "--out",
        str(out),
        "--resamples",
        "199",
        "--bootstrap",
        "50",
        "--curve-bootstrap",
        "50",
        "--no-model-sizes",
    ]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1300,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> list[dict]:
    """Load a page, wait for its charts, return the console messages it logged."""
    driver.get(path.resolve().as_uri())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pending = driver.execute_script(
            "return document.readyState !== 'complete' || Array.from("
            "document.querySelectorAll('.chart')).some(c => !c.querySelector('.main-svg'))"
        )
        if not pending:
            break
        time.sleep(0.1)
    return driver.get_log("browser")


def _column(driver, col: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard tbody.measured tr'))"
        ".filter(r => !r.hidden).map(r => Array.from(r.cells)"
        f".find(c => c.dataset.col === {col!r}).dataset.sort)"
    )


def test_pages_load_offline_without_console_errors(site: Path, browser) -> None:
    pages = [site / "index.html", site / PAGE, *sorted((site / "models").glob("*.html"))]
    for page in pages:
        errors = [m for m in _open(browser, page) if m["level"] in ("SEVERE", "WARNING")]
        assert errors == [], (page, errors)
        # everything the page loads is a local file (or inline data)
        urls = browser.execute_script(
            "return Array.from(document.querySelectorAll('script[src], link[href], img[src]'))"
            ".map(e => e.src || e.href)"
        )
        assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls


def test_table_sorts(site: Path, browser) -> None:
    _open(browser, site / PAGE)
    ranks = [int(r) for r in _column(browser, "rank")]
    assert ranks == sorted(ranks) and len(ranks) == 4
    header = browser.find_element("css selector", '#leaderboard th[data-col="model"]')
    header.click()
    models = _column(browser, "model")
    assert models == sorted(models, key=str.lower)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _column(browser, "model") == models[::-1]
    assert header.get_attribute("aria-sort") == "descending"
    browser.find_element("css selector", '#leaderboard th[data-col="AUILC RMM"]').click()
    values = [float(v) for v in _column(browser, "AUILC RMM")]
    assert values == sorted(values) and len(set(values)) > 1
    # reported rows stay in their own body under the measured ones
    bodies = browser.execute_script(
        "return Array.from(document.querySelectorAll('#leaderboard tbody')).map(b => b.className)"
    )
    assert bodies[0] == "measured"


def test_filter_narrows_rows(site: Path, browser) -> None:
    _open(browser, site / PAGE)
    assert len(_column(browser, "model")) == 4
    box = browser.find_element("css selector", "#filter")
    box.send_keys("self_mm")
    assert _column(browser, "model") == ["self_mm"]
    assert "1 of" in browser.find_element("css selector", "#row-count").text
    box.clear()
    box.send_keys(" ")  # clear() fires no input event; any keystroke re-filters
    assert len(_column(browser, "model")) == 4
    browser.execute_script(
        "const s = document.querySelector('select[data-filter=source]');"
        "s.value = 'results'; s.dispatchEvent(new Event('change'));"
    )
    assert _column(browser, "model") == [MEANPOOL]
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('tbody.reported')).every(b => b.hidden)"
    )


def test_curves_render_one_series_per_model_and_toggle(site: Path, browser) -> None:
    _open(browser, site / PAGE)
    legend = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#curve-charts .chart'))"
        ".map(c => [c.dataset.mode, Array.from(c.querySelectorAll('.legend .traces'))"
        ".map(t => t.textContent)]))"
    )
    everyone = sorted([*LEADERBOARD_MODELS, "MeanPoolAdapter"])
    assert sorted(legend["RMFM"]) == everyone and sorted(legend["RMM"]) == everyone
    # the tiny run has no RMFM_same cells: only the three leaderboard models there
    assert sorted(legend["RMFM_same"]) == sorted(LEADERBOARD_MODELS)
    # four lines plus the bootstrap band of the one model with stored predictions
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#curve-RMFM .scatterlayer .trace').length"
        )
        == 5
    )
    # hover a point of the measured model: mean, band and per-seed values
    hover = browser.execute_script(
        "const gd = document.getElementById('curve-RMFM');"
        "const i = gd.data.findIndex(t => t.name === 'MeanPoolAdapter');"
        "Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: 3}]);"
        "return gd.querySelector('.hoverlayer').textContent;"
    )
    assert "rate 0.3" in hover and "95% band [" in hover
    assert "seed 1:" in hover and "seed 2:" in hover
    # clicking a legend entry hides that model's line and band
    browser.find_elements("css selector", "#curve-RMFM .legend .traces .legendtoggle")[0].click()
    hidden: list[str] = []
    deadline = time.monotonic() + 5  # plotly waits out its double-click delay first
    while not hidden and time.monotonic() < deadline:
        time.sleep(0.1)
        hidden = browser.execute_script(
            "const gd = document.getElementById('curve-RMFM');"
            "return gd.data.filter(t => t.visible === 'legendonly').map(t => t.legendgroup)"
        )
    assert hidden and len(set(hidden)) == 1
    # SMM heatmap: one row per model with SMM cells
    rows = browser.execute_script("return document.getElementById('smm-chart').data[0].y.length")
    assert rows == 4


def test_screenshot_artifact(site: Path, browser, tmp_path_factory) -> None:
    _open(browser, site / PAGE)
    folder = Path(os.environ.get("MER_BENCH_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "site_synth-iid-aligned-binary.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_hostile_text_stays_text(tmp_path: Path, browser) -> None:
    boards = hostile_leaderboards(tmp_path / "boards")
    out = tmp_path / "site"
    assert (
        main(
            [
                "site",
                "--leaderboards",
                str(boards),
                "--out",
                str(out),
                "--no-significance",
                "--no-model-sizes",
            ]
        )
        == 0
    )
    errors = [m for m in _open(browser, out / PAGE) if m["level"] == "SEVERE"]
    assert errors == []
    assert browser.execute_script("return window.__xss") is None
    assert browser.execute_script("return document.querySelectorAll('main img').length") == 0
    names = _column(browser, "model")
    assert HOSTILE in names
    legend = browser.execute_script(
        "return Array.from(document.querySelectorAll('#curve-RMFM .legend .traces'))"
        ".map(t => t.textContent)"
    )
    # the legend names the extra axis value too, as text
    assert f"{HOSTILE} · <b>finetune</b>" in legend
