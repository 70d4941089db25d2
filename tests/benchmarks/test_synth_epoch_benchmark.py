"""Per-epoch training time on the embedded synth benchmark: emt_dlfr next to MulT and CIDer.

synth/iid/unaligned/binary, each model's ``synth`` preset, one training epoch per model in the
same process (the harness's batches, EMT-DLFR with its declared training corruption). The
seconds per epoch of each model and the ratios to MulT are stored in ``benchmark.extra_info``
and printed; the README's models table quotes a run of this file.
"""

from __future__ import annotations

import time

import pytest
import torch

from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.corruption import TrainCorruption
from mer_bench.data.loaders import load_bundle
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task

MODELS = ("emt_dlfr", "mult", "cider")


def _epoch_seconds(name: str, setting: DataSetting, bundle) -> float:
    cls = get_adapter(name)
    params = cls.resolve_params("synth")
    torch.manual_seed(1111)
    adapter = cls(AdapterContext.create(bundle.spec, params, data=setting, seed=1111))
    adapter.setup(bundle.train)
    corruption = adapter.training_corruption() or TrainCorruption.none()
    data = SplitTensors(bundle.train, setting.task)
    shuffle = torch.Generator().manual_seed(1111)
    gen = torch.Generator().manual_seed(1112)
    adapter.on_epoch_start(1)
    adapter.train_mode()
    start = time.perf_counter()
    for batch in data.batches(int(params["batch_size"]), generator=shuffle, shuffle=True):
        adapter.train_step(corruption.apply(batch, 1111, 1), gen)
    adapter.on_epoch_end(1)
    return time.perf_counter() - start


@pytest.mark.slow
def test_synth_epoch_time_emt_dlfr_mult_cider(benchmark) -> None:
    setting = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.UNALIGNED, Task.BINARY)
    bundle = load_bundle(setting)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds = benchmark.pedantic(
            lambda: {m: _epoch_seconds(m, setting, bundle) for m in MODELS}, rounds=1
        )
    finally:
        torch.set_num_threads(previous)
    benchmark.extra_info.update({f"{m}_s_per_epoch": round(s, 3) for m, s in seconds.items()})
    for m in MODELS:
        benchmark.extra_info[f"{m}_vs_mult"] = round(seconds[m] / seconds["mult"], 2)
    print("synth s/epoch:", {m: round(s, 2) for m, s in seconds.items()})
