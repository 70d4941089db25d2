"""The main job: plan (models × selector × seeds), train each setting once, evaluate its cells.

Resumable: a cell is done when its rows and predictions are committed (``mer_bench.store``); a
setting whose checkpoint exists (written atomically after training) is not trained again.
Training is deterministic for a seed, so a run killed at any point and restarted ends with the
same results as an uninterrupted one.

Resuming is only for the same data: each setting's config hash includes the fingerprint of the
data files it reads, and a stored setting whose fingerprint differs from the files found now
(or is unknown, from a store written before fingerprints) is discarded and trained again
before anything runs (docs/architecture.md, results store).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mer_bench import __version__
from mer_bench.adapters import Adapter, AdapterContext, get_adapter
from mer_bench.batch import SplitTensors
from mer_bench.corruption import for_regime
from mer_bench.data.loaders import check_plan_data, data_files, load_bundle
from mer_bench.data.types import DatasetBundle, data_fingerprint
from mer_bench.errors import ConfigError, DataError, MerBenchError
from mer_bench.evaluate import PredictionCache, evaluate_cell
from mer_bench.protocol import (
    PROTOCOL_VERSION,
    Cell,
    Dataset,
    DataSetting,
    Executor,
    MaskRng,
    Precision,
    Regime,
    Selector,
    TauSelection,
    TrainingRegime,
    TrainingSetting,
    parse_enum,
    select_cells,
)
from mer_bench.store import CellRow, ResultsStore
from mer_bench.train import FitConfig, fit

DEFAULT_SEEDS: tuple[int, ...] = (1111, 1112, 1113)


@dataclass(frozen=True)
class RunOptions:
    """Everything ``run`` needs; serialised into the config hash of each setting."""

    models: tuple[str, ...]
    selector: str = "all"
    dataset: Dataset = Dataset.SYNTH
    data_root: str | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    device: str = "auto"
    out: str = "results"
    text_encoder: str | None = None
    tau_selection: TauSelection = TauSelection.VALID
    mask_rng: MaskRng = MaskRng.PER_SAMPLE
    precision: Precision = Precision.FP32
    jobs: int = 1
    executor: Executor = Executor.LOCAL
    ray_address: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-model parameter overrides (``--set``/``--params``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Adapter options (e.g. ``cider_prototypes``)."""
    quiet: bool = False
    params_source: dict[str, Any] | None = None
    """Provenance of tuned parameters (``--params`` file or ``--params-from-study``)."""
    presets: dict[str, str] = field(default_factory=dict)
    """Per-model preset chosen with ``--preset`` (default: by dataset)."""
    suite: str | None = None
    """The protocol suite this run belongs to (``--suite``), recorded in the store."""

    def __post_init__(self) -> None:
        # Strings are accepted (Python callers, old pickles) and checked here, once: an unknown
        # value is an error before anything runs, never a silent fallback.
        for name, enum in (
            ("tau_selection", TauSelection),
            ("mask_rng", MaskRng),
            ("precision", Precision),
            ("executor", Executor),
        ):
            value = parse_enum(enum, getattr(self, name), name.replace("_", " "))
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class SettingPlan:
    setting: TrainingSetting
    cells: tuple[Cell, ...]
    data_fingerprint: str | None = None
    """Fingerprint of the data files the setting reads; filled in by ``execute`` once every
    file is validated (None: computed when the setting is prepared)."""


def plan(opts: RunOptions) -> list[SettingPlan]:
    """Expand models × selector × seeds into training settings, each with its cells."""
    selector = Selector.parse(opts.selector)
    plans: list[SettingPlan] = []
    for model in opts.models:
        cls = get_adapter(model)
        try:
            cells = select_cells(selector.cells_only(), [opts.dataset], list(cls.tasks))
        except MerBenchError:
            continue  # the selector asks only for tasks this model does not support
        by_data: dict[DataSetting, list[Cell]] = {}
        for cell in cells:
            by_data.setdefault(cell.data, []).append(cell)
        for data, data_cells in by_data.items():
            for regime in selector.regimes():
                for seed in opts.seeds:
                    plans.extend(_regime_plans(model, data, seed, regime, data_cells))
    if not plans:
        raise ConfigError(
            f"nothing to run: selector {opts.selector!r} selects no task supported by "
            f"{', '.join(opts.models)}"
        )
    return plans


