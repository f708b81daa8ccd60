"""The layering of issue 22: ``densescale.scaling`` is pure (laws over arrays) and never reaches
the report, the report reads records and the scaling functions, and neither imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"
SCALING_DIR = PYTHON_DIR / "densescale" / "scaling"


def _run(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_scaling_imports_neither_torch_nor_the_report():
    _run(
        "import sys, densescale.scaling\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
        "assert 'densescale.report' not in sys.modules, 'the report imported'"
    )


def test_report_imports_no_torch():
    _run(
        "import sys, densescale.report\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported before any figure'"
    )


def test_no_scaling_module_imports_the_report():
    for path in sorted(SCALING_DIR.glob("*.py")):
        lines = [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip().startswith(("import ", "from "))
        ]
        # the lazy forwarding of moved names in __init__ is the one allowed reference
        if path.name == "__init__.py":
            lines = [line for line in lines if line != "import densescale.report"]
        assert not [line for line in lines if "report" in line], path.name


def test_each_figure_function_lives_in_the_file_its_table_names():
    from densescale.report import figures

    table = {
        "plot_loss_vs_n": "sizes",
        "plot_loss_vs_d": "sizes",
        "plot_loss_vs_dim": "dims",
        "plot_residuals": "residuals",
        "plot_forecasts": "forecasts",
        "plot_sources": "sources",
        "plot_metric_maps": "metric_maps",
        "plot_budget": "budget",
        "plot_training_curves": "training",
    }
    for name, module in table.items():
        assert getattr(figures, name).__module__ == f"densescale.report.figures.{module}"
        assert f"``{module}.py``" in figures.__doc__
