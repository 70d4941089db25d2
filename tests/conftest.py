from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "tests" / "plugin_example"
MEANPOOL = "mer_bench_example.adapter:MeanPoolAdapter"


def _reference_dir() -> Path:
    """The reference specs (shared/reference): beside the checkout (CI lays shared/ next to the
    clone), else the workspace copy; ``MER_BENCH_REFERENCE`` overrides both."""
    candidates = [
        os.environ.get("MER_BENCH_REFERENCE"),
        ROOT.parent / "shared" / "reference",
        "/work/shared/reference",
    ]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir():
            return Path(candidate)
    return ROOT.parent / "shared" / "reference"


REFERENCE_DIR = _reference_dir()

# The example plugin is importable by module path in every test (and in subprocesses through
# PYTHONPATH); test_plugin.py also installs it for real to exercise the entry point.
if str(PLUGIN_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIR))


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGIN_DIR), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def tiny_synth_config():
    from mer_bench.data.synth import SynthConfig

    return SynthConfig(
        seed=7,
        n_train=128,
        n_valid=32,
        n_test=40,
        audio_len=125,
        vision_len=150,
        text_len=30,
        mean_text_len=14.0,
        cross_n_train=48,
        cross_n_valid=24,
        cross_n_test=32,
    )


@pytest.fixture(scope="session", autouse=True)
def _import_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Data files imported by the tests go to a session folder, not the user's cache."""
    if not os.environ.get("MER_BENCH_IMPORT_CACHE"):
        os.environ["MER_BENCH_IMPORT_CACHE"] = str(tmp_path_factory.mktemp("imports"))


@pytest.fixture(scope="session")
def tiny_synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset written in the MMSA format (shared by the session's tests)."""
    from mer_bench.data.synth import write_synth

    root = tmp_path_factory.mktemp("synth")
    write_synth(root, tiny_synth_config())
    return root
