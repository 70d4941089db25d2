"""TFR-Net training throughput on the synth preset, next to MulT's, in the same process.

Synth-shaped unaligned batch (B = 64, n = 50, L_a = 375, L_v = 500; the preset keeps every 15th /
20th frame), tiny BERT, 30 % of every modality dropped. One epoch-2 training step (two BERT
passes, reconstruction included) per TFR-Net form and one MulT synth step; the samples per second
of each and the TFR-Net / MulT time ratio go to ``benchmark.extra_info``.
"""

from __future__ import annotations

import time

import torch

from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.conformance import tiny_split
from mer_bench.corruption import CorruptionKind, TrainCorruption
from mer_bench.data.types import DataSpec
from mer_bench.protocol import Task

B = 64


def _step_seconds(name: str, spec: DataSpec, batch, steps: int = 3) -> float:
    cls = get_adapter(name)
    torch.manual_seed(0)
    adapter = cls(AdapterContext.create(spec, cls.resolve_params("synth")))
    adapter.train_mode()
    adapter.on_epoch_start(2)
    gen = torch.Generator().manual_seed(0)
    adapter.train_step(batch, gen)  # warm-up, not timed
    start = time.perf_counter()
    for _ in range(steps):
        adapter.train_step(batch, gen)
    return (time.perf_counter() - start) / steps


def test_tfr_net_train_step_against_mult(benchmark) -> None:
    spec = DataSpec(50, 375, 500, 5, 20, 24, False, Task.BINARY)
    data = SplitTensors(tiny_split(spec, B, seed=1), Task.BINARY)
    corruption = TrainCorruption(CorruptionKind.RATE, rate=0.3)
    batch = corruption.apply(data.batch(torch.arange(B)), seed=1, epoch=2)

    def run() -> dict[str, float]:
        seconds = {name: _step_seconds(name, spec, batch) for name in ("tfr_net", "tfr_net_fixed")}
        seconds["mult"] = _step_seconds("mult", spec, batch.complete_view)
        return {
            **{f"train_samples_per_s_{k}": B / v for k, v in seconds.items()},
            "tfr_net_over_mult": seconds["tfr_net"] / seconds["mult"],
        }

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print({k: round(v, 2) for k, v in result.items()})
    assert all(v > 0 for v in result.values())
