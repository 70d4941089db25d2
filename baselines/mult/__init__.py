"""MulT (Tsai et al., 2019) as a mer_bench baseline: ``model`` (the network) and ``adapter``."""

from __future__ import annotations
