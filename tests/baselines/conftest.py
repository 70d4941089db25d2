"""Fixtures every baseline test module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The baselines' test models are tiny: intra-op threads only add contention on the shared
    # 2-core runners.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bert768(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local HF folder with a 768-wide, 1-layer BERT (small vocab): the originals' widths for
    everything outside BERT, built in a fraction of bert-base's time."""
    import transformers

    folder = tmp_path_factory.mktemp("bert768")
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(folder)
    return str(folder)
