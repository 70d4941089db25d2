"""Missing-data keep-masks: which time steps of which modality a cell hides (docs/architecture.md).

Keep-masks are bool, 1 = valid AND kept; padding is never kept, and the text's [CLS] (position 0)
and last valid token ([SEP]) are never dropped, whatever the mode.

Two random-number schemes:

``per-sample`` (default)
    A sample's mask is a pure function of (seed, mode, sample index, rate[, condition]). Every
    draw is a 32-bit counter-based hash ``h`` of (seed, mode, stream, sample index, position),
    computed with int64 torch ops whose intermediate values stay below 2**63, so CPU and CUDA give
    the same bits and batch size, order and worker count do not matter. The uniform is
    ``u = (h + 1/2) / 2**32``, never 0 or 1, and a position is kept when ``u > rate``; this is
    evaluated exactly in integers (``h >= threshold(rate)``). The draws do not depend on the
    rate, so kept sets are nested as the rate rises, in every mode (STMFM: the block start is a
    fixed fraction of the admissible range, so a longer block covers the shorter one).

``reference``
    The reference's legacy NumPy draws for a whole split, bit for bit (docs/cider.md): a
    private ``RandomState(seed)`` (the same stream as ``np.random.seed(seed)``, without touching
    the global state), drawn in the reference's order and shapes.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from mer_bench.batch import KeepMasks
from mer_bench.data.types import UNK_ID, Split
from mer_bench.errors import ConfigError, DataError, ProtocolError
from mer_bench.protocol import MaskRng, Mode, canonical_condition, parse_enum

__all__ = [
    "MASK_RNGS",
    "cell_keep_masks",
    "keep_by_rates",
    "keep_threshold",
    "sample_bits",
    "split_keep_masks",
    "split_mask_arrays",
    "training_uniforms",
    "write_masks_npz",
]

MASK_RNGS: tuple[str, ...] = tuple(m.value for m in MaskRng)
"""Values of ``--mask-rng``."""

# ----------------------------------------------------------------------------- hashing

_M32 = 0xFFFFFFFF
_TWO32 = 1 << 32
# Both multipliers are odd (so each round is a bijection on 32-bit words) and below 2**31, so a
# product with a value below 2**32 stays below 2**63: no int64 overflow on any device.
_MUL1 = 0x21F0AAAD
_MUL2 = 0x735A2D97
_GOLDEN = 0x9E3779B9
_POS_SALT = 0x85EBCA6B
# Just below ATen's parallel grain size (32768 elements): each hash op on a CPU chunk runs
# serially on cache-resident buffers. Measured on the 2-core dev box this beats whole-array
# OpenMP ops by 2-3x, and it does not collapse when the cores are oversubscribed.
_CPU_CHUNK_ELEMENTS = (1 << 15) - 1


class _Stream(IntEnum):
    """Independent hash streams within one (seed, mode)."""

    TEXT = 1
    AUDIO = 2
    VISION = 3
    SHARED = 4
    """TMFM's per-step draws and STMFM's block start, shared by all three modalities."""
    MODALITY = 5
    """RMM's one draw per (sample, modality): position 0/1/2 = text/audio/vision."""


# Fixed codes (not Enum order) so that reordering Mode never changes anyone's masks.
_MODE_CODE: dict[Mode, int] = {
    Mode.RMFM: 0x11,
    Mode.RMFM_SAME: 0x12,
    Mode.RMM: 0x13,
    Mode.TMFM: 0x14,
    Mode.STMFM: 0x15,
    Mode.SMM: 0x16,
}


def _mix32_int(x: int) -> int:
    x ^= x >> 16
    x = (x * _MUL1) & _M32
    x ^= x >> 15
    x = (x * _MUL2) & _M32
    x ^= x >> 15
    return x


