"""densescale.scaling: scaling laws of dense retrieval, their fits, budget allocation and reports.

Where things live:

- ``laws.py``: the laws as frozen dataclasses (L(N), L(D), L(N, D) in two forms, L(d), L(N, d)).
- ``fitting.py``: their fits (log-space parameters, Huber loss, bootstrap) and the forecast check.
- ``metric_map.py``: the monotone map from contrastive entropy to MRR@10 / NDCG@10 / ...
- ``budget.py``: the cost model and the budget answers (dollars over (N, D); memory over (N, d)).
- ``records.py``: a study's result records, checked and averaged into cells.
- ``study_fits.py``: :func:`fit_study`, every law of a study per annotation source.
- ``plots.py``: every figure of the report; ``summary.py``: :func:`write_report`.

Pure numpy/scipy (matplotlib only when a plot is drawn): importing this package never imports
torch.
"""

from __future__ import annotations

from .budget import Allocation, CostModel, CostSplit, optimal_allocation, optimal_dim_allocation
from .fitting import (
    ExtrapolationCheck,
    FitError,
    ForecastCheck,
    extrapolation_check,
    fit_data_law,
    fit_dim_law,
    fit_joint_law,
    fit_model_dim_law,
    fit_model_law,
    forecast_check,
)
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
from .plots import plot_budget, plot_training_curves
from .study_fits import FitOutcome, SourceFits, fit_metric_maps, fit_study
from .summary import write_report

__all__ = [
    "Allocation",
    "ChinchillaLaw",
    "CostModel",
    "CostSplit",
    "DataSizeLaw",
    "EmbeddingDimLaw",
    "ExtrapolationCheck",
    "FitError",
    "FitInfo",
    "FitOutcome",
    "ForecastCheck",
    "JointLaw",
    "MetricMap",
    "ModelDimLaw",
    "ModelSizeLaw",
    "SourceFits",
    "extrapolation_check",
    "fit_data_law",
    "fit_dim_law",
    "fit_joint_law",
    "fit_metric_map",
    "fit_metric_maps",
    "fit_model_dim_law",
    "fit_model_law",
    "fit_study",
    "forecast_check",
    "optimal_allocation",
    "optimal_dim_allocation",
    "plot_budget",
    "plot_training_curves",
    "write_report",
]
