"""The external example package: installed for real, found through its entry point, passes the
conformance suite and runs one cell — what docs/adapters.md promises a plugin author."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PLUGIN_DIR, ROOT, subprocess_env


@pytest.fixture(scope="module")
def installed_plugin():
    pip = [sys.executable, "-m", "pip"]
    install = subprocess.run(
        [*pip, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN_DIR)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.fail(f"could not install the example plugin: {install.stderr[-2000:]}")
    yield
    subprocess.run([*pip, "uninstall", "--quiet", "-y", "mer-bench-example"], timeout=600)


def _env() -> dict[str, str]:
    # Only the repository on the path: the plugin must be found as an installed distribution.
    env = subprocess_env()
    env["PYTHONPATH"] = str(ROOT)
    return env


def _mer_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mer_bench", *args],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_installed_plugin_is_found_checked_and_runs(
    installed_plugin: None, tiny_synth_root: Path, tmp_path: Path
) -> None:
    listed = _mer_bench("adapters")
    assert listed.returncode == 0, listed.stderr
    assert "meanpool\tmer_bench_example.adapter:MeanPoolAdapter (entry point)" in listed.stdout

    checked = _mer_bench("check-adapter", "meanpool")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "48 passed, 0 failed" in checked.stdout  # 3 tasks × 2 alignments × 8 checks

    ran = _mer_bench(
        "run",
        "--models",
        "meanpool",
        "--data-root",
        str(tiny_synth_root),
        "--seeds",
        "1",
        "--protocol",
        "distribution=iid,alignment=aligned,task=binary,mode=RMFM,rate=0.0",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert ran.returncode == 0, ran.stderr
    assert "1 training settings (1 trained now), 1 cells (1 evaluated now)" in ran.stdout
