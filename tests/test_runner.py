from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_bench.errors import ConfigError, DataError, ProtocolError
from mer_bench.export import metrics_frame, predictions_frame
from mer_bench.metrics import compute_metrics
from mer_bench.protocol import (
    Dataset,
    Executor,
    MaskRng,
    Precision,
    Regime,
    Task,
    TauSelection,
)
from mer_bench.runner import RunOptions, execute, plan
from mer_bench.store import ResultsStore
from tests.conftest import MEANPOOL, ROOT, subprocess_env

SELECTOR = "distribution=iid|cross,alignment=aligned,mode=RMFM|STMFM|SMM,rate=0.0|0.5|1.0"
SELECTOR_SMM = "distribution=iid|cross,alignment=aligned,mode=SMM"


def _opts(root: Path, out: Path, **kw) -> RunOptions:
    base = dict(
        models=(MEANPOOL,),
        selector="distribution=iid,alignment=aligned,task=binary|regression,mode=RMFM|RMM",
        dataset=Dataset.SYNTH,
        data_root=str(root),
        seeds=(1, 2),
        device="cpu",
        out=str(out),
        quiet=True,
    )
    base.update(kw)
    return RunOptions(**base)


def test_run_options_hold_enums_and_refuse_unknown_values() -> None:
    opts = RunOptions(models=("m",), precision="BF16", executor="ray", tau_selection="test-oracle")
    assert opts.precision is Precision.BF16 and opts.executor is Executor.RAY
    assert opts.tau_selection is TauSelection.TEST_ORACLE and opts.mask_rng is MaskRng.PER_SAMPLE
    # stored and hashed strings are unchanged
    assert json.dumps([opts.precision, opts.tau_selection]) == '["bf16", "test-oracle"]'
    for name in ("tau_selection", "mask_rng", "precision", "executor"):
        with pytest.raises(ProtocolError, match=rf"invalid {name.replace('_', ' ')} 'nope'"):
            RunOptions(models=("m",), **{name: "nope"})


def test_missing_data_file_stops_the_run_before_anything_trains(
    tiny_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synth_root, root)
    (root / "OOD_SYNTH" / "binary" / "SYNTH_aligned_50.pkl").unlink()
    (root / "MSA_cross_datasets" / "synth_b.pkl").unlink()
    out = tmp_path / "res"
    opts = RunOptions(
        models=(MEANPOOL,),
        selector="alignment=aligned,task=binary,mode=RMFM,rate=0.0",
        data_root=str(root),
        seeds=(1,),
        device="cpu",
        out=str(out),
        quiet=True,
    )
    plans = plan(opts)
    assert {p.setting.data.distribution.value for p in plans} == {"iid", "ood", "cross"}

    def no_training(*args, **kwargs):
        raise AssertionError("a setting was trained although a data file is missing")

    monkeypatch.setattr("mer_bench.runner.fit", no_training)
    with pytest.raises(DataError) as info:
        execute(plans, opts)
    message = str(info.value)
    # every missing file in one message, with where to get it; the present IID file is fine
    assert message.startswith("2 data file(s) missing, nothing was trained")
    assert "OOD_SYNTH/binary/SYNTH_aligned_50.pkl" in message and "synth_b.pkl" in message
    assert "data synth --out ROOT" in message and "\n" not in message
    assert not (out / "results.sqlite").exists()


def test_invalid_data_file_is_reported_before_training(
    tiny_synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synth_root, root)
    bad = root / "OOD_SYNTH" / "binary" / "SYNTH_aligned_50.pkl"
    bad.write_bytes(bad.read_bytes()[:500])  # truncated
    opts = RunOptions(
        models=(MEANPOOL,),
        selector="alignment=aligned,task=binary,distribution=iid|ood,mode=SMM",
        data_root=str(root),
        seeds=(1,),
        device="cpu",
        out=str(tmp_path / "res"),
        quiet=True,
    )
    monkeypatch.setattr("mer_bench.runner.fit", None)  # calling it would fail loudly
    with pytest.raises(DataError, match=r"invalid data, nothing was trained: synth/ood/aligned/bi"):
        execute(plan(opts), opts)
    assert not (tmp_path / "res" / "results.sqlite").exists()


def test_plan_expands_models_tasks_seeds(tiny_synth_root: Path, tmp_path: Path) -> None:
    opts = _opts(tiny_synth_root, tmp_path, selector="all", seeds=(1, 2, 3))
    plans = plan(opts)
    # meanpool supports 3 tasks; iid/ood × aligned/unaligned + cross aligned = 5 data settings
    assert len(plans) == 3 * 5 * 3
    assert sum(len(p.cells) for p in plans) == 3 * 3 * (2 * (62 + 40) + 62)
    with pytest.raises(ConfigError, match=r"nothing to run"):
        plan(_opts(tiny_synth_root, tmp_path, models=("cider",), selector="task=regression"))


