"""Self-MM (Yu et al., AAAI 2021) as a mer_bench baseline: model, ULGM and adapter."""

from __future__ import annotations

from baselines.self_mm.adapter import SelfMMAdapter
from baselines.self_mm.model import SelfMM, SelfMMConfig
from baselines.self_mm.ulgm import ULGM

__all__ = ["ULGM", "SelfMM", "SelfMMAdapter", "SelfMMConfig"]
