"""Prototypes and priors: the shipped files (docs/cider.md) and computed ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cider.prototypes import class_prototypes, load_shipped, sample_vectors, shipped_paths
from mer_bench.adapters import get_adapter
from mer_bench.errors import DataError
from mer_bench.protocol import Dataset, DataSetting, Task
from tests.conftest import REFERENCE_DIR

from .helpers import make_ctx, make_split

ROOT = REFERENCE_DIR / "cider_npy"
DIMS = {"mosi": 793, "mosei": 877}
needs_files = pytest.mark.skipif(not ROOT.is_dir(), reason="reference .npy files not present")


@needs_files
@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
@pytest.mark.parametrize("distribution", ["iid", "ood"])
@pytest.mark.parametrize("task,classes", [("binary", 3), ("seven", 7)])
def test_shipped_files_load(dataset: str, distribution: str, task: str, classes: int) -> None:
    data = DataSetting.parse(f"{dataset}/{distribution}/unaligned/{task}")
    protos = load_shipped(ROOT, data)
    assert protos.means.shape == (classes, DIMS[dataset])
    assert protos.means.dtype == np.float64
    assert abs(protos.prior.sum() - 1.0) < 1e-6
    means, prior = protos.training_tensors(torch.device("cpu"))
    assert means.dtype == prior.dtype == torch.float32
    assert torch.equal(means, torch.as_tensor(protos.means).float())
    ev, uniform = protos.evaluation_tensors(torch.device("cpu"))
    assert torch.allclose(uniform, torch.full((classes,), 1 / classes))
    assert torch.allclose(ev, means.mean(0, keepdim=True).expand(classes, -1), atol=1e-6)


@needs_files
@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
@pytest.mark.parametrize("alignment", ["aligned", "unaligned"])
def test_iid_identity_binary_equals_seven(dataset: str, alignment: str) -> None:
    """Σ_k π_k μ_k is the train mean for both tasks."""
    mix = []
    for task, c in (("binary", 3), ("seven", 7)):
        p = load_shipped(ROOT, DataSetting.parse(f"{dataset}/iid/{alignment}/{task}"))
        assert p.means.shape[0] == c
        mix.append(p.prior @ p.means)
    scale = np.abs(mix[0]).max()
    assert np.abs(mix[0] - mix[1]).max() <= 1e-6 * scale


@needs_files
def test_cross_dataset_files_and_float64_prior_cast(tmp_path) -> None:
    cross = DataSetting.parse("mosi/cross/aligned/binary")
    paths, prior = shipped_paths(ROOT, cross)
    assert len(paths) == 3
    assert prior.name == "[cross_dataset]mosi_train_binary.npy"
    assert paths[2].name == "[cross_dataset]mosi_train_binary_aligned_2.npy"
    assert np.load(prior).dtype == np.float64
    protos = load_shipped(ROOT, cross)
    assert protos.means.shape == (3, 964)
    # The prior goes through float32, as the reference loader casts it.
    assert np.array_equal(protos.prior, np.load(prior).astype(np.float32).astype(np.float64))
    with pytest.raises(DataError):
        load_shipped(ROOT, DataSetting.parse("mosi/iid/unaligned/binary"), proto_dim=964)
    with pytest.raises(DataError, match="not found"):
        load_shipped(tmp_path, cross)  # no such files


def test_computed_prototypes_are_class_means_with_padding_in_av_means() -> None:
    split = make_split(12, n=8, audio_len=10, vision_len=9)
    pooled = np.arange(12 * 4, dtype=np.float64).reshape(12, 4)
    vectors = sample_vectors(pooled, split)
    assert vectors.shape == (12, 4 + 5 + 7)
    # Audio mean over all stored steps, padding zeros included.
    assert np.allclose(vectors[3, 4:9], split.audio[3].sum(0) / 10)
    labels = split.class_labels
    protos = class_prototypes(vectors, labels, 3)
    for k in range(3):
        assert np.allclose(protos.means[k], vectors[labels == k].mean(0))
    assert np.allclose(protos.prior, np.bincount(labels, minlength=3) / 12)


def test_adapter_setup_computes_from_pretrained_encoder_and_checkpoint_roundtrip(tmp_path) -> None:
    split = make_split(12, n=8, audio_len=10, vision_len=9)
    ctx = make_ctx(split, task=Task.SEVEN)
    ctx = type(ctx)(**{**ctx.__dict__, "cache_dir": tmp_path})
    ad = get_adapter("cider")(ctx)
    ad.setup(split)
    assert (tmp_path / "cider_bias_synth_iid_unaligned_seven_20.npz").is_file()
    bert = ad.model.text_model.model.eval()
    tb = torch.as_tensor(split.text_bert)
    with torch.no_grad():
        hidden = bert(
            input_ids=tb[:, 0], attention_mask=tb[:, 1].float(), token_type_ids=tb[:, 2]
        ).last_hidden_state
    mask = tb[:, 1].unsqueeze(-1).double()
    pooled = ((hidden.double() * mask).sum(1) / mask.sum(1)).numpy()
    labels = split.labels(Task.SEVEN)
    expected = class_prototypes(sample_vectors(pooled, split), labels, 7)
    assert np.allclose(ad.prototypes.means, expected.means, atol=1e-5)
    assert np.allclose(ad.prototypes.prior, expected.prior)
    state = ad.extra_state()
    assert set(state) == {"prototypes", "prior", "bias_ids"}
    other = get_adapter("cider")(make_ctx(split, task=Task.SEVEN))
    other.load_checkpoint_state(ad.checkpoint_state())
    assert np.array_equal(other.prototypes.means, ad.prototypes.means)
    assert torch.equal(other.bias_ids, ad.bias_ids)


@needs_files
def test_adapter_uses_shipped_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import cider.adapter as mod
    from mer_bench.text_encoder import build_text_encoder

    # A BERT with the real hidden width (768) but a small vocabulary, to match the files.
    monkeypatch.setattr(
        mod,
        "build_text_encoder",
        lambda _path: build_text_encoder(
            None,
            hidden_size=768,
            num_attention_heads=2,
            num_hidden_layers=1,
            intermediate_size=32,
            vocab_size=2100,
        ),
    )
    split = make_split(9, n=8, audio_len=10, vision_len=9, audio_dim=5, vision_dim=20)
    opts = {"cider_prototypes": str(ROOT)}
    ad = get_adapter("cider")(make_ctx(split, options=opts, dataset=Dataset.MOSI))
    ad.setup(split)
    shipped = load_shipped(ROOT, DataSetting.parse("mosi/iid/unaligned/binary"))
    assert torch.equal(ad._train_protos[0], torch.as_tensor(shipped.means).float())
    assert torch.equal(ad._train_protos[1], torch.as_tensor(shipped.prior).float())
    # Evaluation: mean of the train prototypes for every stratum, uniform prior (fix of Q-4).
    assert torch.allclose(ad._eval_protos[0][2], torch.as_tensor(shipped.means.mean(0)).float())
    # The tiny default encoder (width 32) cannot use 768-wide text prototypes.
    monkeypatch.undo()
    tiny = get_adapter("cider")(make_ctx(split, options=opts, dataset=Dataset.MOSI))
    with pytest.raises(DataError):
        tiny.setup(split)


@pytest.mark.parametrize("kind", ["npz", "pickle", "object", "2d", "short", "fifo", "text"])
def test_hostile_prototype_files_are_refused(tmp_path, kind: str) -> None:
    import os
    import pickle

    from cider.prototypes import _load_vector

    path = tmp_path / "proto_0.npy"
    if kind == "npz":
        with open(path, "wb") as fh:
            np.savez(fh, a=np.zeros(3))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(np.zeros(3)))
    elif kind == "object":
        np.save(path, np.array(["a", 1], dtype=object), allow_pickle=True)
    elif kind == "2d":
        np.save(path, np.zeros((2, 2)))
    elif kind == "short":
        np.save(path, np.zeros(1000))
        path.write_bytes(path.read_bytes()[:-80])
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("hello")
    with pytest.raises(DataError, match=str(path)):
        _load_vector(path)


def test_valid_prototype_vector_loads(tmp_path) -> None:
    from cider.prototypes import _load_vector

    path = tmp_path / "p.npy"
    np.save(path, np.arange(5, dtype=np.float32))
    assert np.array_equal(_load_vector(path), np.arange(5))