def test_plan_expands_training_regimes(tiny_synth_root: Path, tmp_path: Path) -> None:
    base = "distribution=iid,alignment=aligned,task=binary,mode=RMFM,rate=0.0|0.5"
    plans = plan(_opts(tiny_synth_root, tmp_path, selector=base + ",regime=clean|matched"))
    clean = [p for p in plans if p.setting.regime.kind is Regime.CLEAN]
    matched = [p for p in plans if p.setting.regime.kind is Regime.MATCHED]
    assert len(clean) == 2 and len(clean[0].cells) == 2  # seeds; RMFM@0/0.5
    # matched: one training per (seed, rate), holding exactly that rate's cells
    assert sorted((p.setting.seed, p.setting.regime.rate) for p in matched) == [
        (1, 0.0),
        (1, 0.5),
        (2, 0.0),
        (2, 0.5),
    ]
    assert all(c.rate == p.setting.regime.rate for p in matched for c in p.cells)
    assert matched[0].setting.id.endswith("/seed1/matched@0.0")
    assert clean[0].setting.id.endswith("/seed1/clean")
    native = plan(_opts(tiny_synth_root, tmp_path, selector=base))
    assert native[0].setting.id.endswith("/seed1")  # the default regime keeps old ids
    smm = "distribution=iid,alignment=aligned,task=binary,mode=SMM,regime=matched"
    with pytest.raises(ConfigError, match="nothing to run"):  # SMM has no rate to match
        plan(_opts(tiny_synth_root, tmp_path, selector=smm))
    with pytest.raises(ProtocolError, match="regime"):
        plan(_opts(tiny_synth_root, tmp_path, selector=base + ",regime=matched@0.3"))


def test_mixture_regime_is_reproducible_across_worker_processes(
    tiny_synth_root: Path, tmp_path: Path
) -> None:
    selector = (
        "distribution=iid,alignment=aligned,task=binary,mode=RMFM,rate=0.0|0.5,regime=mixture"
    )
    frames = []
    for jobs in (1, 2):
        opts = _opts(tiny_synth_root, tmp_path / f"jobs{jobs}", selector=selector, jobs=jobs)
        execute(plan(opts), opts)
        with ResultsStore(tmp_path / f"jobs{jobs}") as store:
            frames.append(_stable(metrics_frame(store)))
    assert len(frames[0]) == 2 * 2
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_run_store_export_recompute_and_resume(tiny_synth_root: Path, tmp_path: Path) -> None:
    opts = _opts(tiny_synth_root, tmp_path)
    outcomes = execute(plan(opts), opts)
    n_cells = 2 * 2 * 22  # tasks × seeds × (RMFM, RMM) × 11 rates
    assert sum(o.cells_done for o in outcomes) == n_cells
    assert all(o.trained for o in outcomes)
    with ResultsStore(tmp_path) as store:
        metrics = metrics_frame(store)
        preds = predictions_frame(store)
    assert len(metrics) == n_cells
    assert list(metrics.columns[:11]) == [
        "model",
        "dataset",
        "distribution",
        "alignment",
        "task",
        "seed",
        "regime",
        "mode",
        "rate",
        "condition",
        "cell",
    ]
    assert metrics["regime"].eq("native").all()
    assert metrics["tau_selection"].eq("none").all()
    # metrics recomputed from exported predictions equal the stored ones
    for (cell, seed, task), group in preds.groupby(["cell", "seed", "task"]):
        task_enum = Task(task)
        if task_enum is Task.REGRESSION:
            scores = group["score"].to_numpy()
        else:
            scores = group[[f"score_{k}" for k in range(3)]].to_numpy()
        recomputed = compute_metrics(task_enum, scores, group["label"].to_numpy())
        stored = metrics[(metrics["cell"] == cell) & (metrics["seed"] == seed)].iloc[0]
        for name, value in recomputed.items():
            assert np.isclose(stored[name], value, equal_nan=True), (cell, name)
    # sample ids come from the data file
    assert preds["sample_id"].str.contains(r"\$_\$").all()
    # the model learned something, and dropping everything hurts it
    binary = metrics[(metrics["task"] == "binary") & (metrics["mode"] == "RMFM")]
    at0 = binary[binary["rate"] == 0.0]["non0_acc2"].mean()
    at1 = binary[binary["rate"] == 1.0]["non0_acc2"].mean()
    print(f"meanpool non0_acc2 at rate 0: {at0:.3f}, at rate 1: {at1:.3f}")
    assert at0 > 0.65 and at0 > at1
    # resume: nothing left to do
    again = execute(plan(opts), opts)
    assert sum(o.cells_done for o in again) == 0
    assert not any(o.trained for o in again)


def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["model", "seed", "cell", "tau_selection"]).reset_index(drop=True)


