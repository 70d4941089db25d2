"""GPU readiness: CUDA/bf16 tests, bf16 throughput at MOSEI shapes, and the full grid's cost.

On a machine with a CUDA device:

    python -m benchmarks.gpu_check [--json report.json]

1. runs the CUDA tests and a bf16 end-to-end run of every built-in model on the synthetic data
   (``mer_bench run --device cuda --precision bf16``);
2. measures bf16 training and evaluation throughput at MOSEI's unaligned shapes with a
   bert-base-shaped random text encoder: CIDer at batch 32 and 64, MulT and Self-MM at their
   presets' batch sizes, evaluation at batch 128; each with samples/s, peak device memory and
   achieved TFLOP/s (model FLOPs counted by ``torch.utils.flop_counter`` / time);
3. projects the wall time of the paper's whole grid (MOSI + MOSEI, every setting of each
   model's tasks, 5 seeds, every cell) from those throughputs.

``--dry-run`` runs the same code on the CPU with tiny shapes and a tiny encoder and skips the
test subprocesses (it prints their commands): it checks the script, not the hardware, and its
projection is labelled as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.speed import Measurement, run
from mer_bench.adapters import get_adapter
from mer_bench.protocol import Dataset, cells_for, data_settings
from mer_bench.text_encoder import BERT_BASE_SHAPE

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("cider", "mult", "self_mm")
SEEDS = 5
SPLIT_SIZES: dict[Dataset, tuple[int, int, int]] = {
    # train, valid, test of the IID files (the OOD and cross-dataset files are similar in size)
    Dataset.MOSI: (1284, 229, 686),
    Dataset.MOSEI: (16326, 1871, 4659),
}
TEST_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("-m", "pytest", "-q", "tests/test_missing.py", "-k", "cuda"),
    (
        "-m",
        "mer_bench",
        "run",
        "--models",
        ",".join(MODELS),
        "--protocol",
        "distribution=iid,alignment=unaligned,task=binary,mode=RMFM,rate=0.0|0.5",
        "--seeds",
        "1111",
        "--device",
        "cuda",
        "--precision",
        "bf16",
        "--quiet",
    ),
)


@dataclass(frozen=True)
class Plan:
    """What to measure: the real configuration or the CPU dry run."""

    device: str
    precision: str
    shapes: str
    text_encoder: str | None
    train_samples: int
    eval_samples: int
    cider_batches: tuple[int, ...]
    eval_batch: int

    @classmethod
    def real(cls, device: str) -> Plan:
        return cls(device, "bf16", "mosei", BERT_BASE_SHAPE, 512, 1024, (32, 64), 128)

    @classmethod
    def dry(cls) -> Plan:
        return cls("cpu", "fp32", "mosi-aligned", None, 4, 4, (2,), 2)


def measure_models(plan: Plan) -> dict[str, dict[str, Measurement]]:
    """Training (per batch size) and evaluation throughput of every built-in model."""
    results: dict[str, dict[str, Measurement]] = {}
    for model in MODELS:
        preset_batch = int(get_adapter(model).presets["default"]["batch_size"])
        batches = plan.cider_batches if model == "cider" else (min(preset_batch, 64),)
        if plan.device == "cpu":
            batches = plan.cider_batches[:1]
        entry: dict[str, Measurement] = {}
        for batch in batches:
            entry[f"train@{batch}"] = run(
                model,
                "train",
                max(plan.train_samples, batch),
                batch,
                plan.shapes,
                device=plan.device,
                precision=plan.precision,
                text_encoder=plan.text_encoder,
                flops=True,
            )
        entry[f"eval@{plan.eval_batch}"] = run(
            model,
            "eval",
            plan.eval_samples,
            plan.eval_batch,
            plan.shapes,
            device=plan.device,
            precision=plan.precision,
            text_encoder=plan.text_encoder,
            flops=True,
        )
        results[model] = entry
    return results


def project_grid(
    measured: dict[str, dict[str, Measurement]], epochs: int, seeds: int = SEEDS
) -> dict[str, float]:
    """Hours for the paper's grid: per setting, ``epochs`` epochs (each a training pass and a
    validation pass) and every cell's test and validation passes (without the harness's cache
    of identical masks, so an upper bound), over MOSI + MOSEI and ``seeds`` seeds."""
    hours: dict[str, float] = {}
    for model, entry in measured.items():
        train = max(
            (m for key, m in entry.items() if key.startswith("train@")),
            key=lambda m: m.samples_per_s,
        )
        evaluate = next(m for key, m in entry.items() if key.startswith("eval@"))
        tasks = get_adapter(model).tasks
        seconds = 0.0
        for dataset, (n_train, n_valid, n_test) in SPLIT_SIZES.items():
            for setting in data_settings([dataset], tasks):
                cells = len(cells_for(setting))
                per_epoch = n_train / train.samples_per_s + n_valid / evaluate.samples_per_s
                evaluation = cells * (n_test + n_valid) / evaluate.samples_per_s
                seconds += seeds * (epochs * per_epoch + evaluation)
        hours[model] = seconds / 3600
    hours["total"] = sum(hours.values())
    return hours


def run_tests(dry_run: bool) -> list[dict[str, object]]:
    outcomes: list[dict[str, object]] = []
    for command in TEST_COMMANDS:
        argv = [sys.executable, *command]
        if dry_run:
            outcomes.append({"command": " ".join(argv[1:]), "returncode": None})
            continue
        with tempfile.TemporaryDirectory() as out:
            extra = ["--out", out] if "mer_bench" in command else []
            done = subprocess.run([*argv, *extra], cwd=ROOT, check=False)
        outcomes.append({"command": " ".join(argv[1:]), "returncode": done.returncode})
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, no tests")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=30, help="epochs assumed per setting")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run to check the script on CPU)", file=sys.stderr)
        return 2
    plan = Plan.dry() if args.dry_run else Plan.real(args.device)
    report: dict[str, object] = {
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(args.device) if not args.dry_run else "cpu",
        "plan": asdict(plan),
    }
    report["tests"] = run_tests(args.dry_run)
    measured = measure_models(plan)
    report["throughput"] = {
        model: {key: asdict(m) for key, m in entry.items()} for model, entry in measured.items()
    }
    report["grid_hours"] = project_grid(measured, args.epochs)
    report["grid_assumptions"] = (
        f"{args.epochs} epochs per setting, {SEEDS} seeds, IID split sizes for every setting, "
        "no prediction cache, one device"
    )
    for model, entry in measured.items():
        for key, m in entry.items():
            print(
                f"{model:8s} {key:9s} {m.samples_per_s:9.1f} samples/s  "
                f"peak {m.peak_device_mb or m.peak_rss_mb:8.0f} MB  "
                f"{(m.tflops or 0.0):6.2f} TFLOP/s"
            )
    grid = report["grid_hours"]
    assert isinstance(grid, dict)
    label = " (dry run: CPU, tiny shapes; not a projection)" if args.dry_run else ""
    print(f"paper grid: {grid['total']:.1f} h{label}")
    failed = [t for t in report["tests"] if t["returncode"] not in (0, None)]  # type: ignore[union-attr,index]
    report["ok"] = not failed
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
