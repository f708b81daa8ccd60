"""densescale.scaling: scaling laws of dense retrieval, their fits, budget allocation and reports.

Pure numpy/scipy (matplotlib only when a plot is drawn): importing this package never imports
torch.
"""

from __future__ import annotations

from .budget import Allocation, CostModel, CostSplit, optimal_allocation
from .fitting import (
    ExtrapolationCheck,
    FitError,
    extrapolation_check,
    fit_data_law,
    fit_joint_law,
    fit_model_law,
)
from .laws import ChinchillaLaw, DataSizeLaw, FitInfo, JointLaw, ModelSizeLaw
from .plots import plot_budget
from .study_fits import FitOutcome, SourceFits, fit_study
from .summary import write_report

__all__ = [
    "Allocation",
    "ChinchillaLaw",
    "CostModel",
    "CostSplit",
    "DataSizeLaw",
    "ExtrapolationCheck",
    "FitError",
    "FitInfo",
    "FitOutcome",
    "JointLaw",
    "ModelSizeLaw",
    "SourceFits",
    "extrapolation_check",
    "fit_data_law",
    "fit_joint_law",
    "fit_model_law",
    "fit_study",
    "optimal_allocation",
    "plot_budget",
    "write_report",
]
