"""``data synth --shape``: the same generator at MOSI's and MOSEI's real tensor shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mer_bench.cli import main
from mer_bench.data import synth as synth_mod
from mer_bench.data.loaders import load_bundle
from mer_bench.data.synth import (
    SHAPE_FIELDS,
    SynthConfig,
    SynthShape,
    generation_bytes,
    shape_config,
    write_synth,
)
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task

# Per-sample shapes of the real files: (text n, text width, L_a, d_a, L_v, d_v, split sizes).
REAL = {
    SynthShape.MOSI: (50, 768, 375, 5, 500, 20, (1284, 229, 686)),
    SynthShape.MOSEI: (50, 768, 500, 74, 500, 35, (16326, 1871, 4659)),
}
# Few samples, real per-sample shapes: enough to check the files, fast to write.
FEW = dict(n_train=40, n_valid=8, n_test=16, cross_n_train=12, cross_n_valid=4, cross_n_test=6)


def test_small_is_the_default_config() -> None:
    assert shape_config(SynthShape.SMALL) == SynthConfig()
    assert shape_config(SynthShape.SMALL, seed=4) == SynthConfig(seed=4)
    assert SHAPE_FIELDS[SynthShape.SMALL] == {}


@pytest.mark.parametrize("shape", [SynthShape.MOSI, SynthShape.MOSEI])
def test_real_shapes_and_split_sizes(shape: SynthShape) -> None:
    n, width, l_a, d_a, l_v, d_v, sizes = REAL[shape]
    c = shape_config(shape, seed=2)
    assert (c.text_len, c.text_feat_dim, c.audio_len, c.audio_dim) == (n, width, l_a, d_a)
    assert (c.vision_len, c.vision_dim, c.seed) == (l_v, d_v, 2)
    assert (c.n_train, c.n_valid, c.n_test) == sizes
    assert (c.cross_audio_dim, c.cross_vision_dim) == (25, 171)
    assert {c.cross_text_len, c.cross_b_text_len} == {44, 75}
    # Different shapes are different caches.
    assert c.key != shape_config(SynthShape.SMALL, seed=2).key
    assert shape_config(shape, n_train=10).n_train == 10


def test_generation_memory_estimate_orders_the_shapes() -> None:
    small, mosi, mosei = (generation_bytes(shape_config(s)) for s in SynthShape)
    assert small < mosi < mosei
    # Measured: `data synth --shape mosi` peaked at 3.2 GiB RSS (interpreter included).
    assert 2.5 * 2**30 < mosi < 3.5 * 2**30
    assert mosei > 30 * 2**30


@pytest.mark.parametrize("shape", [SynthShape.MOSI, SynthShape.MOSEI])
def test_files_have_real_shapes_and_load_as_a_synth_root(tmp_path: Path, shape: SynthShape):
    n, width, l_a, d_a, l_v, d_v, _ = REAL[shape]
    write_synth(tmp_path, shape_config(shape, **FEW))
    unaligned = load_bundle(
        DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.UNALIGNED, Task.BINARY), tmp_path
    )
    spec = unaligned.spec
    assert (spec.text_len, spec.text_feat_dim) == (n, width)
    assert (spec.audio_len, spec.audio_dim, spec.vision_len, spec.vision_dim) == (
        l_a,
        d_a,
        l_v,
        d_v,
    )
    train = unaligned.train
    assert train.audio.shape == (FEW["n_train"], l_a, d_a)
    assert train.vision.shape == (FEW["n_train"], l_v, d_v)
    assert train.text_feats is not None and train.text_feats.shape == (FEW["n_train"], n, width)
    assert int(train.audio_lengths.max()) <= l_a and int(train.vision_lengths.min()) >= n
    aligned = load_bundle(
        DataSetting(Dataset.SYNTH, Distribution.OOD, Alignment.ALIGNED, Task.SEVEN), tmp_path
    )
    assert aligned.test.audio.shape == (FEW["n_test"], n, d_a)
    cross = load_bundle(
        DataSetting(Dataset.SYNTH, Distribution.CROSS, Alignment.ALIGNED, Task.BINARY), tmp_path
    )
    assert cross.train.audio.shape[2] == 25 and cross.train.vision.shape[2] == 171


def test_cli_shape_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    seen: list[SynthConfig] = []

    def fake_write(out: Path, config: SynthConfig) -> list[Path]:
        seen.append(config)
        return []

    monkeypatch.setattr(synth_mod, "write_synth", fake_write)
    assert main(["data", "synth", "--out", str(tmp_path), "--shape", "mosi", "--seed", "5"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path)]) == 0
    assert seen == [shape_config(SynthShape.MOSI, seed=5), SynthConfig()]
    assert "GiB of memory" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path), "--shape", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: invalid shape 'huge'; valid: small, mosi, mosei"]
