"""Protocol suites: named bundles of cell selector, training regime, seeds and headline aggregate.

Robust-MSA papers evaluate under different protocols (which missing modes and rates, how the model
is trained, how a curve becomes one number). A suite names one such protocol so that it can be
rerun for any model in one harness, and tables say which protocol and aggregate they show.
``docs/protocols.md`` defines every mode, rate, regime and suite with its source.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mer_bench.errors import ConfigError
from mer_bench.metrics import Aggregate
from mer_bench.protocol import RATES, Selector

_RATES_0_09 = "|".join(f"{r:.1f}" for r in RATES if r <= 0.9)


@dataclass(frozen=True)
class Suite:
    """One named protocol."""

    name: str
    summary: str
    """One line: what runs and why."""
    selector: str
    """Cells and training regimes (a selector; ``regime=`` terms choose the training)."""
    aggregate: Aggregate
    """The headline number of a degradation curve."""
    seeds: tuple[int, ...]
    source: str
    """Where the protocol comes from."""

    def __post_init__(self) -> None:
        Selector.parse(self.selector)  # a typo in a built-in suite fails at import


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "cider",
            "every missing mode at rates 0.0-1.0 on IID, OOD and cross-dataset splits; each model "
            "trained with its own recipe; knobs chosen on validation",
            "all",
            Aggregate.AUILC,
            (1111, 1112, 1113),
            "CIDer (arXiv 2506.10452), with validation-selected τ instead of the test oracle",
        ),
        Suite(
            "lnln",
            "random feature missing on all modalities at rates 0.0-0.9 on the IID unaligned "
            "split (LNLN's setting); each model trained with its own recipe; headline = plain "
            "mean over the ten rates",
            f"distribution=iid,alignment=unaligned,mode=RMFM,rate={_RATES_0_09}",
            Aggregate.MEAN_0_09,
            (1111, 1112, 1113),
            "LNLN (NeurIPS 2024), with validation-selected checkpoints instead of test-selected",
        ),
        Suite(
            "emt-dlfr",
            "one training per missing rate, trained and tested at that rate (random feature "
            "missing on all modalities) on the IID unaligned split (EMT-DLFR's setting), rates "
            "0.0-1.0, headline AUILC",
            "distribution=iid,alignment=unaligned,mode=RMFM,regime=matched",
            Aggregate.AUILC,
            (1111, 1112, 1113),
            "EMT-DLFR (IEEE TAC 2023)",
        ),
        Suite(
            "fair",
            "every model trained twice, on complete data and under the model-agnostic mixture "
            "augmentation; CIDer's missing modes at rates 0.0-1.0, binary task",
            "task=binary,regime=clean|mixture(p_complete=0.5,r_max=1.0)",
            Aggregate.AUILC,
            (1111, 1112, 1113),
            "mer_bench: separates the training recipe from the architecture",
        ),
    )
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        hint = difflib.get_close_matches(name, list(SUITES), n=1)
        raise ConfigError(
            f"unknown suite {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (suites: {', '.join(SUITES)})"
        ) from None