def _mix32_(x: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """The same bijective 32-bit mixer as ``_mix32_int``, in place on an int64 tensor < 2**32.

    ``scratch`` (same shape) holds the shifted copies; reusing it avoids an allocation per step.
    """
    tmp = torch.empty_like(x) if scratch is None else scratch
    for shift, mul in ((16, _MUL1), (15, _MUL2)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=tmp))
        x.mul_(mul).bitwise_and_(_M32)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=tmp))
    return x


def _stream_key(seed: int, mode: Mode, stream: _Stream) -> int:
    """32-bit key of one (seed, mode, stream); any Python int seed (taken modulo 2**64)."""
    s = seed & ((1 << 64) - 1)
    key = 0
    for part in (s & _M32, s >> 32, _MODE_CODE[mode], int(stream)):
        key = _mix32_int((key + part + _GOLDEN) & _M32)
    return key


def _sample_keys(seed: int, mode: Mode, stream: _Stream, index: torch.Tensor) -> torch.Tensor:
    """(B,) int64 32-bit hash of (seed, mode, stream, index)."""
    key = _stream_key(seed, mode, stream)
    idx = index.to(torch.int64)
    # Indices are split into 32-bit halves so that every int64 index gets its own stream.
    h = _mix32_(((idx & _M32) + (key + _GOLDEN)) & _M32)
    return _mix32_((h + (idx >> 32) + _GOLDEN) & _M32)


def _position_keys(length: int, device: torch.device) -> torch.Tensor:
    """(length,) int64 32-bit hash of each position."""
    return _mix32_((torch.arange(length, dtype=torch.int64, device=device) + _POS_SALT) & _M32)


def sample_bits(
    seed: int, mode: Mode, stream: int, index: torch.Tensor, length: int
) -> torch.Tensor:
    """(B, length) int64 hashes in [0, 2**32) of (seed, mode, stream, index[b], position).

    The per-sample randomness behind every ``per-sample`` mask; ``(h + 0.5) / 2**32`` is the
    uniform draw. ``stream`` is 1/2/3 = text/audio/vision, 4 = shared (TMFM, STMFM), 5 = RMM.
    """
    rows = _sample_keys(seed, mode, _Stream(stream), index)
    cols = _position_keys(length, rows.device)
    return _mix32_(rows.unsqueeze(1) ^ cols.unsqueeze(0))


def keep_threshold(rate: float) -> int:
    """Smallest hash kept at ``rate``: ``(h + 1/2) / 2**32 > rate`` ⇔ ``h >= keep_threshold``.

    0 at rate 0 (keep everything), 2**32 at rate 1 (keep nothing); exact (rational arithmetic).
    """
    return math.floor(Fraction(rate) * _TWO32 - Fraction(1, 2)) + 1


# ----------------------------------------------------------------------------- validation


def _check_cell(
    mode: Mode | str, rate: float | None, condition: str | None
) -> tuple[Mode, float, str]:
    """Validate a (mode, rate | condition) triple; return (mode, rate, canonical condition)."""
    try:
        mode = Mode(mode)
    except ValueError:
        raise ProtocolError(
            f"invalid mode {mode!r}; valid: {', '.join(m.value for m in Mode)}"
        ) from None
    if mode.uses_rate:
        if condition is not None:
            raise ProtocolError(f"{mode.value} takes a rate, not a condition")
        if rate is None:
            raise ProtocolError(f"{mode.value} needs a rate in [0, 1]")
        try:
            r = float(rate)
        except (TypeError, ValueError):
            raise ProtocolError(f"invalid rate {rate!r}; must be a number in [0, 1]") from None
        if not 0.0 <= r <= 1.0:  # also rejects NaN
            raise ProtocolError(f"invalid rate {rate!r} for {mode.value}; must lie in [0, 1]")
        return mode, r, ""
    if rate is not None:
        raise ProtocolError("SMM takes a condition (T, A, V, TA, TV, AV, TAV), not a rate")
    if condition is None:
        raise ProtocolError("SMM needs a condition: one of T, A, V, TA, TV, AV, TAV")
    return mode, 0.0, canonical_condition(condition)


