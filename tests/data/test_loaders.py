"""Loaders: file layout, data root, bundles for IID / OOD / cross, the cache, synth routing."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from mer_bench.data import loaders
from mer_bench.data.loaders import (
    candidate_paths,
    clear_cache,
    data_root,
    fit_time_length,
    load_bundle,
    load_file,
    resolve_files,
)
from mer_bench.data.schema import validate_file
from mer_bench.errors import DataError
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task
from tests.data.fixtures import (
    CROSS_MOSEI,
    SEP,
    build_root,
    make_file,
    write_joblib,
    write_pickle,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def S(dataset: str, dist: str, align: str, task: str = "binary") -> DataSetting:
    return DataSetting(Dataset(dataset), Distribution(dist), Alignment(align), Task(task))


# ----------------------------------------------------------------------------- data root


def test_data_root_from_value_env_or_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loaders.ENV_DATA_ROOT, raising=False)
    assert data_root(tmp_path) == tmp_path
    assert data_root(str(tmp_path)) == tmp_path
    with pytest.raises(DataError, match=r"pass --data-root ROOT or set MER_BENCH_DATA=ROOT"):
        data_root(None)
    monkeypatch.setenv(loaders.ENV_DATA_ROOT, str(tmp_path))
    assert data_root(None) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert data_root(other) == other  # the CLI value wins over the environment
    with pytest.raises(DataError, match=r"data root .*missing does not exist"):
        data_root(tmp_path / "missing")


# ----------------------------------------------------------------------------- layout


def test_layout_table(tmp_path: Path) -> None:
    r = tmp_path
    assert (
        candidate_paths(S("mosi", "iid", "aligned"), r)
        == ((r / "CMU-MOSI/Processed/aligned_50.pkl", r / "MOSI/Processed/aligned_50.pkl"),) * 2
    )
    assert (
        candidate_paths(S("mosei", "ood", "unaligned", "seven"), r)
        == ((r / "OOD_MOSEI/seven/MOSEI_unaligned_50.pkl",),) * 2
    )
    # Regression has no OOD re-partition of its own: it uses binary's.
    assert candidate_paths(S("mosi", "ood", "aligned", "regression"), r)[0] == (
        r / "OOD_MOSI/binary/MOSI_aligned_50.pkl",
    )
    assert candidate_paths(S("mosei", "cross", "aligned"), r) == (
        (r / "MSA_cross_datasets/mosei.pkl",),
        (r / "MSA_cross_datasets/mosi.pkl",),
    )
    assert candidate_paths(S("synth", "cross", "aligned"), r) == (
        (r / "MSA_cross_datasets/synth.pkl",),
        (r / "MSA_cross_datasets/synth_b.pkl",),
    )
    assert candidate_paths(S("synth", "ood", "unaligned", "seven"), r)[1] == (
        r / "OOD_SYNTH/seven/SYNTH_unaligned_50.pkl",
    )
    assert candidate_paths(S("synth", "iid", "aligned"), r)[0][0] == (
        r / "CMU-SYNTH/Processed/aligned_50.pkl"
    )


def test_resolve_files_prefers_cmu_folder_then_mmsa_tree(root: Path, tmp_path: Path) -> None:
    assert (
        resolve_files(S("mosi", "iid", "aligned"), root)
        == (root / "CMU-MOSI/Processed/aligned_50.pkl",) * 2
    )
    assert resolve_files(S("mosei", "iid", "unaligned"), root)[0] == (
        root / "MOSEI/Processed/unaligned_50.pkl"
    )


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        (S("mosei", "ood", "aligned"), "https://github.com/gw-zhong/CIDer"),
        (S("mosi", "iid", "aligned"), "https://github.com/thuiar/MMSA"),
        (S("synth", "iid", "aligned"), "mer_bench data synth --out ROOT"),
    ],
)
def test_missing_file_message_names_every_path_and_source(
    tmp_path: Path, setting: DataSetting, where: str
) -> None:
    with pytest.raises(DataError) as err:
        resolve_files(setting, tmp_path)
    msg = str(err.value)
    for path in candidate_paths(setting, tmp_path)[0]:
        assert str(path) in msg
    assert where in msg and setting.id in msg and "\n" not in msg


def test_missing_cross_partner_is_reported_as_test_file(root: Path, tmp_path: Path) -> None:
    write_pickle(
        make_file(classification=False, text_dim=None), tmp_path / "MSA_cross_datasets/mosi.pkl"
    )
    with pytest.raises(
        DataError,
        match=r"^test data file for mosi/cross/aligned/binary not found; looked for .*mosei\.pkl",
    ):
        resolve_files(S("mosi", "cross", "aligned"), tmp_path)


# ----------------------------------------------------------------------------- bundles


def test_iid_aligned_bundle(root: Path) -> None:
    b = load_bundle(S("mosi", "iid", "aligned"), root)
    spec = b.spec
    assert (spec.text_len, spec.audio_len, spec.vision_len) == (50, 50, 50)
    assert (spec.audio_dim, spec.vision_dim, spec.text_feat_dim) == (5, 20, 16)
    assert spec.aligned and spec.task is Task.BINARY and spec.num_classes == 3
    assert (b.train.size, b.valid.size, b.test.size) == (12, 6, 8)
    assert np.array_equal(b.train.audio_lengths, b.train.text_lengths)
    assert b.sources == {
        k: root / "CMU-MOSI/Processed/aligned_50.pkl" for k in ("train", "valid", "test")
    }
    assert b.train.text_bert.dtype == np.int64


def test_iid_unaligned_bundle_keeps_file_lengths_and_zeroes_neg_inf(root: Path) -> None:
    b = load_bundle(S("mosi", "iid", "unaligned", "seven"), root)
    assert (b.spec.audio_len, b.spec.vision_len, b.spec.aligned) == (375, 500, False)
    assert b.spec.num_classes == 7
    assert not np.array_equal(b.train.audio_lengths, b.train.text_lengths)
    assert np.isfinite(b.train.audio).all()
    assert b.train.labels(Task.SEVEN).max() <= 6


def test_ood_task_picks_its_repartition_and_regression_uses_binary(root: Path) -> None:
    binary = load_bundle(S("mosi", "ood", "aligned", "binary"), root)
    seven = load_bundle(S("mosi", "ood", "aligned", "seven"), root)
    regression = load_bundle(S("mosi", "ood", "aligned", "regression"), root)
    assert binary.train.size == 12 and seven.train.size == 14
    assert binary.sources["train"].parent.name == "binary"
    assert seven.sources["train"].parent.name == "seven"
    assert regression.train is binary.train  # same file → same cached split
    assert regression.spec.num_classes is None


def test_cache_loads_each_file_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = loaders.cache.load

    def counting(path: Path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(loaders.cache, "load", counting)
    for task in Task:
        load_bundle(S("mosi", "iid", "aligned", task.value), root)
    assert len(calls) == 1
    load_bundle(S("mosi", "iid", "unaligned"), root)
    assert len(calls) == 2


def test_cache_notices_a_changed_file(tmp_path: Path) -> None:
    path = write_pickle(make_file(text_dim=None), tmp_path / "f.pkl")
    first = load_file(path, Distribution.IID)
    assert load_file(path, Distribution.IID)["train"] is first["train"]
    write_pickle(make_file((5, 6, 7), text_dim=None), path)
    os.utime(path, ns=(1, 1))
    assert load_file(path, Distribution.IID)["train"].size == 5


def test_cross_truncates_the_longer_test_domain_keeping_sep(root: Path) -> None:
    """Train on MOSI (n = 44), test on MOSEI's test split (n = 75)."""
    b = load_bundle(S("mosi", "cross", "aligned"), root)
    assert b.sources["test"] == root / "MSA_cross_datasets/mosei.pkl"
    assert b.spec.text_len == 44 and (b.spec.audio_dim, b.spec.vision_dim) == (25, 171)
    orig = load_file(root / "MSA_cross_datasets/mosei.pkl", Distribution.CROSS)["test"]
    te = b.test
    n = 44
    assert te.text_bert.shape == (9, 3, n) and te.audio.shape == (9, n, 25)
    assert te.vision.shape == (9, n, 171) and te.text_feats.shape == (9, n, 16)
    lengths = orig.text_lengths
    long = lengths > n
    assert long.any() and (~long).any()
    assert np.array_equal(te.text_lengths, np.minimum(lengths, n))
    assert np.array_equal(te.audio_lengths, te.text_lengths)
    # Every text still ends with [SEP] at its last valid position.
    assert (te.text_ids[np.arange(9), te.text_lengths - 1] == SEP).all()
    # Long rows: first n-1 positions kept, then the original last valid position.
    i = int(np.flatnonzero(long)[0])
    last = lengths[i] - 1
    assert np.array_equal(te.text_bert[i, :, : n - 1], orig.text_bert[i, :, : n - 1])
    assert np.array_equal(te.text_bert[i, :, n - 1], orig.text_bert[i, :, last])
    for new, old in (
        (te.audio, orig.audio),
        (te.vision, orig.vision),
        (te.text_feats, orig.text_feats),
    ):
        assert np.array_equal(new[i, : n - 1], old[i, : n - 1])
        assert np.array_equal(new[i, n - 1], old[i, last])
    # Short rows are a plain prefix.
    j = int(np.flatnonzero(~long)[0])
    assert np.array_equal(te.text_bert[j], orig.text_bert[j, :, :n])
    assert np.array_equal(te.audio[j], orig.audio[j, :n])
    # Labels: sign of the score; ids and scores untouched.
    assert np.array_equal(te.regression_labels, orig.regression_labels)
    assert np.array_equal(te.class_labels, orig.class_labels)
    assert te.sample_ids[0].startswith("mosei")