def _regime_plans(
    model: str, data: DataSetting, seed: int, regime: TrainingRegime, cells: Sequence[Cell]
) -> list[SettingPlan]:
    """One setting with every cell, or, for the matched regime, one setting per test rate
    holding that rate's cells (cells without a rate have no matched training and are left out).
    """
    if regime.kind is not Regime.MATCHED:
        return [SettingPlan(TrainingSetting(model, data, seed, regime), tuple(cells))]
    rates = sorted({c.rate for c in cells if c.rate is not None})
    return [
        SettingPlan(
            TrainingSetting(model, data, seed, regime.at_rate(rate)),
            tuple(c for c in cells if c.rate == rate),
        )
        for rate in rates
    ]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"invalid device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here")
    return device


def preset_name(cls: type[Adapter], dataset: Dataset, chosen: str | None = None) -> str:
    """``chosen`` if given (``--preset``), else ``synth`` for the synthetic dataset, else the
    dataset's own preset, else ``default``."""
    if chosen is not None:
        if chosen not in cls.presets:
            raise ConfigError(
                f"adapter {cls.name!r} has no preset {chosen!r}; presets: {', '.join(cls.presets)}"
            )
        return chosen
    for name in (dataset.value, "default"):
        if name in cls.presets:
            return name
    raise ConfigError(f"adapter {cls.name!r} has no preset for {dataset.value} and no default")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@lru_cache(maxsize=1)
def git_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import transformers

    return {
        "mer_bench": __version__,
        "protocol": PROTOCOL_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "transformers": transformers.__version__,
    }


