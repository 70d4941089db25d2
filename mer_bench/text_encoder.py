"""BERT-family text encoders, loaded from local folders only (never from a hub).

``--text-encoder PATH`` names a local Hugging Face folder (config.json + weights). Without it
models get a *tiny* randomly initialised BERT built from a ``BertConfig`` with the full
bert-base-uncased vocabulary size, so real token ids stay valid; this is what the synthetic
benchmark and the tests use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mer_bench.errors import ConfigError

TINY_BERT = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}


BERT_BASE_SHAPE = "random:bert-base-uncased"
"""A randomly initialised encoder with bert-base-uncased's shapes (12 × 768): for describing
parameter counts and state dicts of real-data configurations without weights."""


THIRD_PARTY_QUIET_ENV: dict[str, str] = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
"""Environment that keeps transformers / huggingface_hub to errors only, without progress bars;
inherited by worker processes, which import transformers afresh."""


def quiet_third_party() -> None:
    """Silence transformers' warnings and progress bars (here and in worker processes started
    from now on); the harness's own progress display is unaffected. ``run``/``tune`` call this
    unless ``--verbose``."""
    os.environ.update(THIRD_PARTY_QUIET_ENV)
    from transformers.utils import logging as hf_logging  # lazy, like every transformers use here

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_text_encoder(path: str | Path | None, **tiny_overrides: int | float):
    """A ``transformers.BertModel`` (or other AutoModel) from a local folder, or a tiny BERT.

    Runs with ``local_files_only=True``: nothing is downloaded.
    """
    import transformers

    if path is None:
        config = transformers.BertConfig(**{**TINY_BERT, **tiny_overrides})
        return transformers.BertModel(config, add_pooling_layer=True)
    if str(path) == BERT_BASE_SHAPE:
        # BertConfig's defaults are bert-base-uncased's architecture.
        return transformers.BertModel(transformers.BertConfig(), add_pooling_layer=True)
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"text encoder folder {folder} has no config.json; pass a local Hugging Face "
            "BERT folder (nothing is downloaded)"
        )
    try:
        return transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load text encoder from {folder}: {exc}") from None


class TextModel(nn.Module):
    """Holds a BERT-family encoder as ``model`` (so its state-dict keys are ``<attr>.model.*``,
    as in the reference implementations) and returns its last hidden states (B, n, H)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.model = encoder

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=ids.long(), attention_mask=mask.float(), token_type_ids=segments.long()
        )
        return out.last_hidden_state
