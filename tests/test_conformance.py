from __future__ import annotations

import pytest
import torch
from mer_bench_example.adapter import MeanPoolAdapter

from mer_bench.batch import Batch
from mer_bench.conformance import check_adapter


class DeafMeanPool(MeanPoolAdapter):
    """Broken on purpose: never looks at the audio."""

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        silent = Batch(**{**batch.__dict__, "audio": torch.zeros_like(batch.audio)})
        return super().predict(silent)


class Flaky(MeanPoolAdapter):
    """Broken on purpose: predictions depend on the global RNG (not deterministic)."""

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().predict(batch)
        return {k: v + torch.rand_like(v) for k, v in out.items()}


class BatchMixing(MeanPoolAdapter):
    """Broken on purpose: a sample's scores move with the mean of its batch."""

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = super().predict(batch)
        return {k: v + v.mean(dim=0, keepdim=True) for k, v in out.items()}


class DeclaredBatchMixing(BatchMixing):
    batch_coupled = True


BATCH_CHECK = "predictions do not depend on batch composition"


def test_conformance_catches_predictions_that_depend_on_the_batch() -> None:
    results = check_adapter(f"{__name__}:BatchMixing")
    rows = [r for r in results if r.check == BATCH_CHECK]
    assert len(rows) == 6 and not any(r.ok for r in rows)
    assert all("change with the rest of its batch" in r.detail for r in rows)
    assert all(r.ok for r in results if r.check != BATCH_CHECK)


def test_declared_batch_coupling_is_skipped_and_says_so() -> None:
    results = check_adapter(f"{__name__}:DeclaredBatchMixing")
    rows = [r for r in results if r.check == BATCH_CHECK]
    assert len(rows) == 6
    assert all(r.ok and r.skipped and "declares batch_coupled=True" in r.detail for r in rows)
    assert not any(r.skipped for r in results if r.check != BATCH_CHECK)


def test_conformance_catches_an_adapter_that_ignores_a_modality() -> None:
    results = check_adapter(f"{__name__}:DeafMeanPool")
    failed = {(r.check, r.task) for r in results if not r.ok}
    assert ("uses every modality", "binary") in failed
    assert all("audio" in r.detail for r in results if r.check == "uses every modality")
    assert all(r.ok for r in results if r.check != "uses every modality")


def test_conformance_catches_nondeterminism() -> None:
    results = check_adapter(f"{__name__}:Flaky")
    assert not any(r.ok for r in results if r.check == "deterministic under seed")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["cider", "cider_fixed", "lnln", "mult", "self_mm", "tfr_net", "tfr_net_fixed"]
)
def test_builtin_adapters_pass_the_conformance_suite(name: str) -> None:
    results = check_adapter(name)
    failures = [f"{r.task}/{r.alignment} {r.check}: {r.detail}" for r in results if not r.ok]
    assert not failures, failures
    assert len(results) == 8 * 2 * len({r.task for r in results})
    coupled = [r for r in results if r.skipped]
    assert len(coupled) == (2 * len({r.task for r in results}) if name == "cider" else 0)
