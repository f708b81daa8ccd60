from __future__ import annotations

from pathlib import Path

import pytest
from _cli import run_python

import densescale
from densescale._native import has_native, native


def test_imports_and_native_extension_loads():
    assert callable(densescale.contrastive_loss)
    assert has_native()
    assert native().isa() in ("avx512", "avx2", "generic")
    assert native().max_threads() >= 1


REPO = Path(__file__).resolve().parents[1]


def test_repository_root_shadows_no_installed_distribution():
    """The top-level kernels/ folder is a namespace portion (no __init__.py): from the repository
    root, ``import kernels`` must find the installed ``kernels`` distribution that transformers
    imports, and ``densescale.kernels`` must still resolve to our Triton bodies."""
    assert not (REPO / "kernels" / "__init__.py").exists()
    for top in sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").exists()):
        pytest.fail(f"{top}/ in the repository root is a regular package and shadows installs")
    code = (
        "import importlib.util, sys, transformers.modeling_utils, densescale.losses\n"
        "import densescale.kernels.search, densescale.kernels.contrastive_loss\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "origin = spec.origin if spec else None\n"
        "print(origin)\n"
        "assert origin is None or 'site-packages' in origin, origin\n"
    )
    # `python -c` from the root puts the root first on sys.path, as `python -m pytest` does
    out = run_python(code, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
