"""CIDer throughput: fast seven-view attention vs the literal masked form, under two allocators.

Each allocator setting runs ``tests.benchmarks.cider_speed_worker`` in its own subprocess:
``default`` is glibc malloc as it comes; ``tuned`` raises ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` so that large temporaries are recycled from
the heap instead of being freshly mapped (and page-faulted) each time. Inside a worker the fast
and literal forms alternate from the same weights; ratios are literal/fast medians.

With ``--benchmark-enable`` the shapes are the reference evaluation's: MOSI-shaped unaligned data,
d 32, 3 layers, 8 heads, tiny BERT; one evaluation cell = missing + counterfactual passes over
686 samples at batch 128; one training epoch = 128 samples at batch 32. Under the default
``--benchmark-disable`` a small configuration checks the machinery and the parity only.

    python -m pytest tests/benchmarks/test_cider_benchmark.py --benchmark-enable -s
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env

ALLOCATORS: dict[str, dict[str, str]] = {
    "default": {},
    "tuned": {
        "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
        "MALLOC_TRIM_THRESHOLD_": str(1 << 32),
        "MALLOC_TOP_PAD_": str(1 << 28),
    },
}
FULL = {
    "eval-samples": 686,
    "eval-batch": 128,
    "train-samples": 128,
    "train-batch": 32,
    "layers": 3,
    "heads": 8,
    "repeats": 3,
}
SMOKE = {
    "eval-samples": 24,
    "eval-batch": 12,
    "train-samples": 16,
    "train-batch": 8,
    "layers": 1,
    "heads": 8,
    "repeats": 1,
}


def run_worker(config: dict[str, int], allocator: str, timeout: float) -> dict:
    args = [f"--{key}={value}" for key, value in config.items()]
    env = subprocess_env(**ALLOCATORS[allocator])
    for name in ALLOCATORS["tuned"]:
        if name not in ALLOCATORS[allocator]:
            env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.cider_speed_worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("allocator", sorted(ALLOCATORS))
def test_fast_vs_literal(benchmark, allocator: str) -> None:
    config = FULL if benchmark.enabled else SMOKE
    report = benchmark.pedantic(
        run_worker, args=(config, allocator, 3600.0), rounds=1, iterations=1
    )
    benchmark.extra_info.update(report)
    print(allocator, json.dumps(report))
    # The two forms computed the same log-probabilities from the same weights.
    assert report["max_logp_diff"] <= 1e-5
    for phase in ("fast_eval", "literal_eval", "fast_train", "literal_train"):
        assert report[phase]["seconds"] > 0 and report[phase]["peak_rss_mb"] > 0
    if benchmark.enabled:
        # At the reference shapes the gap is several-fold; anything near 1 is a regression.
        assert report["eval_cpu_ratio"] > 3 and report["train_cpu_ratio"] > 2
