"""mer_bench: robust multimodal emotion recognition benchmark (missing modalities, shift)."""

from __future__ import annotations

__version__ = "0.1.0"
