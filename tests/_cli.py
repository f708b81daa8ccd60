"""Running the ``densescale`` command, or a snippet of Python, in a fresh interpreter, as a user's
shell does."""

from __future__ import annotations

import os
import subprocess
import sys


def _python(argv: list[str], env: dict | None, cwd) -> subprocess.CompletedProcess:
    """``python ARGV`` with captured text output; never raises on a non-zero exit (the tests read
    ``returncode`` and ``stderr``)."""
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=env,
    )


def run_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``python -m densescale.cli ARGS`` with ``env`` added to the environment."""
    return _python(["-m", "densescale.cli", *args], {**os.environ, **(env or {})}, cwd)


def run_python(code: str, *, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``python -c CODE``; ``env`` is its whole environment (default: this process's)."""
    return _python(["-c", code], env, cwd)
