"""MulT and Self-MM throughput: one training epoch and one evaluation cell each.

MOSI-shaped word-aligned random data, each model's ``default`` preset (the published MOSI
configuration) with the tiny random BERT. (Aligned because MulT's unaligned crossmodal attention
over 375/500 frames needs about 4 GB at its batch size on CPU.) With ``--benchmark-enable``: an epoch over 128
training samples at the preset's batch size and a 686-sample cell (MOSI's test split) at batch
128, three rounds; under the default ``--benchmark-disable`` a few samples check the machinery.

    python -m pytest tests/benchmarks/test_baselines_benchmark.py --benchmark-enable -s
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from benchmarks.speed import SHAPES, build_adapter, measure, random_split
from mer_bench.batch import SplitTensors
from mer_bench.protocol import Task

MODELS = ("mult", "self_mm")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("what", ["train", "eval"])
def test_epoch_and_cell(benchmark, model: str, what: str) -> None:
    full = benchmark.enabled
    samples = (128 if what == "train" else 686) if full else 12
    shape = SHAPES["mosi-aligned"]
    split = random_split(shape, samples, seed=0, name="train" if what == "train" else "test")
    train = split if what == "train" else random_split(shape, 16, 1)
    adapter = build_adapter(model, train, aligned=True)
    batch = int(adapter.ctx.params["batch_size"]) if what == "train" else (128 if full else 8)
    data = SplitTensors(split, Task.BINARY)
    measure(adapter, what, SplitTensors(random_split(shape, 4, 2), Task.BINARY), 4)

    def once():
        return measure(adapter, what, data, batch)

    result, outputs = benchmark.pedantic(once, rounds=3 if full else 1, iterations=1)
    benchmark.extra_info.update(asdict(result))
    print(model, what, json.dumps(asdict(result)))
    assert result.samples == samples and result.seconds > 0
    if what == "eval":
        assert outputs is not None
        assert all(len(v) == samples and np.isfinite(v).all() for v in outputs.values())
