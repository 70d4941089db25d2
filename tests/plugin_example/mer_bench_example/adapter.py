"""MeanPool: the smallest useful mer_bench adapter (see docs/adapters.md).

Each modality is summarised by a masked mean over its *kept* positions (text through a token
embedding), the three summaries are concatenated, and a two-layer MLP predicts the task.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from mer_bench.adapters import Adapter, SearchDim, register_adapter
from mer_bench.batch import Batch
from mer_bench.protocol import Task


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class MeanPoolNet(nn.Module):
    def __init__(self, audio_dim: int, vision_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.token = nn.Embedding(30522, hidden, padding_idx=0)
        self.audio = nn.Linear(audio_dim, hidden)
        self.vision = nn.Linear(vision_dim, hidden)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        keep_t = batch.keep.text if batch.keep is not None else batch.text_mask.bool()
        keep_a = batch.keep.audio if batch.keep is not None else batch.audio_mask.bool()
        keep_v = batch.keep.vision if batch.keep is not None else batch.vision_mask.bool()
        t = _masked_mean(self.token(batch.text_ids), keep_t)
        a = self.audio(_masked_mean(batch.audio, keep_a))
        v = self.vision(_masked_mean(batch.vision, keep_v))
        return self.head(torch.cat([t, a, v], dim=-1))


@register_adapter("meanpool")
class MeanPoolAdapter(Adapter):
    tasks = (Task.BINARY, Task.SEVEN, Task.REGRESSION)
    presets = {
        "default": {"batch_size": 64, "max_epochs": 30, "patience": 5, "lr": 3e-3, "hidden": 32},
        "synth": {"batch_size": 32, "max_epochs": 20, "patience": 5, "lr": 1e-2, "hidden": 16},
    }
    search_space = {
        "lr": SearchDim("float", 1e-4, 1e-2, log=True),
        "hidden": SearchDim("categorical", choices=(16, 32, 64)),
    }

    def build(self) -> nn.Module:
        spec = self.ctx.spec
        out_dim = spec.num_classes or 1
        return MeanPoolNet(spec.audio_dim, spec.vision_dim, int(self.ctx.params["hidden"]), out_dim)

    def _loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.ctx.task is Task.REGRESSION:
            return nn.functional.l1_loss(out.squeeze(-1), batch.label)
        return nn.functional.cross_entropy(out, batch.label)

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.model(batch), batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        if self.ctx.task is Task.REGRESSION:
            return {"scores": out.squeeze(-1)}
        return {"scores": torch.softmax(out, dim=-1)}

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        return outputs["scores"]
