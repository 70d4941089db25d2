"""Hyperparameter tuning with Optuna: validation-only, shareable through Optuna storage.

One study tunes one adapter on one data setting with one training seed. Each trial draws the
adapter's declared ``search_space`` (TPE), trains with the harness's ``fit`` (early stopping on
validation) and returns the task's selection metric on the **validation** split: under the
complete view (``objective="complete"``), or averaged over an RMFM sweep of the validation split
(``objective="robust"``). The test split is loaded sealed (``load_bundle(test=False)``): any
read raises, so tuning cannot select on test the way the reference did (docs/cider.md, Q-2).

Pruning: the median pruner compares each epoch's complete-view validation metric with the other
trials' values at the same epoch. Storage: any SQLAlchemy URL; a SQLite file under ``--out`` by
default. Workers started with the same command join the same study; ``trials`` is the study's
target of finished (complete or pruned) trials, so a rerun resumes and extra workers split the
remaining work. Trials of a killed worker are detected through Optuna's heartbeat, marked failed
and re-queued with the same parameters.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from mer_bench import __version__
from mer_bench.adapters import Adapter, AdapterContext, SearchDim, get_adapter
from mer_bench.batch import KeepMasks, SplitTensors
from mer_bench.data.types import DatasetBundle
from mer_bench.errors import ConfigError, MerBenchError
from mer_bench.evaluate import best_knob_score, cell_keep, predict_split
from mer_bench.metrics import higher_is_better
from mer_bench.protocol import (
    RATES,
    Cell,
    Dataset,
    DataSetting,
    MaskRng,
    Mode,
    Precision,
    Selector,
    Task,
    canonical_rate,
    data_settings,
    parse_enum,
)
from mer_bench.runner import preset_name, resolve_device, seed_everything
from mer_bench.train import EpochRecord, FitConfig, fit

OBJECTIVES: tuple[str, ...] = ("complete", "robust")
PRUNERS: tuple[str, ...] = ("median", "none")
DEFAULT_STORAGE_FILE = "tune.sqlite"
STUDY_CONFIG_ATTR = "mer_bench_config"
DATA_AXES = frozenset({"dataset", "distribution", "alignment", "task"})
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TuneOptions:
    """Everything ``tune`` needs (one study: model × data setting × seed × objective)."""

    model: str
    setting: str
    """Selector naming exactly one data setting, e.g. ``distribution=iid,alignment=aligned``."""
    trials: int
    """Target number of finished (complete + pruned) trials in the study."""
    dataset: Dataset = Dataset.SYNTH
    data_root: str | None = None
    seed: int = 1111
    """Training seed of every trial (and of the sampler's per-trial draws)."""
    storage: str | None = None
    """SQLAlchemy URL; ``None`` → ``sqlite:///<out>/tune.sqlite``."""
    study: str | None = None
    """Study name; ``None`` → derived from model, data setting, seed and objective."""
    timeout: float | None = None
    """Seconds this worker keeps starting new trials."""
    objective: str = "complete"
    rates: tuple[float, ...] = RATES
    """Validation RMFM rates averaged by the robust objective."""
    mask_rng: MaskRng = MaskRng.PER_SAMPLE
    device: str = "auto"
    precision: Precision = Precision.FP32
    out: str = "results"
    text_encoder: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Fixed parameters (``--set``): applied to every trial and removed from the search."""
    pruner: str = "median"
    prune_startup: int = 3
    """Trials that finish before the median pruner starts pruning."""
    prune_warmup: int = 1
    """First epochs of every trial that are never pruned (0: any epoch may be pruned)."""
    startup_trials: int = 10
    """Random trials before TPE starts modelling (Optuna's default)."""
    heartbeat: int = 60
    """Seconds between heartbeats of a running trial; a trial silent for 2× is failed."""
    max_retry: int = 2
    """How many times a trial of a killed worker is re-queued with the same parameters."""

    def __post_init__(self) -> None:
        # Strings are accepted and checked once here; unknown values are errors.
        object.__setattr__(self, "mask_rng", parse_enum(MaskRng, self.mask_rng, "mask rng"))
        object.__setattr__(self, "precision", parse_enum(Precision, self.precision, "precision"))


@dataclass(frozen=True)
class StudyPlan:
    """A resolved study: what is tuned, with what, how it is scored and where it is stored."""

    cls: type[Adapter]
    data: DataSetting
    preset: str
    space: Mapping[str, SearchDim]
    """The dimensions tuned (the adapter's search space minus fixed parameters)."""
    fixed: Mapping[str, Any]
    metric: str
    direction: str
    study_name: str
    storage_url: str
    config: Mapping[str, Any]
    """What every worker of the study must agree on (checked when a worker joins)."""


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str
    """Storage URL with any password hidden."""
    ran: int
    """Trials this call ran."""
    counts: Mapping[str, int]
    """Trials of the study by state (``COMPLETE``, ``PRUNED``, ``FAIL``, ...)."""
    best: dict[str, Any] | None
    """``best_record`` of the study, or None if no trial completed."""


# --------------------------------------------------------------------------- resolution


def select_data_setting(selector: str, dataset: Dataset, tasks: Sequence[Task]) -> DataSetting:
    """The one data setting of ``dataset`` a selector admits (among the model's tasks)."""
    sel = Selector.parse(selector)
    extra = [axis for axis, _ in sel.terms if axis not in DATA_AXES]
    if extra:
        raise ConfigError(
            f"--setting takes only {', '.join(sorted(DATA_AXES))} terms, not "
            f"{', '.join(extra)}: a study tunes one data setting (use --objective robust for "
            "a missing-rate sweep)"
        )
    datasets = sel.get("dataset")
    if datasets is not None and dataset.value not in datasets:
        raise ConfigError(
            f"--setting names dataset {'|'.join(sorted(datasets))} but --dataset is {dataset.value}"
        )
    admitted = [d for d in data_settings([dataset], list(tasks)) if sel.admits_data(d)]
    if len(admitted) != 1:
        listed = ", ".join(d.id for d in admitted) or "none"
        raise ConfigError(
            f"--setting {selector!r} must select exactly one data setting of {dataset.value} "
            f"(tasks {', '.join(t.value for t in tasks)}); it selects {len(admitted)}: {listed}"
        )
    return admitted[0]


def default_storage(out: str | Path) -> str:
    return f"sqlite:///{(Path(out) / DEFAULT_STORAGE_FILE).resolve()}"


def redact(url: str) -> str:
    """A storage URL safe to print and record (password hidden)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def default_study_name(model: str, data: DataSetting, seed: int, objective: str) -> str:
    return f"{model}-{data.id.replace('/', '-')}-seed{seed}-{objective}"


def plan_study(opts: TuneOptions) -> StudyPlan:
    """Validate the options and resolve the study (no storage is touched)."""
    if opts.trials < 1:
        raise ConfigError("--trials must be >= 1")
    if opts.objective not in OBJECTIVES:
        raise ConfigError(f"invalid --objective {opts.objective!r}; valid: {', '.join(OBJECTIVES)}")
    if opts.pruner not in PRUNERS:
        raise ConfigError(f"invalid --pruner {opts.pruner!r}; valid: {', '.join(PRUNERS)}")
    if opts.timeout is not None and opts.timeout <= 0:
        raise ConfigError("--timeout must be > 0 seconds")
    if opts.prune_startup < 0 or opts.prune_warmup < 0 or opts.startup_trials < 0:
        raise ConfigError("--prune-startup, --prune-warmup and --startup-trials must be >= 0")
    if opts.max_retry < 0:
        raise ConfigError("--max-retry must be >= 0")
    if opts.heartbeat < 1:
        raise ConfigError("--heartbeat must be >= 1 second")
    rates = tuple(canonical_rate(r) for r in opts.rates)
    if opts.objective == "robust" and not rates:
        raise ConfigError("--objective robust needs at least one rate")
    cls = get_adapter(opts.model)
    data = select_data_setting(opts.setting, opts.dataset, cls.tasks)
    preset = preset_name(cls, opts.dataset)
    fixed = dict(opts.overrides)
    cls.resolve_params(preset, fixed)  # unknown or ill-typed fixed parameters fail here
    defaults = cls.presets[preset]
    missing = [k for k in cls.search_space if k not in defaults]
    if missing:
        raise ConfigError(
            f"adapter {cls.name!r} searches {', '.join(missing)}, which its preset {preset!r} "
            "does not define"
        )
    space = {k: dim for k, dim in cls.search_space.items() if k not in fixed}
    for name, dim in space.items():
        _check_dim(cls.name, name, dim)
    if not space:
        raise ConfigError(
            f"nothing to tune: adapter {cls.name!r} declares no search space"
            + (" outside the --set parameters" if cls.search_space else "")
        )
    info = data.task.info
    objective_rates = list(rates) if opts.objective == "robust" else []
    config = {
        "model": opts.model,
        "setting": data.id,
        "seed": opts.seed,
        "preset": preset,
        "objective": opts.objective,
        "rates": objective_rates,
        "mask_rng": opts.mask_rng.value if opts.objective == "robust" else None,
        "metric": info.selection_metric,
        "fixed": {k: fixed[k] for k in sorted(fixed)},
        "search_space": {k: _dim_json(space[k]) for k in sorted(space)},
        "text_encoder": opts.text_encoder,
        "precision": opts.precision.value,
    }
    return StudyPlan(
        cls=cls,
        data=data,
        preset=preset,
        space=space,
        fixed=fixed,
        metric=info.selection_metric,
        direction="maximize" if higher_is_better(info.selection_metric) else "minimize",
        study_name=opts.study or default_study_name(opts.model, data, opts.seed, opts.objective),
        storage_url=opts.storage or default_storage(opts.out),
        config=json.loads(json.dumps(config)),
    )


def _check_dim(model: str, name: str, dim: SearchDim) -> None:
    if dim.kind == "categorical":
        if not dim.choices:
            raise ConfigError(f"{model}: search dimension {name!r} is categorical with no choices")
        return
    if dim.kind not in ("int", "float"):
        raise ConfigError(
            f"{model}: search dimension {name!r} has kind {dim.kind!r}; "
            "valid: int, float, categorical"
        )
    if dim.low is None or dim.high is None or dim.low > dim.high:
        raise ConfigError(f"{model}: search dimension {name!r} needs low <= high")
    if dim.log and (dim.low <= 0 or dim.step is not None):
        raise ConfigError(f"{model}: log-scaled dimension {name!r} needs low > 0 and no step")


def _dim_json(dim: SearchDim) -> dict[str, Any]:
    return {
        "kind": dim.kind,
        "low": dim.low,
        "high": dim.high,
        "step": dim.step,
        "log": dim.log,
        "choices": list(dim.choices),
    }


def suggest_params(trial: optuna.Trial, space: Mapping[str, SearchDim]) -> dict[str, Any]:
    """Draw one value per search dimension (names sorted: a stable order for the sampler)."""
    params: dict[str, Any] = {}
    for name in sorted(space):
        dim = space[name]
        if dim.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.kind == "int":
            assert dim.low is not None and dim.high is not None
            params[name] = trial.suggest_int(
                name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log
            )
        else:
            assert dim.low is not None and dim.high is not None
            params[name] = trial.suggest_float(
                name, float(dim.low), float(dim.high), step=dim.step, log=dim.log
            )
    return params


# --------------------------------------------------------------------------- sampler


class TrialSeededTPE(BaseSampler):
    """TPE whose random draws for trial ``n`` come from ``(seed, n)``.

    One seeded TPESampler per worker would make every worker draw the same startup trials;
    an unseeded one would make a single-worker study irreproducible. Trial numbers are unique
    across workers (the storage assigns them), so seeding each trial by its number gives both:
    distinct draws on every worker, and the same study again from the same command.
    """

    def __init__(self, seed: int, **tpe_kwargs: Any) -> None:
        self._seed = seed
        self._kwargs = tpe_kwargs
        self._by_trial: dict[int, TPESampler] = {}

    def _tpe(self, trial: FrozenTrial) -> TPESampler:
        tpe = self._by_trial.get(trial.number)
        if tpe is None:
            state = np.random.SeedSequence([self._seed % 2**32, trial.number]).generate_state(1)
            tpe = TPESampler(seed=int(state[0]), **self._kwargs)
            self._by_trial[trial.number] = tpe
        return tpe

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict
    ) -> dict[str, Any]:
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        tpe = self._by_trial.pop(trial.number, None)
        if tpe is not None:
            tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's generator is a function of (seed, trial number)."""


# --------------------------------------------------------------------------- storage


def open_storage(url: str, heartbeat: int | None = None, max_retry: int = 2) -> Any:
    """An Optuna storage for ``url``; SQLAlchemy URLs get heartbeats and failed-trial retries."""
    if url in (":memory:", "memory"):
        return optuna.storages.InMemoryStorage()
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes may share one SQLite file: wait for the lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        with warnings.catch_warnings():
            # Heartbeats have been "experimental" since Optuna 2.8; the warning is only noise.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs = dict(
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry
                ),
            )
    last: Exception | None = None
    # Workers started together race to create the schema; the loser retries and finds it.
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except ArgumentError as exc:
            raise ConfigError(f"cannot use storage {redact(url)}: {exc}") from None
        except ImportError:
            raise ConfigError(
                f"cannot use storage {redact(url)}: its database driver is not installed "
                "(PostgreSQL: pip install psycopg2-binary and use postgresql+psycopg2://...; "
                "MySQL: pip install pymysql and use mysql+pymysql://...)"
            ) from None
        except SQLAlchemyError as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    raise ConfigError(f"cannot open storage {redact(url)}: {str(last).splitlines()[0]}")


