"""Throughput of a registered model: one training epoch and one evaluation cell.

Random data with the shapes of a real dataset (MOSI or MOSEI, unaligned) is built in memory, the
adapter is built and set up as the harness does, and then

- ``train``: one epoch of ``adapter.train_step`` over ``samples`` training samples at the
  preset's (or the given) batch size, with the harness's epoch hooks;
- ``eval``: one evaluation cell, i.e. ``mer_bench.evaluate.predict_split`` over ``samples`` test
  samples under RMFM at rate 0.3 (CIDer: the missing and counterfactual passes).

Each is timed after one untimed warm-up; reported are seconds, samples/s, the peak resident set
of the measured phase (Linux ``VmHWM``, reset before the phase), minor page faults, and on CUDA
the peak allocated memory and the achieved TFLOP/s (model FLOPs from
``torch.utils.flop_counter`` / time).

    python -m benchmarks.speed cider --what eval --samples 686 --batch 128
    python -m benchmarks.speed mult --what train --shapes mosei --device cuda --precision bf16

Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mer_bench.adapters import Adapter, AdapterContext, get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.corruption import TrainCorruption
from mer_bench.data.types import CLS_ID, SEP_ID, DataSpec, Split
from mer_bench.evaluate import autocast, predict_split
from mer_bench.missing import split_keep_masks
from mer_bench.protocol import DataSetting, Mode, Task


@dataclass(frozen=True)
class Shapes:
    """Sequence lengths and feature widths of one dataset's unaligned files."""

    text_len: int
    audio_len: int
    vision_len: int
    audio_dim: int
    vision_dim: int
    text_feat_dim: int = 768
    aligned: bool = False
    """Word-aligned: audio/vision have the text's length and valid steps."""


SHAPES: dict[str, Shapes] = {
    "mosi": Shapes(text_len=50, audio_len=375, vision_len=500, audio_dim=5, vision_dim=20),
    "mosei": Shapes(text_len=50, audio_len=500, vision_len=500, audio_dim=74, vision_dim=35),
    "mosi-aligned": Shapes(50, 50, 50, audio_dim=5, vision_dim=20, aligned=True),
    "mosei-aligned": Shapes(50, 50, 50, audio_dim=74, vision_dim=35, aligned=True),
}


