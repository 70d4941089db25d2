"""Hostile data files: no code runs, nothing crashes or hangs, memory stays bounded.

Each attack of ``tests.data.hostile`` is tried in this process (the restricted reader alone),
then all of them through the real entry points (sandboxed import, ``data check``,
``run --data-root``) in subprocesses under an address-space limit and a timeout, measuring the
peak memory of the import processes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from mer_bench.data import cache
from mer_bench.data.safe_pickle import load_untrusted
from mer_bench.data.sandbox import Limits, SandboxError, run_sandboxed
from mer_bench.errors import DataError
from tests.conftest import ROOT, subprocess_env
from tests.data import hostile
from tests.data.fixtures import make_file, write_joblib

ATTACKS = sorted(hostile.attacks("unused"))
CLI_ADDRESS_SPACE = 6 << 30
"""``ulimit -v`` of every CLI attempt (the harness process itself, torch not imported)."""
IMPORT_RSS_LIMIT_MB = 400
"""Peak RSS allowed to any sandboxed import of an attack file (interpreter + numpy ~35 MB)."""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CLI_ADDRESS_SPACE, CLI_ADDRESS_SPACE))


@pytest.mark.parametrize("name", ATTACKS)
def test_reader_refuses_attack_in_process(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(hostile.attacks(str(marker))[name]())
    with pytest.raises(DataError) as err:
        load_untrusted(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 600
    assert not marker.exists()


_HARNESS = textwrap.dedent(
    """
    import json, resource, sys, time
    from mer_bench.data.check import check_file
    from mer_bench.errors import DataError
    out = {}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for path in sys.argv[1:]:
        start = time.monotonic()
        try:
            check_file(path)
            result = "loaded"
        except DataError as exc:
            result = str(exc)
        out[path] = {
            "result": result,
            "seconds": time.monotonic() - start,
            "child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
    # growth beyond the interpreter and its imports: what reading the attack files cost here
    out["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_every_attack_is_refused_through_the_sandboxed_import(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    paths = []
    for name, make in hostile.attacks(str(marker)).items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(make())
        paths.append(str(path))
    env = subprocess_env(MER_BENCH_IMPORT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", _HARNESS, *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    peaks = {}
    for path in paths:
        entry = report[path]
        assert entry["result"] != "loaded", path
        assert entry["result"].startswith(path), entry["result"]
        assert "Traceback" not in entry["result"] and "\n" not in entry["result"]
        assert entry["seconds"] < 60, (path, entry["seconds"])
        peaks[Path(path).stem] = entry["child_rss_mb"]
    # RUSAGE_CHILDREN is a running maximum: the last value bounds every import.
    assert max(peaks.values()) < IMPORT_RSS_LIMIT_MB, peaks
    assert report["self_rss_mb"] < IMPORT_RSS_LIMIT_MB
    assert not marker.exists()
    assert not list((tmp_path / "cache").glob("*/manifest.json")), "a hostile file was cached"


def _cli(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mer_bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(MER_BENCH_IMPORT_CACHE=str(tmp_path / "cache")),
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


def _assert_one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    # `run` may print its plan first; the failure itself is one line, the last one.
    assert errors == lines[-1:] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0]


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("object_flags_array", "state numpy would not write"),
        ("bz2_bomb", "declares"),
        ("tuple_dict_keys", "keys must be str"),
        ("reduce_system", "refused to load global posix.system"),
    ],
)
def test_data_check_prints_one_error_line(tmp_path: Path, name: str, fragment: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(hostile.attacks(str(marker))[name]())
    _assert_one_error_line(_cli(["data", "check", str(path)], tmp_path), str(path), fragment)
    assert not marker.exists()


def test_data_check_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "aligned_50.pkl"
    os.mkfifo(fifo)
    _assert_one_error_line(
        _cli(["data", "check", str(fifo)], tmp_path, timeout=60), "not a regular"
    )


def test_folders_and_devices_are_refused(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/dev/zero")):
        with pytest.raises(DataError, match="not a regular file"):
            cache.load(path)
        with pytest.raises(DataError, match="not a regular file"):
            load_untrusted(path)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["iid", "ood-zlib"])
def test_run_with_a_hostile_data_root_prints_one_error_line(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "marker"
    root = tmp_path / "root"
    if where == "iid":
        target = root / "CMU-MOSI" / "Processed" / "aligned_50.pkl"
        payload = hostile.object_flags_frombuffer()
        selector = "distribution=iid,alignment=aligned,task=binary,mode=RMFM,rate=0.0"
    else:
        target = root / "OOD_MOSI" / "binary" / "MOSI_aligned_50.pkl"
        payload = zlib.compress(hostile.code_execution_reduce(str(marker)))
        selector = "distribution=ood,alignment=aligned,task=binary,mode=RMFM,rate=0.0"
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    proc = _cli(
        ["run", "--models", "mult", "--dataset", "mosi", "--data-root", str(root),
         "--protocol", selector, "--seeds", "1111", "--out", str(tmp_path / "out")],
        tmp_path,
        timeout=240,
    )  # fmt: skip
    _assert_one_error_line(proc, str(target))
    assert not marker.exists()


# ----------------------------------------------------------------------------- sandbox limits


def spin() -> None:
    """Sandbox target: burns CPU forever."""
    while True:
        pass


def hog() -> None:
    """Sandbox target: allocates until refused."""
    blocks = []
    while True:
        blocks.append(bytearray(64 << 20))


def crash() -> None:
    """Sandbox target: dies of a segmentation fault."""
    import ctypes

    ctypes.string_at(0)


def sleep() -> None:
    """Sandbox target: blocks without using CPU."""
    import time

    time.sleep(60)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("spin", "CPU time"),
        ("hog", "MiB of memory"),
        ("crash", "crashed the import process (SIGSEGV)"),
        ("sleep", "wall-clock limit"),
    ],
)
def test_sandbox_limits_turn_into_one_line_errors(
    tmp_path: Path, target: str, message: str
) -> None:
    # The CPU limit must trip before the wall-clock one even on a crowded machine.
    wall = 5 if target == "sleep" else 60
    limits = Limits(address_space=512 << 20, cpu_seconds=1, wall_seconds=wall, file_size=1 << 20)
    with pytest.raises(SandboxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_sandboxed(f"tests.data.test_hostile_files:{target}", [], limits, cwd=tmp_path)


def test_valid_joblib_file_still_imports_under_the_limits(tmp_path: Path) -> None:
    path = write_joblib(make_file(text_dim=8), tmp_path / "ok.pkl", compress=3)
    imported = cache.load(path)
    assert imported.info.format == "joblib" and imported.info.compression == "zlib"
    assert imported.content["train"]["audio"].shape[0] == 12