def test_cross_pads_the_shorter_test_domain(root: Path) -> None:
    """Train on MOSEI (n = 75), test on MOSI's test split (n = 44)."""
    b = load_bundle(S("mosei", "cross", "aligned", "regression"), root)
    te = b.test
    assert b.spec.text_len == 75 and te.text_bert.shape == (8, 3, 75)
    assert (te.text_bert[:, :, 44:] == 0).all() and (te.audio[:, 44:] == 0).all()
    assert (te.vision[:, 44:] == 0).all() and (te.text_feats[:, 44:] == 0).all()
    own = load_file(root / "MSA_cross_datasets/mosi.pkl", Distribution.CROSS)["test"]
    assert np.array_equal(te.text_bert[:, :, :44], own.text_bert)
    assert np.array_equal(te.text_lengths, own.text_lengths)
    assert np.array_equal(b.train.audio_lengths, b.train.text_lengths)


def test_fit_time_length_leaves_unaligned_frames_alone() -> None:
    raw = make_file(aligned=False, text_dim=None)
    sp = validate_file(raw, Path("x"), kind=Distribution.IID)["train"]
    short = fit_time_length(sp, 20)
    assert short.text_bert.shape[2] == 20 and short.audio is sp.audio
    assert fit_time_length(sp, 50) is sp


