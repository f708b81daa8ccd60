"""Running the ``densescale`` command in a subprocess, as a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``python -m densescale.cli ARGS`` with ``env`` added to the environment; never raises on a
    non-zero exit (the tests read ``returncode`` and ``stderr``)."""
    return subprocess.run(
        [sys.executable, "-m", "densescale.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
