"""The adapter contract: how a model plugs into the harness.

The harness owns data, masks, seeds, devices, the epoch loop with early stopping on validation,
checkpoints, evaluation and storage. An adapter owns

- ``build``: the ``nn.Module`` for a data spec and task,
- ``setup``: optional statistics from the training split (prototypes, dictionaries, memories),
- ``train_step``: its loss and optimiser step(s) for one batch, including any training-time
  missing-data augmentation (through ``mer_bench.missing``),
- ``predict``: raw outputs for one batch of one view (eval mode, no grad),
- ``scores``: the per-class scores (or regression score) from raw outputs under post-hoc knobs
  (e.g. CIDer's counterfactual weight τ); ``knob_grid`` lists the knobs the harness may select
  on validation.

``batch_coupled`` (class attribute, default False) declares that predictions legitimately depend
on batch composition; ``check-adapter`` verifies the opposite for every other adapter.

Registration: ``@register_adapter("name")`` for classes defined anywhere, a lazy map of
built-ins (``"module:Class"`` strings, so importing mer_bench stays cheap), and the entry-point
group ``mer_bench.adapters`` for external packages.
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from mer_bench.batch import Batch
from mer_bench.corruption import TrainCorruption
from mer_bench.data.types import DataSpec, Split
from mer_bench.errors import AdapterError, ConfigError
from mer_bench.params import check_finite, shorten
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task

ENTRY_POINT_GROUP = "mer_bench.adapters"


EVAL_BATCH_SIZE = "eval_batch_size"
"""The one parameter every adapter accepts without declaring it (see ``Adapter.eval_batch_size``)."""


@dataclass(frozen=True)
class SearchDim:
    """One dimension of an adapter's hyperparameter search space (for ``tune``)."""

    kind: str
    """``int`` (low..high inclusive, step), ``float`` (low..high, step or log), ``categorical``."""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class AdapterContext:
    """Everything an adapter is built from. The harness fills it (through ``create``); adapters
    only read it."""

    data: DataSetting
    """The data setting trained on: dataset, distribution, alignment and task, typed."""
    spec: DataSpec
    """Shapes of the loaded training files (lengths, feature widths)."""
    params: Mapping[str, Any]
    """Resolved hyperparameters: the adapter's preset overlaid with user overrides."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 1111
    text_encoder: str | None = None
    """Local Hugging Face folder of a BERT-family encoder; None → a tiny random BERT."""
    cache_dir: Path | None = None
    """Per-setting cache folder (e.g. CIDer's bias-word dictionary)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Free-form adapter options from the CLI (e.g. ``cider_prototypes``); never the setting."""

    def __post_init__(self) -> None:
        aligned = self.data.alignment is Alignment.ALIGNED
        if self.spec.task is not self.data.task or self.spec.aligned != aligned:
            raise AdapterError(
                f"data spec (task {self.spec.task.value}, aligned={self.spec.aligned}) does not "
                f"match the data setting {self.data.id}"
            )

    @property
    def task(self) -> Task:
        return self.data.task

    @classmethod
    def create(
        cls,
        spec: DataSpec,
        params: Mapping[str, Any],
        *,
        data: DataSetting | None = None,
        device: torch.device | str | None = None,
        seed: int = 1111,
        text_encoder: str | None = None,
        out: Path | str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AdapterContext:
        """The one way the harness builds a context (runner, tune, conformance, describe).

        ``data`` defaults to an IID synth setting of the spec's alignment and task (handy for
        in-memory tests); ``out`` is the results folder whose ``cache/<setting>`` the adapter may
        use.
        """
        if data is None:
            data = DataSetting(
                Dataset.SYNTH,
                Distribution.IID,
                Alignment.ALIGNED if spec.aligned else Alignment.UNALIGNED,
                spec.task,
            )
        return cls(
            data=data,
            spec=spec,
            params=params,
            device=torch.device("cpu") if device is None else torch.device(device),
            seed=seed,
            text_encoder=text_encoder,
            cache_dir=None if out is None else Path(out) / "cache" / data.id.replace("/", "__"),
            options=dict(options or {}),
        )


class Adapter(ABC):
    """Base class of every model adapter. Subclasses are small (~100–150 lines)."""

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[Task, ...]] = (Task.BINARY, Task.SEVEN)
    """Tasks the model supports; ``--protocol all`` covers exactly these."""
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Named hyperparameter sets. ``default`` is used for real data, ``synth`` for synth."""
    search_space: ClassVar[Mapping[str, SearchDim]] = {}
    knob_grid: ClassVar[Mapping[str, Sequence[float]]] = {}
    """Post-hoc knobs (name → candidate values) selected on validation per cell."""
    default_knobs: ClassVar[Mapping[str, float]] = {}
    """Knob values that mean "no post-hoc adjustment" (always recorded as well)."""
    batch_coupled: ClassVar[bool] = False
    """True only for an adapter whose *predictions* depend on the other samples of the batch
    (reproducing an original's quirk, e.g. a position table indexed by batch row). The
    conformance suite then skips its batch-composition check and says why; everyone else must
    score each sample the same alone as inside any batch."""

    def __init__(self, ctx: AdapterContext) -> None:
        if ctx.task not in self.tasks:
            raise AdapterError(
                f"adapter {self.name!r} does not support task {ctx.task.value!r}; "
                f"it supports {', '.join(t.value for t in self.tasks)}"
            )
        self.ctx = ctx
        _ = self.eval_batch_size  # a bad eval_batch_size fails here, before any training
        self.model: nn.Module = self.build().to(ctx.device)
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def eval_batch_size(self) -> int:
        """Batch size of prediction passes (see :meth:`eval_batch_size_of`)."""
        return self.eval_batch_size_of(self.ctx.params)

    @classmethod
    def eval_batch_size_of(cls, params: Mapping[str, Any]) -> int:
        """The parameter ``eval_batch_size`` when set (presets may set it; ``--set
        MODEL.eval_batch_size=N`` works for every adapter), else the training ``batch_size``.
        An adapter that is not ``batch_coupled`` scores each sample the same in any batch (the
        conformance suite checks it), so a larger evaluation batch only saves time; a
        batch-coupled one must predict at its training batch size. ``resolve_params`` checks
        it, so a bad value stops a run before anything trains."""
        train = int(params["batch_size"])
        size = int(params.get(EVAL_BATCH_SIZE) or train)
        if size < 1:
            raise ConfigError(f"{EVAL_BATCH_SIZE} must be >= 1; got {size}")
        if cls.batch_coupled and size != train:
            raise ConfigError(
                f"adapter {cls.name!r} is batch-coupled: it predicts at its training batch size "
                f"({train}), not at {EVAL_BATCH_SIZE}={size}"
            )
        return size

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def build(self) -> nn.Module:
        """Construct the model for ``self.ctx.spec`` and ``self.ctx.task``."""

    @abstractmethod
    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """One training step on a batch already on the device.

        ``batch`` is the training view: complete, or corrupted by the harness under the training
        corruption in force (``batch.keep`` set, ``batch.complete_view`` the uncorrupted batch).
        Compute the loss, backpropagate and step the optimiser(s); ``generator`` (on the device)
        serves any other randomness of the recipe. Return the loss as a detached scalar tensor
        (no host sync).
        """

    @abstractmethod
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Raw outputs (each with leading dim B) for a batch of one view; called under
        ``torch.inference_mode`` in eval mode (so tensors created here cannot be kept for later
        training steps). The harness concatenates them over batches and passes them to
        ``scores``."""

    # ----------------------------------------------------------------- optional hooks
    def setup(self, train: Split) -> None:
        """Called once before training with the training split (statistics, memories)."""

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Default: Adam over all trainable parameters with ``params['lr']``."""
        return torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=float(self.ctx.params.get("lr", 1e-3)),
        )

    def training_corruption(self) -> TrainCorruption | None:
        """The model's native training-time missing-data recipe (None: complete data).

        The harness applies it: ``train_step`` receives the corrupted batch, with the complete
        view in ``batch.complete_view``. Models never corrupt their own inputs.
        """
        return None

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (1-based)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch (flush accumulated gradients, etc.)."""

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        """Per-class scores (N, C) whose argmax is the prediction, or (N,) regression scores.

        Default: ``outputs['scores']``; adapters with knobs override this.
        """
        return outputs["scores"]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the module's state dict that a checkpoint must keep."""
        return {}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what ``extra_state`` returned."""

    # ----------------------------------------------------------------- provided
    @classmethod
    def resolve_params(
        cls, preset: str, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The preset's parameters overlaid with ``overrides`` (unknown keys are an error)."""
        if preset not in cls.presets:
            raise ConfigError(
                f"adapter {cls.name!r} has no preset {preset!r}; presets: "
                f"{', '.join(cls.presets) or '(none)'}"
            )
        params = dict(cls.presets[preset])
        for key, value in (overrides or {}).items():
            if key == EVAL_BATCH_SIZE and key not in params:
                params[key] = _coerce(key, value, 0)
                continue
            if key not in params:
                hint = difflib.get_close_matches(key, list(params), n=1)
                raise ConfigError(
                    f"unknown parameter {key!r} for {cls.name!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" known: {', '.join(sorted(params))}"
                )
            params[key] = _coerce(key, value, params[key])
        cls.eval_batch_size_of(params)
        return params

    def train_mode(self) -> None:
        self.model.train()
        if self.optimizer is None:
            self.optimizer = self.configure_optimizer()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Module state dict plus ``extra.``-prefixed extra state (flat tensor dict)."""
        # Copies, never views: the live parameters keep changing after a best epoch is saved.
        state = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in self.model.state_dict().items()
        }
        for k, v in self.extra_state().items():
            state[f"__extra__.{k}"] = v.detach().to("cpu", copy=True).contiguous()
        return state

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> None:
        model_state = {k: v for k, v in state.items() if not k.startswith("__extra__.")}
        extra = {k[len("__extra__.") :]: v for k, v in state.items() if k.startswith("__extra__.")}
        self.model.load_state_dict(model_state, strict=True)
        self.load_extra_state(extra)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Cast an override to the preset value's type (``"false"`` → False, ``"3"`` → 3)."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"parameter {key!r} expects true/false, got {value!r}")
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {key!r} expects a list, got {value!r}")
        return type(default)(value)
    try:
        converted = type(default)(value)
    except (TypeError, ValueError, OverflowError):
        kind = type(default).__name__
        shown = shorten(value) if isinstance(value, str) else type(value).__name__
        raise ConfigError(f"parameter {key!r} expects {kind}, got {shown!r}") from None
    return check_finite(key, converted)


# --------------------------------------------------------------------------- registry

_BUILTINS: dict[str, str] = {
    "cider": "cider.adapter:CIDerAdapter",
    "cider_fixed": "cider.adapter:CIDerFixedAdapter",
    "emt_dlfr": "baselines.emt_dlfr.adapter:EMTDLFRAdapter",
    "lnln": "baselines.lnln.adapter:LNLNAdapter",
    "mult": "baselines.mult.adapter:MulTAdapter",
    "self_mm": "baselines.self_mm.adapter:SelfMMAdapter",
    "tfr_net": "baselines.tfr_net.adapter:TFRNetAdapter",
    "tfr_net_fixed": "baselines.tfr_net.adapter:TFRNetFixedAdapter",
}
_REGISTERED: dict[str, type[Adapter]] = {}
_SOURCES: dict[str, str] = {}

A = TypeVar("A", bound=type[Adapter])


def register_adapter(name: str) -> Callable[[A], A]:
    """Class decorator: make an adapter available under ``name``."""

    def deco(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError("register_adapter decorates Adapter subclasses")
        cls.name = name
        _REGISTERED[name] = cls
        _SOURCES.setdefault(name, f"{cls.__module__}:{cls.__qualname__}")
        return cls

    return deco


def _entry_points() -> dict[str, str]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not break the CLI
        return {}
    return {ep.name: ep.value for ep in eps}


def _import_target(target: str) -> type[Adapter]:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise AdapterError(f"adapter target {target!r} must look like 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterError(f"cannot import adapter module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise AdapterError(f"module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, Adapter)):
        raise AdapterError(f"{target!r} is not a mer_bench.adapters.Adapter subclass")
    return obj


def available_adapters() -> dict[str, str]:
    """Every known adapter name → its source (``module:Class`` and where it comes from)."""
    names: dict[str, str] = {}
    for name, target in _BUILTINS.items():
        names[name] = f"{target} (built-in)"
    for name, target in _entry_points().items():
        names.setdefault(name, f"{target} (entry point)")
    for name, source in _SOURCES.items():
        names.setdefault(name, f"{source} (registered)")
    return dict(sorted(names.items()))


def get_adapter(name: str) -> type[Adapter]:
    """Resolve an adapter by registered name, built-in name, entry point or ``module:Class``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if ":" in name:
        cls = _import_target(name)
        if not cls.name:
            cls.name = name
        return cls
    target = _BUILTINS.get(name) or _entry_points().get(name)
    if target is None:
        known = list(available_adapters())
        hint = difflib.get_close_matches(name, known, n=1)
        raise AdapterError(
            f"unknown model {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" (available: {', '.join(known)})"
        )
    cls = _import_target(target)
    # Importing the module normally registers the class; make sure the name sticks either way.
    _REGISTERED.setdefault(name, cls)
    if not cls.name:
        cls.name = name
    return cls
