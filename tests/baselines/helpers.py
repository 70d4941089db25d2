"""State-dict listings and reference-table readers shared by the baseline parity tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from tests.conftest import REFERENCE_DIR

BERT_PREFIX = "text_model."
"""Where every baseline keeps its BERT; the parity tables leave it out."""


def listing(model: nn.Module) -> list[tuple[str, str, str]]:
    """(name, shape as ``AxB`` or ``1`` for a scalar, param/buffer) of every state-dict entry
    outside BERT, in state-dict order: the reference tables' rows.

    A parameter reachable under several paths (a shared block) is a parameter at each of them.
    """
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return [
        (name, "x".join(str(s) for s in t.shape) or "1", "param" if name in params else "buffer")
        for name, t in model.state_dict().items()
        if not name.startswith(BERT_PREFIX)
    ]


def read_tsv(name: str) -> list[tuple[str, ...]]:
    """The rows of a reference state-dict table (header ``name shape kind``)."""
    lines = (REFERENCE_DIR / name).read_text().splitlines()
    assert lines[0].split("\t") == ["name", "shape", "kind"]
    return [tuple(line.split("\t")) for line in lines[1:] if line]


def non_bert_params(model: nn.Module) -> int:
    """Parameters outside BERT (each shared tensor counted once)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(BERT_PREFIX))


def five_group_settings(params: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The (lr, weight_decay) expected of MMSA's five Adam groups, in order: BERT with decay,
    BERT without, audio encoder, video encoder, everything else."""
    return [
        (params["learning_rate_bert"], params["weight_decay_bert"]),
        (params["learning_rate_bert"], 0.0),
        (params["learning_rate_audio"], params["weight_decay_audio"]),
        (params["learning_rate_video"], params["weight_decay_video"]),
        (params["lr"], params["weight_decay_other"]),
    ]
