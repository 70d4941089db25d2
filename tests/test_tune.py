"""``tune``: validation-only Optuna studies, shared through storage, exported to ``run``."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from mer_bench.adapters import SearchDim
from mer_bench.batch import SplitTensors
from mer_bench.cli import main
from mer_bench.cli._common import overrides
from mer_bench.data.loaders import SealedSplit, load_bundle
from mer_bench.errors import ConfigError, DataError
from mer_bench.protocol import Dataset, DataSetting, Task
from mer_bench.runner import RunOptions, execute, plan
from mer_bench.store import ResultsStore
from mer_bench.tune import (
    FINISHED,
    TrialSeededTPE,
    TuneOptions,
    params_from_study,
    run_tune,
    select_data_setting,
    suggest_params,
)
from tests.conftest import MEANPOOL, subprocess_env

SETTING = "distribution=iid,alignment=aligned,task=binary"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The tiny models here run ~20x faster on one thread than on two busy cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = {"max_epochs": 4, "patience": 2}


def _opts(root: Path, out: Path, **kw) -> TuneOptions:
    base = dict(
        model=MEANPOOL,
        setting=SETTING,
        trials=2,
        data_root=str(root),
        device="cpu",
        out=str(out),
        overrides=dict(FAST),
        prune_startup=1,
        heartbeat=2,
    )
    base.update(kw)
    return TuneOptions(**base)


def tune_main(argv: list[str]) -> int:
    return main(["tune", *argv])


def _tune_cmd() -> list[str]:
    return [sys.executable, "-m", "mer_bench", "tune"]


# --------------------------------------------------------------------------- resolution


def test_setting_selector_must_name_one_data_setting() -> None:
    tasks = (Task.BINARY, Task.SEVEN)
    assert select_data_setting(SETTING, Dataset.SYNTH, tasks) == DataSetting.parse(
        "synth/iid/aligned/binary"
    )
    # cross exists only aligned, so alignment may be omitted there
    assert select_data_setting("distribution=cross,task=seven", Dataset.MOSI, tasks).id == (
        "mosi/cross/aligned/seven"
    )
    with pytest.raises(ConfigError, match=r"selects 2: synth/iid/aligned/binary, synth/iid/al"):
        select_data_setting("distribution=iid,alignment=aligned", Dataset.SYNTH, tasks)
    with pytest.raises(ConfigError, match=r"selects 0: none"):
        select_data_setting(SETTING.replace("binary", "regression"), Dataset.SYNTH, tasks)
    with pytest.raises(ConfigError, match=r"not mode"):
        select_data_setting(SETTING + ",mode=RMFM", Dataset.SYNTH, tasks)
    with pytest.raises(ConfigError, match=r"--dataset is synth"):
        select_data_setting(SETTING + ",dataset=mosi", Dataset.SYNTH, tasks)


def test_cli_reports_bad_setting_and_unknown_fixed_parameter(
    tiny_synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", MEANPOOL, "--trials", "1", "--data-root", str(tiny_synth_root)]
    assert tune_main([*base, "--setting", "alignment=aligned", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --setting 'alignment=aligned' must select exactly one")
    assert "synth/cross/aligned/regression" in err and err.count("\n") == 1
    code = tune_main([*base, "--setting", SETTING, "--set", "lr_x=1", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown parameter 'lr_x'" in capsys.readouterr().err
    assert not (tmp_path / "tune.sqlite").exists()  # refused before any storage is created


def test_suggest_params_respects_every_kind() -> None:
    space = {
        "layers": SearchDim("int", 1, 7, step=2),
        "lr": SearchDim("float", 1e-4, 1e-1, log=True),
        "drop": SearchDim("float", 0.0, 0.5, step=0.1),
        "heads": SearchDim("categorical", choices=(1, 2, 8)),
        "flag": SearchDim("categorical", choices=(True, False)),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = []
    for _ in range(40):
        trial = study.ask()
        p = suggest_params(trial, space)
        study.tell(trial, 0.0)
        seen.append(p)
        assert p["layers"] in (1, 3, 5, 7) and isinstance(p["layers"], int)
        assert 1e-4 <= p["lr"] <= 1e-1
        assert any(math.isclose(p["drop"], k / 10) for k in range(6))
        assert p["heads"] in (1, 2, 8) and p["flag"] in (True, False)
    # log scale: a uniform draw would put ~1/1000 of the mass below 1e-3, log puts 1/3
    assert sum(p["lr"] < 1e-3 for p in seen) >= 5
    assert {p["layers"] for p in seen} == {1, 3, 5, 7}


def test_trial_seeded_sampler_is_reproducible_and_distinct_across_workers() -> None:
    space = {"x": SearchDim("float", 0.0, 1.0), "k": SearchDim("int", 0, 1000)}

    def draws(study: optuna.Study, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(suggest_params(trial, space))
            study.tell(trial, out[-1]["x"])
        return out

    def new_study(storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
        return optuna.create_study(
            storage=storage, sampler=TrialSeededTPE(5, n_startup_trials=3), study_name="s"
        )

    first, again = draws(new_study(), 5), draws(new_study(), 5)
    assert first == again  # same command → same study
    assert len({d["k"] for d in first}) == 5
    # two workers with the same seed on one storage: trial numbers differ, so draws differ
    storage = optuna.storages.InMemoryStorage()
    w1 = new_study(storage)
    w2 = optuna.load_study(study_name="s", storage=storage, sampler=TrialSeededTPE(5))
    t1, t2 = w1.ask(), w2.ask()
    assert suggest_params(t1, space) != suggest_params(t2, space)


# --------------------------------------------------------------------------- end to end


def test_study_prunes_exports_and_run_reproduces_best_valid(
    tiny_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    opened: list[str] = []
    real_init = SplitTensors.__init__

    def spy(self, split, task):  # every split the harness turns into tensors
        opened.append(split.name)
        real_init(self, split, task)

    monkeypatch.setattr(SplitTensors, "__init__", spy)
    out = tmp_path / "tune"
    best_path = tmp_path / "best.json"
    args = [
        "--model", MEANPOOL, "--setting", SETTING, "--trials", "6", "--device", "cpu",
        "--data-root", str(tiny_synth_root), "--out", str(out), "--export", str(best_path),
        "--set", "max_epochs=5", "--set", "patience=2", "--prune-startup", "1",
    ]  # fmt: skip
    assert tune_main(args) == 0
    stdout = capsys.readouterr().out
    assert "6 trials run now" in stdout and "pruned" in stdout and "optuna-dashboard" in stdout
    assert set(opened) == {"train", "valid"}  # the test split never became tensors

    best = json.loads(best_path.read_text())
    study = optuna.load_study(study_name=best["study"], storage=f"sqlite:///{out}/tune.sqlite")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    assert states.count(TrialState.PRUNED) >= 1
    pruned = next(t for t in study.trials if t.state is TrialState.PRUNED)
    assert max(pruned.intermediate_values) < 5  # stopped before max_epochs
    assert best["trial"] == study.best_trial.number and best["value"] == study.best_value
    assert best["value"] == max(t.value for t in study.trials if t.state is TrialState.COMPLETE)
    assert best["metric"] == "non0_acc2" and best["setting"] == "synth/iid/aligned/binary"
    assert best["params"] == {"max_epochs": 5, "patience": 2, **study.best_params}
    assert "password" not in json.dumps(best)

    # the same command again: the study is complete, nothing runs
    assert tune_main(args) == 0
    assert "0 trials run now" in capsys.readouterr().out
    # joining with another configuration is refused
    with pytest.raises(ConfigError, match=r"another configuration \(differs in fixed\)"):
        run_tune(_opts(tiny_synth_root, out, trials=7, overrides={"max_epochs": 5}))

    # run --params BEST.json: same seed → the best trial's validation score, params recorded
    run_out = tmp_path / "run"
    ropts = RunOptions(
        models=(MEANPOOL,),
        selector=SETTING + ",mode=RMFM,rate=0.0",
        dataset=Dataset.SYNTH,
        data_root=str(tiny_synth_root),
        seeds=(best["seed"],),
        device="cpu",
        out=str(run_out),
        overrides=overrides([], str(best_path), [MEANPOOL]),
        quiet=True,
    )
    plans = plan(ropts)
    execute(plans, ropts)
    with ResultsStore(run_out) as store:
        record = store.setting_record(plans[0].setting)
    assert record is not None
    assert record["best_valid"] == best["value"]
    assert record["best_epoch"] == study.best_trial.user_attrs["best_epoch"]
    for key, value in best["params"].items():
        assert record["params"][key] == value


def test_robust_objective_on_cross_setting_never_needs_the_test_file(
    tiny_synth_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    (root / "MSA_cross_datasets").mkdir(parents=True)
    # only the training corpus: its partner (the cross-dataset test split) is absent
    shutil.copy(tiny_synth_root / "MSA_cross_datasets" / "synth.pkl", root / "MSA_cross_datasets")
    cross = DataSetting.parse("synth/cross/aligned/binary")
    with pytest.raises(DataError, match=r"test data file"):
        load_bundle(cross, root)
    sealed = load_bundle(cross, root, test=False)
    assert isinstance(sealed.test, SealedSplit)
    with pytest.raises(DataError, match=r"test split is sealed"):
        sealed.test.labels(Task.BINARY)
    with pytest.raises(DataError, match=r"sealed"):
        _ = sealed.test.size

    rates = (0.0, 0.5, 1.0)
    result = run_tune(
        _opts(
            root,
            tmp_path / "out",
            setting="distribution=cross,task=binary",
            objective="robust",
            rates=rates,
            trials=1,
            overrides={"max_epochs": 2, "patience": 2},
        )
    )
    assert result.ran == 1 and result.counts == {"COMPLETE": 1}
    best = result.best
    assert best is not None and best["objective"] == "robust" and best["rates"] == list(rates)
    sweep = best["rmfm_valid"]
    assert list(sweep) == ["0.0", "0.5", "1.0"]
    assert best["value"] == pytest.approx(sum(sweep.values()) / 3)
    # RMFM at rate 0 keeps every position: the complete view
    assert sweep["0.0"] == best["complete_valid"]


# --------------------------------------------------------------------------- workers


def _wait(predicate, timeout: float, what: str, procs=()) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise AssertionError(f"worker exited with {p.returncode}: {p.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_workers_trial_is_retried(
    tiny_synth_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tune"
    storage = f"sqlite:///{out}/shared.sqlite"
    target = 4
    cmd = [
        *_tune_cmd(), "--model", MEANPOOL, "--setting", SETTING, "--trials", str(target),
        "--data-root", str(tiny_synth_root), "--out", str(out), "--storage", storage,
        "--study", "shared", "--device", "cpu", "--heartbeat", "2", "--quiet",
        "--set", "max_epochs=3", "--set", "patience=2",
    ]  # fmt: skip
    env = subprocess_env()
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    a, b = workers
    try:

        def trials() -> list[optuna.trial.FrozenTrial]:
            if not (out / "shared.sqlite").is_file():
                return []  # the workers create it
            try:
                return optuna.load_study(study_name="shared", storage=storage).trials
            except (KeyError, SQLAlchemyError, optuna.exceptions.StorageInternalError):
                return []

        def of_a(states: tuple[TrialState, ...]) -> list[optuna.trial.FrozenTrial]:
            return [
                t
                for t in trials()
                if t.state in states and t.user_attrs.get("worker", "").endswith(f":{a.pid}")
            ]

        # A has finished a trial and is in the middle of the next one: kill it there
        _wait(lambda: of_a(FINISHED) and of_a((TrialState.RUNNING,)), 240, "worker A", workers)
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        assert b.wait(timeout=240) == 0, b.stderr.read()
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    # the next worker (after the heartbeat grace period) fails the stale trial and reruns it
    time.sleep(4.5)  # 2 × the heartbeat
    finished = len([t for t in trials() if t.state in FINISHED])
    result = run_tune(
        _opts(
            tiny_synth_root,
            out,
            storage=storage,
            study="shared",
            trials=finished + 1,
            overrides={"max_epochs": 3, "patience": 2},
            prune_startup=3,
            heartbeat=2,
        )
    )
    assert result.ran >= 1
    all_trials = trials()
    # the one trial A never finished is marked failed ...
    (killed,) = [
        t
        for t in all_trials
        if t.user_attrs.get("worker", "").endswith(f":{a.pid}") and t.state not in FINISHED
    ]
    assert killed.state is TrialState.FAIL
    # ... and was run again, with its parameters, by a live worker
    retries = [t for t in all_trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == killed.params
    done = [t for t in all_trials if t.state in FINISHED]
    assert len(done) >= target + 1
    workers_seen = {t.user_attrs["worker"] for t in done}
    assert len(workers_seen) == 3  # A (before the kill), B and this process
    assert len({t.number for t in all_trials}) == len(all_trials)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "SKIPPED LOUDLY: PostgreSQL binaries (initdb, pg_ctl) not found; the real-server "
            "storage test did not run (apt-get install postgresql)"
        )
    pytest.importorskip("psycopg2", reason="SKIPPED LOUDLY: psycopg2 missing (psycopg2-binary)")
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="mer_bench_pg_"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(base)
            pytest.skip("SKIPPED LOUDLY: running as root without runuser; postgres needs a user")
        shutil.chown(base, "nobody")
        prefix = [runuser, "-u", "nobody", "--"]
    data, port = base / "data", _free_port()

    def pg(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )

    init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8")  # fmt: skip
    assert init.returncode == 0, init.stderr
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"),
               "-w", "-t", "60", "start")  # fmt: skip
    assert start.returncode == 0, start.stderr + (base / "log").read_text()
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_storage_shared_by_two_workers(
    postgres_url: str, tiny_synth_root: Path, tmp_path: Path
) -> None:
    opts = _opts(tiny_synth_root, tmp_path, storage=postgres_url, study="pg", trials=2)
    first = run_tune(opts)
    assert first.ran == 2 and first.storage.startswith("postgresql+psycopg2://postgres@127")
    assert not (tmp_path / "tune.sqlite").exists()
    # a second worker (another process in real use) joins the same study and continues it
    second = run_tune(_opts(tiny_synth_root, tmp_path, storage=postgres_url, study="pg", trials=3))
    assert second.ran == 1
    assert sum(second.counts[s.name] for s in FINISHED if s.name in second.counts) == 3
    record = params_from_study(postgres_url, "pg")
    assert record["model"] == MEANPOOL and record["study"] == "pg"
    assert set(record["params"]) == {"lr", "hidden", "max_epochs", "patience"}
    with pytest.raises(ConfigError, match=r"no study 'nope'.*studies there: pg"):
        params_from_study(postgres_url, "nope")


def test_a_study_is_not_joined_on_other_data(tmp_path: Path) -> None:
    """Trials scored on different files are not comparable: changed data is another study."""
    from dataclasses import replace

    from mer_bench.data.synth import write_synth
    from tests.conftest import tiny_synth_config

    root = tmp_path / "data"
    write_synth(root, tiny_synth_config())
    first = run_tune(_opts(root, tmp_path / "tune", trials=1))
    assert first.ran == 1 and first.best is not None
    data = DataSetting.parse("synth/iid/aligned/binary")
    assert first.best["data_fingerprint"] == load_bundle(data, root, test=False).fingerprint
    assert run_tune(_opts(root, tmp_path / "tune", trials=1)).ran == 0  # same data: joins
    write_synth(root, replace(tiny_synth_config(), seed=8))
    with pytest.raises(ConfigError, match=r"another configuration \(differs in data\)"):
        run_tune(_opts(root, tmp_path / "tune", trials=2))