def _check_aligned_shapes(mode: Mode, n: int, l_a: int, l_v: int) -> None:
    if mode.aligned_only and not n == l_a == l_v:
        raise ProtocolError(
            f"{mode.value} is defined for aligned data only: text, audio and vision lengths "
            f"must be equal (got n={n}, L_a={l_a}, L_v={l_v})"
        )


def _check_rng(rng: MaskRng | str) -> MaskRng:
    return parse_enum(MaskRng, rng, "mask rng")


# ----------------------------------------------------------------------------- common


@dataclass(frozen=True)
class _Inputs:
    """Validity of one batch (or split), as bool tensors, plus the text's [SEP] index + 1."""

    index: torch.Tensor
    """(B,) int64"""
    text: torch.Tensor
    """(B, n) bool"""
    audio: torch.Tensor
    vision: torch.Tensor
    text_len: torch.Tensor
    """(B,) int64: index of the first 0 of the text mask (the reference's text_input_len)."""

    @classmethod
    def build(
        cls,
        index: torch.Tensor,
        text_mask: torch.Tensor,
        audio_mask: torch.Tensor,
        vision_mask: torch.Tensor,
    ) -> _Inputs:
        # .to(bool) is free on bool input, unlike != 0 (which promotes)
        text = text_mask.to(torch.bool)
        # Leading run of ones = first zero of the mask with a 0 column appended (docs/cider.md).
        text_len = text.to(torch.int64).cumprod(dim=1).sum(dim=1)
        return cls(
            index=index.to(device=text_mask.device, dtype=torch.int64),
            text=text,
            audio=audio_mask.to(torch.bool),
            vision=vision_mask.to(torch.bool),
            text_len=text_len,
        )

    @property
    def specials(self) -> torch.Tensor:
        """(B, n) bool: [CLS] and [SEP] (position text_len − 1), for non-empty text only."""
        pos = torch.arange(self.text.shape[1], device=self.text.device).unsqueeze(0)
        last = (self.text_len - 1).unsqueeze(1)
        return ((pos == 0) | (pos == last)) & (self.text_len > 0).unsqueeze(1)


@dataclass(frozen=True)
class _PerModality:
    """Raw keep draws per modality, before validity and [CLS]/[SEP] are applied."""

    text: torch.Tensor
    audio: torch.Tensor
    vision: torch.Tensor


@dataclass(frozen=True)
class _Shared:
    """One raw keep array over text positions shared by all three modalities (TMFM, STMFM)."""

    mask: torch.Tensor


