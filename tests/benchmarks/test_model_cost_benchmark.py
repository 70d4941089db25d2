"""Every registered adapter at MOSI's unaligned shapes: samples/s, s per cell, peak RSS.

Each model runs in its own process (``tests/benchmarks/model_cost.py``) so that its peak RSS is
its own. The data are ``synth`` files at MOSI's per-sample shapes (text 50 × 768, audio 375 × 5,
vision 500 × 20) with few samples: 4 training batches of 16, then one cell (RMFM at 0.3) over
32 valid and 64 test samples. MulT is also run with its previous attention (PyTorch's fused call
everywhere) at batch 4, where that version still fits in memory, for before/after figures.

These take minutes on a laptop CPU, so they run only with ``--benchmark-enable``::

    python -m pytest tests/benchmarks/test_model_cost_benchmark.py --benchmark-enable -s

The fast test at the end checks the measuring code itself on tiny data, in every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mer_bench.adapters import available_adapters
from mer_bench.data.synth import SynthConfig, SynthShape, shape_config, write_synth
from tests.benchmarks.model_cost import measure

BATCHES = 4
BATCH_SIZE = 16
FEW = dict(n_train=BATCHES * BATCH_SIZE, n_valid=32, n_test=64)
CROSS_FEW = dict(cross_n_train=8, cross_n_valid=4, cross_n_test=4)
REPO = Path(__file__).resolve().parents[2]

RUNS = [(name, "auto", BATCH_SIZE) for name in sorted(available_adapters())] + [
    ("mult", "auto", 4),
    ("mult", "fused", 4),
]


def _enabled(config: pytest.Config) -> bool:
    """pytest-benchmark's switch: ``--benchmark-enable`` overrides the default disable."""
    return bool(config.getoption("benchmark_enable")) or not config.getoption("benchmark_disable")


@pytest.fixture(scope="module")
def mosi_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _enabled(request.config):
        pytest.skip("minutes per model: run with --benchmark-enable")
    root = tmp_path_factory.mktemp("synth-mosi")
    write_synth(root, shape_config(SynthShape.MOSI, **FEW, **CROSS_FEW))
    return root


def _run_worker(root: Path, model: str, attention: str, batch_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "tests.benchmarks.model_cost",
        "--model",
        model,
        "--root",
        str(root),
        "--batches",
        str(BATCHES),
        "--batch-size",
        str(batch_size),
        "--mult-attention",
        attention,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_RESULTS: dict[tuple[str, str, int], dict] = {}


@pytest.mark.parametrize("model,attention,batch_size", RUNS, ids=lambda v: str(v))
def test_model_cost_at_mosi_shapes(benchmark, mosi_root, model, attention, batch_size) -> None:
    result = benchmark.pedantic(
        _run_worker, args=(mosi_root, model, attention, batch_size), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    _RESULTS[(model, attention, batch_size)] = result
    print(
        f"\n{model:12s} attention={attention:5s} batch={batch_size:3d} "
        f"train {result['train_samples_per_s']:.2f} samples/s "
        f"({result['train_samples_per_cpu_s']:.2f} per CPU s)  cell {result['cell_s']:.1f} s  "
        f"peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    assert result["train_samples"] == BATCHES * batch_size
    assert result["train_samples_per_s"] > 0 and result["cell_s"] > 0


def test_mult_blockwise_attention_halves_peak_rss_and_is_not_slower(benchmark, mosi_root):
    """The issue's target for MulT at MOSI-unaligned shapes, same batch, same machine."""
    runs = {
        att: _RESULTS.get(("mult", att, 4)) or _run_worker(mosi_root, "mult", att, 4)
        for att in ("fused", "auto")
    }
    before, after = runs["fused"], runs["auto"]
    benchmark.extra_info.update(
        rss_ratio=after["peak_rss_mb"] / before["peak_rss_mb"],
        speedup=after["train_samples_per_cpu_s"] / before["train_samples_per_cpu_s"],
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert after["peak_rss_mb"] <= 0.5 * before["peak_rss_mb"]
    # CPU seconds: steadier than wall time on a shared machine (one thread each).
    assert after["train_samples_per_cpu_s"] >= before["train_samples_per_cpu_s"]


def test_measure_reports_the_figures_on_tiny_data(tmp_path: Path) -> None:
    config = SynthConfig.small(n_train=8, n_valid=4, n_test=6, **CROSS_FEW)
    write_synth(tmp_path, config)
    result = measure("self_mm", tmp_path, batches=2, batch_size=4, mult_attention="auto")
    assert result["train_samples"] == 8 and result["test_samples"] == 6
    assert result["preset"] == "mosi"
    assert result["train_samples_per_s"] > 0 and result["cell_s"] > 0
    assert result["peak_rss_mb"] >= result["data_rss_mb"] > 0