def open_study(plan: StudyPlan, opts: TuneOptions) -> optuna.Study:
    """Create the study or join it; refuse to join one created with another configuration."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(plan.storage_url, opts.heartbeat, opts.max_retry)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            # Steps are 1-based epochs; Optuna prunes from step == n_warmup_steps on.
            n_startup_trials=opts.prune_startup,
            n_warmup_steps=opts.prune_warmup + 1,
        )
        if opts.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    sampler = TrialSeededTPE(opts.seed, n_startup_trials=opts.startup_trials)
    try:
        study = optuna.create_study(
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            study_name=plan.study_name,
            direction=plan.direction,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot join study {plan.study_name!r}: {exc}") from None
    known = study.user_attrs.get(STUDY_CONFIG_ATTR)
    if known is None:
        study.set_user_attr(STUDY_CONFIG_ATTR, dict(plan.config))
    elif known != plan.config:
        differ = sorted(
            k for k in set(known) | set(plan.config) if known.get(k) != plan.config.get(k)
        )
        raise ConfigError(
            f"study {plan.study_name!r} in {redact(plan.storage_url)} was created with another "
            f"configuration (differs in {', '.join(differ)}); use another --study name"
        )
    return study


def load_study(storage: str, study: str) -> optuna.Study:
    """An existing study, read-only use (export, ``run --params-from-study``)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(storage=open_storage(storage))
        raise ConfigError(
            f"no study {study!r} in {redact(storage)}; studies there: {', '.join(names) or 'none'}"
        ) from None


