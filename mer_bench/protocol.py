"""The benchmark's axes, its value objects and the protocol grid.

A *training setting* is one training run: (model, dataset, distribution, alignment, task, seed,
training regime).
A *cell* is one evaluation of a trained setting: (data setting, missing mode, rate | condition).
Cell ids are stable strings (``mosi/iid/aligned/binary/RMFM@0.3``,
``mosi/ood/unaligned/seven/SMM[TA]``); they key the store, the exports and the leaderboards.

Selectors narrow the grid: comma-separated ``axis=value`` terms with ``|`` for alternatives,
e.g. ``distribution=ood,alignment=unaligned,mode=RMFM|RMM,rate=0.0|0.5``; ``all`` is everything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, TypeVar

from mer_bench.errors import ProtocolError

PROTOCOL_VERSION = "1.0"


class Dataset(str, Enum):
    """Which corpus. ``synth`` is the embedded, generated default."""

    MOSI = "mosi"
    MOSEI = "mosei"
    SYNTH = "synth"


class Distribution(str, Enum):
    """IID splits, CIDer's OOD re-partition, or train on one corpus and test on another."""

    IID = "iid"
    OOD = "ood"
    CROSS = "cross"


class Alignment(str, Enum):
    ALIGNED = "aligned"
    UNALIGNED = "unaligned"


@dataclass(frozen=True)
class TaskInfo:
    """What a task means: its classes, the metric that selects checkpoints, the metrics reported."""

    num_classes: int | None
    """Number of output classes; ``None`` for regression."""
    selection_metric: str
    """Validation metric used for early stopping and post-hoc knob selection (its direction:
    ``mer_bench.metrics.higher_is_better``)."""
    metrics: tuple[str, ...]
    """Metrics stored for every cell (export column names)."""
    curve_metrics: tuple[str, ...]
    """Metrics whose AUILC is reported."""


class Task(str, Enum):
    """binary = 3-class neg/neu/pos (CIDer's naming); seven = 7-class; regression = score."""

    BINARY = "binary"
    SEVEN = "seven"
    REGRESSION = "regression"

    @property
    def info(self) -> TaskInfo:
        return TASK_INFO[self]


TASK_INFO: dict[Task, TaskInfo] = {
    Task.BINARY: TaskInfo(
        num_classes=3,
        selection_metric="non0_acc2",
        metrics=("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc3", "f1_3"),
        curve_metrics=("non0_acc2", "non0_f1"),
    ),
    Task.SEVEN: TaskInfo(
        num_classes=7,
        selection_metric="acc7",
        metrics=("acc7", "f1_7"),
        curve_metrics=("acc7",),
    ),
    Task.REGRESSION: TaskInfo(
        num_classes=None,
        selection_metric="mae",
        metrics=(
            "has0_acc2",
            "has0_f1",
            "non0_acc2",
            "non0_f1",
            "acc5",
            "acc7",
            "f1_7",
            "mae",
            "corr",
        ),
        curve_metrics=("non0_acc2", "mae"),
    ),
}


class Mode(str, Enum):
    """How data goes missing at evaluation (docs/architecture.md)."""

    RMFM = "RMFM"
    RMFM_SAME = "RMFM_same"
    RMM = "RMM"
    TMFM = "TMFM"
    STMFM = "STMFM"
    SMM = "SMM"

    @property
    def uses_rate(self) -> bool:
        return self is not Mode.SMM

    @property
    def aligned_only(self) -> bool:
        return self in (Mode.TMFM, Mode.STMFM)


RATES: tuple[float, ...] = tuple(round(k / 10, 1) for k in range(11))
"""The 11 missing rates 0.0 … 1.0 of every rate-based mode (AUILC integrates over them)."""

CONDITIONS: tuple[str, ...] = ("T", "A", "V", "TA", "TV", "AV", "TAV")
"""SMM conditions: the modalities that are *kept*; the others are dropped whole."""


def canonical_condition(text: str) -> str:
    """Normalise an SMM condition (``at`` → ``TA``); raise ProtocolError if invalid."""
    letters = text.strip().upper()
    if not letters or set(letters) - set("TAV") or len(set(letters)) != len(letters):
        raise ProtocolError(f"invalid SMM condition {text!r}; valid: {', '.join(CONDITIONS)}")
    return "".join(m for m in "TAV" if m in letters)


