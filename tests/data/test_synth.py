"""The synthetic dataset generator: MMSA format, token rules, signal per modality, OOD shift."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from scipy.optimize import minimize

from mer_bench.data import synth as synth_mod
from mer_bench.data.synth import (
    MANIFEST_NAME,
    SynthConfig,
    bias_words,
    ensure_synth,
    write_synth,
)
from mer_bench.data.types import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID
from mer_bench.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
IID = ("CMU-SYNTH/Processed/aligned_50.pkl", "CMU-SYNTH/Processed/unaligned_50.pkl")
OOD = tuple(
    f"OOD_SYNTH/{task}/SYNTH_{align}_50.pkl"
    for task in ("binary", "seven")
    for align in ("aligned", "unaligned")
)
CROSS = ("MSA_cross_datasets/synth.pkl", "MSA_cross_datasets/synth_b.pkl")
ALL_FILES = IID + OOD + CROSS
ALIGNED_KEYS = {
    "raw_text",
    "id",
    "text",
    "text_bert",
    "audio",
    "vision",
    "annotations",
    "classification_labels",
    "regression_labels",
}
UNALIGNED_KEYS = ALIGNED_KEYS | {"audio_lengths", "vision_lengths"}

SMALL = SynthConfig.small()


def _load(path: Path) -> dict:
    if "OOD_" in str(path):
        return joblib.load(path)
    with path.open("rb") as fh:
        return pickle.load(fh)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("synth_small")
    write_synth(root, SMALL)
    return root, {rel: _load(root / rel) for rel in ALL_FILES}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- format


def test_layout_and_serialisers(small: tuple[Path, dict]) -> None:
    root, _ = small
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert found == sorted(ALL_FILES)
    for rel in ALL_FILES:
        head = (root / rel).read_bytes()[:4096]
        # joblib stores arrays through its own wrapper class, named in the pickle stream.
        assert (b"joblib" in head) == rel.startswith("OOD_"), rel


def test_keys_dtypes_and_shapes(small: tuple[Path, dict]) -> None:
    _, files = small
    c = SMALL
    for rel, data in files.items():
        assert set(data) == set(SPLITS)
        aligned = "unaligned" not in rel
        cross = rel in CROSS
        n = {CROSS[0]: c.cross_text_len, CROSS[1]: c.cross_b_text_len}.get(rel, c.text_len)
        d_a, d_v = (c.cross_audio_dim, c.cross_vision_dim) if cross else (c.audio_dim, c.vision_dim)
        l_a, l_v = (n, n) if aligned else (c.audio_len, c.vision_len)
        sizes = (
            (c.cross_n_train, c.cross_n_valid, c.cross_n_test)
            if cross
            else (c.n_train, c.n_valid, c.n_test)
        )
        for split, size in zip(SPLITS, sizes):
            s = data[split]
            assert set(s) == (ALIGNED_KEYS if aligned else UNALIGNED_KEYS), (rel, split)
            assert s["raw_text"].shape == (size,) and s["raw_text"].dtype == object
            assert all(isinstance(t, str) and t == t.upper() for t in s["raw_text"])
            assert s["id"].shape == (size,) and s["id"].dtype == object
            assert all(len(i.split("$_$")) == 2 and all(i.split("$_$")) for i in s["id"])
            assert s["text"].shape == (size, n, c.text_feat_dim) and s["text"].dtype == np.float32
            assert s["text_bert"].shape == (size, 3, n)
            want_ids = np.int64 if rel in OOD else np.float32
            assert s["text_bert"].dtype == want_ids, rel
            assert s["audio"].shape == (size, l_a, d_a) and s["audio"].dtype == np.float32
            assert s["vision"].shape == (size, l_v, d_v) and s["vision"].dtype == np.float32
            assert s["regression_labels"].shape == (size,)
            assert s["regression_labels"].dtype == np.float32
            assert s["classification_labels"].dtype.kind == "f"
            assert s["annotations"].dtype == object
            if not aligned:
                for key in ("audio_lengths", "vision_lengths"):
                    assert s[key].shape == (size,) and s[key].dtype == np.int64
        ids = np.concatenate([data[sp]["id"] for sp in SPLITS])
        assert len(set(ids)) == len(ids), rel


def test_token_rules(small: tuple[Path, dict]) -> None:
    _, files = small
    c = SMALL
    lengths_seen = []
    for data in files.values():
        for split in SPLITS:
            tb = data[split]["text_bert"].astype(np.int64)
            ids, mask, seg = tb[:, 0], tb[:, 1], tb[:, 2]
            n = ids.shape[1]
            length = mask.sum(axis=1)
            lengths_seen.append(length)
            pos = np.arange(n)[None, :]
            # Contiguous ones then zeros, segments all zero.
            assert np.array_equal(mask, (pos < length[:, None]).astype(np.int64))
            assert not seg.any()
            assert (length >= c.min_text_len).all() and (length <= n).all()
            assert (ids[:, 0] == CLS_ID).all()
            assert (ids[np.arange(len(ids)), length - 1] == SEP_ID).all()
            assert (ids[mask == 0] == PAD_ID).all()
            content = ids[(pos >= 1) & (pos < length[:, None] - 1)]
            assert (content >= c.vocab_low).all() and (content < c.vocab_high).all()
            for special in (UNK_ID, MASK_ID):
                assert not (ids == special).any()
            # [CLS]/[SEP] only at their places.
            assert (ids == CLS_ID).sum() == len(ids) and (ids == SEP_ID).sum() == len(ids)
            # raw_text renders the content ids one word each.
            words = [len(t.split()) for t in data[split]["raw_text"]]
            assert np.array_equal(words, length - 2)
    all_lengths = np.concatenate(lengths_seen)
    assert all_lengths.min() == c.min_text_len  # variable lengths down to the minimum
    assert np.unique(all_lengths).size > 10


def test_text_features_are_a_fixed_embedding(small: tuple[Path, dict]) -> None:
    _, files = small
    table: dict[int, np.ndarray] = {}
    for data in files.values():
        for split in SPLITS:
            ids = data[split]["text_bert"][:, 0].astype(np.int64)
            feats = data[split]["text"]
            assert not feats[ids == PAD_ID].any()
            flat_ids, flat = ids.ravel(), feats.reshape(-1, feats.shape[-1])
            uniq, first = np.unique(flat_ids, return_index=True)
            # Every occurrence of a token equals its first occurrence, across files too.
            assert np.array_equal(flat, flat[first[np.searchsorted(uniq, flat_ids)]])
            for tok, row in zip(uniq[:50], flat[first[:50]]):
                assert np.array_equal(table.setdefault(int(tok), row), row)
            assert np.abs(flat[flat_ids != PAD_ID]).sum(axis=1).min() > 0


def test_frames_lengths_padding_and_neg_inf(small: tuple[Path, dict]) -> None:
    _, files = small
    c = SMALL
    neg_inf = 0
    for rel, data in files.items():
        for split in SPLITS:
            s = data[split]
            text_len = s["text_bert"][:, 1].sum(axis=1).astype(np.int64)
            if "unaligned" in rel:
                lens = {"audio": s["audio_lengths"], "vision": s["vision_lengths"]}
                for key, max_len in (("audio", c.audio_len), ("vision", c.vision_len)):
                    assert (lens[key] >= np.floor(c.min_length_frac * max_len)).all()
                    assert (lens[key] <= max_len).all() and (lens[key] >= text_len).all()
                assert lens["audio"].max() > lens["audio"].min()
            else:
                lens = {"audio": text_len, "vision": text_len}
            for key in ("audio", "vision"):
                x = s[key]
                valid = np.arange(x.shape[1])[None, :] < lens[key][:, None]
                assert not x[~valid].any(), (rel, key)  # padding frames: exact zeros
                finite = np.where(np.isfinite(x), x, 0.0)
                assert (np.abs(finite).sum(axis=2)[valid] > 0).all()
                assert not np.isnan(x).any()
            assert np.isfinite(s["vision"]).all()
            bad = np.isneginf(s["audio"])
            assert not np.isposinf(s["audio"]).any()
            neg_inf += int(bad.sum())
    assert neg_inf > 0


def test_aligned_and_unaligned_share_samples(small: tuple[Path, dict]) -> None:
    _, files = small
    pairs = [IID, OOD[:2], OOD[2:]]
    for aligned_rel, unaligned_rel in pairs:
        a, u = files[aligned_rel], files[unaligned_rel]
        for split in SPLITS:
            for key in ("raw_text", "id", "text", "text_bert", "annotations"):
                assert np.array_equal(a[split][key], u[split][key]), (aligned_rel, key)
            for key in ("classification_labels", "regression_labels"):
                assert np.array_equal(a[split][key], u[split][key])
            # Aligned frames average the unaligned frames over each token's span.
            ua, aa = u[split]["vision"], a[split]["vision"]
            lv = u[split]["vision_lengths"]
            tl = a[split]["text_bert"][:, 1].sum(axis=1).astype(np.int64)
            for i in range(3):
                edges = (np.arange(tl[i] + 1) * lv[i]) // tl[i]
                want = np.stack([ua[i, edges[t] : edges[t + 1]].mean(axis=0) for t in range(tl[i])])
                np.testing.assert_allclose(aa[i, : tl[i]], want, rtol=1e-4, atol=1e-5)


def test_labels(small: tuple[Path, dict]) -> None:
    _, files = small
    scores = []
    for rel, data in files.items():
        for split in SPLITS:
            s = data[split]
            r = s["regression_labels"].astype(np.float64)
            assert (r >= -3).all() and (r <= 3).all()
            # MOSI-like granularity: multiples of 0.2.
            np.testing.assert_allclose(r / 0.2, np.round(r / 0.2), atol=1e-4)
            cls = s["classification_labels"].astype(np.int64)
            assert np.array_equal(cls, (np.sign(r) + 1).astype(np.int64))
            names = np.array(["Negative", "Neutral", "Positive"])[cls]
            assert np.array_equal(s["annotations"].astype(str), names)
            if rel in IID:
                scores.append(r)
    r = np.concatenate(scores)
    assert 0.05 <= (r == 0).mean() <= 0.2
    seven = np.round(r) + 3
    assert np.bincount(seven.astype(np.int64), minlength=7).min() > 0


def test_ood_and_iid_sizes_and_repartitions(small: tuple[Path, dict]) -> None:
    _, files = small
    iid_train = files[IID[0]]["train"]["id"]
    binary_train = files[OOD[0]]["train"]["id"]
    seven_train = files[OOD[2]]["train"]["id"]
    assert len(binary_train) == len(iid_train) == len(seven_train) == SMALL.n_train
    assert set(binary_train) != set(seven_train)
    assert set(binary_train) != set(iid_train)
    # A re-partition of one pool: OOD samples are also found (same id → same sample) in IID.
    iid_all = {
        i: t
        for sp in SPLITS
        for i, t in zip(files[IID[0]][sp]["id"], files[IID[0]][sp]["raw_text"])
    }
    ood = files[OOD[0]]
    shared = [
        (i, t) for sp in SPLITS for i, t in zip(ood[sp]["id"], ood[sp]["raw_text"]) if i in iid_all
    ]
    assert len(shared) > SMALL.n_total // 4
    assert all(iid_all[i] == t for i, t in shared)


# ----------------------------------------------------------------------------- determinism


def test_determinism_and_seed(tmp_path: Path, small: tuple[Path, dict]) -> None:
    root, files = small
    again = tmp_path / "again"
    write_synth(again, SMALL)
    for rel in ALL_FILES:
        assert _sha(root / rel) == _sha(again / rel), rel
    other = tmp_path / "other"
    write_synth(other, SynthConfig.small(seed=1))
    for rel in ALL_FILES:
        assert _sha(root / rel) != _sha(other / rel), rel
    other_iid = _load(other / IID[0])["train"]
    assert not np.array_equal(
        other_iid["regression_labels"], files[IID[0]]["train"]["regression_labels"]
    )


def test_config_validation_and_key() -> None:
    assert SynthConfig().key == SynthConfig().key
    assert SynthConfig().key != SynthConfig(seed=1).key
    assert SynthConfig().key != SynthConfig(version="other").key
    with pytest.raises(ConfigError, match="min_text_len"):
        SynthConfig(min_text_len=3)
    with pytest.raises(ConfigError, match="n_train"):
        SynthConfig(n_train=0)
    with pytest.raises(ConfigError, match="audio_len"):
        SynthConfig(audio_len=30)
    with pytest.raises(ConfigError, match="bias_presence"):
        SynthConfig(bias_presence=1.5)
    with pytest.raises(ConfigError, match="pool is too small"):
        write_synth(Path("/nonexistent-never-written"), SynthConfig.small(pool_factor=1.0))


# ----------------------------------------------------------------------------- signal


def _logistic(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, lam: float) -> np.ndarray:
    """L2-regularised logistic regression (L-BFGS); returns test predictions in {0, 1}."""
    xtr = np.hstack([xtr, np.ones((len(xtr), 1))])
    xte = np.hstack([xte, np.ones((len(xte), 1))])
    y = ytr * 2.0 - 1.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        m = y * (xtr @ w)
        grad = -(xtr.T @ (y / (1.0 + np.exp(m))))
        grad[:-1] += lam * w[:-1]
        return float(np.logaddexp(0.0, -m).sum() + lam * (w[:-1] @ w[:-1]) / 2), grad

    w = minimize(loss, np.zeros(xtr.shape[1]), jac=True, method="L-BFGS-B").x
    return (xte @ w > 0).astype(np.int64)


def _features(split: dict, kind: str, vocab: np.ndarray) -> np.ndarray:
    if kind == "bow":
        ids = split["text_bert"][:, 0].astype(np.int64)
        col = np.searchsorted(vocab, ids)
        hit = (col < len(vocab)) & (vocab[np.minimum(col, len(vocab) - 1)] == ids)
        counts = np.zeros((len(ids), len(vocab)))
        rows = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
        np.add.at(counts, (rows[hit], col[hit]), 1.0)
        return counts
    if kind == "text":
        mask = split["text_bert"][:, 1].astype(np.float64)
        return (split["text"] * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    x = np.nan_to_num(split[kind].astype(np.float64), neginf=0.0)
    lengths = split.get(f"{kind}_lengths", split["text_bert"][:, 1].sum(axis=1))
    return x.sum(axis=1) / lengths[:, None]


def _probe(train: dict, test: dict, kinds: tuple[str, ...]) -> tuple[float, float]:
    """Accuracy of neg-vs-pos logistic regression (neutral dropped) and the majority rate."""
    ytr_all = train["classification_labels"].astype(np.int64)
    yte_all = test["classification_labels"].astype(np.int64)
    ktr, kte = ytr_all != 1, yte_all != 1
    vocab = np.unique(train["text_bert"][:, 0].astype(np.int64))
    vocab = vocab[vocab > MASK_ID]
    xs_tr, xs_te = [], []
    for kind in kinds:
        xtr, xte = _features(train, kind, vocab), _features(test, kind, vocab)
        if kind != "bow":  # dense features: standardise on train; counts stay raw
            mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
            xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        xs_tr.append(xtr)
        xs_te.append(xte)
    ytr, yte = (ytr_all[ktr] == 2).astype(np.int64), (yte_all[kte] == 2).astype(np.int64)
    pred = _logistic(np.hstack(xs_tr)[ktr], ytr, np.hstack(xs_te)[kte], lam=3.0)
    return float((pred == yte).mean()), float(max(yte.mean(), 1 - yte.mean()))


@pytest.mark.parametrize("kind", ["bow", "text", "audio", "vision"])
def test_each_modality_alone_is_learnable(small: tuple[Path, dict], kind: str) -> None:
    _, files = small
    for rel in IID:
        data = files[rel]
        acc, majority = _probe(data["train"], data["test"], (kind,))
        assert acc >= majority + 0.10, (rel, kind, acc, majority)


def test_modalities_are_complementary(small: tuple[Path, dict]) -> None:
    _, files = small
    data = files[IID[1]]
    single = [_probe(data["train"], data["test"], (k,))[0] for k in ("bow", "audio", "vision")]
    fused, _ = _probe(data["train"], data["test"], ("bow", "audio", "vision"))
    assert fused >= max(single) + 0.05, (fused, single)


def _word_positive_rate(split: dict, words: tuple[int, ...]) -> float:
    """P(label positive | one of ``words`` present), neutral samples dropped."""
    ids = split["text_bert"][:, 0].astype(np.int64)
    cls = split["classification_labels"].astype(np.int64)
    has = np.isin(ids, words).any(axis=1) & (cls != 1)
    assert has.sum() >= 10
    return float((cls[has] == 2).mean())


def test_ood_shift_is_measurable(small: tuple[Path, dict]) -> None:
    _, files = small
    iid = files[IID[0]]
    iid_acc, _ = _probe(iid["train"], iid["test"], ("bow",))
    words = bias_words(SMALL)
    for rel in (OOD[0], OOD[2]):
        ood = files[rel]
        ood_acc, _ = _probe(ood["train"], ood["test"], ("bow",))
        assert ood_acc <= iid_acc - 0.10, (rel, ood_acc, iid_acc)
        # In distribution (OOD valid) the shortcut still works: the drop is the shift's doing.
        valid_acc, _ = _probe(ood["train"], ood["valid"], ("bow",))
        assert valid_acc >= iid_acc - 0.05, (rel, valid_acc, iid_acc)
        for polarity, sign in (("positive", 1), ("negative", -1)):
            train_rate = _word_positive_rate(ood["train"], words[polarity])
            test_rate = _word_positive_rate(ood["test"], words[polarity])
            iid_rate = _word_positive_rate(iid["train"], words[polarity])
            # Strong in OOD train, reversed in OOD test, moderate in IID.
            assert sign * (train_rate - 0.5) >= 0.35, (rel, polarity, train_rate)
            assert sign * (test_rate - 0.5) <= -0.25, (rel, polarity, test_rate)
            assert 0.05 <= sign * (iid_rate - 0.5) <= 0.35, (polarity, iid_rate)
    # The bias words are frequent tokens (CIDer's dictionary keeps the most frequent ones).
    ids = iid["train"]["text_bert"][:, 0].astype(np.int64)
    tokens, counts = np.unique(ids[ids > MASK_ID], return_counts=True)
    top = set(tokens[np.argsort(-counts, kind="stable")[:20]].tolist())
    assert set(words["positive"] + words["negative"]) <= top


def test_cross_domains_differ(small: tuple[Path, dict]) -> None:
    _, files = small
    a, b = files[CROSS[0]], files[CROSS[1]]
    assert a["train"]["text_bert"].shape[2] != b["train"]["text_bert"].shape[2]
    assert a["train"]["audio"].shape[2] == b["train"]["audio"].shape[2]
    assert a["train"]["vision"].shape[2] == b["train"]["vision"].shape[2]
    ra = np.concatenate([a[s]["regression_labels"] for s in SPLITS])
    rb = np.concatenate([b[s]["regression_labels"] for s in SPLITS])
    assert rb.mean() > ra.mean() + 0.15  # label shift
    va = set(np.unique(a["train"]["text_bert"][:, 0]).tolist())
    vb = set(np.unique(b["train"]["text_bert"][:, 0]).tolist())
    assert len(va & vb) / len(va | vb) < 0.8  # partly different vocabulary
    # Features shift: per-channel vision means differ between the domains.
    ma = a["train"]["vision"].sum(axis=(0, 1)) / a["train"]["text_bert"][:, 1].sum()
    mb = b["train"]["vision"].sum(axis=(0, 1)) / b["train"]["text_bert"][:, 1].sum()
    assert np.abs(ma - mb).max() > 0.3
    # Each domain is learnable in itself from audio/vision.
    for data in (a, b):
        acc, majority = _probe(data["train"], data["test"], ("audio", "vision"))
        assert acc >= majority + 0.05


# ----------------------------------------------------------------------------- cache


def test_ensure_synth_writes_once_with_manifest(tmp_path: Path) -> None:
    config = SynthConfig.small(seed=3)
    root = ensure_synth(tmp_path, config)
    assert root == tmp_path / f"synth-{config.key}"
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["key"] == config.key and manifest["version"] == config.version
    assert sorted(manifest["files"]) == sorted(ALL_FILES)
    for rel, digest in manifest["files"].items():
        assert _sha(root / rel) == digest
    stamp = (root / IID[0]).stat().st_mtime_ns
    assert ensure_synth(tmp_path, config) == root
    assert (root / IID[0]).stat().st_mtime_ns == stamp  # not rewritten
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temp folder left


def test_ensure_synth_default_location_and_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SynthConfig.small(seed=4)
    monkeypatch.setenv("MER_BENCH_CACHE", str(tmp_path / "cache"))
    real_write = synth_mod.write_synth
    calls = []

    def racing_write(out_dir: Path, cfg: SynthConfig) -> list[Path]:
        # Another process finishes the same dataset while this one is still writing.
        calls.append(out_dir)
        if len(calls) == 1:
            ensure_synth(None, cfg)
        return real_write(out_dir, cfg)

    monkeypatch.setattr(synth_mod, "write_synth", racing_write)
    root = ensure_synth(None, config)
    assert root == tmp_path / "cache" / f"synth-{config.key}"
    assert len(calls) == 2
    assert (root / MANIFEST_NAME).is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [root.name]


def test_ensure_synth_refuses_foreign_folder(tmp_path: Path) -> None:
    config = SynthConfig.small(seed=5)
    (tmp_path / f"synth-{config.key}").mkdir()
    with pytest.raises(DataError, match=r"no manifest\.json"):
        ensure_synth(tmp_path, config)


# ----------------------------------------------------------------------------- defaults


def test_default_config_dims_size_and_speed(tmp_path: Path) -> None:
    start = time.perf_counter()
    paths = write_synth(tmp_path)
    elapsed = time.perf_counter() - start
    total = sum(p.stat().st_size for p in paths)
    assert total < 150e6
    # ~5 s on an idle 2-core CPU; generous for a loaded CI machine.
    assert elapsed < 60
    c = SynthConfig()
    assert (c.text_len, c.audio_dim, c.vision_dim, c.audio_len, c.vision_len) == (
        16,
        5,
        20,
        80,
        100,
    )
    # Evaluation splits big enough for paired tests (issue: at least 384 each, cross-dataset too).
    assert min(c.n_valid, c.n_test, c.cross_n_valid, c.cross_n_test) >= 384
    iid = _load(tmp_path / IID[1])["train"]
    assert iid["audio"].shape[1:] == (80, 5) and iid["vision"].shape[1:] == (100, 20)
    assert iid["text_bert"].shape[1:] == (3, 16)
    assert len(_load(tmp_path / IID[1])["test"]["id"]) == c.n_test
    cross_a = _load(tmp_path / CROSS[0])["test"]
    cross_b = _load(tmp_path / CROSS[1])["test"]
    assert cross_a["audio"].shape[1:] == (c.cross_text_len, c.cross_audio_dim)
    assert cross_b["vision"].shape[1:] == (c.cross_b_text_len, c.cross_vision_dim)
    assert len(iid["id"]) == c.n_train


# ----------------------------------------------------------------------------- loader


def test_every_setting_loads_through_the_loader(small: tuple[Path, dict]) -> None:
    loaders = pytest.importorskip("mer_bench.data.loaders")
    from mer_bench.protocol import Dataset, data_settings

    root, files = small
    loaders.clear_cache()
    settings = data_settings([Dataset.SYNTH])
    assert len(settings) == 15
    for setting in settings:
        bundle = loaders.load_bundle(setting, root=root)
        spec = bundle.spec
        cross = setting.distribution.value == "cross"
        assert spec.audio_dim == (SMALL.cross_audio_dim if cross else SMALL.audio_dim)
        assert spec.vision_dim == (SMALL.cross_vision_dim if cross else SMALL.vision_dim)
        assert spec.text_feat_dim == SMALL.text_feat_dim
        assert spec.text_len == (SMALL.cross_text_len if cross else SMALL.text_len)
        assert bundle.test.text_bert.shape[2] == spec.text_len
        for split in (bundle.train, bundle.valid, bundle.test):
            assert split.text_bert.dtype == np.int64
            assert np.isfinite(split.audio).all()  # -inf became 0
        if not cross:
            rel = IID[0] if setting.distribution.value == "iid" else OOD[0]
            want = files[rel]["train"]["classification_labels"].astype(np.int64)
            if setting.distribution.value == "ood" and setting.task.value == "seven":
                want = files[OOD[2]]["train"]["classification_labels"].astype(np.int64)
            assert np.array_equal(bundle.train.class_labels, want)
    loaders.clear_cache()


def test_env_unset_cache_dir_is_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MER_BENCH_CACHE", raising=False)
    assert synth_mod.default_cache_base() == Path.home() / ".cache" / "mer_bench"
    monkeypatch.setenv("MER_BENCH_CACHE", os.sep + "x")
    assert synth_mod.default_cache_base() == Path(os.sep + "x")
