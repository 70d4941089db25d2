"""Missing-data keep-masks: semantics (docs/architecture.md), purity, nestedness, reference parity."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mer_bench.batch import KeepMasks, SplitTensors, validity_mask
from mer_bench.data.types import CLS_ID, PAD_ID, SEP_ID, UNK_ID, Split
from mer_bench.errors import ConfigError, DataError, ProtocolError
from mer_bench.missing import (
    _M32,
    _mix32_int,
    _stream_key,
    cell_keep_masks,
    keep_threshold,
    sample_bits,
    split_keep_masks,
    split_mask_arrays,
    write_masks_npz,
)
from mer_bench.protocol import CONDITIONS, RATES, Mode, Task

RATE_MODES = (Mode.RMFM, Mode.RMFM_SAME, Mode.RMM, Mode.TMFM, Mode.STMFM)
RNGS = ("per-sample", "reference")
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- fixtures


class Inputs:
    """A random split's validity: contiguous text masks with [CLS] … [SEP], A/V lengths."""

    def __init__(self, seed: int, n_samples: int, n: int, l_a: int, l_v: int, aligned: bool):
        rs = np.random.RandomState(seed)
        self.text_len = rs.randint(2, n + 1, size=n_samples)
        self.text_len[:2] = (2, n)[: min(2, n_samples)]  # both extremes always present
        self.text_mask = (np.arange(n)[None, :] < self.text_len[:, None]).astype(np.int64)
        if aligned:
            l_a = l_v = n
            self.audio_lengths = self.text_len.copy()
            self.vision_lengths = self.text_len.copy()
        else:
            self.audio_lengths = rs.randint(0, l_a + 1, size=n_samples)
            self.vision_lengths = rs.randint(0, l_v + 1, size=n_samples)
            self.audio_lengths[0] = 0
            self.vision_lengths[-1] = l_v
        self.n_samples, self.n, self.l_a, self.l_v = n_samples, n, l_a, l_v

    def split(self, mode: Mode, rate: float | None, cond: str | None, seed: int, rng: str):
        return split_keep_masks(
            mode,
            rate=rate,
            condition=cond,
            seed=seed,
            text_mask=self.text_mask,
            audio_lengths=self.audio_lengths,
            vision_lengths=self.vision_lengths,
            audio_len=self.l_a,
            vision_len=self.l_v,
            rng=rng,
        )

    def cell(self, mode: Mode, rate: float | None, cond: str | None, seed: int, index):
        index = torch.as_tensor(index, dtype=torch.int64)
        return cell_keep_masks(
            mode,
            rate=rate,
            condition=cond,
            seed=seed,
            index=index,
            text_mask=torch.from_numpy(self.text_mask)[index],
            audio_mask=validity_mask(torch.from_numpy(self.audio_lengths), self.l_a)[index],
            vision_mask=validity_mask(torch.from_numpy(self.vision_lengths), self.l_v)[index],
        )

    @property
    def valid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            self.text_mask.astype(bool),
            np.arange(self.l_a)[None, :] < self.audio_lengths[:, None],
            np.arange(self.l_v)[None, :] < self.vision_lengths[:, None],
        )

    @property
    def specials(self) -> np.ndarray:
        out = np.zeros((self.n_samples, self.n), dtype=bool)
        out[:, 0] = True
        out[np.arange(self.n_samples), self.text_len - 1] = True
        return out