def test_cross_test_file_with_other_feature_widths_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "MSA_cross_datasets"
    write_pickle(make_file(classification=False, text_dim=None), d / "mosi.pkl")
    write_pickle(make_file(classification=False, text_dim=None, dims=CROSS_MOSEI), d / "mosei.pkl")
    with pytest.raises(
        DataError,
        match=r"mosei\.pkl: split 'test', key 'audio': expected feature width 5 as in .*mosi\.pkl, found 25",
    ):
        load_bundle(S("mosi", "cross", "aligned"), tmp_path)


def test_aligned_setting_needs_one_time_axis(tmp_path: Path) -> None:
    write_pickle(
        make_file(aligned=False, text_dim=None), tmp_path / "CMU-MOSI/Processed/aligned_50.pkl"
    )
    with pytest.raises(
        DataError,
        match=r"key 'audio': expected 50 time steps \(aligned to the text\), found shape \[12, 375, 5\]",
    ):
        load_bundle(S("mosi", "iid", "aligned"), tmp_path)


def test_aligned_file_with_stored_lengths_uses_text_lengths(tmp_path: Path) -> None:
    raw = make_file(text_dim=None)
    for split in raw.values():
        split["audio_lengths"] = np.full(len(split["regression_labels"]), 50)
        split["vision_lengths"] = np.full(len(split["regression_labels"]), 50)
    write_pickle(raw, tmp_path / "CMU-MOSI/Processed/aligned_50.pkl")
    b = load_bundle(S("mosi", "iid", "aligned"), tmp_path)
    assert np.array_equal(b.train.audio_lengths, b.train.text_lengths)
    assert np.array_equal(b.test.vision_lengths, b.test.text_lengths)
    cached = load_file(tmp_path / "CMU-MOSI/Processed/aligned_50.pkl", Distribution.IID)
    assert (cached["train"].audio_lengths == 50).all()  # the cached split is not mutated


