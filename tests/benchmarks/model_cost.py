"""One adapter's cost at real tensor shapes, measured in a process of its own.

    python -m tests.benchmarks.model_cost --model mult --root DIR [--batches 4]
        [--batch-size 16] [--mult-attention fused]

``DIR`` holds synthetic files written with ``data synth --shape mosi`` (or ``write_synth`` of a
shape config with fewer samples). The adapter is built from its real-data preset (``mosi``, else
``default``) with the given batch size and the default tiny text encoder; it trains ``--batches``
batches of the IID unaligned binary setting, then evaluates one cell (RMFM at 0.3) on the test split
(and on valid where the adapter selects a post-hoc knob there). One JSON line goes to stdout: train samples/s, seconds for the cell, and the
process's peak RSS, which is why each model needs a fresh process. With one
thread, CPU seconds (``*_cpu_*``) equal wall seconds on an idle machine and are steadier than
them on a shared one. Building the adapter, the training steps, the timing and the peak RSS are
``benchmarks.speed``'s (on these files instead of random data).

``--mult-attention fused`` runs MulT's attention through PyTorch's
``scaled_dot_product_attention`` everywhere (the implementation before the blockwise dropout
path), for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.speed import build_adapter, peak_rss_mb, phase, train_batches
from mer_bench.adapters import get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.data.loaders import load_bundle
from mer_bench.evaluate import evaluate_cell
from mer_bench.protocol import Alignment, Cell, Dataset, DataSetting, Distribution, Mode, Task
from mer_bench.runner import preset_name, seed_everything

SETTING = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.UNALIGNED, Task.BINARY)
CELL = Cell(SETTING, Mode.RMFM, rate=0.3)
SEED = 1111


def measure(
    model: str, root: Path, batches: int, batch_size: int, mult_attention: str
) -> dict[str, object]:
    """Train ``batches`` batches and evaluate one cell; return the figures."""
    torch.set_num_threads(1)
    if mult_attention == "fused":
        import baselines.mult.model as mult_model
        from baselines.mult.attention import fused_attention

        mult_model.attention = fused_attention
    cls = get_adapter(model)
    task = SETTING.task if SETTING.task in cls.tasks else cls.tasks[0]
    setting = DataSetting(SETTING.dataset, SETTING.distribution, SETTING.alignment, task)
    bundle = load_bundle(setting, root)
    rss_data = peak_rss_mb()
    preset = preset_name(cls, Dataset.MOSI)
    seed_everything(SEED)
    with tempfile.TemporaryDirectory() as cache:
        adapter = build_adapter(
            model,
            bundle.train,
            aligned=False,
            task=task,
            preset=preset,
            overrides={"batch_size": batch_size},
            seed=SEED,
            data=setting,
            out=cache,
        )
        train = SplitTensors(bundle.train, task)
        adapter.on_epoch_start(1)
        with phase(adapter.ctx.device, reset_peak=False) as train_stats:
            losses = train_batches(adapter, train, batch_size, seed=SEED, batches=batches)
            loss = float(losses.float().mean())
        adapter.on_epoch_end(1)
        valid, test = SplitTensors(bundle.valid, task), SplitTensors(bundle.test, task)
        cell = CELL if task is SETTING.task else Cell(setting, CELL.mode, rate=CELL.rate)
        with phase(adapter.ctx.device, reset_peak=False) as cell_stats:
            evaluate_cell(
                adapter, valid, test, cell, SEED, batch_size=batch_size, device=adapter.ctx.device
            )
    trained = len(losses) * batch_size
    return {
        "model": model,
        "preset": preset,
        "attention": mult_attention if model == "mult" else "-",
        "batch_size": batch_size,
        "train_samples": trained,
        "train_samples_per_s": trained / train_stats["seconds"],
        "cell_s": cell_stats["seconds"],
        "train_samples_per_cpu_s": trained / train_stats["cpu_seconds"],
        "cell_cpu_s": cell_stats["cpu_seconds"],
        "test_samples": test.size,
        "peak_rss_mb": peak_rss_mb(),
        "data_rss_mb": rss_data,
        "loss": loss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mult-attention", choices=("auto", "fused"), default="auto")
    args = parser.parse_args(argv)
    result = measure(args.model, args.root, args.batches, args.batch_size, args.mult_attention)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
