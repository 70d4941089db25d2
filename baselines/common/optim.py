"""MMSA's Adam parameter groups for models with a fine-tuned BERT and two stream encoders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

BERT_NO_DECAY: tuple[str, ...] = ("bias", "LayerNorm.bias", "LayerNorm.weight")
"""BERT parameters kept out of weight decay: substring matches on the parameter name."""

ENCODERS: tuple[str, ...] = ("text_model.", "audio_model.", "video_model.")
"""Name prefixes of the three encoders; every other parameter is in the last group."""


def encoder_param_groups(model: nn.Module, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Five Adam groups, in order: BERT with decay, BERT without (lr ``learning_rate_bert``,
    decay ``weight_decay_bert`` / 0), ``audio_model`` and ``video_model`` (their own lr and
    decay), then everything else (``lr``, ``weight_decay_other``). Weight decay is Adam's
    coupled L2, as in the originals.

    ``named_parameters`` de-duplicates, so a tensor shared between several paths (EMT-DLFR's
    fusion block) is in the last group once.
    """
    bert = list(model.get_submodule("text_model").named_parameters())
    other = [w for n, w in model.named_parameters() if not n.startswith(ENCODERS)]
    return [
        {
            "params": [w for n, w in bert if not any(s in n for s in BERT_NO_DECAY)],
            "lr": float(params["learning_rate_bert"]),
            "weight_decay": float(params["weight_decay_bert"]),
        },
        {
            "params": [w for n, w in bert if any(s in n for s in BERT_NO_DECAY)],
            "lr": float(params["learning_rate_bert"]),
            "weight_decay": 0.0,
        },
        {
            "params": list(model.get_submodule("audio_model").parameters()),
            "lr": float(params["learning_rate_audio"]),
            "weight_decay": float(params["weight_decay_audio"]),
        },
        {
            "params": list(model.get_submodule("video_model").parameters()),
            "lr": float(params["learning_rate_video"]),
            "weight_decay": float(params["weight_decay_video"]),
        },
        {
            "params": other,
            "lr": float(params["lr"]),
            "weight_decay": float(params["weight_decay_other"]),
        },
    ]
