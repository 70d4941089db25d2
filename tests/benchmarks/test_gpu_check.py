"""The GPU readiness script, exercised on CPU through ``--dry-run``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_check import MODELS, SEEDS, project_grid
from benchmarks.speed import Measurement
from tests.conftest import ROOT, subprocess_env


def _measurement(samples_per_s: float, what: str) -> Measurement:
    return Measurement("m", what, 10, 2, 1.0, 1.0, samples_per_s, 1.0, 0, "cpu", "fp32")


def test_grid_projection_scales_with_throughput_and_epochs() -> None:
    base = {
        m: {"train@32": _measurement(100.0, "train"), "eval@128": _measurement(400.0, "eval")}
        for m in MODELS
    }
    faster = {
        m: {k: dataclasses.replace(v, samples_per_s=2 * v.samples_per_s) for k, v in e.items()}
        for m, e in base.items()
    }
    hours = project_grid(base, epochs=10)
    assert hours["total"] == pytest.approx(sum(hours[m] for m in MODELS))
    assert project_grid(faster, epochs=10)["total"] == pytest.approx(hours["total"] / 2)
    # MulT and Self-MM also have the regression task: more settings than CIDer.
    assert hours["mult"] > hours["cider"]
    # Linear in the epochs: the difference of two epoch counts is pure training time.
    one_more = project_grid(base, epochs=11)["cider"] - hours["cider"]
    # CIDer: binary and seven on 5 settings each of MOSI and MOSEI.
    per_epoch = sum(
        SEEDS * 5 * 2 * (n_train / 100.0 + n_valid / 400.0) / 3600
        for n_train, n_valid in ((1284, 229), (16326, 1871))
    )
    assert one_more == pytest.approx(per_epoch)


def test_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--json", str(out)],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run" in done.stdout
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["ok"]
    assert all(t["returncode"] is None for t in report["tests"])  # listed, not run
    assert set(report["throughput"]) == set(MODELS)
    for entry in report["throughput"].values():
        for measured in entry.values():
            assert measured["samples_per_s"] > 0
            assert measured["extra"]["model_tflop"] > 0  # FLOPs were counted
    assert report["grid_hours"]["total"] > 0


def test_refuses_without_cuda_unless_dry_run() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from benchmarks.gpu_check import main

    assert main([]) == 2
