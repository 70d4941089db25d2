"""The fit loop (validation early stopping, best-state restore) and honest knob selection."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from mer_bench.adapters import Adapter, AdapterContext
from mer_bench.batch import Batch, SplitTensors
from mer_bench.conformance import tiny_spec, tiny_split
from mer_bench.data.types import DatasetBundle
from mer_bench.errors import ConfigError, ProtocolError
from mer_bench.evaluate import evaluate_cell
from mer_bench.protocol import (
    Alignment,
    Cell,
    Dataset,
    DataSetting,
    Distribution,
    Mode,
    Task,
    TauSelection,
)
from mer_bench.train import FitConfig, fit

SPEC = tiny_spec(Task.BINARY, Alignment.ALIGNED)
DATA = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.ALIGNED, Task.BINARY)


def _onehot(labels: torch.Tensor, shift: int) -> torch.Tensor:
    return nn.functional.one_hot((labels + shift) % 3, 3).float()


class ScriptedEpochs(Adapter):
    """Correct on validation only after the 3rd epoch's training; wrong otherwise."""

    tasks = (Task.BINARY,)
    presets = {"default": {"batch_size": 8, "max_epochs": 10, "patience": 2, "lr": 0.1}}

    def build(self) -> nn.Module:
        module = nn.Module()
        module.register_buffer("epoch", torch.zeros(()))
        module.dummy = nn.Parameter(torch.zeros(1))
        return module

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        loss = (self.model.dummy**2).sum()
        return loss.detach()

    def on_epoch_end(self, epoch: int) -> None:
        self.model.epoch.fill_(epoch)

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        shift = 0 if int(self.model.epoch) == 3 else 1
        return {"scores": _onehot(batch.label, shift)}


class KnobbedOracle(Adapter):
    """scores = a + tau·b. On validation (audio marker +1) b is right and a wrong, so the
    validation-selected tau is the smallest tau > 1; on test the opposite holds."""

    tasks = (Task.BINARY,)
    presets = {"default": {"batch_size": 16, "max_epochs": 1, "patience": 1, "lr": 0.1}}
    knob_grid = {"tau": tuple(round(k / 10, 1) for k in range(31))}
    default_knobs = {"tau": 0.0}

    def build(self) -> nn.Module:
        return nn.Linear(1, 1)

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(())

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        is_valid = batch.audio[:, 0, 0] > 50
        right, wrong = _onehot(batch.label, 0), _onehot(batch.label, 1)
        a = torch.where(is_valid[:, None], wrong, right)
        b = torch.where(is_valid[:, None], right, wrong)
        return {"a": a, "b": b}

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        return outputs["a"] + knobs["tau"] * outputs["b"]


def _bundle() -> DatasetBundle:
    train, valid, test = (
        tiny_split(SPEC, 24, seed=s, name=n) for s, n in ((1, "train"), (2, "valid"), (3, "test"))
    )
    valid.audio[:, 0, 0] = 100.0  # marker read by KnobbedOracle
    return DatasetBundle(DATA, train, valid, test, SPEC)


def _adapter(cls: type[Adapter]) -> Adapter:
    return cls(AdapterContext.create(SPEC, cls.resolve_params("default")))


def test_fit_selects_best_validation_epoch_and_restores_it() -> None:
    adapter = _adapter(ScriptedEpochs)
    result = fit(adapter, _bundle(), seed=0, cfg=FitConfig(max_epochs=10, patience=2, batch_size=8))
    assert result.best_epoch == 3
    assert result.best_valid == 1.0
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]  # patience 2 after epoch 3
    assert int(adapter.model.epoch) == 3  # the selected state is loaded back


def test_knob_selected_on_validation_not_test() -> None:
    bundle = _bundle()
    adapter = _adapter(KnobbedOracle)
    valid = SplitTensors(bundle.valid, Task.BINARY)
    test = SplitTensors(bundle.test, Task.BINARY)
    ev = evaluate_cell(
        adapter,
        valid,
        test,
        Cell(DATA, Mode.RMFM, 0.0),
        seed=1,
        batch_size=16,
        device=torch.device("cpu"),
    )
    assert ev.primary == "valid"
    sel = ev.selections
    assert sel["valid"].knobs == {"tau": 1.1}  # first tau > 1 (tau = 1 ties → lowest class)
    assert sel["valid"].metrics["acc3"] == 0.0  # honest: what validation picked fails on test
    assert sel["default"].knobs == {"tau": 0.0} and sel["default"].metrics["acc3"] == 1.0
    assert sel["test-oracle"].metrics["acc3"] == 1.0  # the optimistic protocol
    assert sel["test-oracle"].per_metric_knobs["acc3"] == {"tau": 0.0}
    # stored scores are those of the selected knob: argmax wrong everywhere on test
    assert (sel["valid"].scores.argmax(1) != ev.labels).all()
    assert (sel["default"].scores.argmax(1) == ev.labels).all()