def test_nan_file_is_refused_for_runs(tmp_path: Path) -> None:
    raw = make_file(text_dim=None)
    raw["train"]["vision"][1, 2, 3] = np.nan
    write_joblib(raw, tmp_path / "OOD_MOSI/binary/MOSI_aligned_50.pkl")
    with pytest.raises(
        DataError, match=r"MOSI_aligned_50\.pkl: split 'train': non-finite .*vision: 1 NaN"
    ):
        load_bundle(S("mosi", "ood", "aligned"), tmp_path)


def test_synth_without_root_uses_ensure_synth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "synthroot"
    write_pickle(make_file(seed=3, text_dim=None), build / "CMU-SYNTH/Processed/unaligned_50.pkl")
    calls: list[int] = []

    def ensure_synth() -> Path:
        calls.append(1)
        return build

    fake = types.ModuleType("mer_bench.data.synth")
    fake.ensure_synth = ensure_synth  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mer_bench.data.synth", fake)
    monkeypatch.setenv(loaders.ENV_DATA_ROOT, str(tmp_path / "ignored"))
    b = load_bundle(S("synth", "iid", "unaligned"))
    assert calls == [1] and b.sources["train"] == build / "CMU-SYNTH/Processed/unaligned_50.pkl"
    # With an explicit root, the generator is not consulted.
    b2 = load_bundle(S("synth", "iid", "unaligned"), build)
    assert calls == [1] and b2.train.size == b.train.size


def test_real_dataset_without_root_or_env_explains_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loaders.ENV_DATA_ROOT, raising=False)
    with pytest.raises(DataError, match="MER_BENCH_DATA"):
        load_bundle(S("mosi", "iid", "aligned"))


def test_env_root_is_used_for_real_data(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loaders.ENV_DATA_ROOT, str(root))
    assert load_bundle(S("mosei", "iid", "aligned")).spec.audio_dim == 74


def test_bundles_name_their_files_by_digest_without_hashing_twice(
    tiny_synth_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bundle lists the files it read (base name, SHA-256); ``data_files`` gives the same
    from the import cache without reading the file again."""
    import hashlib

    from mer_bench.data import cache
    from mer_bench.data.loaders import data_files, load_bundle

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    iid = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.ALIGNED, Task.BINARY)
    cross = DataSetting(Dataset.SYNTH, Distribution.CROSS, Alignment.ALIGNED, Task.BINARY)
    one, two = load_bundle(iid, tiny_synth_root), load_bundle(cross, tiny_synth_root)
    folder = tiny_synth_root / "MSA_cross_datasets"
    assert [f.as_dict() for f in one.files] == [
        {
            "role": "train/valid/test",
            "file": "aligned_50.pkl",
            "sha256": sha(tiny_synth_root / "CMU-SYNTH" / "Processed" / "aligned_50.pkl"),
        }
    ]
    assert [(f.role, f.name, f.sha256) for f in two.files] == [
        ("train/valid", "synth.pkl", sha(folder / "synth.pkl")),
        ("test", "synth_b.pkl", sha(folder / "synth_b.pkl")),
    ]
    assert len({one.fingerprint, two.fingerprint}) == 2 and len(one.fingerprint) == 16
    sealed = load_bundle(cross, tiny_synth_root, test=False)
    assert [f.role for f in sealed.files] == ["train/valid"]
    # the digests come from the import's manifest: nothing is hashed again
    loaders.clear_cache()
    monkeypatch.setattr(cache, "sha256_file", lambda path: pytest.fail(f"hashed {path}"))
    assert data_files(cross, tiny_synth_root) == two.files
