"""Where the study report lives (this module keeps the old import path working).

- :mod:`densescale.scaling.records`: the result records of a study, checked and averaged into cells.
- :mod:`densescale.scaling.study_fits`: :func:`fit_study`, :class:`SourceFits`, :class:`FitOutcome`.
- :mod:`densescale.scaling.plots`: every figure (one function each).
- :mod:`densescale.scaling.summary`: :func:`write_report` (``summary.md`` and ``fits.json``).
"""

from __future__ import annotations

from .study_fits import FitOutcome, SourceFits, fit_study
from .summary import write_report

__all__ = ["FitOutcome", "SourceFits", "fit_study", "write_report"]
