"""densescale.report: a study's results read, fitted and written up (``summary.md``, ``fits.json``,
figures).

Data flows one way: data -> models -> train -> eval -> :mod:`densescale.scaling` (pure laws, fits,
budget; arrays in, laws out) ; this package reads a study's result records and the scaling
functions, and writes the report. Nothing in ``densescale.scaling`` imports from here.

Where things live:

- ``records.py``: the result records of a study, checked and averaged into cells (and the other
  inputs of a report: oracle CE, lexical baselines).
- ``fits.py``: :func:`fit_study`, every law of a study per annotation source, with forecast checks,
  CE-to-metric maps and budget answers; its results are the records of ``outcomes.py``
  (:class:`FitOutcome`, :class:`SourceFits`).
- ``figures/``: every figure, one function each, one file per figure (the table in
  :mod:`densescale.report.figures` names them; shared styling in ``figures/_style.py``).
- ``summary/``: ``summary.md``, one function per section (the table in
  :mod:`densescale.report.summary` maps each heading to its function).
- ``agreement.py`` (rank agreement of CE and a ranking metric), ``noise.py`` (seed spread
  against the gaps between sizes) and ``yardsticks.py`` (both, and the laws in the metrics, per
  slice of a source: :class:`SourceFits.yardsticks`).
- ``fits_json.py``: ``fits.json``; ``writer.py``: :func:`write_report`, which draws, then writes.

Like ``densescale.scaling`` it never imports torch; matplotlib only when a figure is drawn.
"""

from __future__ import annotations

from .agreement import RankAgreement, rank_agreement
from .figures import plot_budget, plot_training_curves, read_training_log
from .fits import fit_metric_maps, fit_study
from .outcomes import FitOutcome, SourceFits
from .records import cells_of, check_records
from .writer import write_report
from .yardsticks import SourceYardsticks, YardstickOptions

__all__ = [
    "FitOutcome",
    "RankAgreement",
    "SourceFits",
    "SourceYardsticks",
    "YardstickOptions",
    "cells_of",
    "check_records",
    "fit_metric_maps",
    "fit_study",
    "plot_budget",
    "plot_training_curves",
    "rank_agreement",
    "read_training_log",
    "write_report",
]
