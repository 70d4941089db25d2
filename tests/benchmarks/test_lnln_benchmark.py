"""LNLN vs MulT throughput on the synth presets, measured in the same process.

MOSI-shaped unaligned batch (B = 32, n = 50, L_a = 375, L_v = 500), tiny BERT, each model's
``synth`` preset. LNLN's training step runs both views (corrupted and complete) through its
encoders, BERT included, plus the reconstructors and the discriminator; the ratio LNLN/MulT of
seconds per training step is printed and stored in ``benchmark.extra_info``. With
``--benchmark-disable`` (the default) each runs once.
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

B = 32
SPEC = DataSpec(
    text_len=50,
    audio_len=375,
    vision_len=500,
    audio_dim=5,
    vision_dim=20,
    text_feat_dim=24,
    aligned=False,
    task=Task.BINARY,
)


def _step_seconds(name: str, steps: int = 3) -> tuple[float, int]:
    cls = get_adapter(name)
    torch.manual_seed(0)
    adapter = cls(AdapterContext.create(SPEC, cls.resolve_params("synth")))
    split = tiny_split(SPEC, B, seed=0)
    adapter.setup(split)
    adapter.train_mode()
    corruption = adapter.training_corruption() or TrainCorruption(CorruptionKind.NONE)
    batch = corruption.apply(SplitTensors(split, Task.BINARY).batch(torch.arange(B)), 0, 1)
    gen = torch.Generator().manual_seed(0)
    adapter.train_step(batch, gen)  # warm-up, not timed
    start = time.perf_counter()
    for _ in range(steps):
        adapter.train_step(batch, gen)
    params = sum(p.numel() for p in adapter.model.parameters())
    return (time.perf_counter() - start) / steps, params


def test_lnln_vs_mult_training_step(benchmark) -> None:
    def run() -> dict[str, float]:
        lnln, lnln_params = _step_seconds("lnln")
        mult, mult_params = _step_seconds("mult")
        return {
            "lnln_step_s": lnln,
            "mult_step_s": mult,
            "ratio": lnln / mult,
            "lnln_params": lnln_params,
            "mult_params": mult_params,
        }

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(
        f"\nLNLN {result['lnln_step_s'] * 1e3:.0f} ms/step ({result['lnln_params']:,} params), "
        f"MulT {result['mult_step_s'] * 1e3:.0f} ms/step ({result['mult_params']:,} params), "
        f"ratio {result['ratio']:.1f}x"
    )
    assert result["lnln_step_s"] > 0 and result["mult_step_s"] > 0