def config_hash(
    setting: TrainingSetting, params: dict, opts: RunOptions, data_fingerprint: str
) -> str:
    """What a setting's training depends on: a stored setting is reused only if this matches."""
    payload = {
        "setting": setting.id,
        "data": data_fingerprint,
        "params": params,
        "text_encoder": opts.text_encoder,
        "options": {k: str(v) for k, v in sorted(opts.options.items())},
        "protocol": PROTOCOL_VERSION,
        "precision": opts.precision.value,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(out: Path, setting: TrainingSetting) -> Path:
    return out / "checkpoints" / (setting.id.replace("/", "__") + ".safetensors")


def _save_atomic(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


@dataclass
class SettingOutcome:
    setting_id: str
    trained: bool
    cells_done: int
    seconds: float


@dataclass
class Hooks:
    """Progress callbacks (no-ops by default)."""

    on_epoch: Callable[[str, int, int], None] = lambda sid, epoch, max_epochs: None
    on_cell: Callable[[str, str], None] = lambda sid, cell_id: None
    on_cells_planned: Callable[[str, int], None] = lambda sid, n: None
    on_setting_done: Callable[[SettingOutcome], None] = lambda outcome: None
    on_data_changed: Callable[[Discarded], None] = lambda discarded: None


@dataclass
class Trained:
    """Event: a setting finished training (its best state and what to record)."""

    state: dict[str, torch.Tensor]
    record: dict[str, Any]


@dataclass
class CellDone:
    """Event: one cell evaluated (all its selections)."""

    cell: Cell
    rows: list[CellRow]
    wall_seconds: float
    device: str


@dataclass(frozen=True)
class Resolved:
    """What a setting is trained with: adapter class, parameters and their hash."""

    cls: type[Adapter]
    params: dict[str, Any]
    config_hash: str


def resolve(setting: TrainingSetting, opts: RunOptions, data_fingerprint: str) -> Resolved:
    cls = get_adapter(setting.model)
    params = cls.resolve_params(
        preset_name(cls, setting.data.dataset, opts.presets.get(setting.model)),
        opts.overrides.get(setting.model),
    )
    return Resolved(cls, params, config_hash(setting, params, opts, data_fingerprint))


def setting_events(
    setting: TrainingSetting,
    todo: Sequence[Cell],
    opts: RunOptions,
    resume_state: dict[str, torch.Tensor] | None,
    hooks: Hooks | None = None,
    expected_fingerprint: str | None = None,
) -> Iterator[Trained | CellDone]:
    """Train (unless ``resume_state`` is given) and evaluate ``todo``, yielding events.

    Pure computation: persisting the events is the caller's job (the local executor writes them
    as they come; the Ray executor ships them to the driver). ``expected_fingerprint`` is the
    data fingerprint the caller planned with: data that changed since is an error, not a
    silent mix.
    """
    hooks = hooks or Hooks()
    bundle, r, adapter = _set_up(setting, opts, expected_fingerprint)
    if resume_state is not None:
        adapter.load_checkpoint_state(resume_state)
    else:
        yield _train(setting, bundle, r, adapter, opts, hooks)
    yield from _evaluate(setting, bundle, adapter, todo, opts, hooks)


def _set_up(
    setting: TrainingSetting, opts: RunOptions, expected_fingerprint: str | None
) -> tuple[DatasetBundle, Resolved, Adapter]:
    """The setting's data (checked against the planned fingerprint) and its adapter, seeded and
    set up on the training split."""
    bundle = load_bundle(setting.data, opts.data_root)
    if expected_fingerprint is not None and bundle.fingerprint != expected_fingerprint:
        raise DataError(
            f"the data files of {setting.id} changed while the run was going (fingerprint "
            f"{expected_fingerprint} -> {bundle.fingerprint}); run again to retrain on them"
        )
    r = resolve(setting, opts, bundle.fingerprint)
    seed_everything(setting.seed)
    ctx = AdapterContext.create(
        bundle.spec,
        r.params,
        data=setting.data,
        device=resolve_device(opts.device),
        seed=setting.seed,
        text_encoder=opts.text_encoder,
        out=opts.out,
        options=opts.options,
    )
    adapter = r.cls(ctx)
    adapter.setup(bundle.train)
    return bundle, r, adapter


def _train(
    setting: TrainingSetting,
    bundle: DatasetBundle,
    r: Resolved,
    adapter: Adapter,
    opts: RunOptions,
    hooks: Hooks,
) -> Trained:
    """Fit under the setting's training regime; the event carries the best state and the record."""
    device = adapter.ctx.device
    cfg = FitConfig.of(adapter, device, opts.precision)
    corruption = for_regime(setting.regime, adapter.training_corruption())
    result = fit(
        adapter,
        bundle,
        setting.seed,
        cfg,
        on_epoch=lambda rec: hooks.on_epoch(setting.id, rec.epoch, cfg.max_epochs),
        corruption=corruption,
    )
    return Trained(
        result.state,
        dict(
            best_epoch=result.best_epoch,
            best_valid=result.best_valid,
            epochs=len(result.history),
            train_seconds=result.seconds,
            params=r.params,
            history=[asdict(h) for h in result.history],
            config_hash=r.config_hash,
            device=str(device),
            params_source=opts.params_source,
            data_fingerprint=bundle.fingerprint,
            data_files=[f.as_dict() for f in bundle.files],
            sample_ids=bundle.test.sample_ids.tolist(),
        ),
    )


def _evaluate(
    setting: TrainingSetting,
    bundle: DatasetBundle,
    adapter: Adapter,
    todo: Sequence[Cell],
    opts: RunOptions,
    hooks: Hooks,
) -> Iterator[CellDone]:
    """One event per cell, every knob selection of it as a row (masks shared through the
    prediction cache where cells coincide)."""
    device = adapter.ctx.device
    valid = SplitTensors(bundle.valid, setting.data.task)
    test = SplitTensors(bundle.test, setting.data.task)
    sample_index = np.arange(test.size, dtype=np.int64)
    cache = PredictionCache()
    for cell in todo:
        t0 = time.perf_counter()
        ev = evaluate_cell(
            adapter,
            valid,
            test,
            cell,
            setting.seed,
            batch_size=adapter.eval_batch_size,
            device=device,
            mask_rng=opts.mask_rng,
            tau_selection=opts.tau_selection,
            precision=opts.precision,
            cache=cache,
        )
        rows = [
            CellRow(
                selection=name,
                is_primary=name == ev.primary,
                metrics=sel.metrics,
                knobs=sel.knobs,
                per_metric_knobs=sel.per_metric_knobs,
                labels=ev.labels,
                scores=sel.scores,
                sample_index=sample_index,
            )
            for name, sel in ev.selections.items()
        ]
        yield CellDone(cell, rows, time.perf_counter() - t0, str(device))
        hooks.on_cell(setting.id, cell.id)


@dataclass(frozen=True)
class Prepared:
    """What is left of a setting: cells to do, the checkpoint to resume from, its hashes."""

    todo: list[Cell]
    state: dict[str, torch.Tensor] | None
    config_hash: str
    data_fingerprint: str


@dataclass(frozen=True)
class Discarded:
    """A stored setting dropped because its data changed (``old`` None: unknown, the store
    predates data fingerprints)."""

    setting_id: str
    old: str | None
    new: str
    cells: int


def fingerprint_of(sp: SettingPlan, opts: RunOptions) -> str:
    """The plan's data fingerprint, or that of the files found now."""
    if sp.data_fingerprint is not None:
        return sp.data_fingerprint
    return data_fingerprint(data_files(sp.setting.data, opts.data_root))


def discard_if_stale(sp: SettingPlan, opts: RunOptions, store: ResultsStore) -> Discarded | None:
    """Drop the stored record, cells and checkpoint of a setting computed on other data.

    Its results describe files that are no longer there, so keeping them (resuming) would mix
    two datasets in one table; they are deleted and the setting is trained again."""
    setting = sp.setting
    record = store.setting_record(setting)
    new = fingerprint_of(sp, opts)
    if record is None or record["data_fingerprint"] == new:
        return None
    cells = store.discard_setting(setting)
    checkpoint_path(Path(opts.out), setting).unlink(missing_ok=True)
    return Discarded(setting.id, record["data_fingerprint"], new, cells)


def prepare(sp: SettingPlan, opts: RunOptions, store: ResultsStore) -> Prepared:
    """Cells still to do, the finished checkpoint to resume from (if any), the config hash."""
    from safetensors.torch import load_file

    setting = sp.setting
    fingerprint = fingerprint_of(sp, opts)
    sp = replace(sp, data_fingerprint=fingerprint)
    discard_if_stale(sp, opts, store)  # execute() did this already; a direct caller may not
    done = store.done_cells(setting)
    todo = [c for c in sp.cells if c.id not in done]
    chash = resolve(setting, opts, fingerprint).config_hash
    if not todo:
        return Prepared(todo, None, chash, fingerprint)
    record = store.setting_record(setting)
    if record is not None and record["config_hash"] != chash:
        raise ConfigError(
            f"{opts.out} already holds {setting.id} trained with other parameters; "
            "use another --out to compare configurations"
        )
    ckpt = checkpoint_path(Path(opts.out), setting)
    state = load_file(str(ckpt)) if record is not None and ckpt.is_file() else None
    return Prepared(todo, state, chash, fingerprint)


def persist(
    event: Trained | CellDone,
    setting: TrainingSetting,
    opts: RunOptions,
    store: ResultsStore,
    prepared: Prepared,
) -> bool:
    """Write one event to the checkpoint folder / store. Returns True for a new cell."""
    out = Path(opts.out)
    chash = prepared.config_hash
    if isinstance(event, Trained):
        ckpt = checkpoint_path(out, setting)
        # Checkpoint first, then the row that points at it: a kill in between only retrains.
        _save_atomic(event.state, ckpt, {"setting": setting.id, "config_hash": chash})
        rec = dict(event.record)
        sample_ids = rec.pop("sample_ids")
        store.record_sample_ids(setting.data.id, "test", sample_ids)
        store.record_setting(setting, checkpoint=str(ckpt.relative_to(out)), **rec)
        return False
    return store.record_cell(
        setting,
        event.cell,
        event.rows,
        mask_rng=opts.mask_rng.value,
        wall_seconds=event.wall_seconds,
        device=event.device,
        versions=versions(),
        git_hash=git_hash(),
        config_hash=chash,
        data_fingerprint=prepared.data_fingerprint,
    )


def run_setting(
    sp: SettingPlan,
    opts: RunOptions,
    store: ResultsStore,
    hooks: Hooks | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> SettingOutcome:
    """Train (or reuse) one setting and evaluate every cell not yet in the store.

    ``alive`` is asked before each write: a worker whose run was killed stops instead of writing
    into a results folder that may already belong to another run."""
    hooks = hooks or Hooks()
    start = time.perf_counter()
    prepared = prepare(sp, opts, store)
    todo = prepared.todo
    hooks.on_cells_planned(sp.setting.id, len(todo))
    if not todo:
        outcome = SettingOutcome(sp.setting.id, False, 0, 0.0)
        hooks.on_setting_done(outcome)
        return outcome
    trained = False
    n_done = 0
    events = setting_events(
        sp.setting, todo, opts, prepared.state, hooks, prepared.data_fingerprint
    )
    for event in events:
        if not alive():
            break
        trained |= isinstance(event, Trained)
        n_done += persist(event, sp.setting, opts, store, prepared)
    outcome = SettingOutcome(sp.setting.id, trained, n_done, time.perf_counter() - start)
    hooks.on_setting_done(outcome)
    return outcome


PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent: int) -> None:
    """Initializer of ``--jobs`` workers: a worker whose run is gone (its driver killed with
    SIGKILL, say) exits within ``PARENT_POLL_SECONDS`` instead of waiting for work forever; the
    pool's queues stay open in its siblings, so it would never see end-of-file."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="mer_bench-parent-watch", daemon=True).start()


def _worker(sp: SettingPlan, opts: RunOptions, parent: int) -> SettingOutcome:
    """Entry point of a ``--jobs`` worker process: its own store connection, no progress bars;
    it stops writing once the run that started it (``parent``) is gone."""
    torch.set_num_threads(1)
    with ResultsStore(opts.out) as store:
        return run_setting(sp, opts, store, alive=lambda: os.getppid() == parent)


def execute(
    plans: Sequence[SettingPlan], opts: RunOptions, hooks: Hooks | None = None
) -> list[SettingOutcome]:
    """Run every planned setting with the chosen executor.

    Every data file of the whole plan is located and validated first: a missing or invalid file
    stops the run before the first setting trains (and before the store is created). Stored
    settings computed on other data than the files found now are then discarded (reported
    through ``hooks.on_data_changed``), so every executor retrains them."""
    hooks = hooks or Hooks()
    files = check_plan_data((p.setting.data for p in plans), opts.data_root)
    fingerprints = {data: data_fingerprint(f) for data, f in files.items()}
    plans = [replace(p, data_fingerprint=fingerprints[p.setting.data]) for p in plans]
    executors: dict[Executor, Callable[..., list[SettingOutcome]]] = {
        Executor.LOCAL: _execute_local,
        Executor.RAY: _execute_ray,
    }
    # The driver creates the store (schema, WAL mode) before any worker opens it.
    with ResultsStore(opts.out) as store:
        if opts.suite is not None:
            store.record_suite(opts.suite)
        for sp in plans:
            dropped = discard_if_stale(sp, opts, store)
            if dropped is not None:
                hooks.on_data_changed(dropped)
    return executors[opts.executor](plans, opts, hooks)


def _execute_local(
    plans: Sequence[SettingPlan], opts: RunOptions, hooks: Hooks
) -> list[SettingOutcome]:
    if opts.jobs <= 1 or len(plans) <= 1:
        with ResultsStore(opts.out) as store:
            return [run_setting(sp, opts, store, hooks) for sp in plans]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    outcomes = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=opts.jobs,
        mp_context=ctx,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(_worker, sp, opts, os.getpid()): sp for sp in plans}
        for fut in as_completed(futures):
            outcome = fut.result()
            outcomes.append(outcome)
            hooks.on_setting_done(outcome)
    return outcomes


def _ray_task(
    setting: TrainingSetting,
    todo: list[Cell],
    opts: RunOptions,
    state: dict[str, torch.Tensor] | None,
    fingerprint: str | None = None,
) -> list[Trained | CellDone]:
    """What one Ray task runs: train (or resume) and evaluate one setting; events go back."""
    torch.set_num_threads(1)
    return list(setting_events(setting, todo, opts, state, expected_fingerprint=fingerprint))


def _execute_ray(
    plans: Sequence[SettingPlan], opts: RunOptions, hooks: Hooks
) -> list[SettingOutcome]:
    """One Ray task per training setting; the driver owns the store and the checkpoints.

    Workers need the data at the same path (``--data-root``) and mer_bench installed.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs the ray extra: pip install 'mer_bench[ray]'"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=opts.ray_address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot connect to the Ray cluster: {exc}") from None
    remote = ray.remote(num_cpus=1)(_ray_task)
    outcomes = []
    try:
        with ResultsStore(opts.out) as store:
            pending = {}
            for sp in plans:
                prepared = prepare(sp, opts, store)
                hooks.on_cells_planned(sp.setting.id, len(prepared.todo))
                if not prepared.todo:
                    outcomes.append(SettingOutcome(sp.setting.id, False, 0, 0.0))
                    hooks.on_setting_done(outcomes[-1])
                    continue
                ref = remote.remote(
                    sp.setting, prepared.todo, opts, prepared.state, prepared.data_fingerprint
                )
                pending[ref] = (sp, prepared, time.perf_counter())
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                sp, prepared, t0 = pending.pop(ready[0])
                trained, n_done = False, 0
                for event in ray.get(ready[0]):
                    trained |= isinstance(event, Trained)
                    n_done += persist(event, sp.setting, opts, store, prepared)
                    if isinstance(event, CellDone):
                        hooks.on_cell(sp.setting.id, event.cell.id)
                outcomes.append(
                    SettingOutcome(sp.setting.id, trained, n_done, time.perf_counter() - t0)
                )
                hooks.on_setting_done(outcomes[-1])
    finally:
        if started_here:
            ray.shutdown()
    return outcomes
