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
them on a shared one.

``--mult-attention fused`` runs MulT's attention through PyTorch's
``scaled_dot_product_attention`` everywhere (the implementation before the blockwise dropout
path), for before/after figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.corruption import TrainCorruption
from mer_bench.data.loaders import load_bundle
from mer_bench.evaluate import evaluate_cell
from mer_bench.protocol import Alignment, Cell, Dataset, DataSetting, Distribution, Mode, Task
from mer_bench.runner import preset_name, seed_everything

SETTING = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.UNALIGNED, Task.BINARY)
CELL = Cell(SETTING, Mode.RMFM, rate=0.3)
SEED = 1111


def _peak_rss_mb() -> float:
    """This process's peak resident set, in MiB.

    Linux's ``VmHWM`` where available: ``ru_maxrss`` of a freshly started child also counts
    the parent's resident set at the fork that started it (pytest's, here).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
    rss_data = _peak_rss_mb()
    preset = preset_name(cls, Dataset.MOSI)
    params = cls.resolve_params(preset, {"batch_size": batch_size})
    seed_everything(SEED)
    with tempfile.TemporaryDirectory() as cache:
        ctx = AdapterContext.create(bundle.spec, params, data=setting, seed=SEED, out=cache)
        adapter = cls(ctx)
        corruption = adapter.training_corruption() or TrainCorruption.none()
        adapter.setup(bundle.train)
        train = SplitTensors(bundle.train, task)
        shuffle = torch.Generator().manual_seed(SEED)
        augment = torch.Generator().manual_seed(SEED + 1)
        adapter.on_epoch_start(1)
        adapter.train_mode()
        losses = []
        start, cpu_start = time.perf_counter(), time.process_time()
        for _, batch in zip(
            range(batches), train.batches(batch_size, generator=shuffle, shuffle=True)
        ):
            losses.append(adapter.train_step(corruption.apply(batch, SEED, 1), augment))
        loss = float(torch.stack(losses).float().mean())
        train_s = time.perf_counter() - start
        train_cpu_s = time.process_time() - cpu_start
        adapter.on_epoch_end(1)
        valid, test = SplitTensors(bundle.valid, task), SplitTensors(bundle.test, task)
        start, cpu_start = time.perf_counter(), time.process_time()
        cell = CELL if task is SETTING.task else Cell(setting, CELL.mode, rate=CELL.rate)
        evaluate_cell(adapter, valid, test, cell, SEED, batch_size=batch_size, device=ctx.device)
        cell_s = time.perf_counter() - start
        cell_cpu_s = time.process_time() - cpu_start
    return {
        "model": model,
        "preset": preset,
        "attention": mult_attention if model == "mult" else "-",
        "batch_size": batch_size,
        "train_samples": len(losses) * batch_size,
        "train_samples_per_s": len(losses) * batch_size / train_s,
        "cell_s": cell_s,
        "train_samples_per_cpu_s": len(losses) * batch_size / train_cpu_s,
        "cell_cpu_s": cell_cpu_s,
        "test_samples": test.size,
        "peak_rss_mb": _peak_rss_mb(),
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