def _and(raw: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """raw ∧ valid, where raw may be (B, 1) per-modality flags."""
    if raw.shape != valid.shape:
        # A materialised expand is ~10x faster than a broadcasting bool op on CPU.
        raw = raw.expand_as(valid).contiguous()
    return raw & valid


def _finalize(raw: _PerModality | _Shared, inp: _Inputs) -> KeepMasks:
    specials = inp.specials
    if isinstance(raw, _Shared):
        # Restoring [CLS]/[SEP] on the one shared array also keeps A/V at those steps.
        shared = _and(raw.mask, inp.text) | specials
        return KeepMasks(shared, shared & inp.audio, shared & inp.vision)
    return KeepMasks(
        _and(raw.text, inp.text) | specials,
        _and(raw.audio, inp.audio),
        _and(raw.vision, inp.vision),
    )


def _condition_rates(condition: str) -> tuple[float, float, float]:
    """SMM as RMFM_same rates: 0 for a kept modality, 1 for a dropped one (docs/cider.md)."""
    t, a, v = (0.0 if m in condition else 1.0 for m in "TAV")
    return t, a, v


# ----------------------------------------------------------------------------- per-sample


def _threshold_keep(
    seed: int, mode: Mode, stream: _Stream, rate: float, inp: _Inputs, length: int
) -> torch.Tensor:
    """(B, length) bool: u > rate for this stream's draws."""
    t = keep_threshold(rate)
    shape = (inp.index.shape[0], length)
    # Rate 0 / 1 keep all / none whatever h is; skipping the hash there changes no bit.
    if t <= 0:
        return torch.ones(shape, dtype=torch.bool, device=inp.text.device)
    if t >= _TWO32:
        return torch.zeros(shape, dtype=torch.bool, device=inp.text.device)
    device = inp.text.device
    out = torch.empty(shape, dtype=torch.bool, device=device)
    rows = _sample_keys(seed, mode, stream, inp.index)
    cols = _position_keys(length, device).unsqueeze(0)
    # CPU: row chunks through two int64 buffers allocated once (see _CPU_CHUNK_ELEMENTS);
    # accelerators: one chunk.
    step = shape[0]
    if device.type == "cpu":
        step = max(1, _CPU_CHUNK_ELEMENTS // max(length, 1))
    bits = torch.empty((min(step, shape[0]), length), dtype=torch.int64, device=device)
    scratch = torch.empty_like(bits)
    for start in range(0, shape[0], step):
        chunk = rows[start : start + step].unsqueeze(1)
        h = torch.bitwise_xor(chunk, cols, out=bits[: chunk.shape[0]])
        _mix32_(h, scratch[: chunk.shape[0]])
        torch.ge(h, t, out=out[start : start + step])
    return out


def _ps_rmfm(mode: Mode, rate: float, cond: str, seed: int, inp: _Inputs) -> _PerModality:
    streams = (_Stream.TEXT, _Stream.AUDIO, _Stream.VISION)
    return _PerModality(
        *(
            _threshold_keep(seed, mode, s, rate, inp, valid.shape[1])
            for s, valid in zip(streams, (inp.text, inp.audio, inp.vision))
        )
    )


def _ps_rmm(mode: Mode, rate: float, cond: str, seed: int, inp: _Inputs) -> _PerModality:
    whole = _threshold_keep(seed, mode, _Stream.MODALITY, rate, inp, 3)
    # All three modalities of a sample may be dropped together.
    return _PerModality(*(whole[:, m : m + 1] for m in range(3)))


def _ps_tmfm(mode: Mode, rate: float, cond: str, seed: int, inp: _Inputs) -> _Shared:
    return _Shared(_threshold_keep(seed, mode, _Stream.SHARED, rate, inp, inp.text.shape[1]))


def _ps_stmfm(mode: Mode, rate: float, cond: str, seed: int, inp: _Inputs) -> _Shared:
    n = inp.text.shape[1]
    # float64 product and round-half-even, as NumPy does in the reference: same bits on every
    # device, computed there (no host transfer).
    b = torch.round((inp.text_len - 2).clamp_min(0).to(torch.float64) * rate).to(torch.int64)
    # Starts admissible: 1 … len − b − 1, i.e. m = len − 1 − b choices (0 only for len < 2,
    # where b = 0 and the block is empty anyway).
    choices = (inp.text_len - 1 - b).clamp_min(0)
    h = _sample_keys(seed, mode, _Stream.SHARED, inp.index)
    # start = 1 + floor(v·m) with v = h / 2**32 fixed across rates: when b grows by one, m
    # shrinks by one and the start moves back by at most one, so the new block covers the old.
    start = 1 + ((h * choices) >> 32)
    pos = torch.arange(n, device=inp.text.device).unsqueeze(0)
    in_block = (pos >= start.unsqueeze(1)) & (pos < (start + b).unsqueeze(1))
    return _Shared(~in_block)


def _ps_smm(mode: Mode, rate: float, cond: str, seed: int, inp: _Inputs) -> _PerModality:
    # Rates 0/1 keep all/none whatever the draw, so SMM needs no randomness at all.
    b = inp.index.shape[0]
    return _PerModality(
        *(torch.full((b, 1), m in cond, dtype=torch.bool, device=inp.text.device) for m in "TAV")
    )


_PerSampleFn = Callable[[Mode, float, str, int, _Inputs], _PerModality | _Shared]

_PER_SAMPLE: dict[Mode, _PerSampleFn] = {
    Mode.RMFM: _ps_rmfm,
    Mode.RMFM_SAME: _ps_rmfm,
    Mode.RMM: _ps_rmm,
    Mode.TMFM: _ps_tmfm,
    Mode.STMFM: _ps_stmfm,
    Mode.SMM: _ps_smm,
}


def cell_keep_masks(
    mode: Mode,
    *,
    rate: float | None,
    condition: str | None,
    seed: int,
    index: torch.Tensor,
    text_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    vision_mask: torch.Tensor,
) -> KeepMasks:
    """Keep-masks of one batch of a cell, a pure function of (seed, mode, index, rate | condition).

    ``index`` (B,) are the samples' row indices in their split; the masks (B, n), (B, L_a),
    (B, L_v) are the original validity masks. Output lives on ``text_mask``'s device; with
    ``index`` on that device too, nothing synchronises with the host.
    """
    mode, r, cond = _check_cell(mode, rate, condition)
    if index.dim() != 1 or text_mask.dim() != 2 or audio_mask.dim() != 2 or vision_mask.dim() != 2:
        raise DataError(
            "cell_keep_masks expects index (B,) and masks (B, L); got shapes "
            f"{tuple(index.shape)}, {tuple(text_mask.shape)}, {tuple(audio_mask.shape)}, "
            f"{tuple(vision_mask.shape)}"
        )
    b = index.shape[0]
    if not text_mask.shape[0] == audio_mask.shape[0] == vision_mask.shape[0] == b:
        raise DataError(
            f"batch sizes differ: index {b}, text {text_mask.shape[0]}, audio "
            f"{audio_mask.shape[0]}, vision {vision_mask.shape[0]}"
        )
    _check_aligned_shapes(mode, text_mask.shape[1], audio_mask.shape[1], vision_mask.shape[1])
    inp = _Inputs.build(index, text_mask, audio_mask, vision_mask)
    return _finalize(_PER_SAMPLE[mode](mode, r, cond, seed, inp), inp)


# ----------------------------------------------------------------------------- training


def _training_key(seed: int, epoch: int, stream: _Stream) -> int:
    """32-bit key of one (seed, epoch, stream) of training-time corruption (its own code space,
    disjoint from the evaluation modes' keys)."""
    s = seed & ((1 << 64) - 1)
    key = 0
    for part in (s & _M32, s >> 32, _TRAIN_CODE, epoch & _M32, int(stream)):
        key = _mix32_int((key + part + _GOLDEN) & _M32)
    return key


_TRAIN_CODE = 0x21


def training_uniforms(
    seed: int, epoch: int, stream: int, index: torch.Tensor, length: int
) -> torch.Tensor:
    """(B, length) float64 uniforms in (0, 1), a pure function of (seed, epoch, stream,
    index[b], position): the randomness of training-time corruption (``mer_bench.corruption``).

    ``stream`` 1/2/3 = text/audio/vision positions, 4 = per-modality rates, 5 = per-modality
    "stays complete" draws.
    """
    key = _training_key(seed, epoch, _Stream(stream))
    idx = index.to(torch.int64)
    rows = _mix32_(((idx & _M32) + (key + _GOLDEN)) & _M32)
    rows = _mix32_((rows + (idx >> 32) + _GOLDEN) & _M32)
    bits = _mix32_(rows.unsqueeze(1) ^ _position_keys(length, rows.device).unsqueeze(0))
    return (bits.to(torch.float64) + 0.5) / _TWO32


def keep_by_rates(
    index: torch.Tensor,
    text_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    vision_mask: torch.Tensor,
    rates: torch.Tensor,
    uniforms: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> KeepMasks:
    """Keep-masks that drop each valid position of modality m of sample b when its uniform is
    at most ``rates[b, m]`` (B, 3); [CLS]/[SEP] are kept and padding is never kept."""
    inp = _Inputs.build(index, text_mask, audio_mask, vision_mask)
    raw = _PerModality(*(u > rates[:, m : m + 1] for m, u in enumerate(uniforms)))
    return _finalize(raw, inp)


# ----------------------------------------------------------------------------- reference


def _ref_rmfm(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _PerModality:
    n_samples, n, l_a, l_v = shapes
    keep = rs.rand(n_samples, n + l_a + l_v) > rate
    return _PerModality(*_np_parts(keep, (n, l_a)))


def _ref_rmfm_same_rates(
    rs: np.random.RandomState, rates: tuple[float, float, float], shapes: tuple[int, int, int, int]
) -> _PerModality:
    n_samples = shapes[0]
    return _PerModality(
        *(torch.from_numpy(rs.rand(n_samples, length) > r) for length, r in zip(shapes[1:], rates))
    )


def _ref_rmfm_same(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _PerModality:
    return _ref_rmfm_same_rates(rs, (rate, rate, rate), shapes)


def _ref_smm(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _PerModality:
    return _ref_rmfm_same_rates(rs, _condition_rates(cond), shapes)


def _ref_rmm(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _PerModality:
    whole = torch.from_numpy(rs.rand(shapes[0], 3) > rate)
    # All three modalities of a sample may be dropped together.
    return _PerModality(*(whole[:, m : m + 1] for m in range(3)))


def _ref_tmfm(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _Shared:
    return _Shared(torch.from_numpy(rs.rand(shapes[0], shapes[1]) > rate))


def _ref_stmfm(
    rs: np.random.RandomState,
    rate: float,
    cond: str,
    inp: _Inputs,
    shapes: tuple[int, int, int, int],
) -> _Shared:
    lengths = inp.text_len.numpy()
    short = np.flatnonzero(lengths < 2)
    if short.size:
        raise DataError(
            f"STMFM needs [CLS] and [SEP] in every sample; sample {int(short[0])} has text "
            f"length {int(lengths[short[0]])}"
        )
    b = np.round((lengths - 2) * rate).astype(np.int64)
    # One randint(1, len_i − b_i) per sample in order; an array of upper bounds draws the same
    # stream as the reference's per-sample loop (checked against it in tests/test_missing.py).
    start = rs.randint(1, lengths - b)
    pos = np.arange(shapes[1])[None, :]
    in_block = (pos >= start[:, None]) & (pos < (start + b)[:, None])
    return _Shared(torch.from_numpy(~in_block))


def _np_parts(keep: np.ndarray, widths: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    n, l_a = widths
    return tuple(
        torch.from_numpy(np.ascontiguousarray(part))
        for part in (keep[:, :n], keep[:, n : n + l_a], keep[:, n + l_a :])
    )


_ReferenceFn = Callable[
    [np.random.RandomState, float, str, _Inputs, tuple[int, int, int, int]],
    _PerModality | _Shared,
]

_REFERENCE: dict[Mode, _ReferenceFn] = {
    Mode.RMFM: _ref_rmfm,
    Mode.RMFM_SAME: _ref_rmfm_same,
    Mode.RMM: _ref_rmm,
    Mode.TMFM: _ref_tmfm,
    Mode.STMFM: _ref_stmfm,
    Mode.SMM: _ref_smm,
}


# ----------------------------------------------------------------------------- whole split


def split_keep_masks(
    mode: Mode,
    *,
    rate: float | None,
    condition: str | None,
    seed: int,
    text_mask: np.ndarray,
    audio_lengths: np.ndarray,
    vision_lengths: np.ndarray,
    audio_len: int,
    vision_len: int,
    rng: MaskRng | str = MaskRng.PER_SAMPLE,
) -> KeepMasks:
    """Keep-masks of a whole split (CPU bool tensors), for caching per cell.

    ``rng="per-sample"`` equals ``cell_keep_masks`` on ``index = arange(N)``; ``"reference"``
    reproduces the reference's NumPy draws for the split bit for bit.
    """
    mode, r, cond = _check_cell(mode, rate, condition)
    rng = _check_rng(rng)
    text_mask = np.asarray(text_mask)
    if text_mask.ndim != 2:
        raise DataError(f"text mask must be (N, n); got shape {text_mask.shape}")
    n_samples, n = text_mask.shape
    lengths = []
    for name, values, width in (
        ("audio", audio_lengths, audio_len),
        ("vision", vision_lengths, vision_len),
    ):
        values = np.asarray(values)
        if values.shape != (n_samples,):
            raise DataError(f"{name} lengths must be ({n_samples},); got shape {values.shape}")
        if values.size and (values.min() < 0 or values.max() > width):
            raise DataError(f"{name} lengths must lie in [0, {width}]")
        lengths.append(torch.from_numpy(values.astype(np.int64)))
    _check_aligned_shapes(mode, n, audio_len, vision_len)
    steps_a = torch.arange(audio_len)
    steps_v = torch.arange(vision_len)
    audio_mask = steps_a.unsqueeze(0) < lengths[0].unsqueeze(1)
    vision_mask = steps_v.unsqueeze(0) < lengths[1].unsqueeze(1)
    index = torch.arange(n_samples, dtype=torch.int64)
    text_t = torch.from_numpy(text_mask)
    if rng is MaskRng.PER_SAMPLE:
        return cell_keep_masks(
            mode,
            rate=rate,
            condition=condition,
            seed=seed,
            index=index,
            text_mask=text_t,
            audio_mask=audio_mask,
            vision_mask=vision_mask,
        )
    if not 0 <= seed < _TWO32:
        raise ProtocolError(f"--mask-rng reference needs a seed in [0, 2**32); got {seed}")
    inp = _Inputs.build(index, text_t, audio_mask, vision_mask)
    # Same stream as the reference's np.random.seed(seed), without disturbing global state.
    rs = np.random.RandomState(seed)
    raw = _REFERENCE[mode](rs, r, cond, inp, (n_samples, n, audio_len, vision_len))
    return _finalize(raw, inp)


def split_mask_arrays(
    split: Split,
    mode: Mode,
    *,
    rate: float | None,
    condition: str | None,
    seed: int,
    rng: MaskRng | str = MaskRng.PER_SAMPLE,
) -> dict[str, np.ndarray]:
    """The arrays ``python -m mer_bench masks`` writes (README, "Commands").

    Masks are uint8 (N, L) (``*_input_mask``: 1 = valid; ``*_keep``: 1 = valid and kept);
    ``text_ids`` / ``text_ids_missing`` are int64 token ids before / after masking (dropped
    tokens → [UNK] = 100, padding unchanged).
    """
    l_a, l_v = split.audio.shape[1], split.vision.shape[1]
    keep = split_keep_masks(
        mode,
        rate=rate,
        condition=condition,
        seed=seed,
        text_mask=split.text_mask,
        audio_lengths=split.audio_lengths,
        vision_lengths=split.vision_lengths,
        audio_len=l_a,
        vision_len=l_v,
        rng=rng,
    )
    text_mask = (split.text_mask != 0).astype(np.int64)
    ids = split.text_ids.astype(np.int64)
    kt = keep.text.numpy().astype(np.int64)
    return {
        "text_input_mask": text_mask.astype(np.uint8),
        "audio_input_mask": (np.arange(l_a)[None, :] < split.audio_lengths[:, None]).astype(
            np.uint8
        ),
        "vision_input_mask": (np.arange(l_v)[None, :] < split.vision_lengths[:, None]).astype(
            np.uint8
        ),
        "text_keep": kt.astype(np.uint8),
        "audio_keep": keep.audio.numpy().astype(np.uint8),
        "vision_keep": keep.vision.numpy().astype(np.uint8),
        "text_ids": ids,
        "text_ids_missing": kt * ids + UNK_ID * (text_mask - kt),
    }


def write_masks_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` exactly (no ``.npz`` appended), atomically, compressed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"cannot write masks to {path}: {exc.strerror or exc}") from None
