"""Run the parsing of an untrusted file in a child process with resource limits.

The restricted readers refuse anything outside their rules, but parsing still handles attacker
bytes; doing it in a short-lived child means that a bug we did not foresee costs at most a
refused file: the child gets an address-space limit (memory), a CPU-time limit, a cap on the
size of files it writes, few open files and no core dumps, and its parent applies a wall-clock
timeout. It needs no network and reads nothing but the source file. Its only output is what it
writes into a fresh folder (plain ``.npy`` arrays and JSON); the parent re-validates that.

Child protocol: ``python -m mer_bench.data.sandbox LIMITS_JSON module:function ARG...`` applies
the limits to itself, imports ``module`` and calls ``function(*ARGS)``. A user-caused error
(``MerBenchError``) is printed as one ``error:`` line with exit 2; running out of memory exits
3; anything else exits 1 with one line naming the exception type (no traceback: the input is
hostile by assumption and a traceback helps nobody).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxError", "run_sandboxed"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_STDERR_KEEP = 4000


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed parse."""

    address_space: int
    """Bytes of virtual memory (``RLIMIT_AS``)."""
    cpu_seconds: int
    """CPU seconds (``RLIMIT_CPU``); the child gets SIGXCPU, then SIGKILL one second later."""
    wall_seconds: float
    """Wall-clock seconds before the parent kills the child."""
    file_size: int
    """Largest file the child may write (``RLIMIT_FSIZE``)."""
    open_files: int = 64
    """Open file descriptors (``RLIMIT_NOFILE``)."""


class SandboxError(Exception):
    """The sandboxed parse failed; ``str()`` is a one-line reason safe to show the user."""


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_sandboxed(target: str, args: Sequence[str], limits: Limits, *, cwd: Path) -> None:
    """Run ``target`` (``module:function``) on ``args`` in a limited child; SandboxError if it fails.

    ``cwd`` is the child's working folder (the fresh output folder).
    """
    cmd = [
        sys.executable,
        "-s",
        "-m",
        "mer_bench.data.sandbox",
        json.dumps(asdict(limits)),
        target,
        *args,
    ]
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=_child_env(),
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start the import process ({exc.strerror or exc})") from None
    try:
        _, err = proc.communicate(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SandboxError(
            f"gave up after {limits.wall_seconds:.0f} s (wall-clock limit of the import)"
        ) from None
    except BaseException:  # interrupted (Ctrl-C): do not leave the child running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode == 0:
        return
    lines = err[-_STDERR_KEEP:].decode("utf-8", "replace").strip().splitlines()
    last = lines[-1] if lines else ""
    message = last[len("error: ") :] if last.startswith("error: ") else last[:300]
    code = proc.returncode
    if code == 2 and message:
        raise SandboxError(message)
    if code == 3:
        raise SandboxError(
            f"needs more than the {limits.address_space >> 20} MiB of memory the import of a "
            "file of this size may use"
        )
    if code < 0:
        sig = -code
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            raise SandboxError(f"used more than its {limits.cpu_seconds} s of CPU time")
        if sig == signal.SIGXFSZ:
            raise SandboxError("would write more data than the file can hold")
        raise SandboxError(f"crashed the import process ({signal.Signals(sig).name})")
    raise SandboxError(f"import process failed (exit {code}: {message or 'no message'})")


def _apply(limits: Limits) -> None:
    import resource

    def cap(which: int, value: int) -> None:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else value + 1))

    cap(resource.RLIMIT_AS, limits.address_space)
    cap(resource.RLIMIT_CPU, limits.cpu_seconds)
    cap(resource.RLIMIT_FSIZE, limits.file_size)
    cap(resource.RLIMIT_NOFILE, limits.open_files)
    cap(resource.RLIMIT_CORE, 0)


def _main(argv: list[str]) -> int:
    limits = Limits(**json.loads(argv[0]))
    _apply(limits)
    module, _, function = argv[1].partition(":")
    try:
        import importlib

        from mer_bench.errors import MerBenchError

        func = getattr(importlib.import_module(module), function)
        func(*argv[2:])
    except MemoryError:
        # No allocation from here on: the frames that hold the memory are still alive.
        os.write(2, b"error: out of memory\n")
        os._exit(3)
    except MerBenchError as exc:
        print(f"error: {str(exc).splitlines()[0][:1000]}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk while writing the output
        reason = exc.strerror or type(exc).__name__
        print(f"error: input/output error during the import ({reason})", file=sys.stderr)
        return 2
    except Exception as exc:  # the input is hostile: one line, no traceback
        print(f"internal error {type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