def as_np(keep: KeepMasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return keep.text.numpy(), keep.audio.numpy(), keep.vision.numpy()


def shapes() -> st.SearchStrategy:
    return st.tuples(
        st.integers(0, 2**31 - 1),  # data seed
        st.integers(2, 24),  # N
        st.integers(2, 20),  # n
        st.integers(1, 30),  # L_a
        st.integers(1, 30),  # L_v
    )


# ----------------------------------------------------------------------------- oracle


def reference_oracle(mode: Mode, rate, cond, seed: int, inp: Inputs):
    """Literal transcription of docs/cider.md with the global NumPy RNG and plain loops."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        n_samples, n, l_a, l_v = inp.n_samples, inp.n, inp.l_a, inp.l_v
        text_mask = inp.text_mask.astype(np.float64)
        padded = np.concatenate([text_mask, np.zeros((n_samples, 1))], axis=1)
        text_input_len = [int(list(row).index(0)) for row in padded]
        audio_mask = np.zeros((n_samples, l_a))
        vision_mask = np.zeros((n_samples, l_v))
        for i in range(n_samples):
            audio_mask[i, : inp.audio_lengths[i]] = 1
            vision_mask[i, : inp.vision_lengths[i]] = 1
        if mode is Mode.RMFM:
            u = np.random.rand(n_samples, n + l_a + l_v)
            valid = np.concatenate([text_mask, audio_mask, vision_mask], axis=1)
            keep = (u > rate) * valid
            t, a, v = keep[:, :n], keep[:, n : n + l_a], keep[:, n + l_a :]
        elif mode in (Mode.RMFM_SAME, Mode.SMM):
            if mode is Mode.SMM:
                r_t, r_a, r_v = (0 if m in cond else 1 for m in "TAV")
            else:
                r_t = r_a = r_v = rate
            t = (np.random.rand(n_samples, n) > r_t) * text_mask
            a = (np.random.rand(n_samples, l_a) > r_a) * audio_mask
            v = (np.random.rand(n_samples, l_v) > r_v) * vision_mask
        elif mode is Mode.RMM:
            u = np.random.rand(n_samples, 3)
            t, a, v = text_mask.copy(), audio_mask.copy(), vision_mask.copy()
            for i in range(n_samples):
                if u[i, 0] <= rate:
                    t[i, :] = 0
                if u[i, 1] <= rate:
                    a[i, :] = 0
                if u[i, 2] <= rate:
                    v[i, :] = 0
        elif mode is Mode.TMFM:
            u = np.random.rand(n_samples, n)
            t = (u > rate) * text_mask
            a = v = t  # one shared array
        else:
            t = text_mask.copy()
            for i in range(n_samples):
                length = text_input_len[i]
                b = int(np.round((length - 2) * rate))
                s = np.random.randint(1, length - b)
                for p in range(s, s + b):
                    t[i, p] = 0
            a = v = t
        for i in range(n_samples):
            t[i, 0] = 1
            t[i, text_input_len[i] - 1] = 1
        return t.astype(bool), a.astype(bool), v.astype(bool)
    finally:
        np.random.set_state(state)


# ----------------------------------------------------------------------------- hash


def test_hash_matches_exact_integer_implementation() -> None:
    """The int64 torch hash equals big-int Python arithmetic, so nothing overflowed."""
    rs = np.random.RandomState(3)
    index = np.concatenate(
        [rs.randint(0, 2**62, size=6, dtype=np.int64), [0, 1, 2**32 - 1, 2**32, 2**40 + 7]]
    )
    length = 37
    for seed, mode, stream in ((1111, Mode.RMFM, 1), (2**63 + 5, Mode.STMFM, 4), (0, Mode.RMM, 5)):
        got = sample_bits(seed, mode, stream, torch.from_numpy(index), length).numpy()
        key = _stream_key(seed, mode, stream)
        for b, idx in enumerate(index.tolist()):
            h = _mix32_int(((idx & _M32) + key + 0x9E3779B9) & _M32)
            h = _mix32_int((h + (idx >> 32) + 0x9E3779B9) & _M32)
            for p in range(length):
                ph = _mix32_int((p + 0x85EBCA6B) & _M32)
                assert got[b, p] == _mix32_int(h ^ ph)
        assert got.min() >= 0 and got.max() < 2**32


def test_hash_uniformity() -> None:
    bits = sample_bits(1111, Mode.RMFM, 1, torch.arange(2000), 250)
    u = (bits.double() + 0.5) / 2**32
    assert abs(u.mean().item() - 0.5) < 2e-3
    assert abs(u.var().item() - 1 / 12) < 1e-3
    counts = torch.histc(u.float(), bins=20, min=0.0, max=1.0)
    expected = u.numel() / 20
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    assert chi2 < 60  # 19 dof: p ≈ 1e-6 at 60
    # every bit balanced, adjacent positions and samples uncorrelated
    bit_means = ((bits.unsqueeze(-1) >> torch.arange(32)) & 1).double().mean(dim=(0, 1))
    assert (bit_means - 0.5).abs().max().item() < 5e-3
    c = u - 0.5
    assert abs((c[:, 1:] * c[:, :-1]).mean().item()) < 1e-3
    assert abs((c[1:] * c[:-1]).mean().item()) < 1e-3
    # another stream of the same samples is uncorrelated with this one
    other = (sample_bits(1111, Mode.RMFM, 2, torch.arange(2000), 250).double() + 0.5) / 2**32
    assert abs((c * (other - 0.5)).mean().item()) < 1e-3


@given(st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_keep_threshold_is_u_greater_than_rate(rate: float, h: int) -> None:
    u = (Fraction(h) + Fraction(1, 2)) / 2**32
    assert (u > Fraction(rate)) == (h >= keep_threshold(rate))


def test_keep_threshold_extremes_and_monotone() -> None:
    assert keep_threshold(0.0) == 0
    assert keep_threshold(1.0) == 2**32
    values = [keep_threshold(r) for r in RATES]
    assert values == sorted(values) and len(set(values)) == len(values)


# ----------------------------------------------------------------------------- semantics


def check_common(inp: Inputs, keep: KeepMasks) -> None:
    t, a, v = as_np(keep)
    vt, va, vv = inp.valid
    assert t.dtype == a.dtype == v.dtype == np.bool_
    assert t.shape == vt.shape and a.shape == va.shape and v.shape == vv.shape
    assert not (t & ~vt).any() and not (a & ~va).any() and not (v & ~vv).any()
    assert (t[inp.specials]).all()


@pytest.mark.parametrize("rng", RNGS)
@pytest.mark.parametrize("mode", RATE_MODES)
@given(shape=shapes(), seed=st.integers(0, 2**32 - 1))
@FAST
def test_rate_mode_rules(mode: Mode, rng: str, shape, seed: int) -> None:
    data_seed, n_samples, n, l_a, l_v = shape
    inp = Inputs(data_seed, n_samples, n, l_a, l_v, aligned=mode.aligned_only)
    vt, va, vv = inp.valid
    sp = inp.specials
    for rate in (0.0, 0.3, 1.0):
        keep = inp.split(mode, rate, None, seed, rng)
        check_common(inp, keep)
        t, a, v = as_np(keep)
        if mode.aligned_only:
            # one shared array: A/V kept exactly where text is, [CLS]/[SEP] included
            assert (t == a).all() and (t == v).all()
        if rate == 0.0:
            assert (t == vt).all() and (a == va).all() and (v == vv).all()
        if rate == 1.0:
            assert (t == sp).all()
            assert (a == (sp if mode.aligned_only else np.zeros_like(va))).all()
            assert (v == (sp if mode.aligned_only else np.zeros_like(vv))).all()
        if mode is Mode.RMM:
            for keep_m, valid_m, floor_m in ((t, vt, sp), (a, va, 0 * va), (v, vv, 0 * vv)):
                whole = (keep_m == valid_m).all(axis=1)
                gone = (keep_m == floor_m).all(axis=1)
                assert (whole | gone).all()
        if mode is Mode.STMFM:
            dropped = vt & ~t
            expected_b = np.round((inp.text_len - 2) * rate).astype(int)
            assert (dropped.sum(axis=1) == expected_b).all()
            for i in range(n_samples):
                pos = np.flatnonzero(dropped[i])
                if pos.size:
                    assert pos[-1] - pos[0] + 1 == pos.size  # contiguous
                    assert pos[0] >= 1 and pos[-1] <= inp.text_len[i] - 2


@pytest.mark.parametrize("rng", RNGS)
@given(shape=shapes(), seed=st.integers(0, 2**32 - 1))
@FAST
def test_smm_conditions_exact(rng: str, shape, seed: int) -> None:
    inp = Inputs(*shape, aligned=False)
    valid = dict(zip("TAV", inp.valid))
    dropped = {"T": inp.specials, "A": np.zeros_like(valid["A"]), "V": np.zeros_like(valid["V"])}
    for cond in CONDITIONS:
        keep = inp.split(Mode.SMM, None, cond, seed, rng)
        check_common(inp, keep)
        for m, got in zip("TAV", as_np(keep)):
            assert (got == (valid[m] if m in cond else dropped[m])).all(), (cond, m)


def test_smm_accepts_any_condition_spelling() -> None:
    inp = Inputs(0, 5, 8, 9, 10, aligned=False)
    a = as_np(inp.split(Mode.SMM, None, "at", 1, "per-sample"))
    b = as_np(inp.split(Mode.SMM, None, "TA", 1, "per-sample"))
    assert all((x == y).all() for x, y in zip(a, b))


def test_first_zero_of_text_mask_is_sep() -> None:
    """[SEP] is the last position before the first 0 of the mask (docs/cider.md)."""
    text_mask = np.array([[1, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1]])
    for rng in RNGS:
        keep = split_keep_masks(
            Mode.RMFM_SAME,
            rate=1.0,
            condition=None,
            seed=3,
            text_mask=text_mask,
            audio_lengths=np.array([2, 3]),
            vision_lengths=np.array([0, 4]),
            audio_len=4,
            vision_len=4,
            rng=rng,
        )
        assert keep.text.tolist() == [
            [True, False, True, False, False, False],
            [True, False, False, False, False, True],
        ]


# ----------------------------------------------------------------------------- reference


@pytest.mark.parametrize("mode", [*RATE_MODES, Mode.SMM])
@pytest.mark.parametrize("seed", [0, 1111, 2**32 - 1])
def test_reference_rng_matches_literal_transcription(mode: Mode, seed: int) -> None:
    inp = Inputs(seed % 97, 40, 12, 17, 9, aligned=mode.aligned_only)
    settings_ = (
        [(None, c) for c in CONDITIONS]
        if mode is Mode.SMM
        else [(r, None) for r in (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)]
    )
    for rate, cond in settings_:
        got = as_np(inp.split(mode, rate, cond, seed, "reference"))
        want = reference_oracle(mode, rate, cond, seed, inp)
        for g, w, name in zip(got, want, "tav"):
            assert (g == w).all(), (mode, rate, cond, name)


def test_reference_rng_leaves_global_state_alone() -> None:
    inp = Inputs(0, 10, 8, 8, 8, aligned=True)
    np.random.seed(42)
    expected = np.random.rand(3)
    np.random.seed(42)
    inp.split(Mode.STMFM, 0.5, None, 7, "reference")
    assert (np.random.rand(3) == expected).all()


# ----------------------------------------------------------------------------- purity


@pytest.mark.parametrize("mode", [*RATE_MODES, Mode.SMM])
@given(shape=shapes(), seed=st.integers(-(2**40), 2**64), order_seed=st.integers(0, 1000))
@FAST
def test_per_sample_masks_are_pure(mode: Mode, shape, seed: int, order_seed: int) -> None:
    inp = Inputs(*shape, aligned=mode.aligned_only)
    rate, cond = (None, "TV") if mode is Mode.SMM else (0.4, None)
    whole = as_np(inp.split(mode, rate, cond, seed, "per-sample"))
    on_arange = as_np(inp.cell(mode, rate, cond, seed, np.arange(inp.n_samples)))
    assert all((x == y).all() for x, y in zip(whole, on_arange))
    rs = np.random.RandomState(order_seed)
    order = rs.permutation(inp.n_samples)
    cuts = np.sort(rs.choice(np.arange(1, inp.n_samples), size=min(3, inp.n_samples - 1)))
    for part in np.split(order, cuts):  # shuffled batches of uneven sizes
        got = as_np(inp.cell(mode, rate, cond, seed, part))
        for g, w in zip(got, whole):
            assert (g == w[part]).all()
    # a sample's mask is the same when it is batched with others, or duplicated
    dup = np.array([order[0], order[0]])
    got = as_np(inp.cell(mode, rate, cond, seed, dup))
    assert all((g[0] == g[1]).all() and (g[0] == w[order[0]]).all() for g, w in zip(got, whole))


def test_masks_do_not_depend_on_other_samples_lengths() -> None:
    a = Inputs(5, 20, 12, 15, 15, aligned=False)
    b = Inputs(5, 20, 12, 15, 15, aligned=False)
    b.audio_lengths[1:] = 15  # change every sample except 0
    b.text_len[1:] = 12
    b.text_mask[1:] = 1
    ka = as_np(a.split(Mode.RMFM, 0.5, None, 1, "per-sample"))
    kb = as_np(b.split(Mode.RMFM, 0.5, None, 1, "per-sample"))
    assert all((x[0] == y[0]).all() for x, y in zip(ka, kb))


@pytest.mark.parametrize("rng", RNGS)
@pytest.mark.parametrize("mode", [*RATE_MODES, Mode.SMM])
def test_deterministic_across_calls(mode: Mode, rng: str) -> None:
    inp = Inputs(2, 50, 16, 40, 30, aligned=mode.aligned_only)
    rate, cond = (None, "A") if mode is Mode.SMM else (0.5, None)
    a = as_np(inp.split(mode, rate, cond, 1111, rng))
    b = as_np(inp.split(mode, rate, cond, 1111, rng))
    assert all((x == y).all() for x, y in zip(a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", [*RATE_MODES, Mode.SMM])
def test_cuda_gives_identical_bits(mode: Mode) -> None:
    inp = Inputs(4, 300, 50, 500 if not mode.aligned_only else 50, 375, mode.aligned_only)
    rate, cond = (None, "TA") if mode is Mode.SMM else (0.3, None)
    index = torch.arange(inp.n_samples)
    cpu = inp.cell(mode, rate, cond, 1111, index)
    gpu = cell_keep_masks(
        mode,
        rate=rate,
        condition=cond,
        seed=1111,
        index=index.cuda(),
        text_mask=torch.from_numpy(inp.text_mask).cuda(),
        audio_mask=validity_mask(torch.from_numpy(inp.audio_lengths), inp.l_a).cuda(),
        vision_mask=validity_mask(torch.from_numpy(inp.vision_lengths), inp.l_v).cuda(),
    )
    assert gpu.text.device.type == "cuda"
    for c, g in zip((cpu.text, cpu.audio, cpu.vision), (gpu.text, gpu.audio, gpu.vision)):
        assert torch.equal(c, g.cpu())


# ----------------------------------------------------------------------------- across rates


@pytest.mark.parametrize(
    ("mode", "rng"),
    [(m, "per-sample") for m in RATE_MODES]
    + [(m, "reference") for m in (Mode.RMFM, Mode.RMFM_SAME, Mode.RMM, Mode.TMFM)],
)
def test_kept_sets_nested_as_rate_rises(mode: Mode, rng: str) -> None:
    inp = Inputs(11, 120, 20, 30, 25, aligned=mode.aligned_only)
    previous = None
    strictly_fewer = 0
    for rate in RATES:
        keep = as_np(inp.split(mode, rate, None, 1111, rng))
        if previous is not None:
            for now, before in zip(keep, previous):
                assert not (now & ~before).any(), (mode, rate)
            strictly_fewer += sum(
                int(now.sum() < before.sum()) for now, before in zip(keep, previous)
            )
        previous = keep
    assert strictly_fewer >= 10  # the masks really change with the rate


def test_reference_stmfm_redraws_start_per_rate() -> None:
    """The reference draws a fresh start per rate (docs/cider.md), so its blocks are not nested
    (ours are: test_kept_sets_nested_as_rate_rises)."""
    inp = Inputs(12, 200, 30, 30, 30, aligned=True)
    ref_nested = True
    previous = None
    for rate in RATES:
        t = as_np(inp.split(Mode.STMFM, rate, None, 5, "reference"))[0]
        if previous is not None and (t & ~previous).any():
            ref_nested = False
        previous = t
    assert not ref_nested


@pytest.mark.parametrize("mode", [Mode.RMFM, Mode.RMFM_SAME, Mode.TMFM])
@pytest.mark.parametrize("rng", RNGS)
def test_drop_fraction_close_to_rate(mode: Mode, rng: str) -> None:
    inp = Inputs(8, 1500, 60, 60, 60, aligned=True)
    vt, _, _ = inp.valid
    droppable = vt & ~inp.specials
    for rate in (0.1, 0.5, 0.9):
        t, a, v = as_np(inp.split(mode, rate, None, 1111, rng))
        for keep_m in (t, a, v):
            frac = (droppable & ~keep_m).sum() / droppable.sum()
            assert abs(frac - rate) < 0.01, (mode, rate, frac)


@pytest.mark.parametrize("rng", RNGS)
def test_rmm_drop_fraction_close_to_rate(rng: str) -> None:
    inp = Inputs(9, 20000, 4, 3, 3, aligned=False)
    inp.audio_lengths[:] = 3
    inp.vision_lengths[:] = 3
    inp.text_mask[:] = 1
    inp.text_len[:] = 4
    for rate in (0.2, 0.7):
        t, a, v = as_np(inp.split(Mode.RMM, rate, None, 77, rng))
        gone = np.stack([~t[:, 1], ~a[:, 0], ~v[:, 0]], axis=1)
        assert np.allclose(gone.mean(axis=0), rate, atol=0.015)
        # modalities drawn independently: all three gone ≈ rate³ (Q-26: it happens)
        assert abs(gone.all(axis=1).mean() - rate**3) < 0.01


def test_different_seeds_and_modes_give_different_masks() -> None:
    inp = Inputs(3, 60, 20, 20, 20, aligned=True)

    def text(mode: Mode, seed: int) -> np.ndarray:
        return as_np(inp.split(mode, 0.5, None, seed, "per-sample"))[0]

    for mode in RATE_MODES:
        assert not (text(mode, 1) == text(mode, 2)).all(), mode
    texts = [text(m, 1) for m in RATE_MODES]
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not (texts[i] == texts[j]).all()
    # RMFM's modalities are independent streams
    t, a, v = as_np(inp.split(Mode.RMFM, 0.5, None, 1, "per-sample"))
    assert not (t == a).all() and not (a == v).all()


# ----------------------------------------------------------------------------- errors


def test_invalid_combinations_raise_protocol_error() -> None:
    inp = Inputs(0, 4, 6, 8, 8, aligned=False)
    with pytest.raises(ProtocolError, match="aligned"):
        inp.split(Mode.TMFM, 0.3, None, 1, "per-sample")
    with pytest.raises(ProtocolError, match="aligned"):
        inp.cell(Mode.STMFM, 0.3, None, 1, np.arange(4))
    with pytest.raises(ProtocolError, match="condition"):
        inp.split(Mode.SMM, None, None, 1, "per-sample")
    with pytest.raises(ProtocolError, match="not a rate"):
        inp.split(Mode.SMM, 0.5, "TA", 1, "per-sample")
    with pytest.raises(ProtocolError, match="invalid SMM condition"):
        inp.split(Mode.SMM, None, "TX", 1, "per-sample")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ProtocolError, match="rate"):
            inp.split(Mode.RMFM, bad, None, 1, "per-sample")
    with pytest.raises(ProtocolError, match="needs a rate"):
        inp.split(Mode.RMM, None, None, 1, "per-sample")
    with pytest.raises(ProtocolError, match="not a condition"):
        inp.split(Mode.RMM, 0.2, "T", 1, "per-sample")
    with pytest.raises(ProtocolError, match="mask rng"):
        inp.split(Mode.RMM, 0.2, None, 1, "numpy")
    with pytest.raises(ProtocolError, match="seed"):
        inp.split(Mode.RMM, 0.2, None, -1, "reference")
    with pytest.raises(ProtocolError, match="invalid mode 'XMFM'"):
        inp.split("XMFM", 0.2, None, 1, "per-sample")  # type: ignore[arg-type]


def test_mode_given_by_value() -> None:
    inp = Inputs(0, 6, 6, 8, 8, aligned=False)
    by_value = as_np(inp.split("RMFM_same", 0.5, None, 1, "per-sample"))  # type: ignore[arg-type]
    by_enum = as_np(inp.split(Mode.RMFM_SAME, 0.5, None, 1, "per-sample"))
    assert all((x == y).all() for x, y in zip(by_value, by_enum))


def test_bad_shapes_raise_data_error() -> None:
    inp = Inputs(0, 4, 6, 8, 8, aligned=False)
    with pytest.raises(DataError, match="audio lengths"):
        split_keep_masks(
            Mode.RMFM,
            rate=0.1,
            condition=None,
            seed=1,
            text_mask=inp.text_mask,
            audio_lengths=inp.audio_lengths[:3],
            vision_lengths=inp.vision_lengths,
            audio_len=8,
            vision_len=8,
        )
    with pytest.raises(DataError, match=r"vision lengths must lie in \[0, 5\]"):
        split_keep_masks(
            Mode.RMFM,
            rate=0.1,
            condition=None,
            seed=1,
            text_mask=inp.text_mask,
            audio_lengths=inp.audio_lengths,
            vision_lengths=inp.vision_lengths + 6,
            audio_len=8,
            vision_len=5,
        )
    with pytest.raises(DataError, match="batch sizes differ"):
        cell_keep_masks(
            Mode.RMFM,
            rate=0.1,
            condition=None,
            seed=1,
            index=torch.arange(3),
            text_mask=torch.ones(4, 6),
            audio_mask=torch.ones(4, 8),
            vision_mask=torch.ones(4, 8),
        )


def test_reference_stmfm_rejects_text_without_cls_and_sep() -> None:
    inp = Inputs(0, 4, 6, 6, 6, aligned=True)
    inp.text_mask[2, 1:] = 0
    inp.text_len[2] = 1
    with pytest.raises(DataError, match="sample 2 has text length 1"):
        inp.split(Mode.STMFM, 0.5, None, 1, "reference")
    # the per-sample scheme handles it: only [CLS], nothing to drop
    t = as_np(inp.split(Mode.STMFM, 1.0, None, 1, "per-sample"))[0]
    assert t[2].tolist() == [True] + [False] * 5


# ----------------------------------------------------------------------------- training


# ----------------------------------------------------------------------------- applying masks


def tiny_split() -> Split:
    rs = np.random.RandomState(0)
    n, l_a, l_v, n_samples = 7, 6, 5, 5
    text_len = np.array([7, 2, 4, 5, 3])
    ids = np.zeros((n_samples, n), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, length in enumerate(text_len):
        ids[i, :length] = [CLS_ID, *rs.randint(1000, 3000, size=length - 2), SEP_ID]
        mask[i, :length] = 1
    text_bert = np.stack([ids, mask, np.zeros_like(ids)], axis=1)
    audio_lengths = np.array([6, 0, 3, 1, 5])
    vision_lengths = np.array([2, 5, 5, 0, 4])
    audio = (rs.rand(n_samples, l_a, 3) + 0.5).astype(np.float32)
    vision = (rs.rand(n_samples, l_v, 2) + 0.5).astype(np.float32)
    audio[np.arange(l_a)[None, :] >= audio_lengths[:, None]] = 0
    vision[np.arange(l_v)[None, :] >= vision_lengths[:, None]] = 0
    return Split(
        name="test",
        sample_ids=np.array([f"v{i}$_$0" for i in range(n_samples)]),
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=audio_lengths,
        vision_lengths=vision_lengths,
        class_labels=np.array([0, 1, 2, 1, 0]),
        regression_labels=np.array([-1.0, 0.0, 2.0, 0.0, -2.5], dtype=np.float32),
    )


@pytest.mark.parametrize(
    ("mode", "rate", "cond"),
    [
        (Mode.RMFM, 0.5, None),
        (Mode.RMM, 0.5, None),
        (Mode.SMM, None, "V"),
    ],
)
def test_batch_with_missing_applies_masks(mode: Mode, rate, cond) -> None:
    split = tiny_split()
    tensors = SplitTensors(split, Task.BINARY)
    index = torch.tensor([3, 0, 4, 2, 1])
    batch = tensors.batch(index)
    keep = cell_keep_masks(
        mode,
        rate=rate,
        condition=cond,
        seed=1111,
        index=batch.index,
        text_mask=batch.text_mask,
        audio_mask=batch.audio_mask,
        vision_mask=batch.vision_mask,
    )
    view = batch.with_missing(keep)
    valid = batch.text_mask.bool()
    dropped = valid & ~keep.text
    assert dropped.any()  # the test exercises dropping
    assert (view.text_ids[dropped] == UNK_ID).all()
    assert torch.equal(view.text_ids[keep.text], batch.text_ids[keep.text])
    assert (view.text_ids[~valid] == PAD_ID).all()
    for full, seen, k in (
        (batch.audio, view.audio, keep.audio),
        (batch.vision, view.vision, keep.vision),
    ):
        assert (seen[~k] == 0).all()
        assert torch.equal(seen[k], full[k])
        assert (full[k] != 0).all()  # kept frames really carry data
    # the whole-split export says the same about these samples
    arrays = split_mask_arrays(split, mode, rate=rate, condition=cond, seed=1111)
    assert (arrays["text_ids_missing"][index.numpy()] == view.text_ids.numpy()).all()
    assert (arrays["audio_keep"][index.numpy()] == keep.audio.numpy()).all()


def test_split_mask_arrays_content(tmp_path) -> None:
    split = tiny_split()
    arrays = split_mask_arrays(
        split, Mode.RMFM_SAME, rate=0.6, condition=None, seed=4, rng="reference"
    )
    assert set(arrays) == {
        "text_input_mask",
        "audio_input_mask",
        "vision_input_mask",
        "text_keep",
        "audio_keep",
        "vision_keep",
        "text_ids",
        "text_ids_missing",
    }
    assert (arrays["text_ids"] == split.text_ids).all()
    assert (arrays["text_input_mask"] == split.text_mask).all()
    assert arrays["audio_input_mask"].sum(axis=1).tolist() == split.audio_lengths.tolist()
    assert arrays["vision_input_mask"].shape == (5, 5)
    for m in ("text", "audio", "vision"):
        assert (arrays[f"{m}_keep"] <= arrays[f"{m}_input_mask"]).all()
    dropped = (arrays["text_input_mask"] == 1) & (arrays["text_keep"] == 0)
    assert dropped.any()
    assert (arrays["text_ids_missing"][dropped] == UNK_ID).all()
    assert (arrays["text_ids_missing"][~dropped] == arrays["text_ids"][~dropped]).all()

    out = tmp_path / "nested" / "masks.out"  # no .npz suffix appended
    write_masks_npz(out, arrays)
    assert out.exists() and not (tmp_path / "nested" / "masks.out.npz").exists()
    with np.load(out) as loaded:
        assert set(loaded.files) == set(arrays)
        for key, value in arrays.items():
            assert loaded[key].dtype == value.dtype and (loaded[key] == value).all()
    with pytest.raises(ConfigError, match="cannot write masks"):
        write_masks_npz(tmp_path, arrays)  # a directory
    # no temp file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["nested"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))
