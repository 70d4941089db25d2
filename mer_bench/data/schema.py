"""Validation of a loaded MMSA / CIDer data file against the schema (docs/architecture.md, Data).

``inspect_file`` checks every split of a file and turns it into ``Split`` objects, counting what
it finds (non-finite values per key, the dtypes and shapes stored); ``validate_file`` is the
strict form used when loading for a run. Per split it checks:

- required keys ``text_bert``, ``audio``, ``vision``, ``regression_labels`` and, for IID/OOD
  files, ``classification_labels``; optional ``audio_lengths`` / ``vision_lengths`` (absent from
  aligned files: the text lengths apply, which requires the time axis to equal the text
  length), ``text`` (precomputed features), ``raw_text`` and ``id``;
- one sample count N across keys, ``text_bert`` (N, 3, n), ``audio`` (N, L_a, D_a), ``vision``
  (N, L_v, D_v), ``text`` (N, n, D_t), and the same n / L / D in every split;
- ``text_bert`` integral (float or int in the file) → int64; its attention mask contiguous ones
  then zeros with at least one valid token per row; lengths integral in [0, L];
  classification labels in {0, 1, 2} (floats 0.0/1.0/2.0 accepted); regression labels in
  [-3, 3];
- ``-inf`` in ``audio`` is replaced by 0 and counted (every reference loader does this). Any other non-finite value (NaN anywhere, ±inf in vision or text
  features) is counted; ``validate_file`` refuses it, ``inspect_file(..., allow_nonfinite=True)``
  (what ``data check`` uses) only reports it.

Cross-dataset files carry no usable classification labels: the 3-class label is the sign of the
regression score (as the reference does), also when ``classification_labels`` is present.

Arrays are cast in place where the dtype already fits; casts replace the entry in ``raw`` so
that only one copy of each array stays alive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer_bench.data.types import Split, sign_class_labels
from mer_bench.errors import DataError
from mer_bench.protocol import Distribution

SPLITS: tuple[str, ...] = ("train", "valid", "test")
REQUIRED_KEYS: tuple[str, ...] = ("text_bert", "audio", "vision", "regression_labels")
OPTIONAL_KEYS: tuple[str, ...] = (
    "classification_labels",
    "audio_lengths",
    "vision_lengths",
    "text",
    "raw_text",
    "id",
    "annotations",
)
_NUMERIC_KINDS = frozenset("biuf")
_BLOCK_BYTES = 1 << 26
"""Non-finite scans run over blocks of samples of about this many bytes (bounded temporaries)."""


@dataclass(frozen=True)
class KeyStats:
    """What one key of one split held in the file."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    """dtype as stored in the file (before any cast)."""
    neg_inf: int = 0
    pos_inf: int = 0
    nan: int = 0

    @property
    def nonfinite(self) -> int:
        return self.neg_inf + self.pos_inf + self.nan


@dataclass(frozen=True)
class SplitStats:
    name: str
    size: int
    keys: tuple[KeyStats, ...]
    has_lengths: bool
    """Whether the file stores ``audio_lengths`` / ``vision_lengths`` (unaligned files)."""
    extra_keys: tuple[str, ...]
    """Keys outside the schema (ignored)."""
    audio_neg_inf_zeroed: int
    """``-inf`` values in ``audio`` set to 0."""
    remaining_nonfinite: int
    """Non-finite values left after that (NaN anywhere, ±inf elsewhere): refused for runs."""

    def key(self, name: str) -> KeyStats | None:
        return next((k for k in self.keys if k.key == name), None)


@dataclass
class ValidatedFile:
    """A validated file: its splits and what was found in them."""

    path: Path
    kind: Distribution
    splits: dict[str, Split]
    stats: dict[str, SplitStats]

    @property
    def remaining_nonfinite(self) -> int:
        return sum(s.remaining_nonfinite for s in self.stats.values())


class _Ctx:
    """Error context: names the file and split in every message."""

    def __init__(self, path: Path, split: str):
        self.path = path
        self.split = split

    def fail(self, key: str, expected: str, found: str) -> DataError:
        return DataError(
            f"{self.path}: split {self.split!r}, key {key!r}: expected {expected}, found {found}"
        )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype}{list(value.shape)}"
    return type(value).__name__


def _array(ctx: _Ctx, d: Mapping[str, Any], key: str, ndim: int) -> np.ndarray:
    value = d[key]
    if isinstance(value, (list, tuple)):
        # Accept plain sequences for the small per-sample keys; numpy decides the dtype.
        try:
            value = np.asarray(value)
        except ValueError:
            raise ctx.fail(key, f"a {ndim}-d array", "a ragged sequence") from None
    if not isinstance(value, np.ndarray):
        raise ctx.fail(key, f"a numpy array ({ndim}-d)", _describe(value))
    if ndim == 1 and value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]  # some files store labels as (N, 1)
    if value.ndim != ndim:
        raise ctx.fail(key, f"a {ndim}-d array", f"shape {list(value.shape)}")
    return value


def _numeric(ctx: _Ctx, key: str, a: np.ndarray) -> None:
    if a.dtype.kind not in _NUMERIC_KINDS:
        raise ctx.fail(key, "a numeric (bool/int/float) array", f"dtype {a.dtype}")


def _check_n(ctx: _Ctx, key: str, a: np.ndarray, n: int) -> None:
    if a.shape[0] != n:
        raise ctx.fail(key, f"{n} samples (as text_bert)", f"shape {list(a.shape)}")


def _integral(ctx: _Ctx, key: str, a: np.ndarray, what: str) -> np.ndarray:
    """Cast an integer-valued array (float or int in the file) to int64."""
    _numeric(ctx, key, a)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.floor(a))
        if bad.any():
            i = np.flatnonzero(bad.reshape(-1))[0]
            raise ctx.fail(key, f"integer {what}", f"value {float(a.reshape(-1)[i])!r}")
    return a.astype(np.int64, copy=False)


def _float32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32, copy=False)


def _scan_nonfinite(a: np.ndarray, *, zero_neg_inf: bool) -> tuple[np.ndarray, int, int, int]:
    """Count -inf / +inf / NaN over blocks of samples; optionally set -inf to 0 in place.

    Returns the (possibly copied, if it was read-only) array and the three counts.
    """
    neg = pos = nan = 0
    if a.size == 0:
        return a, 0, 0, 0
    step = max(1, _BLOCK_BYTES // max(1, a[0].nbytes))
    for start in range(0, a.shape[0], step):
        block = a[start : start + step]
        bad = ~np.isfinite(block)
        if not bad.any():
            continue
        neg_mask = bad & (block < 0)
        n_neg = int(neg_mask.sum())
        n_nan = int(np.isnan(block).sum())
        neg, nan, pos = neg + n_neg, nan + n_nan, pos + int(bad.sum()) - n_neg - n_nan
        if zero_neg_inf and n_neg:
            if not a.flags.writeable:
                a = a.copy()
                block = a[start : start + step]
            block[neg_mask] = 0.0
    return a, neg, pos, nan


@dataclass
class _Seen:
    """What the per-key checks of one split have gathered: each key's stats (in file order of
    the checks) and its (-inf, +inf, NaN) counts."""

    stats: list[KeyStats] = field(default_factory=list)
    counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def record(self, key: str, a: np.ndarray) -> None:
        self.stats.append(KeyStats(key, tuple(a.shape), str(a.dtype)))

    def record_float(self, key: str, a: np.ndarray, zero_neg_inf: bool) -> np.ndarray:
        """Stats of the stored array, then the float32 copy with its non-finite values counted
        (audio's -inf zeroed)."""
        shape, dtype = tuple(a.shape), str(a.dtype)
        a, neg, pos, nan = _scan_nonfinite(_float32(a), zero_neg_inf=zero_neg_inf)
        self.counts[key] = (neg, pos, nan)
        self.stats.append(KeyStats(key, shape, dtype, neg, pos, nan))
        return a


def _check_keys(ctx: _Ctx, d: Any, kind: Distribution) -> None:
    if not isinstance(d, dict):
        raise DataError(
            f"{ctx.path}: split {ctx.split!r}: expected a dict of arrays, found {_describe(d)}"
        )
    required = REQUIRED_KEYS + (
        ("classification_labels",) if kind is not Distribution.CROSS else ()
    )
    missing = [k for k in required if k not in d]
    if missing:
        raise DataError(
            f"{ctx.path}: split {ctx.split!r}: missing key(s) {', '.join(missing)} "
            f"(a {kind.value} file needs {', '.join(required)}); found keys "
            f"{', '.join(sorted(map(str, d)))}"
        )


def _text_bert(ctx: _Ctx, d: dict, seen: _Seen) -> np.ndarray:
    """text_bert (N, 3, n): integral ids / 0-1 mask of contiguous ones / segments, N, n >= 1 and
    at least one valid token per sample."""
    tb = _array(ctx, d, "text_bert", 3)
    _numeric(ctx, "text_bert", tb)
    seen.record("text_bert", tb)
    if tb.shape[1] != 3 or tb.shape[0] == 0 or tb.shape[2] == 0:
        found = f"shape {list(tb.shape)}"
        if tb.shape[0] == 0:
            raise ctx.fail("text_bert", "a non-empty split (N >= 1)", "N = 0")
        raise ctx.fail("text_bert", "shape (N, 3, n) with n >= 1", found)
    tb = _integral(ctx, "text_bert", tb, "token ids / mask / segment ids")
    d["text_bert"] = tb
    if tb[:, 0].min() < 0 or tb[:, 2].min() < 0:
        raise ctx.fail("text_bert", "non-negative token and segment ids", "negative values")
    mask = tb[:, 1]
    if mask.min() < 0 or mask.max() > 1:
        raise ctx.fail(
            "text_bert", "attention mask (row 1) of 0/1", f"values in [{mask.min()}, {mask.max()}]"
        )
    gaps = mask[:, 1:] > mask[:, :-1]
    if gaps.any():
        row = int(np.flatnonzero(gaps.any(axis=1))[0])
        raise ctx.fail(
            "text_bert",
            "attention mask rows of contiguous ones then zeros",
            f"sample {row} with mask {mask[row].tolist()}",
        )
    text_lengths = mask.sum(axis=1)
    if (text_lengths == 0).any():
        row = int(np.flatnonzero(text_lengths == 0)[0])
        raise ctx.fail("text_bert", "at least one valid token per sample", f"sample {row} empty")
    return tb


def _series(ctx: _Ctx, d: dict, seen: _Seen, n_samples: int, n: int) -> dict[str, np.ndarray]:
    """audio / vision (N, L, D) and the optional precomputed text features (N, n, D_t), as
    float32 with their non-finite values counted."""
    out: dict[str, np.ndarray] = {}
    for key in ("audio", "vision"):
        a = _array(ctx, d, key, 3)
        _numeric(ctx, key, a)
        _check_n(ctx, key, a, n_samples)
        d[key] = out[key] = seen.record_float(key, a, zero_neg_inf=key == "audio")
    if "text" in d:
        t = _array(ctx, d, "text", 3)
        _numeric(ctx, "text", t)
        if t.shape[:2] != (n_samples, n):
            raise ctx.fail("text", f"shape ({n_samples}, {n}, D_t)", f"shape {list(t.shape)}")
        d["text"] = out["text"] = seen.record_float("text", t, zero_neg_inf=False)
    return out


def _lengths(
    ctx: _Ctx, d: dict, seen: _Seen, series: Mapping[str, np.ndarray], text_lengths: np.ndarray
) -> dict[str, np.ndarray]:
    """audio_lengths / vision_lengths in [0, L]; absent only in aligned files (→ text lengths)."""
    n_samples, n = text_lengths.shape[0], d["text_bert"].shape[2]
    lengths: dict[str, np.ndarray] = {}
    for key, feat in (("audio_lengths", "audio"), ("vision_lengths", "vision")):
        steps = series[feat].shape[1]
        if key not in d:
            if steps != n:
                raise DataError(
                    f"{ctx.path}: split {ctx.split!r}: key {key!r} missing although {feat} has "
                    f"{steps} time steps and the text {n} (only aligned files may omit it)"
                )
            lengths[key] = text_lengths
            continue
        raw_len = _array(ctx, d, key, 1)
        _check_n(ctx, key, raw_len, n_samples)
        seen.record(key, raw_len)
        ln = _integral(ctx, key, raw_len, "frame counts")
        if ln.min() < 0 or ln.max() > steps:
            raise ctx.fail(key, f"lengths in [0, {steps}]", f"[{ln.min()}, {ln.max()}]")
        d[key] = lengths[key] = ln
    return lengths


def _labels(
    ctx: _Ctx, d: dict, seen: _Seen, kind: Distribution, n_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Regression scores in [-3, 3] (NaN counted) and the 3-class labels: the file's ids in
    {0, 1, 2}, or for cross-dataset files the sign of the score."""
    reg = _array(ctx, d, "regression_labels", 1)
    _numeric(ctx, "regression_labels", reg)
    _check_n(ctx, "regression_labels", reg, n_samples)
    reg_shape, reg_dtype = tuple(reg.shape), str(reg.dtype)
    reg = _float32(reg)
    reg_nan = int(np.isnan(reg).sum())
    finite = reg[~np.isnan(reg)]
    if finite.size and (finite.min() < -3.0 or finite.max() > 3.0):
        bad = finite[(finite < -3.0) | (finite > 3.0)]
        raise ctx.fail(
            "regression_labels",
            "scores in [-3, 3]",
            f"{bad.size} outside, e.g. {float(bad[0])!r}",
        )
    seen.stats.append(KeyStats("regression_labels", reg_shape, reg_dtype, nan=reg_nan))
    seen.counts["regression_labels"] = (0, 0, reg_nan)
    d["regression_labels"] = reg

    if "classification_labels" in d and kind is not Distribution.CROSS:
        cl = _array(ctx, d, "classification_labels", 1)
        _check_n(ctx, "classification_labels", cl, n_samples)
        seen.record("classification_labels", cl)
        cl = _integral(ctx, "classification_labels", cl, "class ids")
        if cl.min() < 0 or cl.max() > 2:
            bad = cl[(cl < 0) | (cl > 2)]
            raise ctx.fail(
                "classification_labels",
                "class ids in {0, 1, 2}",
                f"{bad.size} outside, e.g. {int(bad[0])}",
            )
        d["classification_labels"] = cl
    elif "classification_labels" in d:
        seen.record("classification_labels", np.asarray(d["classification_labels"]))
    if kind is Distribution.CROSS:
        # NaN scores only get this far under allow_nonfinite (data check); label them neutral.
        return reg, sign_class_labels(np.where(np.isnan(reg), 0.0, reg) if reg_nan else reg)
    return reg, d["classification_labels"]


def _texts(ctx: _Ctx, d: dict, seen: _Seen, n_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample ids (named by split and position when the file has none) and raw text, both
    object arrays of str."""
    strings: dict[str, np.ndarray | None] = {"id": None, "raw_text": None}
    for key in strings:
        if key in d:
            s = _array(ctx, d, key, 1)
            _check_n(ctx, key, s, n_samples)
            seen.record(key, s)
            strings[key] = _strings(ctx, key, s)
    sample_ids = strings["id"]
    if sample_ids is None:
        sample_ids = np.array([f"{ctx.split}${i}" for i in range(n_samples)], dtype=object)
    return sample_ids, strings["raw_text"]


def _validate_split(
    ctx: _Ctx, d: Any, kind: Distribution, allow_nonfinite: bool
) -> tuple[Split, SplitStats]:
    _check_keys(ctx, d, kind)
    seen = _Seen()
    tb = _text_bert(ctx, d, seen)
    n_samples, n = tb.shape[0], tb.shape[2]
    text_lengths = tb[:, 1].sum(axis=1)
    series = _series(ctx, d, seen, n_samples, n)
    lengths = _lengths(ctx, d, seen, series, text_lengths)
    reg, class_labels = _labels(ctx, d, seen, kind, n_samples)
    sample_ids, raw_text = _texts(ctx, d, seen, n_samples)
    if "annotations" in d:
        seen.record("annotations", np.asarray(d["annotations"]))
    extra = tuple(sorted(str(k) for k in d if k not in REQUIRED_KEYS + OPTIONAL_KEYS))

    refused = {key: _refused_counts(key, c) for key, c in seen.counts.items()}
    remaining = sum(sum(c) for c in refused.values())
    if remaining and not allow_nonfinite:
        found = "; ".join(
            f"{key}: {nan} NaN, {inf} inf" for key, (inf, nan) in refused.items() if inf or nan
        )
        raise DataError(
            f"{ctx.path}: split {ctx.split!r}: non-finite values the reference loaders leave "
            f"in place ({found}); models would train on them. Inspect the file with "
            "`mer_bench data check` and clean it"
        )

    split = Split(
        name=ctx.split,
        sample_ids=sample_ids,
        text_bert=tb,
        audio=series["audio"],
        vision=series["vision"],
        audio_lengths=lengths["audio_lengths"],
        vision_lengths=lengths["vision_lengths"],
        class_labels=class_labels,
        regression_labels=reg,
        text_feats=series.get("text"),
        raw_text=raw_text,
    )
    split_stats = SplitStats(
        name=ctx.split,
        size=n_samples,
        keys=tuple(seen.stats),
        has_lengths="audio_lengths" in d or "vision_lengths" in d,
        extra_keys=extra,
        audio_neg_inf_zeroed=seen.counts["audio"][0],
        remaining_nonfinite=remaining,
    )
    return split, split_stats


def _refused_counts(key: str, counts: tuple[int, int, int]) -> tuple[int, int]:
    """(inf, NaN) values a run refuses: everything non-finite except audio's -inf (zeroed)."""
    neg, pos, nan = counts
    return (pos if key == "audio" else neg + pos), nan


def _strings(ctx: _Ctx, key: str, s: np.ndarray) -> np.ndarray:
    if s.dtype.kind == "U":
        return s.astype(object)
    if s.dtype.kind != "O":
        raise ctx.fail(key, "an array of str", f"dtype {s.dtype}")
    not_str = [i for i, v in enumerate(s.tolist()) if not isinstance(v, str)]
    if not_str:
        raise ctx.fail(key, "an array of str", f"{type(s[not_str[0]]).__name__} at {not_str[0]}")
    return s


_SHAPE_AXES: tuple[tuple[str, str, Callable[[Split], tuple[int, ...]]], ...] = (
    ("text_bert", "text length n", lambda s: s.text_bert.shape[2:]),
    ("audio", "(L_a, D_a)", lambda s: s.audio.shape[1:]),
    ("vision", "(L_v, D_v)", lambda s: s.vision.shape[1:]),
    ("text", "D_t", lambda s: () if s.text_feats is None else s.text_feats.shape[2:]),
)


def inspect_file(
    raw: Any, path: Path, *, kind: Distribution, allow_nonfinite: bool = False
) -> ValidatedFile:
    """Validate a loaded file and build its splits, with counts of what was found.

    ``kind`` is the file's role: IID and OOD files need ``classification_labels``; cross-dataset
    files take the 3-class label from the sign of the regression score. May replace arrays in
    ``raw`` by their cast versions.
    """
    path = Path(path)
    if not isinstance(raw, dict):
        raise DataError(
            f"{path}: expected a dict with keys train, valid, test at top level, "
            f"found {_describe(raw)}"
        )
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError(
            f"{path}: missing split(s) {', '.join(missing)}; expected keys train, valid, test, "
            f"found {', '.join(sorted(map(str, raw))) or 'none'}"
        )
    splits: dict[str, Split] = {}
    stats: dict[str, SplitStats] = {}
    for name in SPLITS:
        splits[name], stats[name] = _validate_split(
            _Ctx(path, name), raw[name], kind, allow_nonfinite
        )
    ref = splits["train"]
    for name in SPLITS[1:]:
        for key, what, get in _SHAPE_AXES:
            if get(splits[name]) != get(ref):
                raise DataError(
                    f"{path}: split {name!r}, key {key!r}: expected {what} "
                    f"{list(get(ref))} as in train, found {list(get(splits[name]))}"
                )
    return ValidatedFile(path=path, kind=kind, splits=splits, stats=stats)


def validate_file(raw: Any, path: Path, *, kind: Distribution) -> dict[str, Split]:
    """Strict validation for a run: schema errors and remaining non-finite values raise."""
    return inspect_file(raw, path, kind=kind, allow_nonfinite=False).splits
