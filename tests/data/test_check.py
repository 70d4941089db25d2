"""``data check``: reports on valid files, detection of the file's role, refusals."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from mer_bench.data import checksums
from mer_bench.data.check import check_file
from mer_bench.data.types import seven_class_labels
from mer_bench.errors import DataError
from mer_bench.protocol import Distribution
from tests.data.fixtures import CROSS_MOSI, make_file, write_joblib, write_pickle


def test_report_on_an_unaligned_iid_file(tmp_path: Path) -> None:
    raw = make_file(aligned=False, float_text_bert=True, neg_inf=4, text_dim=8)
    classes = raw["train"]["classification_labels"].astype(int)
    sevens = seven_class_labels(raw["train"]["regression_labels"])
    path = write_pickle(raw, tmp_path / "CMU-MOSI/Processed/unaligned_50.pkl")
    report = check_file(path)
    assert report.kind is Distribution.IID and report.info.format == "pickle"
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.known_as is None and report.loadable
    assert (report.text_len, report.audio_shape, report.vision_shape) == (50, (375, 5), (500, 20))
    train = report.split("train")
    assert train.size == 12 and train.class_counts == tuple(np.bincount(classes, minlength=3))
    assert train.seven_counts == tuple(np.bincount(sevens, minlength=7))
    assert train.audio_neg_inf_zeroed == 4 and train.has_lengths
    tb = train.keys[0]
    assert (tb.key, tb.shape, tb.dtype) == ("text_bert", (12, 3, 50), "float64")
    text = report.render()
    assert report.sha256 in text and "no published checksum known for this file" in text
    assert "[valid] N = 6" in text and "status    OK: valid for runs" in text
    neg, neu, pos = train.class_counts
    assert f"3-class   negative {neg}, neutral {neu}, positive {pos}" in text
    assert re.search(r"audio\s+\(12, 375, 5\)\s+float32\s+4\s+0\s+0", text)
    assert "audio     4 -inf values set to 0 on load" in text
    assert f"audio {train.audio_lengths[0]}–{train.audio_lengths[1]}" in text


def test_known_checksum_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_pickle(make_file(text_dim=None), tmp_path / "aligned_50.pkl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(checksums.KNOWN_SHA256, digest, "MMSA MOSI/Processed/aligned_50.pkl")
    report = check_file(path)
    assert report.known_as == "MMSA MOSI/Processed/aligned_50.pkl"
    assert "matches the published MMSA MOSI/Processed/aligned_50.pkl" in report.render()


def test_published_checksum_table_is_well_formed() -> None:
    assert len(checksums.KNOWN_SHA256) >= 4
    for digest, name in checksums.KNOWN_SHA256.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest) and name.startswith("MMSA ")
    assert checksums.known_file(next(iter(checksums.KNOWN_SHA256)).upper()) is not None


def test_joblib_file_is_detected_as_ood(tmp_path: Path) -> None:
    path = write_joblib(make_file(text_dim=None), tmp_path / "MOSI_aligned_50.pkl")
    report = check_file(path)
    assert report.kind is Distribution.OOD and report.info.format == "joblib"
    assert "kind      ood (joblib file" in report.render()
    assert "audio/vision absent: text lengths apply (aligned)" in report.render()


def test_cross_file_is_detected_and_labelled_by_sign(tmp_path: Path) -> None:
    raw = make_file(dims=CROSS_MOSI, classification=False, text_dim=None)
    scores = raw["test"]["regression_labels"]
    expected = (int((scores < 0).sum()), int((scores == 0).sum()), int((scores > 0).sum()))
    report = check_file(write_pickle(raw, tmp_path / "anything.pkl"))
    assert report.kind is Distribution.CROSS and report.text_len == 44
    assert report.split("test").class_counts == expected
    # A file in MSA_cross_datasets/ is cross-dataset even with classification labels.
    path = write_pickle(
        make_file(dims=CROSS_MOSI, text_dim=None), tmp_path / "MSA_cross_datasets/mosi.pkl"
    )
    assert check_file(path).kind is Distribution.CROSS


def test_kind_can_be_forced(tmp_path: Path) -> None:
    path = write_pickle(
        make_file(dims=CROSS_MOSI, classification=False, text_dim=None), tmp_path / "x.pkl"
    )
    with pytest.raises(DataError, match=r"missing key\(s\) classification_labels \(a iid file"):
        check_file(path, kind=Distribution.IID)
    assert check_file(path, kind=Distribution.CROSS).kind_reason == "given"


def test_nan_is_reported_not_raised(tmp_path: Path) -> None:
    raw = make_file(text_dim=8)
    raw["test"]["vision"][0, 1, :3] = np.nan
    raw["test"]["text"][2, 0, 0] = -np.inf
    report = check_file(write_pickle(raw, tmp_path / "nan.pkl"))
    assert not report.loadable
    vision = next(k for k in report.split("test").keys if k.key == "vision")
    text_key = next(k for k in report.split("test").keys if k.key == "text")
    assert vision.nan == 3 and text_key.neg_inf == 1
    assert report.split("test").remaining_nonfinite == 4
    assert "INVALID FOR RUNS: 4 NaN/inf values" in report.render()


def test_invalid_files_raise(tmp_path: Path) -> None:
    raw = make_file(text_dim=None)
    raw["valid"].pop("text_bert")
    with pytest.raises(DataError, match=r"bad\.pkl: split 'valid': missing key\(s\) text_bert"):
        check_file(write_pickle(raw, tmp_path / "bad.pkl"))
    (tmp_path / "note.txt").write_text("not data")
    with pytest.raises(DataError, match="not a pickle file"):
        check_file(tmp_path / "note.txt")
