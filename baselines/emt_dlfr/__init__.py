"""EMT-DLFR (Sun et al., IEEE TAC 2023) as a mer_bench baseline: ``model``, ``losses``, ``adapter``."""

from __future__ import annotations
