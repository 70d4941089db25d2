"""``check-adapter``: a conformance suite for adapters (in the spirit of sklearn's check_estimator).

For every task the adapter supports and both alignments, on a tiny in-memory dataset with real
signal, it checks that the adapter builds, trains (loss finite and decreasing on a fixed batch),
predicts well-formed scores, is deterministic under a seed, depends on every modality, scores
each sample the same alone as inside a batch (unless the adapter declares ``batch_coupled``),
round-trips its checkpoint state, and runs under every missing mode.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from mer_bench.adapters import Adapter, AdapterContext, get_adapter
from mer_bench.batch import Batch, KeepMasks, SplitTensors
from mer_bench.data.types import CLS_ID, SEP_ID, DataSpec, Split
from mer_bench.evaluate import cell_keep, complete_view_keep
from mer_bench.protocol import (
    Alignment,
    Cell,
    Dataset,
    DataSetting,
    Distribution,
    MaskRng,
    Mode,
    Task,
)


def tiny_split(spec: DataSpec, n: int, seed: int, name: str = "train") -> Split:
    """A small split in the loader's in-memory format whose label shows in every modality."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(-3, 3, size=n) * 5) / 5
    score[rng.random(n) < 0.1] = 0.0
    sign = np.sign(score)
    L = spec.text_len
    lengths = rng.integers(max(4, L // 3), L + 1, size=n)
    ids = np.zeros((n, L), dtype=np.int64)
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int64)
    words = np.where(sign[:, None] > 0, 2000, np.where(sign[:, None] < 0, 3000, 4000))
    ids[:] = words + rng.integers(0, 50, size=(n, L))
    ids *= mask
    ids[:, 0] = CLS_ID
    ids[np.arange(n), lengths - 1] = SEP_ID
    a_len = lengths if spec.aligned else rng.integers(spec.audio_len // 3, spec.audio_len + 1, n)
    v_len = lengths if spec.aligned else rng.integers(spec.vision_len // 3, spec.vision_len + 1, n)

    def frames(length: int, dim: int, lens: np.ndarray) -> np.ndarray:
        x = rng.normal(size=(n, length, dim)).astype(np.float32) * 0.5
        x += (score[:, None, None] / 3.0).astype(np.float32)
        x *= (np.arange(length)[None, :] < lens[:, None])[..., None]
        return x.astype(np.float32)

    text_feats = None
    if spec.text_feat_dim:
        text_feats = frames(L, spec.text_feat_dim, lengths)
    return Split(
        name=name,
        sample_ids=np.array([f"v{seed}_{i}$_$0" for i in range(n)], dtype=object),
        text_bert=np.stack([ids, mask, np.zeros_like(ids)], axis=1),
        audio=frames(spec.audio_len, spec.audio_dim, a_len),
        vision=frames(spec.vision_len, spec.vision_dim, v_len),
        audio_lengths=a_len.astype(np.int64),
        vision_lengths=v_len.astype(np.int64),
        class_labels=(sign + 1).astype(np.int64),
        regression_labels=score.astype(np.float32),
        text_feats=text_feats,
    )


def tiny_spec(task: Task, alignment: Alignment) -> DataSpec:
    aligned = alignment is Alignment.ALIGNED
    return DataSpec(
        text_len=12,
        audio_len=12 if aligned else 20,
        vision_len=12 if aligned else 24,
        audio_dim=5,
        vision_dim=7,
        text_feat_dim=16,
        aligned=aligned,
        task=task,
    )


SKIPPED = "skipped: "
"""Prefix of the detail of a check that did not apply (it counts as passed)."""


@dataclass
class CheckResult:
    check: str
    task: str
    alignment: str
    ok: bool
    detail: str

    @property
    def skipped(self) -> bool:
        return self.ok and self.detail.startswith(SKIPPED)


def _build(cls: type[Adapter], spec: DataSpec, task: Task, text_encoder: str | None) -> Adapter:
    preset = "synth" if "synth" in cls.presets else "default"
    params = cls.resolve_params(preset)
    torch.manual_seed(0)
    ctx = AdapterContext.create(spec, params, seed=0, text_encoder=text_encoder)
    return cls(ctx)


def _scores(adapter: Adapter, batch: Batch) -> np.ndarray:
    adapter.model.eval()
    with torch.no_grad():
        out = {k: v.float().numpy() for k, v in adapter.predict(batch).items()}
    knobs = dict(adapter.default_knobs)
    return np.asarray(adapter.scores(out, knobs))


def _view(data: SplitTensors, keep: KeepMasks, n: int) -> Batch:
    """The first ``n`` samples under split-level keep-masks (as the harness evaluates)."""
    idx = torch.arange(n)
    return data.batch(idx).with_missing(
        KeepMasks(keep.text[idx], keep.audio[idx], keep.vision[idx])
    )


def _complete(data: SplitTensors, n: int) -> Batch:
    return _view(data, complete_view_keep(data), n)


def _complete_at(data: SplitTensors, index: torch.Tensor) -> Batch:
    """The complete view of the samples at ``index``, in that order."""
    keep = complete_view_keep(data)
    return data.batch(index).with_missing(
        KeepMasks(keep.text[index], keep.audio[index], keep.vision[index])
    )


BATCH_TOLERANCE = 1e-5
"""Largest score difference allowed between a sample scored alone and inside a batch."""


def _checks_for(
    cls: type[Adapter], task: Task, alignment: Alignment, text_encoder: str | None
) -> list[tuple[str, Callable[[], str]]]:
    spec = tiny_spec(task, alignment)
    train = tiny_split(spec, 48, seed=1)
    data = SplitTensors(train, task)
    state: dict[str, Adapter] = {}

    def build() -> str:
        state["a"] = _build(cls, spec, task, text_encoder)
        state["a"].setup(train)
        return f"{sum(p.numel() for p in state['a'].model.parameters())} parameters"

    def trains() -> str:
        adapter = state["a"]
        adapter.train_mode()
        batch = data.batch(torch.arange(32))
        gen = torch.Generator().manual_seed(0)
        losses = [float(adapter.train_step(batch, gen)) for _ in range(25)]
        if not all(math.isfinite(x) for x in losses):
            raise AssertionError(f"non-finite loss: {losses}")
        first, last = np.mean(losses[:3]), np.mean(losses[-3:])
        if not last < first:
            raise AssertionError(f"loss did not decrease: first {first:.4f}, last {last:.4f}")
        return f"loss {first:.3f} -> {last:.3f}"

    def outputs() -> str:
        scores = _scores(state["a"], _complete(data, 16))
        expected = (16, task.info.num_classes) if task.info.num_classes else (16,)
        if scores.shape != expected:
            raise AssertionError(f"scores shape {scores.shape}, expected {expected}")
        if not np.isfinite(scores).all():
            raise AssertionError("non-finite scores")
        return f"scores {scores.shape}"

    def deterministic() -> str:
        a, b = (_build(cls, spec, task, text_encoder) for _ in range(2))
        for x in (a, b):
            x.setup(train)
        sa, sb = (_scores(x, _complete(data, 16)) for x in (a, b))
        if not np.array_equal(sa, sb):
            raise AssertionError(f"max difference {np.abs(sa - sb).max():.3g} under one seed")
        return "identical under one seed"

    def every_modality() -> str:
        adapter = state["a"]
        base_batch = _complete(data, 16)
        base = _scores(adapter, base_batch)
        changed = {
            "text": replace(
                base_batch,
                text_ids=torch.where(
                    base_batch.text_mask.bool() & (base_batch.text_ids > 103),
                    base_batch.text_ids + 7,
                    base_batch.text_ids,
                ),
                text_feats=None if base_batch.text_feats is None else base_batch.text_feats + 1.0,
            ),
            "audio": replace(base_batch, audio=base_batch.audio + 1.0),
            "vision": replace(base_batch, vision=base_batch.vision + 1.0),
        }
        dead = [m for m, b in changed.items() if np.allclose(_scores(adapter, b), base)]
        if dead:
            raise AssertionError(f"predictions ignore {', '.join(dead)}")
        return "text, audio and vision all matter"

    def batch_independent() -> str:
        if cls.batch_coupled:
            return SKIPPED + "the adapter declares batch_coupled=True"
        adapter = state["a"]
        index = torch.arange(16)
        together = _scores(adapter, _complete_at(data, index))
        reordered = _scores(adapter, _complete_at(data, index.flip(0)))[::-1]
        worst = float(np.abs(reordered - together).max())
        for i in (0, 7, 15):
            alone = _scores(adapter, _complete_at(data, index[i : i + 1]))[0]
            worst = max(worst, float(np.abs(alone - together[i]).max()))
        if worst > BATCH_TOLERANCE:
            raise AssertionError(
                f"a sample's scores change with the rest of its batch (max difference "
                f"{worst:.3g}); declare batch_coupled=True only if that is a reproduced quirk"
            )
        return f"alone, in a batch of 16 and reordered agree (max difference {worst:.1e})"

    def round_trip() -> str:
        adapter = state["a"]
        saved = adapter.checkpoint_state()
        other = _build(cls, spec, task, text_encoder)
        other.load_checkpoint_state(saved)
        batch = _complete(data, 16)
        if not np.allclose(_scores(adapter, batch), _scores(other, batch), atol=1e-6):
            raise AssertionError("restored adapter predicts differently")
        return f"{len(saved)} tensors"

    def missing_modes() -> str:
        adapter = state["a"]
        setting = DataSetting(Dataset.SYNTH, Distribution.IID, alignment, task)
        ran = []
        for mode in Mode:
            if mode.aligned_only and alignment is not Alignment.ALIGNED:
                continue
            cell = Cell(setting, mode, None, "T") if mode is Mode.SMM else Cell(setting, mode, 0.5)
            keep = cell_keep(data, cell, seed=3, mask_rng=MaskRng.PER_SAMPLE)
            scores = _scores(adapter, _view(data, keep, 16))
            if not np.isfinite(scores).all():
                raise AssertionError(f"non-finite scores under {cell.label}")
            ran.append(mode.value)
        return ", ".join(ran)

    return [
        ("builds", build),
        ("trains (loss finite, decreasing)", trains),
        ("output shapes", outputs),
        ("deterministic under seed", deterministic),
        ("uses every modality", every_modality),
        ("predictions do not depend on batch composition", batch_independent),
        ("state round-trip", round_trip),
        ("every missing mode", missing_modes),
    ]


def check_adapter(target: str, text_encoder: str | None = None) -> list[CheckResult]:
    cls = get_adapter(target)
    results: list[CheckResult] = []
    for task in cls.tasks:
        for alignment in Alignment:
            failed_build = False
            for name, fn in _checks_for(cls, task, alignment, text_encoder):
                if failed_build:
                    results.append(
                        CheckResult(
                            name, task.value, alignment.value, False, "skipped: build failed"
                        )
                    )
                    continue
                try:
                    detail = fn()
                    results.append(CheckResult(name, task.value, alignment.value, True, detail))
                except Exception as exc:  # a failing check is a result, not a crash
                    tb = traceback.extract_tb(exc.__traceback__)[-1]
                    results.append(
                        CheckResult(
                            name,
                            task.value,
                            alignment.value,
                            False,
                            f"{type(exc).__name__}: {exc} ({tb.filename.split('/')[-1]}:{tb.lineno})",
                        )
                    )
                    failed_build = name == "builds"
    return results


def run_conformance(target: str, text_encoder: str | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    results = check_adapter(target, text_encoder)
    table = Table(title=f"check-adapter {target}")
    for col in ("task", "alignment", "check", "result", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.task,
            r.alignment,
            r.check,
            "[yellow]skip" if r.skipped else "[green]pass" if r.ok else "[red]FAIL",
            r.detail[:90],
        )
    Console(file=sys.stdout, width=160).print(table)
    failed = sum(not r.ok for r in results)
    skipped = sum(r.skipped for r in results)
    print(
        f"{len(results) - failed - skipped} passed, {failed} failed"
        + (f", {skipped} skipped" if skipped else "")
    )
    return 0 if failed == 0 else 1
