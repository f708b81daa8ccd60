"""densescale.scaling: the scaling laws of dense retrieval, their fits and budget answers; pure
numpy/scipy over arrays, no files, no figures.

Data flows one way: data -> models -> train -> eval -> scaling (pure: arrays in, laws out) ;
:mod:`densescale.report` reads a study's results and these functions, and writes the report
(fits over records, figures, ``summary.md``, ``fits.json``). Nothing here imports from there.

Where things live:

- ``laws.py``: the laws as frozen dataclasses (L(N), L(D), L(d); L(N, D) in two forms; L(N, d)).
- ``fitting.py``: their fits (log-space parameters, Huber loss, L-BFGS-B, bootstrap, FitError);
  ``forecast.py``: the forecast check (a law refitted without its largest sizes).
- ``metric_map.py``: the monotone map from contrastive entropy to MRR@10 / NDCG@10 / ...
- ``budget.py``: the cost model and the budget answers (dollars over (N, D); memory over (N, d)).
- ``usability.py``: the checks a fitted law must pass before it answers anything (SPEC 7):
  :class:`LawChecks` (thresholds, documented there), :func:`check_law` -> :class:`Usability`.
- ``exchange.py``: the exchange rate between annotation sources (pairs of one source that reach
  the loss of D pairs of another, from their data-size laws, with bootstrap intervals);
  ``exchange_measured.py``: the same rate read off the measured cells, with no law and no
  extrapolation (where a law fails its checks, the cells still compare the sources in range).
- ``source_mix.py``: a budget spent on a mix of annotation sources (which pairs of which source,
  and which N), with effective human data adding up across sources (its stated assumption).
- ``_checks.py``: the argument checks they share (numpy only).

Importing this package never imports torch or matplotlib.
"""

from __future__ import annotations

from .budget import Allocation, CostModel, CostSplit, optimal_allocation, optimal_dim_allocation
from .exchange import ExchangeRate, crossings, effective_data, exchange_rate, pairs_to_match
from .exchange_measured import MeasuredExchange, measured_exchange
from .fitting import (
    FitError,
    FitOptions,
    fit_data_law,
    fit_dim_law,
    fit_joint_law,
    fit_model_dim_law,
    fit_model_law,
)
from .forecast import ExtrapolationCheck, ForecastCheck, extrapolation_check, forecast_check
from .laws import (
    ChinchillaLaw,
    DataSizeLaw,
    EmbeddingDimLaw,
    FitInfo,
    JointLaw,
    ModelDimLaw,
    ModelSizeLaw,
)
from .metric_map import MetricMap, fit_metric_map
from .source_mix import SourceMix, mix_loss, optimal_mix
from .usability import LawChecks, Usability, check_law, extrapolation, extrapolation_text

__all__ = [
    "Allocation",
    "ChinchillaLaw",
    "CostModel",
    "CostSplit",
    "DataSizeLaw",
    "EmbeddingDimLaw",
    "ExchangeRate",
    "ExtrapolationCheck",
    "FitError",
    "FitInfo",
    "FitOptions",
    "ForecastCheck",
    "JointLaw",
    "LawChecks",
    "MeasuredExchange",
    "MetricMap",
    "ModelDimLaw",
    "ModelSizeLaw",
    "SourceMix",
    "Usability",
    "check_law",
    "crossings",
    "effective_data",
    "exchange_rate",
    "extrapolation",
    "extrapolation_check",
    "extrapolation_text",
    "fit_data_law",
    "fit_dim_law",
    "fit_joint_law",
    "fit_metric_map",
    "fit_model_dim_law",
    "fit_model_law",
    "forecast_check",
    "measured_exchange",
    "mix_loss",
    "optimal_allocation",
    "optimal_dim_allocation",
    "optimal_mix",
    "pairs_to_match",
]

# Names that moved to densescale.report with the split of issue 22. They still resolve here
# (lazily: importing densescale.scaling stays free of the report) until every caller imports
# them from densescale.report; they are not part of this package's API.
_MOVED_TO_REPORT = frozenset(
    {
        "FitOutcome",
        "SourceFits",
        "fit_study",
        "plot_budget",
        "plot_training_curves",
        "write_report",
    }
)


def __getattr__(name: str):
    if name in _MOVED_TO_REPORT:
        import densescale.report

        return getattr(densescale.report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