def canonical_rate(value: float | str) -> float:
    """Parse a rate and check it is on the 0.0 … 1.0 grid (step 0.1)."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ProtocolError(
            f"invalid rate {value!r}; valid: {', '.join(f'{r:.1f}' for r in RATES)}"
        ) from None
    for r in RATES:
        if abs(rate - r) < 1e-9:
            return r
    raise ProtocolError(f"invalid rate {value!r}; valid: {', '.join(f'{r:.1f}' for r in RATES)}")


@dataclass(frozen=True, order=True)
class DataSetting:
    """The data side of a training setting: which files, which labels."""

    dataset: Dataset
    distribution: Distribution
    alignment: Alignment
    task: Task

    def __post_init__(self) -> None:
        if self.distribution is Distribution.CROSS and self.alignment is not Alignment.ALIGNED:
            raise ProtocolError("cross-dataset settings exist only for aligned data")

    AXES: ClassVar[tuple[str, ...]] = ("dataset", "distribution", "alignment", "task")
    """The axes in id order (also the store's and exports' column names)."""

    def values(self) -> tuple[str, str, str, str]:
        """The axes' values in id order: ``("mosi", "iid", "aligned", "binary")``."""
        return (self.dataset.value, self.distribution.value, self.alignment.value, self.task.value)

    def as_dict(self) -> dict[str, str]:
        """Axis name → value, e.g. for a JSON record."""
        return dict(zip(self.AXES, self.values()))

    @property
    def id(self) -> str:
        return "/".join(self.values())

    @classmethod
    def from_dict(cls, axes: Mapping[str, str]) -> DataSetting:
        """The inverse of :meth:`as_dict`."""
        missing = [a for a in cls.AXES if a not in axes]
        if missing:
            raise ProtocolError(f"data setting {dict(axes)!r} lacks {', '.join(missing)}")
        return cls.parse("/".join(str(axes[a]) for a in cls.AXES))

    @classmethod
    def parse(cls, text: str) -> DataSetting:
        parts = text.strip("/").split("/")
        if len(parts) != 4:
            raise ProtocolError(
                f"invalid data setting {text!r}; expected dataset/distribution/alignment/task"
            )
        return cls(
            parse_enum(Dataset, parts[0], "dataset"),
            parse_enum(Distribution, parts[1], "distribution"),
            parse_enum(Alignment, parts[2], "alignment"),
            parse_enum(Task, parts[3], "task"),
        )


class Regime(str, Enum):
    """How a model is trained with respect to missing data (the training-regime axis)."""

    CLEAN = "clean"
    """Complete training data."""
    NATIVE = "native"
    """The model's own recipe (``Adapter.training_corruption``; complete data if it has none)."""
    MIXTURE = "mixture"
    """Harness augmentation for any model: per sample and modality complete with probability
    ``p_complete``, else every valid position dropped at a rate drawn from U(0, ``r_max``)."""
    MATCHED = "matched"
    """One training per test rate: trained at that rate (on all modalities), tested at it."""


