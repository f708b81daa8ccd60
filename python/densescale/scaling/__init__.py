"""densescale.scaling: scaling laws of dense retrieval, their fits, budget allocation and reports.

Pure numpy/scipy/matplotlib: importing this package never imports torch.
"""

from __future__ import annotations

from .budget import Allocation, CostModel, CostSplit, optimal_allocation, plot_budget
from .fitting import (
    ExtrapolationCheck,
    FitError,
    extrapolation_check,
    fit_data_law,
    fit_joint_law,
    fit_model_law,
)
from .laws import ChinchillaLaw, DataSizeLaw, FitInfo, JointLaw, ModelSizeLaw

__all__ = [
    "Allocation",
    "ChinchillaLaw",
    "CostModel",
    "CostSplit",
    "DataSizeLaw",
    "ExtrapolationCheck",
    "FitError",
    "FitInfo",
    "JointLaw",
    "ModelSizeLaw",
    "extrapolation_check",
    "fit_data_law",
    "fit_joint_law",
    "fit_model_law",
    "optimal_allocation",
    "plot_budget",
]
