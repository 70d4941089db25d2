"""Schema validation of loaded files: casts, fixes, counts and precise refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_bench.data.schema import inspect_file, validate_file
from mer_bench.data.types import sign_class_labels
from mer_bench.errors import DataError
from mer_bench.protocol import Distribution
from tests.data.fixtures import CROSS_MOSI, MOSEI, SEP, make_file

P = Path("/data/x.pkl")
IID, OOD, CROSS = Distribution.IID, Distribution.OOD, Distribution.CROSS


def _err(raw: dict, kind: Distribution = IID) -> str:
    with pytest.raises(DataError) as err:
        validate_file(raw, P, kind=kind)
    msg = str(err.value)
    assert msg.startswith(f"{P}: ") and "\n" not in msg
    return msg


def test_aligned_float_text_bert_without_lengths() -> None:
    raw = make_file(float_text_bert=True, text_dim=16)
    expected_ids = raw["train"]["text_bert"].astype(np.int64)
    expected_cls = raw["train"]["classification_labels"].astype(np.int64)
    splits = validate_file(raw, P, kind=IID)
    tr = splits["train"]
    assert tr.text_bert.dtype == np.int64 and np.array_equal(tr.text_bert, expected_ids)
    assert tr.audio.dtype == np.float32 and tr.vision.dtype == np.float32
    assert tr.text_feats is not None and tr.text_feats.shape == (12, 50, 16)
    assert tr.text_feats.dtype == np.float32
    lengths = expected_ids[:, 1].sum(axis=1)
    assert np.array_equal(tr.audio_lengths, lengths) and np.array_equal(tr.vision_lengths, lengths)
    assert tr.class_labels.dtype == np.int64 and np.array_equal(tr.class_labels, expected_cls)
    assert tr.regression_labels.dtype == np.float32
    assert tr.sample_ids[0] == "vid0$_$0" and tr.raw_text is not None
    assert [s.size for s in splits.values()] == [12, 6, 8]
    assert [s.name for s in splits.values()] == ["train", "valid", "test"]


def test_unaligned_int_text_bert_with_lengths() -> None:
    raw = make_file(aligned=False, float_text_bert=False, dims=MOSEI, text_dim=None)
    a_len = raw["valid"]["audio_lengths"].copy()
    v = validate_file(raw, P, kind=OOD)["valid"]
    assert v.audio.shape[1:] == (500, 74) and v.vision.shape[1:] == (500, 35)
    assert np.array_equal(v.audio_lengths, a_len) and v.audio_lengths.dtype == np.int64
    assert v.text_feats is None


def test_neg_inf_in_audio_is_zeroed_and_counted() -> None:
    raw = make_file(aligned=False, neg_inf=7, text_dim=None)
    where = np.isneginf(raw["train"]["audio"])
    assert where.sum() == 7
    result = inspect_file(raw, P, kind=IID)
    audio = result.splits["train"].audio
    assert np.isfinite(audio).all() and (audio[where] == 0).all()
    stats = result.stats["train"]
    assert stats.audio_neg_inf_zeroed == 7 and stats.key("audio").neg_inf == 7
    assert stats.remaining_nonfinite == 0 and result.stats["valid"].audio_neg_inf_zeroed == 7


def test_neg_inf_fix_on_a_read_only_array_copies_once() -> None:
    raw = make_file(neg_inf=3, text_dim=None)
    original = raw["train"]["audio"]
    original.flags.writeable = False
    audio = validate_file(raw, P, kind=IID)["train"].audio
    assert audio is not original and np.isfinite(audio).all()
    assert np.isneginf(original).sum() == 3


def test_casts_replace_entries_in_raw_so_one_copy_stays() -> None:
    raw = make_file(text_dim=None)
    raw["train"]["audio"] = raw["train"]["audio"].astype(np.float64)
    vision = raw["train"]["vision"]
    tr = validate_file(raw, P, kind=IID)["train"]
    assert raw["train"]["audio"] is tr.audio and tr.audio.dtype == np.float32
    assert tr.vision is vision  # already float32: no copy
    assert raw["train"]["text_bert"] is tr.text_bert


def test_labels_stored_as_column_vectors_are_accepted() -> None:
    raw = make_file(text_dim=None)
    raw["test"]["regression_labels"] = raw["test"]["regression_labels"][:, None]
    raw["test"]["classification_labels"] = raw["test"]["classification_labels"][:, None]
    te = validate_file(raw, P, kind=IID)["test"]
    assert te.regression_labels.shape == (8,) and te.class_labels.shape == (8,)


def test_cross_labels_come_from_the_score_sign() -> None:
    raw = make_file(dims=CROSS_MOSI, classification=False, text_dim=None)
    scores = raw["train"]["regression_labels"].copy()
    tr = validate_file(raw, P, kind=CROSS)["train"]
    assert np.array_equal(tr.class_labels, sign_class_labels(scores))
    assert set(np.unique(tr.class_labels)) <= {0, 1, 2} and (scores == 0).any()
    assert tr.text_bert.shape[2] == 44 and tr.audio.shape[2] == 25 and tr.vision.shape[2] == 171
    # A cross file that has classification_labels still uses the sign (the reference does).
    raw = make_file(dims=CROSS_MOSI, text_dim=None)
    raw["train"]["classification_labels"][:] = 1
    tr = validate_file(raw, P, kind=CROSS)["train"]
    assert not (tr.class_labels == 1).all()


def test_nan_is_refused_for_runs_and_counted_for_check() -> None:
    raw = make_file(text_dim=8)
    raw["valid"]["vision"][0, 0, :2] = np.nan
    raw["valid"]["text"][1, 0, 0] = np.inf
    msg = _err(raw)
    assert "split 'valid'" in msg and "vision: 2 NaN, 0 inf" in msg and "text: 0 NaN, 1 inf" in msg
    raw = make_file(text_dim=8)
    raw["valid"]["vision"][0, 0, :2] = np.nan
    result = inspect_file(raw, P, kind=IID, allow_nonfinite=True)
    assert result.stats["valid"].key("vision").nan == 2
    assert result.stats["valid"].remaining_nonfinite == 2 and result.remaining_nonfinite == 2


def test_pos_inf_in_audio_and_nan_labels_are_refused() -> None:
    raw = make_file(text_dim=None)
    raw["train"]["audio"][0, 0, 0] = np.inf
    assert "audio: 0 NaN, 1 inf" in _err(raw)
    raw = make_file(text_dim=None)
    raw["test"]["regression_labels"][3] = np.nan
    assert "regression_labels: 1 NaN" in _err(raw)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("valid"), "missing split(s) valid"),
        (lambda r: r["train"].pop("vision"), "split 'train': missing key(s) vision"),
        (
            lambda r: r["test"].pop("classification_labels"),
            "missing key(s) classification_labels (a iid file needs",
        ),
        (
            lambda r: r["test"].update(text_bert=r["test"]["text_bert"][:0]),
            "key 'text_bert': expected a non-empty split (N >= 1), found N = 0",
        ),
        (
            lambda r: r["train"].update(text_bert=r["train"]["text_bert"][:, :2]),
            "key 'text_bert': expected shape (N, 3, n) with n >= 1, found shape [12, 2, 50]",
        ),
        (
            lambda r: r["train"].update(audio=r["train"]["audio"][:, :, 0]),
            "key 'audio': expected a 3-d array, found shape [12, 50]",
        ),
        (
            lambda r: r["valid"].update(vision=r["valid"]["vision"][:5]),
            "split 'valid', key 'vision': expected 6 samples (as text_bert), found shape [5, 50, 20]",
        ),
        (
            lambda r: r["train"].update(audio=r["train"]["audio"].astype(str)),
            "key 'audio': expected a numeric (bool/int/float) array, found dtype <U",
        ),
        (
            lambda r: r["train"].update(audio="not an array"),
            "key 'audio': expected a numpy array (3-d), found str",
        ),
        (
            lambda r: r["test"].update(text=r["test"]["text"][:, :40]),
            "key 'text': expected shape (8, 50, D_t), found shape [8, 40, 16]",
        ),
        (
            lambda r: r["test"].update(audio=r["test"]["audio"][:, :, :3]),
            "split 'test', key 'audio': expected (L_a, D_a) [50, 5] as in train, found [50, 3]",
        ),
        (
            lambda r: r["valid"].pop("text"),
            "split 'valid', key 'text': expected D_t [16] as in train, found []",
        ),
        (
            lambda r: r["train"]["classification_labels"].__setitem__(2, 3.0),
            "key 'classification_labels': expected class ids in {0, 1, 2}, found 1 outside, e.g. 3",
        ),
        (
            lambda r: r["train"]["classification_labels"].__setitem__(2, 1.5),
            "key 'classification_labels': expected integer class ids, found value 1.5",
        ),
        (
            lambda r: r["valid"]["regression_labels"].__setitem__(0, 3.5),
            "key 'regression_labels': expected scores in [-3, 3], found 1 outside, e.g. 3.5",
        ),
        (
            lambda r: r["train"]["text_bert"].__setitem__((0, 0, 1), 7.5),
            "key 'text_bert': expected integer token ids / mask / segment ids, found value 7.5",
        ),
        (
            lambda r: r["train"]["text_bert"].__setitem__((4, 1, 1), 0.0),
            "expected attention mask rows of contiguous ones then zeros, found sample 4",
        ),
        (
            lambda r: r["train"]["text_bert"].__setitem__((4, 1, 0), 2.0),
            "expected attention mask (row 1) of 0/1, found values in [0, 2]",
        ),
        (
            lambda r: r["train"]["text_bert"].__setitem__((2, 1), 0.0),
            "key 'text_bert': expected at least one valid token per sample, found sample 2 empty",
        ),
        (
            lambda r: r["train"].update(id=np.array([1] * 12, dtype=object)),
            "key 'id': expected an array of str, found int at 0",
        ),
        (lambda r: r.update(train=[1, 2]), "split 'train': expected a dict of arrays, found list"),
    ],
)
def test_refusals_name_file_split_key_expected_and_found(mutate, expected: str) -> None:
    raw = make_file(text_dim=16)
    mutate(raw)
    assert expected in _err(raw)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["train"].pop("audio_lengths"),
            "key 'audio_lengths' missing although audio has 375 time steps and the text 50",
        ),
        (
            lambda r: r["train"]["vision_lengths"].__setitem__(0, 501),
            "key 'vision_lengths': expected lengths in [0, 500], found [",
        ),
        (
            lambda r: r["train"]["audio_lengths"].__setitem__(0, -1),
            "key 'audio_lengths': expected lengths in [0, 375], found [-1,",
        ),
    ],
)
def test_unaligned_length_refusals(mutate, expected: str) -> None:
    raw = make_file(aligned=False, text_dim=None)
    mutate(raw)
    assert expected in _err(raw)


def test_top_level_must_be_a_dict() -> None:
    with pytest.raises(
        DataError, match=r"expected a dict with keys train, valid, test .* found list"
    ):
        validate_file([1, 2], P, kind=IID)


def test_truncated_texts_end_with_sep_in_fixture() -> None:
    """The fixture's texts are BERT-shaped: [CLS] … [SEP] then padding."""
    tr = validate_file(make_file(text_dim=None), P, kind=IID)["train"]
    last = tr.text_lengths - 1
    assert (tr.text_ids[:, 0] == 101).all()
    assert (tr.text_ids[np.arange(tr.size), last] == SEP).all()
