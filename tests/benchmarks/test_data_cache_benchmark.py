"""Loading a MOSEI-unaligned-shaped file: the import cache versus parsing the pickle each time.

Per-sample shapes are MOSEI unaligned's (text 50, audio 500×74, vision 500×35); the sample
counts are MOSEI's (16326 / 1871 / 4659) divided by ``MER_BENCH_BENCH_DIVISOR`` (default 100,
so the default run is quick; the numbers in the report used 20). As in MOSEI's audio, some
frames hold ``-inf`` (zeroed on load).

- ``test_load_time_*``: one validated load of the file, parsed in-process from the pickle
  ("before") or read from a warm import cache ("after"). Run with ``--benchmark-enable``.
- ``test_two_workers_memory``: two spawned worker processes each load the file and read every
  array (as training does), the way ``run --jobs 2`` workers do; prints each worker's peak RSS,
  anonymous (private) RSS and PSS, before and after. Memory-mapped cache pages are shared, so
  the "after" workers hold far less private memory.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mer_bench.data import loaders
from mer_bench.data.safe_pickle import load_untrusted
from mer_bench.data.schema import inspect_file
from mer_bench.protocol import Distribution
from tests.data.fixtures import MOSEI, make_split

DIVISOR = int(os.environ.get("MER_BENCH_BENCH_DIVISOR", "100"))
SIZES = tuple(max(2, n // DIVISOR) for n in (16326, 1871, 4659))


@pytest.fixture(scope="module")
def mosei_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mosei") / "unaligned_50.pkl"
    obj = {
        name: make_split(n, seed=i, dims=MOSEI, aligned=False, text_dim=None, neg_inf=n // 4)
        for i, (name, n) in enumerate(zip(("train", "valid", "test"), SIZES))
    }
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path


def _load_before(path: Path) -> dict:
    return inspect_file(load_untrusted(path), path, kind=Distribution.IID).splits


def _load_after(path: Path) -> dict:
    loaders.clear_cache()  # the in-process LRU, not the import cache
    return loaders.load_file(path, Distribution.IID)


def test_load_time_before_parsing_the_pickle(benchmark, mosei_like: Path) -> None:
    splits = benchmark(_load_before, mosei_like)
    assert splits["train"].audio.shape == (SIZES[0], 500, 74)


def test_load_time_after_from_the_cache(benchmark, mosei_like: Path) -> None:
    _load_after(mosei_like)  # first use imports into the cache
    splits = benchmark(_load_after, mosei_like)
    assert splits["train"].audio.shape == (SIZES[0], 500, 74)
    assert isinstance(splits["train"].vision, np.memmap)  # shared pages, not a copy


def _memory() -> dict[str, float]:
    # VmHWM, not ru_maxrss: a spawned worker's ru_maxrss starts at its parent's (kept across
    # exec), VmHWM starts fresh.
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                out["peak_rss_mb"] = int(line.split()[1]) / 1024
            if line.startswith("RssAnon:"):
                out["anon_rss_mb"] = int(line.split()[1]) / 1024
    try:
        with open("/proc/self/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    out["pss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def _worker(mode: str, path: str, barrier: mp.Barrier) -> dict[str, float]:  # type: ignore[valid-type]
    splits = _load_before(Path(path)) if mode == "before" else _load_after(Path(path))
    total = 0.0
    for split in splits.values():  # read every value, as an epoch of training does
        total += float(split.audio.sum(dtype=np.float64)) + float(
            split.vision.sum(dtype=np.float64)
        )
    barrier.wait()  # both workers hold their data at the same time
    out = _memory()
    barrier.wait()
    out["checksum"] = total
    return out


def _two_workers(mode: str, path: Path) -> list[dict[str, float]]:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            return pool.starmap(_worker, [(mode, str(path), barrier)] * 2)


@pytest.mark.slow
def test_two_workers_memory(mosei_like: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MER_BENCH_IMPORT_CACHE", str(tmp_path / "imports"))
    before = _two_workers("before", mosei_like)
    after = _two_workers("after", mosei_like)
    size_mb = mosei_like.stat().st_size / 2**20
    print(f"\nfile {size_mb:.0f} MB, samples {SIZES}")
    for mode, rows in (("before", before), ("after", after)):
        for i, row in enumerate(rows):
            print(f"{mode} worker {i}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()))
    assert before[0]["checksum"] == after[0]["checksum"]
    private_before = sum(r["anon_rss_mb"] for r in before)
    private_after = sum(r["anon_rss_mb"] for r in after)
    # Each "before" worker holds its own copy of the arrays; "after" ones share the file pages.
    assert private_after < private_before - 0.8 * size_mb