def test_test_oracle_primary_when_asked() -> None:
    bundle = _bundle()
    adapter = _adapter(KnobbedOracle)
    ev = evaluate_cell(
        adapter,
        SplitTensors(bundle.valid, Task.BINARY),
        SplitTensors(bundle.test, Task.BINARY),
        Cell(DATA, Mode.RMM, 0.5),
        seed=1,
        batch_size=16,
        device=torch.device("cpu"),
        tau_selection="test-oracle",
    )
    assert ev.primary == "test-oracle"
    assert set(ev.selections) == {"valid", "default", "test-oracle"}
    # the enum member works the same; an unknown value is an error, not a silent "valid"
    args = (SplitTensors(bundle.valid, Task.BINARY), SplitTensors(bundle.test, Task.BINARY))
    kw = dict(seed=1, batch_size=16, device=torch.device("cpu"))
    oracle = TauSelection.TEST_ORACLE
    cell = Cell(DATA, Mode.RMM, 0.5)
    assert evaluate_cell(adapter, *args, cell, tau_selection=oracle, **kw).primary == "test-oracle"
    with pytest.raises(ProtocolError, match=r"invalid tau selection 'oracle'; valid: valid, test-"):
        evaluate_cell(adapter, *args, cell, tau_selection="oracle", **kw)


def test_cells_with_identical_masks_share_one_inference() -> None:
    from mer_bench.evaluate import PredictionCache

    bundle = _bundle()
    adapter = _adapter(KnobbedOracle)
    valid = SplitTensors(bundle.valid, Task.BINARY)
    test = SplitTensors(bundle.test, Task.BINARY)
    cache = PredictionCache()
    kw = dict(seed=1, batch_size=16, device=torch.device("cpu"), cache=cache)
    first = evaluate_cell(adapter, valid, test, Cell(DATA, Mode.RMFM, 0.0), **kw)
    same = evaluate_cell(adapter, valid, test, Cell(DATA, Mode.SMM, None, "TAV"), **kw)
    assert cache.hits == 2  # valid and test both reused
    assert first.selections["valid"].metrics == same.selections["valid"].metrics
    evaluate_cell(adapter, valid, test, Cell(DATA, Mode.RMFM, 0.5), **kw)
    assert cache.hits == 2  # a different mask is computed afresh


def test_eval_batch_size_is_a_harness_parameter_of_every_adapter() -> None:
    from mer_bench.adapters import get_adapter
    from mer_bench.train import FitConfig

    mult = get_adapter("mult")
    assert mult.resolve_params("synth")["eval_batch_size"] == 256
    # Any adapter accepts it by --set, typed like a batch size; other unknown keys still fail.
    params = get_adapter("self_mm").resolve_params("synth", {"eval_batch_size": "128"})
    assert params["eval_batch_size"] == 128
    with pytest.raises(ConfigError, match="unknown parameter"):
        get_adapter("self_mm").resolve_params("synth", {"eval_batch_sizes": 2})
    adapter = mult(AdapterContext.create(SPEC, mult.resolve_params("synth")))
    cfg = FitConfig.of(adapter, torch.device("cpu"))
    assert (cfg.batch_size, cfg.eval_batch_size, adapter.eval_batch_size) == (64, 256, 256)
    plain = mult(AdapterContext.create(SPEC, mult.resolve_params("default")))
    assert plain.eval_batch_size == int(plain.ctx.params["batch_size"])


def test_a_batch_coupled_adapter_refuses_another_eval_batch_size() -> None:
    from mer_bench.adapters import get_adapter

    cider = get_adapter("cider")
    with pytest.raises(ConfigError, match="batch-coupled"):
        cider(AdapterContext.create(SPEC, cider.resolve_params("synth", {"eval_batch_size": 64})))
    # refused when the parameters are resolved: a run stops before anything trains
    with pytest.raises(ConfigError, match="batch-coupled"):
        cider.resolve_params("synth", {"eval_batch_size": 64})
    bad = {**cider.resolve_params("synth"), "eval_batch_size": 64}
    with pytest.raises(ConfigError, match="batch-coupled"):  # and by the adapter itself
        cider(AdapterContext.create(SPEC, bad))
    same = cider.resolve_params("synth", {"eval_batch_size": 32})
    assert cider(AdapterContext.create(SPEC, same)).eval_batch_size == 32
    with pytest.raises(ConfigError, match=">= 1"):
        get_adapter("mult")(
            AdapterContext.create(
                SPEC, get_adapter("mult").resolve_params("synth", {"eval_batch_size": -1})
            )
        )
