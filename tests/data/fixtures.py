"""Tiny data files in the exact MMSA / CIDer formats, and hostile pickles, for tests.

``make_split`` / ``make_file`` build the dict a real file holds (object arrays of str for
``raw_text`` and ``id``, float ``text_bert`` as in MMSA's files or int, float labels, optional
``*_lengths``, ``-inf`` in audio); ``write_pickle`` / ``write_joblib`` save them the way MMSA
(pickle) and CIDer (joblib) do; ``build_root`` lays out a whole data root. Sizes are small so
tests stay fast; the per-time-step dims are the real ones unless overridden.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np

CLS, SEP = 101, 102
WORDS = ("THE", "MOVIE", "WAS", "REALLY", "GOOD", "BAD", "I", "THINK", "UMM", "FUNNY")


@dataclass(frozen=True)
class Dims:
    text_len: int
    audio_dim: int
    vision_dim: int
    audio_len: int
    """Unaligned audio frames (aligned files use text_len)."""
    vision_len: int


MOSI = Dims(50, 5, 20, 375, 500)
MOSEI = Dims(50, 74, 35, 500, 500)
CROSS_MOSI = Dims(44, 25, 171, 44, 44)
CROSS_MOSEI = Dims(75, 25, 171, 75, 75)


def make_split(
    n: int,
    *,
    seed: int = 0,
    dims: Dims = MOSI,
    aligned: bool = True,
    float_text_bert: bool = True,
    text_dim: int | None = 768,
    classification: bool = True,
    neg_inf: int = 0,
    min_text_len: int = 3,
    max_text_len: int | None = None,
    id_prefix: str = "vid",
    label_bias: float = 0.0,
) -> dict[str, Any]:
    """One split dict as stored in MMSA files.

    Aligned splits have audio/vision on the text's time axis and no ``*_lengths``; unaligned
    ones carry lengths. ``neg_inf`` puts that many ``-inf`` values into valid audio frames.
    ``label_bias`` shifts the scores (to make re-partitions with a different balance).
    """
    rng = np.random.default_rng(seed)
    t = dims.text_len
    lengths = rng.integers(min_text_len, (max_text_len or t) + 1, size=n)
    positions = np.arange(t)
    valid = positions[None, :] < lengths[:, None]
    ids = np.where(valid, rng.integers(1000, 30522, size=(n, t)), 0)
    ids[:, 0] = CLS
    ids[np.arange(n), lengths - 1] = SEP
    text_bert = np.stack([ids, valid.astype(np.int64), np.zeros_like(ids)], axis=1)
    text_bert = text_bert.astype(np.float64 if float_text_bert else np.int64)

    la, lv = (t, t) if aligned else (dims.audio_len, dims.vision_len)
    a_len = lengths if aligned else rng.integers(0, la + 1, size=n)
    v_len = lengths if aligned else rng.integers(1, lv + 1, size=n)
    audio = rng.normal(size=(n, la, dims.audio_dim)).astype(np.float32)
    audio *= (np.arange(la)[None, :] < a_len[:, None])[..., None]
    vision = rng.normal(size=(n, lv, dims.vision_dim)).astype(np.float32)
    vision *= (np.arange(lv)[None, :] < v_len[:, None])[..., None]
    if neg_inf:
        rows, frames = np.nonzero(np.arange(la)[None, :] < a_len[:, None])
        pick = rng.choice(rows.size, size=neg_inf, replace=False)
        audio[rows[pick], frames[pick], rng.integers(0, dims.audio_dim, size=neg_inf)] = -np.inf

    scores = np.clip(np.round(rng.uniform(-3, 3, size=n) * 3) / 3 + label_bias, -3, 3)
    scores[rng.random(n) < 0.15] = 0.0
    scores = scores.astype(np.float32)
    classes = (np.sign(scores) + 1).astype(np.float64)
    split: dict[str, Any] = {
        "raw_text": np.array(
            [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths - 2], dtype=object
        ),
        "audio": audio,
        "vision": vision,
        "id": np.array([f"{id_prefix}{i // 3}$_${i % 3}" for i in range(n)], dtype=object),
        "text_bert": text_bert,
        "annotations": np.array(
            [("Negative", "Neutral", "Positive")[int(c)] for c in classes], dtype=object
        ),
        "regression_labels": scores,
    }
    if text_dim is not None:
        feats = rng.normal(size=(n, t, text_dim)).astype(np.float32)
        split["text"] = feats * valid[..., None]
    if classification:
        split["classification_labels"] = classes
    if not aligned:
        split["audio_lengths"] = a_len.astype(np.int64)
        split["vision_lengths"] = v_len.astype(np.int64)
    return split


def make_file(sizes: tuple[int, int, int] = (12, 6, 8), *, seed: int = 0, **kw: Any) -> dict:
    """A whole file: ``{"train", "valid", "test"}`` built by ``make_split``."""
    return {
        name: make_split(size, seed=seed * 10 + i, **kw)
        for i, (name, size) in enumerate(zip(("train", "valid", "test"), sizes))
    }


def write_pickle(obj: Any, path: Path, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def write_joblib(obj: Any, path: Path, compress: Any = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(obj, path, compress=compress)
    return path


def build_root(root: Path, *, text_dim: int | None = 16) -> Path:
    """A data root with MOSI/MOSEI IID (MOSEI in MMSA's own ``MOSEI/Processed`` tree), MOSI OOD
    binary/seven (joblib, different re-partitions) and both cross-dataset files."""
    files = {
        "CMU-MOSI/Processed/aligned_50.pkl": make_file(seed=1, text_dim=text_dim),
        "CMU-MOSI/Processed/unaligned_50.pkl": make_file(
            seed=2, aligned=False, float_text_bert=False, neg_inf=5, text_dim=text_dim
        ),
        "MOSEI/Processed/aligned_50.pkl": make_file(seed=3, dims=MOSEI, text_dim=text_dim),
        "MOSEI/Processed/unaligned_50.pkl": make_file(
            seed=4, dims=MOSEI, aligned=False, text_dim=text_dim
        ),
        "MSA_cross_datasets/mosi.pkl": make_file(
            seed=5, dims=CROSS_MOSI, classification=False, id_prefix="mosi", text_dim=text_dim
        ),
        "MSA_cross_datasets/mosei.pkl": make_file(
            (10, 5, 9),
            seed=6,
            dims=CROSS_MOSEI,
            classification=False,
            id_prefix="mosei",
            min_text_len=30,
            text_dim=text_dim,
        ),
    }
    for rel, obj in files.items():
        write_pickle(obj, root / rel)
    for task, sizes, bias in (("binary", (12, 6, 8), -0.5), ("seven", (14, 5, 7), 0.5)):
        for align in ("aligned", "unaligned"):
            obj = make_file(
                sizes,
                seed=7 if task == "binary" else 8,
                aligned=align == "aligned",
                label_bias=bias,
                text_dim=text_dim,
            )
            write_joblib(obj, root / "OOD_MOSI" / task / f"MOSI_{align}_50.pkl")
    return root


# ----------------------------------------------------------------------------- hostile


def write_marker(path: str) -> None:
    """What a hostile pickle would run: leaves a file behind, so tests can see it did not."""
    Path(path).write_text("code from a data file ran")


class MarkerPayload:
    """Unpickling this calls ``write_marker(path)`` (with an unrestricted unpickler)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (write_marker, (self.path,))


class SystemPayload:
    """Unpickling this runs a shell command through ``os.system``."""

    def __init__(self, marker: Path):
        self.command = f"touch {marker}"

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


class GlobalPayload:
    """Unpickling this calls an arbitrary ``callable(*args)`` given by reference."""

    def __init__(self, func: Any, *args: Any):
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


def hostile_wrapper_bytes(payload: Any) -> bytes:
    """A joblib-format stream whose NumpyArrayWrapper state carries ``payload``."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    wrapper = NumpyArrayWrapper(np.ndarray, (2,), "C", np.dtype("float32"))
    wrapper.payload = payload
    return pickle.dumps({"train": wrapper}, protocol=4) + b"\x00" * 64