@dataclass
class Measurement:
    """One timed phase."""

    model: str
    what: str
    samples: int
    batch_size: int
    seconds: float
    """Wall time."""
    cpu_seconds: float
    """Process CPU time (all threads): steadier than wall time on a shared machine."""
    samples_per_s: float
    peak_rss_mb: float
    minor_faults: int
    device: str
    precision: str
    peak_device_mb: float | None = None
    tflops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def random_split(shapes: Shapes, samples: int, seed: int, name: str = "train") -> Split:
    """A split of random inputs with realistic lengths and BERT's special tokens."""
    rng = np.random.default_rng(seed)
    n = shapes.text_len
    lengths = rng.integers(8, n + 1, samples)
    ids = rng.integers(1000, 30000, (samples, n))
    mask = (np.arange(n)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    ids[:, 0] = CLS_ID
    ids[np.arange(samples), lengths - 1] = SEP_ID
    text_bert = np.stack((ids, mask, np.zeros_like(ids)), axis=1).astype(np.int64)

    def series(length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        valid = lengths if shapes.aligned else rng.integers(length // 2, length + 1, samples)
        values = rng.normal(size=(samples, length, dim)).astype(np.float32)
        values[np.arange(length)[None, :] >= valid[:, None]] = 0.0
        return values, valid.astype(np.int64)

    audio, audio_len = series(shapes.audio_len, shapes.audio_dim)
    vision, vision_len = series(shapes.vision_len, shapes.vision_dim)
    scores = rng.uniform(-3, 3, samples).astype(np.float32)
    labels = np.digitize(scores, [-1e-6, 1e-6]).astype(np.int64)  # neg / neu / pos
    feats = rng.normal(size=(samples, n, shapes.text_feat_dim)).astype(np.float32)
    return Split(
        name=name,
        sample_ids=np.array([f"s{i}$_$0" for i in range(samples)]),
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=audio_len,
        vision_lengths=vision_len,
        class_labels=labels,
        regression_labels=scores,
        text_feats=feats,
    )


def build_adapter(
    model: str,
    train: Split,
    aligned: bool = False,
    task: Task = Task.BINARY,
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    text_encoder: str | None = None,
    seed: int = 0,
    *,
    data: DataSetting | None = None,
    out: Path | str | None = None,
) -> Adapter:
    """The adapter as the harness builds it for this data, set up on ``train``.

    ``data`` and ``out`` are the context's setting and results folder (``AdapterContext.create``:
    by default an IID synth setting and no cache).
    """
    cls = get_adapter(model)
    torch.manual_seed(seed)
    ctx = AdapterContext.create(
        DataSpec.from_split(train, aligned=aligned, task=task),
        cls.resolve_params(preset, dict(overrides or {})),
        data=data,
        device=device,
        seed=seed,
        text_encoder=text_encoder,
        out=out,
    )
    adapter = cls(ctx)
    adapter.setup(train)
    return adapter


def cell_keep(split: Split, rate: float = 0.3, seed: int = 1111):
    """The keep-masks of one RMFM cell on ``split``."""
    return split_keep_masks(
        Mode.RMFM,
        rate=rate,
        condition=None,
        seed=seed,
        text_mask=split.text_mask,
        audio_lengths=split.audio_lengths,
        vision_lengths=split.vision_lengths,
        audio_len=split.audio.shape[1],
        vision_len=split.vision.shape[1],
    )


# ---------------------------------------------------------------------------- process counters
def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0); elsewhere the peak is process-wide.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB (since the last reset, where Linux allows one).

    Linux's ``VmHWM`` where available: ``ru_maxrss`` of a freshly started child also counts the
    parent's resident set at the fork that started it (pytest's, for a benchmark worker).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def phase(device: torch.device, reset_peak: bool = True) -> Iterator[dict[str, float]]:
    """Times the block and records its peak memory and page faults into the yielded dict.

    With ``reset_peak`` the peak resident set is the block's own; without, the process's so far.
    """
    out: dict[str, float] = {}
    _sync(device)
    if reset_peak:
        _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    faults = _minor_faults()
    cpu = time.process_time()
    start = time.perf_counter()
    yield out
    _sync(device)
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu
    out["peak_rss_mb"] = peak_rss_mb()
    out["minor_faults"] = _minor_faults() - faults
    if device.type == "cuda":
        out["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20


# ---------------------------------------------------------------------------- phases
def train_batches(
    adapter: Adapter,
    data: SplitTensors,
    batch_size: int,
    precision: str = "fp32",
    seed: int = 0,
    batches: int | None = None,
) -> torch.Tensor:
    """Training steps of epoch 1 as ``mer_bench.train.fit`` runs them, without the epoch hooks.

    The first ``batches`` shuffled batches (all by default); ``seed`` seeds the shuffle, the
    training corruption and (``seed + 1``) the adapter's augmentation generator. Returns the
    stacked losses (not synced).
    """
    device = adapter.ctx.device
    generator = torch.Generator().manual_seed(seed)
    aug = torch.Generator(device=device).manual_seed(seed + 1)
    corruption = adapter.training_corruption() or TrainCorruption.none()
    adapter.train_mode()
    losses = []
    with autocast(device, precision):
        shuffled = data.batches(batch_size, generator=generator, shuffle=True)
        for batch in itertools.islice(shuffled, batches):
            # the harness applies the model's native training corruption, as in ``fit``
            losses.append(adapter.train_step(corruption.apply(batch.to(device), seed, 1), aug))
    return torch.stack(losses)


def train_epoch(adapter: Adapter, data: SplitTensors, batch_size: int, precision: str) -> None:
    """One epoch as ``mer_bench.train.fit`` runs it, without the validation pass."""
    adapter.on_epoch_start(1)
    losses = train_batches(adapter, data, batch_size, precision)
    adapter.on_epoch_end(1)
    losses.sum().item()  # one sync, as the harness does


def eval_cell(
    adapter: Adapter, data: SplitTensors, batch_size: int, precision: str
) -> dict[str, np.ndarray]:
    """One cell's inference pass as the harness runs it."""
    keep = cell_keep(data.split)
    return predict_split(adapter, data, keep, batch_size, adapter.ctx.device, precision)


def count_flops(fn: Callable[[], object]) -> int:
    """Model FLOPs of one call (matrix products and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measure(
    adapter: Adapter,
    what: str,
    data: SplitTensors,
    batch_size: int,
    precision: str = "fp32",
) -> tuple[Measurement, dict[str, np.ndarray] | None]:
    """Time one ``train`` epoch or ``eval`` cell (after the caller's warm-up)."""
    device = adapter.ctx.device
    outputs: dict[str, np.ndarray] | None = None
    with phase(device) as stats:
        if what == "train":
            train_epoch(adapter, data, batch_size, precision)
        else:
            outputs = eval_cell(adapter, data, batch_size, precision)
    seconds = stats["seconds"]
    result = Measurement(
        model=adapter.name,
        what=what,
        samples=data.size,
        batch_size=batch_size,
        seconds=seconds,
        cpu_seconds=stats["cpu_seconds"],
        samples_per_s=data.size / seconds,
        peak_rss_mb=stats["peak_rss_mb"],
        minor_faults=int(stats["minor_faults"]),
        device=str(device),
        precision=precision,
        peak_device_mb=stats.get("peak_device_mb"),
    )
    return result, outputs


def run(
    model: str,
    what: str,
    samples: int,
    batch_size: int | None = None,
    shapes: str = "mosi",
    preset: str = "default",
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    text_encoder: str | None = None,
    repeats: int = 1,
    flops: bool = False,
) -> Measurement:
    """Build, warm up once, then time ``repeats`` runs; report the median run."""
    shape = SHAPES[shapes]
    split = random_split(shape, samples, seed=0, name="train" if what == "train" else "test")
    adapter = build_adapter(
        model, split, shape.aligned, Task.BINARY, preset, overrides, device, text_encoder
    )
    size = int(batch_size or adapter.ctx.params.get("batch_size", 32))
    data = SplitTensors(split, Task.BINARY)
    warm = SplitTensors(random_split(shape, min(samples, size), 1), Task.BINARY)
    measure(adapter, what, warm, size, precision)
    runs = [measure(adapter, what, data, size, precision)[0] for _ in range(repeats)]
    best = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    best.extra["seconds_all"] = [round(m.seconds, 4) for m in runs]
    if flops:
        total = count_flops(
            (lambda: train_epoch(adapter, data, size, precision))
            if what == "train"
            else (lambda: eval_cell(adapter, data, size, precision))
        )
        best.tflops = total / best.seconds / 1e12
        best.extra["model_tflop"] = total / 1e12
    return best


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--what", choices=("train", "eval"), default="eval")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="mosi")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--text-encoder", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--flops", action="store_true", help="count model FLOPs (TFLOP/s)")
    args = parser.parse_args(argv)
    result = run(
        args.model,
        args.what,
        args.samples,
        args.batch,
        args.shapes,
        args.preset,
        _parse_set(args.set),
        args.device,
        args.precision,
        args.text_encoder,
        args.repeats,
        args.flops,
    )
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
