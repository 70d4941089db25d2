"""CIDer fast vs literal seven-view attention, interleaved in one process (run as a subprocess).

Both forms start from the same weights; each repeat times one evaluation cell (missing and
counterfactual passes over the test samples, as the harness runs it) and one training epoch per
form, alternating fast and literal so that load on a shared machine hits both alike. Prints one
JSON object: per form the median wall and CPU seconds, samples/s, minor page faults and the peak
resident set (fast: its first, clean phases; literal: the largest of its phases), the
literal/fast ratios, and the largest log-probability difference between the forms.

    python -m tests.benchmarks.cider_speed_worker --eval-samples 686 --eval-batch 128 \
        --train-samples 128 --train-batch 32 --layers 3 --heads 8 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Sequence

import numpy as np

from benchmarks.speed import SHAPES, Measurement, build_adapter, measure, random_split
from cider.attention import MultimodalMultiheadAttention
from mer_bench.batch import SplitTensors
from mer_bench.protocol import Task
from tests.cider.literal_views import literal_forward

FAST_FORWARD = MultimodalMultiheadAttention.forward
FORMS = {"fast": FAST_FORWARD, "literal": literal_forward}


def _summary(runs: list[Measurement]) -> dict[str, float]:
    seconds = statistics.median(m.seconds for m in runs)
    return {
        "seconds": seconds,
        "cpu_seconds": statistics.median(m.cpu_seconds for m in runs),
        "samples_per_s": runs[0].samples / seconds,
        "peak_rss_mb": max(m.peak_rss_mb for m in runs),
        "minor_faults": statistics.median(m.minor_faults for m in runs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-samples", type=int, default=686)
    parser.add_argument("--eval-batch", type=int, default=128)
    parser.add_argument("--train-samples", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    shapes = SHAPES["mosi"]
    train = random_split(shapes, args.train_samples, seed=0)
    test = SplitTensors(random_split(shapes, args.eval_samples, seed=1, name="test"), Task.BINARY)
    train_data = SplitTensors(train, Task.BINARY)
    adapter = build_adapter(
        "cider",
        train,
        overrides={"multimodal_layers": args.layers, "num_heads": args.heads},
    )
    start_state = copy.deepcopy(adapter.model.state_dict())
    warm_eval = SplitTensors(random_split(shapes, 8, seed=2, name="test"), Task.BINARY)
    warm_train = SplitTensors(random_split(shapes, 8, seed=3), Task.BINARY)

    def phase(form: str, what: str) -> tuple[Measurement, dict[str, np.ndarray] | None]:
        MultimodalMultiheadAttention.forward = FORMS[form]  # type: ignore[method-assign]
        try:
            # Every phase starts from the same weights and a fresh optimiser.
            adapter.model.load_state_dict(start_state)
            adapter.optimizer = None
            if what == "train":
                return measure(adapter, "train", train_data, args.train_batch)
            return measure(adapter, "eval", test, args.eval_batch)
        finally:
            MultimodalMultiheadAttention.forward = FAST_FORWARD  # type: ignore[method-assign]

    for form in FORMS:  # warm-up: first-call costs (kernels, allocator arenas), not timed
        MultimodalMultiheadAttention.forward = FORMS[form]  # type: ignore[method-assign]
        measure(adapter, "eval", warm_eval, 8)
        measure(adapter, "train", warm_train, 8)
    MultimodalMultiheadAttention.forward = FAST_FORWARD  # type: ignore[method-assign]

    runs: dict[tuple[str, str], list[Measurement]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    # The fast phases run first in the first repeat, before the literal form has grown the heap:
    # a phase's peak resident set includes whatever the allocator kept from earlier phases.
    for _ in range(args.repeats):
        for form in FORMS:
            for what in ("eval", "train"):
                result, out = phase(form, what)
                runs.setdefault((form, what), []).append(result)
                if out is not None:
                    outputs.setdefault(form, out)
    report: dict[str, object] = {}
    for (form, what), found in runs.items():
        summary = _summary(found)
        if form == "fast":
            summary["peak_rss_mb"] = found[0].peak_rss_mb
        report[f"{form}_{what}"] = summary
    for what in ("eval", "train"):
        fast, literal = report[f"fast_{what}"], report[f"literal_{what}"]
        assert isinstance(fast, dict) and isinstance(literal, dict)
        report[f"{what}_ratio"] = literal["seconds"] / fast["seconds"]
        report[f"{what}_cpu_ratio"] = literal["cpu_seconds"] / fast["cpu_seconds"]
    report["max_logp_diff"] = max(
        float(np.abs(outputs["fast"][key] - outputs["literal"][key]).max())
        for key in ("logp", "cf_logp")
    )
    report["config"] = vars(args)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