def _cli(out: Path, root: Path, selector: str, seeds: str = "1,2") -> list[str]:
    return [
        sys.executable,
        "-m",
        "mer_bench",
        "run",
        "--models",
        MEANPOOL,
        "--protocol",
        selector,
        "--data-root",
        str(root),
        "--seeds",
        seeds,
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]


def _cells_in(out: Path) -> int:
    db = out / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(
                "SELECT COUNT(DISTINCT setting_id || cell_id) FROM results"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _settings_in(out: Path) -> int:
    db = out / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM settings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); [] when the
    process is gone (or there is no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    procs = (entry.name for entry in Path("/proc").glob("[0-9]*"))
    return [int(p) for p in procs if (fields := _stat(p)) and int(fields[1]) == pid]


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def test_sigkill_and_resume_ends_identical(tiny_synth_root: Path, tmp_path: Path) -> None:
    """Kill the run with SIGKILL mid-training and mid-evaluation; the resumed run's results equal
    an uninterrupted run's (no cell lost, none duplicated)."""
    # Under the mixture regime: training-time masks must be as reproducible as evaluation masks.
    selector = "distribution=iid|cross,alignment=aligned,task=binary,mode=RMFM|SMM,regime=mixture"
    env = subprocess_env()
    reference = tmp_path / "reference"
    subprocess.run(
        _cli(reference, tiny_synth_root, selector),
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )

    killed = tmp_path / "killed"
    kill_points = [
        lambda: _settings_in(killed) == 0 and (killed / "results.sqlite").exists(),  # training
        lambda: _cells_in(killed) >= 3,  # evaluating the first setting
        lambda: _settings_in(killed) >= 3 and _cells_in(killed) < 4 * 18,  # later setting
    ]
    kills = 0
    orphans: set[int] = set()
    for point in kill_points:
        proc = subprocess.Popen(
            _cli(killed, tiny_synth_root, selector),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if point():
                workers = _children(proc.pid)
                proc.send_signal(signal.SIGKILL)
                kills += 1
                orphans.update(workers)
                break
            time.sleep(0.02)
        proc.wait(60)
    assert kills >= 2, "the run finished before it could be killed; make it longer"
    # The killed runs' worker processes do not outlive them (they watch their parent).
    deadline = time.time() + 20
    while any(_alive(pid) for pid in orphans) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in orphans if _alive(pid)]
    subprocess.run(
        _cli(killed, tiny_synth_root, selector),
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )

    with ResultsStore(reference) as a, ResultsStore(killed) as b:
        ma, mb = _stable(metrics_frame(a)), _stable(metrics_frame(b))
        pa, pb = predictions_frame(a), predictions_frame(b)
    assert len(ma) == 4 * 18  # 2 data settings × 2 seeds × (11 RMFM + 7 SMM)
    assert ma["regime"].eq("mixture(p_complete=0.5,r_max=1)").all()
    pd.testing.assert_frame_equal(ma, mb)
    key = ["model", "seed", "cell", "tau_selection", "sample_id"]
    pd.testing.assert_frame_equal(
        pa.sort_values(key).reset_index(drop=True), pb.sort_values(key).reset_index(drop=True)
    )


def test_cli_run_end_to_end_and_export(tiny_synth_root: Path, tmp_path: Path) -> None:
    """The one end-to-end test through the CLI: run, then export metrics and predictions."""
    env = subprocess_env()
    out = tmp_path / "res"
    proc = subprocess.run(
        _cli(
            out,
            tiny_synth_root,
            "distribution=ood,alignment=unaligned,task=seven,mode=RMM|SMM",
            seeds="1",
        ),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "results.sqlite" in proc.stdout and "mer_bench plot" in proc.stdout
    csv = subprocess.run(
        [sys.executable, "-m", "mer_bench", "export", "--results", str(out), "--what", "metrics"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lines = csv.strip().splitlines()
    assert lines[0].split(",") == [
        "model",
        "dataset",
        "distribution",
        "alignment",
        "task",
        "seed",
        "regime",
        "mode",
        "rate",
        "condition",
        "cell",
        "acc7",
        "f1_7",
        "tau",
        "tau_selection",
    ]
    assert len(lines) == 1 + 11 + 7
    pred_file = tmp_path / "pred.parquet"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mer_bench",
            "export",
            "--results",
            str(out),
            "--what",
            "predictions",
            "--format",
            "parquet",
            "--out",
            str(pred_file),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    preds = pd.read_parquet(pred_file)
    assert [f"score_{k}" for k in range(7)] == [c for c in preds.columns if c.startswith("score_")]
    assert len(preds) == 18 * 40
    # bad input: one error line, exit 2, no traceback
    bad = subprocess.run(
        [sys.executable, "-m", "mer_bench", "run", "--models", "mutl", "--out", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and "did you mean 'mult'" in bad.stderr
    assert "Traceback" not in bad.stderr
    json.dumps(lines)


def test_a_worker_of_a_dead_run_writes_nothing(tiny_synth_root: Path, tmp_path: Path) -> None:
    """A setting whose run is gone (``alive`` false) stops before its first write."""
    from mer_bench.runner import run_setting

    opts = _opts(
        tiny_synth_root,
        tmp_path,
        selector="distribution=iid,alignment=aligned,task=binary,mode=RMM",
    )
    (sp, *_) = plan(opts)
    with ResultsStore(tmp_path) as store:
        outcome = run_setting(sp, opts, store, alive=lambda: False)
        assert (outcome.trained, outcome.cells_done) == (False, 0)
        assert store.setting_record(sp.setting) is None and store.count_cells() == 0
        assert run_setting(sp, opts, store).cells_done == 11


def _store_rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as conn:
        return conn.execute(sql).fetchall()


def test_changed_data_is_retrained_and_unchanged_data_resumes(tmp_path: Path) -> None:
    """A stored setting is reused only for the data it was computed on: a rewritten file (or
    a store from before fingerprints) means its cells are dropped and it trains again."""
    import hashlib
    from dataclasses import replace

    from mer_bench.data.synth import write_synth
    from mer_bench.runner import Discarded, Hooks
    from tests.conftest import tiny_synth_config

    root, out = tmp_path / "data", tmp_path / "out"
    write_synth(root, tiny_synth_config())
    opts = _opts(
        root,
        out,
        selector="distribution=iid|cross,alignment=aligned,task=binary,mode=RMM,rate=0.0|1.0",
        seeds=(1,),
    )
    iid, cross = (f"{MEANPOOL}/synth/{d}/aligned/binary/seed1" for d in ("iid", "cross"))
    fingerprints = "SELECT setting_id, data_fingerprint, config_hash FROM settings"
    discarded: list[Discarded] = []
    hooks = Hooks(on_data_changed=discarded.append)

    first = execute(plan(opts), opts, hooks)
    assert [o.trained for o in first] == [True, True] and discarded == []
    before = {sid: (fp, h) for sid, fp, h in _store_rows(out, fingerprints)}
    assert before[iid][0] != before[cross][0]

    # unchanged data: everything resumes
    again = execute(plan(opts), opts, hooks)
    assert not any(o.trained or o.cells_done for o in again) and discarded == []

    # the cross-dataset test file changes: only that setting is retrained (here by a --jobs
    # worker), and its old cells are replaced, not kept beside the new ones
    other = tmp_path / "other"
    write_synth(other, replace(tiny_synth_config(), seed=8))
    shutil.copyfile(
        other / "MSA_cross_datasets" / "synth_b.pkl", root / "MSA_cross_datasets" / "synth_b.pkl"
    )
    third = {o.setting_id: o for o in execute(plan(opts), replace(opts, jobs=2), hooks)}
    assert third[cross].trained and third[cross].cells_done == 2
    assert not third[iid].trained and third[iid].cells_done == 0
    assert discarded == [Discarded(cross, before[cross][0], discarded[0].new, 2)]
    after = {sid: (fp, h) for sid, fp, h in _store_rows(out, fingerprints)}
    assert after[iid] == before[iid]
    assert after[cross][0] == discarded[0].new != before[cross][0]
    assert after[cross][1] != before[cross][1]  # the data is part of the config hash
    rows = _store_rows(out, f"SELECT data_fingerprint FROM results WHERE setting_id = '{cross}'")
    assert sorted(rows) == [(after[cross][0],)] * 2
    (files,) = _store_rows(out, f"SELECT data_files FROM settings WHERE setting_id = '{cross}'")[0]
    test_sha = hashlib.sha256((root / "MSA_cross_datasets" / "synth_b.pkl").read_bytes())
    assert json.loads(files) == [
        {"role": "train/valid", "file": "synth.pkl", "sha256": json.loads(files)[0]["sha256"]},
        {"role": "test", "file": "synth_b.pkl", "sha256": test_sha.hexdigest()},
    ]

    # a setting stored without a fingerprint (an older store): its data is unknown, retrained
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute(f"UPDATE settings SET data_fingerprint = NULL WHERE setting_id = '{iid}'")
    fourth = {o.setting_id: o for o in execute(plan(opts), opts, hooks)}
    assert fourth[iid].trained and not fourth[cross].trained
    assert discarded[1] == Discarded(iid, None, before[iid][0], 2)
    # a worker whose files changed after the driver's check stops instead of mixing versions
    from mer_bench.runner import setting_events

    sp = next(p for p in plan(opts) if p.setting.id == iid)
    with pytest.raises(DataError, match="changed while the run was going"):
        next(setting_events(sp.setting, list(sp.cells), opts, None, None, "0" * 16))
