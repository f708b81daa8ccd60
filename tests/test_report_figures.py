"""Figures drawn outside a report: the budget contours (``densescale budget --plot``)."""

from __future__ import annotations

import pytest
from test_scaling_budget import COST, PAPER_JOINT

from densescale.report import plot_budget
from densescale.scaling import optimal_allocation


def test_plot_budget_writes_a_png_atomically(tmp_path):
    path = tmp_path / "plots" / "budget.png"
    answer = plot_budget(PAPER_JOINT, COST, 5e4, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in path.parent.iterdir()] == ["budget.png"]  # no temp file left
    assert answer.N == pytest.approx(optimal_allocation(PAPER_JOINT, COST, 5e4).N)