# --------------------------------------------------------------------------- objective


def rmfm_keeps(
    valid: SplitTensors,
    data: DataSetting,
    seed: int,
    rates: Iterable[float],
    mask_rng: MaskRng | str,
) -> dict[float, KeepMasks]:
    """The validation split's RMFM keep-masks per rate (the same for every trial)."""
    return {rate: cell_keep(valid, Cell(data, Mode.RMFM, rate), seed, mask_rng) for rate in rates}


def valid_rmfm_sweep(
    adapter: Adapter,
    valid: SplitTensors,
    keeps: Mapping[float, KeepMasks],
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision | str = Precision.FP32,
) -> dict[float, float]:
    """Validation selection metric under each RMFM rate's masks (knob chosen per rate).

    Knobs are picked per rate on these validation predictions, as ``evaluate_cell`` picks them
    for a cell; only the validation split is read.
    """
    labels = valid.split.labels(adapter.ctx.task)
    return {
        rate: best_knob_score(
            adapter, predict_split(adapter, valid, keep, batch_size, device, precision), labels
        )
        for rate, keep in keeps.items()
    }


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Objective:
    """The study's objective on one worker: the bundle is loaded once, masks built once."""

    def __init__(self, plan: StudyPlan, opts: TuneOptions, bundle: DatasetBundle) -> None:
        self.plan = plan
        self.opts = opts
        self.bundle = bundle
        self.device = resolve_device(opts.device)
        self.worker = worker_id()
        self.valid = SplitTensors(bundle.valid, plan.data.task)
        self.keeps: dict[float, KeepMasks] = (
            rmfm_keeps(
                self.valid,
                plan.data,
                opts.seed,
                (canonical_rate(r) for r in opts.rates),
                opts.mask_rng,
            )
            if opts.objective == "robust"
            else {}
        )

    def params(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's full parameter set: preset, then fixed overrides, then tuned values."""
        tuned = suggest_params(trial, self.plan.space)
        return self.plan.cls.resolve_params(self.plan.preset, {**self.plan.fixed, **tuned})

    def build(self, params: Mapping[str, Any]) -> Adapter:
        """The adapter exactly as ``runner.setting_events`` builds it (same seed, same order)."""
        data = self.plan.data
        seed_everything(self.opts.seed)
        ctx = AdapterContext.create(
            self.bundle.spec,
            params,
            data=data,
            device=self.device,
            seed=self.opts.seed,
            text_encoder=self.opts.text_encoder,
            out=self.opts.out,
        )
        adapter = self.plan.cls(ctx)
        adapter.setup(self.bundle.train)
        return adapter

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", self.worker)
        params = self.params(trial)
        adapter = self.build(params)
        cfg = FitConfig.of(adapter, self.device, self.opts.precision)

        def on_epoch(record: EpochRecord) -> None:
            trial.report(record.valid_metric, record.epoch)
            if trial.should_prune():
                trial.set_user_attr("epochs", record.epoch)
                raise optuna.TrialPruned(
                    f"epoch {record.epoch}: {self.plan.metric} {record.valid_metric:.4f} "
                    "below the median of earlier trials"
                )

        result = fit(adapter, self.bundle, self.opts.seed, cfg, on_epoch=on_epoch)
        trial.set_user_attr("epochs", len(result.history))
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        trial.set_user_attr("complete_valid", result.best_valid)
        if self.opts.objective == "complete":
            return result.best_valid
        sweep = valid_rmfm_sweep(
            adapter,
            self.valid,
            self.keeps,
            batch_size=adapter.eval_batch_size,
            device=self.device,
            precision=self.opts.precision,
        )
        trial.set_user_attr("rmfm_valid", {f"{r:.1f}": v for r, v in sweep.items()})
        return float(np.mean(list(sweep.values())))


# --------------------------------------------------------------------------- driver


def count_states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def run_tune(
    opts: TuneOptions,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    on_start: Callable[[optuna.Study, StudyPlan], None] | None = None,
) -> TuneResult:
    """Create or join the study and run trials until it holds ``opts.trials`` finished ones."""
    from mer_bench.data.loaders import load_bundle

    plan = plan_study(opts)
    resolve_device(opts.device)  # a bad device fails before the storage is touched
    # Trials are comparable only on the same files: the validation data's fingerprint is part
    # of the configuration every worker of the study must agree on.
    bundle = load_bundle(plan.data, opts.data_root, test=False)
    plan = replace(plan, config={**plan.config, "data": bundle.fingerprint})
    study = open_study(plan, opts)
    if on_start is not None:
        on_start(study, plan)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    ran: list[int] = []
    if finished < opts.trials:
        study.optimize(
            Objective(plan, opts, bundle),
            n_trials=opts.trials - finished,
            timeout=opts.timeout,
            catch=(torch.OutOfMemoryError,),
            callbacks=[
                optuna.study.MaxTrialsCallback(opts.trials, states=FINISHED),
                lambda _study, trial: ran.append(trial.number),
                *callbacks,
            ],
        )
    return TuneResult(
        study_name=plan.study_name,
        storage=redact(plan.storage_url),
        ran=len(ran),
        counts=count_states(study),
        best=best_record(study, opts.model, plan.storage_url),
    )


def best_record(study: optuna.Study, model: str, storage_url: str) -> dict[str, Any] | None:
    """The study's best trial as ``tune --export`` writes it (``run --params`` reads it).

    ``params`` holds the fixed and tuned overrides (the preset supplies the rest);
    ``resolved_params`` the full set the trial trained with.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    config = study.user_attrs.get(STUDY_CONFIG_ATTR, {})
    counts = count_states(study)
    params = {**config.get("fixed", {}), **best.params}
    record = {
        "model": config.get("model", model),
        "params": dict(sorted(params.items())),
        "value": best.value,
        "metric": config.get("metric"),
        "objective": config.get("objective"),
        "rates": config.get("rates"),
        "direction": study.direction.name.lower(),
        "setting": config.get("setting"),
        "seed": config.get("seed"),
        "preset": config.get("preset"),
        "data_fingerprint": config.get("data"),
        "study": study.study_name,
        "storage": redact(storage_url),
        "trial": best.number,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "complete_valid": best.user_attrs.get("complete_valid"),
        "trials": counts,
        "mer_bench": __version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if "rmfm_valid" in best.user_attrs:
        record["rmfm_valid"] = best.user_attrs["rmfm_valid"]
    return record


def export_best(record: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Write a best-trial record as JSON (atomically)."""
    if record is None:
        raise MerBenchError("the study has no completed trial yet; nothing to export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def params_from_study(storage: str, study: str) -> dict[str, Any]:
    """The best-trial record of a stored study (for ``run --params-from-study``)."""
    loaded = load_study(storage, study)
    config = loaded.user_attrs.get(STUDY_CONFIG_ATTR)
    if config is None:
        raise ConfigError(f"study {study!r} in {redact(storage)} was not created by mer_bench tune")
    record = best_record(loaded, config["model"], storage)
    if record is None:
        raise ConfigError(f"study {study!r} in {redact(storage)} has no completed trial yet")
    return record
