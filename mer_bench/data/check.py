"""``mer_bench data check PATH``: validate one data file and summarise what it holds.

The file is read through the import cache (parsed once by the restricted unpickler in a
sandboxed child process, see ``mer_bench.data.cache``) and validated against the schema exactly as
for a run, except that non-finite values left after the reference's ``-inf`` → 0 fix on audio
(NaN anywhere, ±inf in vision or text features) are counted and reported instead of raising;
the report then says the file will be refused for runs (``CheckReport.loadable`` is False).
Anything else invalid raises DataError.

The file's role is detected unless given: a file under ``MSA_cross_datasets/`` or without
``classification_labels`` is a cross-dataset file; otherwise a joblib file is an OOD file
(CIDer saves those with joblib) and a plain pickle an IID file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer_bench.data import cache
from mer_bench.data.checksums import known_file
from mer_bench.data.loaders import CROSS_DIR
from mer_bench.data.safe_pickle import LoadInfo
from mer_bench.data.schema import SPLITS, KeyStats, SplitStats, inspect_file
from mer_bench.data.types import Split, seven_class_labels
from mer_bench.protocol import Distribution

__all__ = ["CheckReport", "SplitSummary", "check_file", "detect_kind"]


@dataclass(frozen=True)
class SplitSummary:
    """What one split holds."""

    name: str
    size: int
    keys: tuple[KeyStats, ...]
    """Per key: shape and dtype as stored, -inf / +inf / NaN counts."""
    class_counts: tuple[int, int, int]
    """3-class labels: negative, neutral, positive."""
    seven_counts: tuple[int, ...]
    """7-class labels -3 … 3 (rows with a NaN score left out)."""
    text_lengths: tuple[int, int]
    audio_lengths: tuple[int, int]
    vision_lengths: tuple[int, int]
    has_lengths: bool
    extra_keys: tuple[str, ...]
    audio_neg_inf_zeroed: int
    remaining_nonfinite: int


@dataclass(frozen=True)
class CheckReport:
    """The result of checking one file; ``render()`` gives the text ``data check`` prints."""

    path: Path
    size_bytes: int
    sha256: str
    known_as: str | None
    """The published file this digest identifies (checksums.KNOWN_SHA256), if any."""
    info: LoadInfo
    kind: Distribution
    kind_reason: str
    text_len: int
    audio_shape: tuple[int, int]
    """(L_a, D_a)"""
    vision_shape: tuple[int, int]
    text_feat_dim: int | None
    splits: tuple[SplitSummary, ...]

    @property
    def loadable(self) -> bool:
        """Whether a run would accept the file (no non-finite values left after the fix)."""
        return all(s.remaining_nonfinite == 0 for s in self.splits)

    def split(self, name: str) -> SplitSummary:
        return next(s for s in self.splits if s.name == name)

    def render(self) -> str:
        compression = f", {self.info.compression}-compressed" if self.info.compression else ""
        protocol = f" protocol {self.info.protocol}" if self.info.protocol is not None else ""
        lines = [
            f"file      {self.path}",
            f"size      {self.size_bytes:,} bytes, {self.info.format}{protocol}{compression}",
            f"sha256    {self.sha256}",
            "checksum  "
            + (
                f"matches the published {self.known_as}"
                if self.known_as
                else "no published checksum known for this file"
            ),
            f"kind      {self.kind.value} ({self.kind_reason})",
            f"shapes    text length n = {self.text_len}; audio L_a = {self.audio_shape[0]}, "
            f"D_a = {self.audio_shape[1]}; vision L_v = {self.vision_shape[0]}, "
            f"D_v = {self.vision_shape[1]}; text features D_t = "
            + ("absent" if self.text_feat_dim is None else str(self.text_feat_dim)),
        ]
        for s in self.splits:
            lines += ["", f"[{s.name}] N = {s.size}"]
            width = max(len(k.key) for k in s.keys)
            lines.append(f"  {'key':<{width}}  {'shape':<22} {'dtype':<9} -inf   +inf   NaN")
            for k in s.keys:
                shape = str(k.shape)
                lines.append(
                    f"  {k.key:<{width}}  {shape:<22} {k.dtype:<9} "
                    f"{k.neg_inf:<6} {k.pos_inf:<6} {k.nan}"
                )
            neg, neu, pos = s.class_counts
            lines.append(f"  3-class   negative {neg}, neutral {neu}, positive {pos}")
            lines.append(
                "  7-class   "
                + ", ".join(
                    f"{c - 3:+d}: {n}".replace("+0", "0") for c, n in enumerate(s.seven_counts)
                )
            )
            stored = "stored" if s.has_lengths else "absent: text lengths apply (aligned)"
            lines.append(
                f"  lengths   text {s.text_lengths[0]}–{s.text_lengths[1]}, "
                f"audio {s.audio_lengths[0]}–{s.audio_lengths[1]}, "
                f"vision {s.vision_lengths[0]}–{s.vision_lengths[1]} (audio/vision {stored})"
            )
            if s.audio_neg_inf_zeroed:
                lines.append(f"  audio     {s.audio_neg_inf_zeroed} -inf values set to 0 on load")
            if s.extra_keys:
                lines.append(f"  ignored   keys {', '.join(s.extra_keys)}")
        lines.append("")
        if self.loadable:
            lines.append("status    OK: valid for runs")
        else:
            total = sum(s.remaining_nonfinite for s in self.splits)
            lines.append(
                f"status    INVALID FOR RUNS: {total} NaN/inf values the loaders do not repair "
                "(see the counts above); runs refuse this file"
            )
        return "\n".join(lines)


def detect_kind(raw: Any, info: LoadInfo, path: Path) -> tuple[Distribution, str]:
    """Guess a file's role (IID / OOD / cross) from where it is and what it holds."""
    if Path(path).parent.name == CROSS_DIR:
        return Distribution.CROSS, f"file is in {CROSS_DIR}/"
    splits = [raw.get(s) for s in SPLITS] if isinstance(raw, dict) else []
    if splits and all(isinstance(s, dict) and "classification_labels" not in s for s in splits):
        return Distribution.CROSS, "no classification_labels: labels from the sign of the score"
    if info.format == "joblib":
        return Distribution.OOD, "joblib file, as CIDer's OOD re-partitions are saved"
    return Distribution.IID, "plain pickle with classification_labels"


