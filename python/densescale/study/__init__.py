"""Scaling studies: a grid of (model size) x (data size) x (annotation source) cells, each trained
and evaluated independently, then fitted with the scaling laws."""

from densescale.study.config import Cell, StudyConfig, load_study, parse_study
from densescale.study.runner import prepare, run_cell, run_study
from densescale.study.store import ResultsStore

__all__ = [
    "Cell",
    "ResultsStore",
    "StudyConfig",
    "load_study",
    "parse_study",
    "prepare",
    "run_cell",
    "run_study",
]