@dataclass(frozen=True, order=True)
class TrainingRegime:
    """One value of the training-regime axis, with its parameters."""

    kind: Regime = Regime.NATIVE
    p_complete: float = 0.5
    """``mixture`` only."""
    r_max: float = 1.0
    """``mixture`` only."""
    rate: float | None = None
    """``matched`` only: the rate this setting is trained (and tested) at; None in selectors."""

    def __post_init__(self) -> None:
        kind = Regime(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind is not Regime.MIXTURE and (self.p_complete, self.r_max) != (0.5, 1.0):
            raise ProtocolError(f"regime {kind.value} takes no p_complete/r_max")
        for name in ("p_complete", "r_max"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ProtocolError(f"regime mixture: {name} must lie in [0, 1], got {value!r}")
            object.__setattr__(self, name, value)
        if self.rate is not None:
            if kind is not Regime.MATCHED:
                raise ProtocolError(f"regime {kind.value} takes no rate")
            object.__setattr__(self, "rate", canonical_rate(self.rate))

    @property
    def is_default(self) -> bool:
        return self.kind is Regime.NATIVE

    @property
    def label(self) -> str:
        """The regime without a matched setting's rate: ``native``, ``clean``, ``matched``,
        ``mixture(p_complete=0.5,r_max=1)``. Settings sharing a label form one curve."""
        if self.kind is Regime.MIXTURE:
            return f"mixture(p_complete={self.p_complete:g},r_max={self.r_max:g})"
        return self.kind.value

    @property
    def id(self) -> str:
        """``label``, plus ``@rate`` for a matched setting."""
        return self.label if self.rate is None else f"{self.label}@{self.rate:.1f}"

    def at_rate(self, rate: float) -> TrainingRegime:
        return TrainingRegime(self.kind, self.p_complete, self.r_max, rate)

    @classmethod
    def parse(cls, text: str) -> TrainingRegime:
        """``clean``, ``native``, ``matched[@0.3]``, ``mixture`` or
        ``mixture(p_complete=0.5,r_max=1.0)`` (either parameter may be left out)."""
        raw = text.strip()
        head, at, rate = raw.partition("@")
        name, paren, args = head.partition("(")
        kind = parse_enum(Regime, name, "regime")
        params: dict[str, float] = {}
        if paren:
            if not args.endswith(")") or kind is not Regime.MIXTURE:
                raise ProtocolError(
                    f"invalid regime {raw!r}; only mixture takes parameters, e.g. "
                    "mixture(p_complete=0.5,r_max=1.0)"
                )
            for term in filter(None, (t.strip() for t in args[:-1].split(","))):
                key, eq, value = term.partition("=")
                if not eq or key.strip() not in ("p_complete", "r_max"):
                    raise ProtocolError(
                        f"invalid mixture parameter {term!r}; expected p_complete=P or r_max=R"
                    )
                try:
                    params[key.strip()] = float(value)
                except ValueError:
                    raise ProtocolError(f"invalid number in regime {raw!r}") from None
        if at and kind is not Regime.MATCHED:
            raise ProtocolError(f"invalid regime {raw!r}; only matched takes @rate")
        return cls(kind, rate=canonical_rate(rate) if at else None, **params)


NATIVE = TrainingRegime()


@dataclass(frozen=True, order=True)
class TrainingSetting:
    """One training run: a model on a data setting with one seed under one training regime.
    Trained exactly once."""

    model: str
    data: DataSetting
    seed: int
    regime: TrainingRegime = NATIVE

    @property
    def id(self) -> str:
        base = f"{self.model}/{self.data.id}/seed{self.seed}"
        # The default regime keeps the ids (and so the stores) of runs without the axis.
        return base if self.regime.is_default else f"{base}/{self.regime.id}"


@dataclass(frozen=True, order=True)
class Cell:
    """One evaluation: a data setting under one missing mode at one rate (or SMM condition)."""

    data: DataSetting
    mode: Mode
    rate: float | None = None
    """Missing rate for rate-based modes; ``None`` for SMM."""
    condition: str | None = None
    """Kept modalities for SMM (``T``, ``TA``, …); ``None`` otherwise."""

    def __post_init__(self) -> None:
        if self.mode.uses_rate:
            if self.rate is None or self.condition is not None:
                raise ProtocolError(f"{self.mode.value} needs a rate and no condition")
            object.__setattr__(self, "rate", canonical_rate(self.rate))
        else:
            if self.condition is None or self.rate is not None:
                raise ProtocolError("SMM needs a condition (T, A, V, TA, TV, AV, TAV) and no rate")
            object.__setattr__(self, "condition", canonical_condition(self.condition))
        if self.mode.aligned_only and self.data.alignment is not Alignment.ALIGNED:
            raise ProtocolError(f"{self.mode.value} is defined for aligned data only")

    @property
    def label(self) -> str:
        """The part of the id after the data setting: ``RMFM@0.3`` or ``SMM[TA]``."""
        if self.mode.uses_rate:
            return f"{self.mode.value}@{self.rate:.1f}"
        return f"SMM[{self.condition}]"

    @property
    def id(self) -> str:
        return f"{self.data.id}/{self.label}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        head, _, label = text.strip().rpartition("/")
        data = DataSetting.parse(head)
        if label.startswith("SMM[") and label.endswith("]"):
            return cls(data, Mode.SMM, None, label[4:-1])
        mode_text, sep, rate_text = label.partition("@")
        if not sep:
            raise ProtocolError(f"invalid cell id {text!r}; expected …/MODE@RATE or …/SMM[KEPT]")
        return cls(data, parse_enum(Mode, mode_text, "mode"), canonical_rate(rate_text))


# --------------------------------------------------------------------------------- run options
# How a run evaluates, beside what it evaluates. String-valued, so that stored and exported
# values ("valid", "per-sample", ...) are the members' values; format them with ``.value``.


class TauSelection(str, Enum):
    """Which post-hoc knob selection is a run's headline (every selection is stored anyway)."""

    VALID = "valid"
    """Chosen on the validation split under the same cell (honest; the default)."""
    TEST_ORACLE = "test-oracle"
    """Each metric at its best knob on test labels (the paper's protocol; labelled as such)."""


class MaskRng(str, Enum):
    """How missing-data masks are drawn."""

    PER_SAMPLE = "per-sample"
    """A pure function of (seed, mode, sample index, rate): batch-, order- and device-free."""
    REFERENCE = "reference"
    """The reference implementation's NumPy draws over the whole split, bit for bit."""


class Precision(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    """bf16 autocast on CUDA (fp32 elsewhere)."""


class Executor(str, Enum):
    """Where independent training settings run."""

    LOCAL = "local"
    """This machine: in-process, or ``--jobs`` worker processes."""
    RAY = "ray"
    """A Ray cluster (the ``ray`` extra)."""


E = TypeVar("E", bound=Enum)


def parse_enum(enum: type[E], text: str, axis: str) -> E:
    """The member of ``enum`` named by ``text`` (its value, any case); an unknown value is a
    ``ProtocolError`` listing the valid ones."""
    for member in enum:
        if member.value.lower() == text.strip().lower():
            return member
    valid = ", ".join(m.value for m in enum)
    raise ProtocolError(f"invalid {axis} {text!r}; valid: {valid}")


# --------------------------------------------------------------------------------- grid


def data_settings(
    datasets: Iterable[Dataset] = tuple(Dataset),
    tasks: Iterable[Task] = tuple(Task),
) -> list[DataSetting]:
    """Every valid data setting (cross-dataset only aligned)."""
    out = []
    for ds, dist, align, task in itertools.product(datasets, Distribution, Alignment, tasks):
        if dist is Distribution.CROSS and align is not Alignment.ALIGNED:
            continue
        out.append(DataSetting(ds, dist, align, task))
    return out


def cells_for(data: DataSetting) -> list[Cell]:
    """Every valid cell of one data setting, in a stable order."""
    out: list[Cell] = []
    for mode in Mode:
        if mode.aligned_only and data.alignment is not Alignment.ALIGNED:
            continue
        if mode.uses_rate:
            out.extend(Cell(data, mode, rate) for rate in RATES)
        else:
            out.extend(Cell(data, mode, None, cond) for cond in CONDITIONS)
    return out


AXES: tuple[str, ...] = (
    "dataset",
    "distribution",
    "alignment",
    "task",
    "mode",
    "rate",
    "condition",
    "regime",
)
TRAINING_AXES: frozenset[str] = frozenset({"regime"})
"""Axes that choose how a setting is trained, not which cells are evaluated."""


def _split_terms(text: str) -> list[str]:
    """Split on commas outside parentheses (``regime=mixture(p_complete=0.5,r_max=1)``)."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


@dataclass(frozen=True)
class Selector:
    """A parsed selector: for each axis the admitted values (absent axis = no restriction)."""

    terms: tuple[tuple[str, frozenset[str]], ...] = field(default=())

    @classmethod
    def parse(cls, text: str | None) -> Selector:
        if text is None or text.strip() in ("", "all"):
            return cls()
        terms: dict[str, set[str]] = {}
        for raw in _split_terms(text):
            axis, sep, values = raw.partition("=")
            axis = axis.strip().lower()
            if not sep or not values.strip():
                raise ProtocolError(
                    f"invalid selector term {raw!r}; expected axis=value[|value…] "
                    f"with axis one of {', '.join(AXES)}, or 'all'"
                )
            if axis not in AXES:
                raise ProtocolError(f"invalid selector axis {axis!r}; valid: {', '.join(AXES)}")
            terms.setdefault(axis, set()).update(
                _canonical_value(axis, v) for v in values.split("|")
            )
        return cls(tuple(sorted((a, frozenset(v)) for a, v in terms.items())))

    def get(self, axis: str) -> frozenset[str] | None:
        for a, values in self.terms:
            if a == axis:
                return values
        return None

    def regimes(self) -> list[TrainingRegime]:
        """The training regimes asked for (default: the native one), in a stable order."""
        values = self.get("regime")
        if values is None:
            return [NATIVE]
        return sorted(TrainingRegime.parse(v) for v in values)

    def cells_only(self) -> Selector:
        """This selector without its training axes."""
        return Selector(tuple((a, v) for a, v in self.terms if a not in TRAINING_AXES))

    def admits_data(self, data: DataSetting) -> bool:
        for axis, value in (
            ("dataset", data.dataset.value),
            ("distribution", data.distribution.value),
            ("alignment", data.alignment.value),
            ("task", data.task.value),
        ):
            allowed = self.get(axis)
            if allowed is not None and value not in allowed:
                return False
        return True

    def admits(self, cell: Cell) -> bool:
        if not self.admits_data(cell.data):
            return False
        modes = self.get("mode")
        if modes is not None and cell.mode.value not in modes:
            return False
        rates = self.get("rate")
        if rates is not None and (cell.rate is None or f"{cell.rate:.1f}" not in rates):
            return False
        conds = self.get("condition")
        return conds is None or (cell.condition is not None and cell.condition in conds)

    def __str__(self) -> str:
        if not self.terms:
            return "all"
        return ",".join(f"{a}={'|'.join(sorted(v))}" for a, v in self.terms)


def _canonical_value(axis: str, value: str) -> str:
    value = value.strip()
    enums: dict[str, type[Enum]] = {
        "dataset": Dataset,
        "distribution": Distribution,
        "alignment": Alignment,
        "task": Task,
        "mode": Mode,
    }
    if axis in enums:
        return parse_enum(enums[axis], value, axis).value
    if axis == "rate":
        return f"{canonical_rate(value):.1f}"
    if axis == "regime":
        regime = TrainingRegime.parse(value)
        if regime.rate is not None:
            raise ProtocolError(
                "select the matched regime without a rate (regime=matched): the rates come from "
                "the selected cells"
            )
        return regime.id
    return canonical_condition(value)


def select_cells(
    selector: Selector | str | None,
    datasets: Sequence[Dataset] | None = None,
    tasks: Sequence[Task] | None = None,
) -> list[Cell]:
    """Expand a selector into cells. Raises ProtocolError when the selection is empty."""
    sel = selector if isinstance(selector, Selector) else Selector.parse(selector)
    cells = [
        cell
        for data in data_settings(datasets or tuple(Dataset), tasks or tuple(Task))
        if sel.admits_data(data)
        for cell in cells_for(data)
        if sel.admits(cell)
    ]
    if not cells:
        raise ProtocolError(
            f"selector {str(sel)!r} selects no cell; remember TMFM/STMFM and cross are aligned "
            "only and SMM takes conditions, not rates. Valid axes: "
            + "; ".join(
                f"{axis}={'|'.join(values)}"
                for axis, values in (
                    ("dataset", [d.value for d in datasets or Dataset]),
                    ("distribution", [d.value for d in Distribution]),
                    ("alignment", [a.value for a in Alignment]),
                    ("task", [t.value for t in tasks or Task]),
                    ("mode", [m.value for m in Mode]),
                    ("rate", [f"{r:.1f}" for r in RATES]),
                    ("condition", list(CONDITIONS)),
                )
            )
        )
    return cells