def _range(a: np.ndarray) -> tuple[int, int]:
    return int(a.min()), int(a.max())


def _summary(split: Split, stats: SplitStats) -> SplitSummary:
    scores = split.regression_labels
    sevens = seven_class_labels(scores[~np.isnan(scores)])
    neg, neu, pos = (int(c) for c in np.bincount(split.class_labels, minlength=3)[:3])
    return SplitSummary(
        name=split.name,
        size=split.size,
        keys=stats.keys,
        class_counts=(neg, neu, pos),
        seven_counts=tuple(int(c) for c in np.bincount(sevens, minlength=7)[:7]),
        text_lengths=_range(split.text_lengths),
        audio_lengths=_range(split.audio_lengths),
        vision_lengths=_range(split.vision_lengths),
        has_lengths=stats.has_lengths,
        extra_keys=stats.extra_keys,
        audio_neg_inf_zeroed=stats.audio_neg_inf_zeroed,
        remaining_nonfinite=stats.remaining_nonfinite,
    )


def check_file(path: Path, kind: Distribution | None = None) -> CheckReport:
    """Validate one data file and summarise it; DataError if it is invalid.

    ``kind`` forces the file's role; by default it is detected (module docstring).
    """
    path = Path(path)
    imported = cache.load(path)
    raw, info = imported.content, imported.info
    if kind is None:
        kind, reason = detect_kind(raw, info, path)
    else:
        reason = "given"
    checked = inspect_file(raw, path, kind=kind, allow_nonfinite=True)
    del raw
    train = checked.splits["train"]
    return CheckReport(
        path=path,
        size_bytes=imported.size,
        sha256=imported.sha256,
        known_as=known_file(imported.sha256),
        info=info,
        kind=kind,
        kind_reason=reason,
        text_len=train.text_bert.shape[2],
        audio_shape=(train.audio.shape[1], train.audio.shape[2]),
        vision_shape=(train.vision.shape[1], train.vision.shape[2]),
        text_feat_dim=None if train.text_feats is None else train.text_feats.shape[2],
        splits=tuple(_summary(checked.splits[s], checked.stats[s]) for s in SPLITS),
    )
