"""Scaling studies: a grid of (model size) x (data size) x (annotation source) cells, each trained
and evaluated independently, then fitted with the scaling laws.

- ``config``: the study file (TOML, presets), its grid of ``Cell`` s, the GPU-hour estimate.
- ``prepare``: before any cell: collection, fingerprint, dev split, data checks, tokenizer, BM25;
  and what one cell reads (pairs, negative pool, eval split, chance and oracle yardsticks).
- ``cell``: the unit of work, ``run_cell(study, cell) -> record``, and the cell config it hashes.
- ``executors``: in-process, local process pool, submitit, behind one ``run`` protocol.
- ``folder`` / ``store``: what the folder's results depend on; the atomic results store.
- ``runner``: ``run_study``: prepare, skip finished cells, hand the rest to an executor, report.
"""

from densescale.study.cell import run_cell
from densescale.study.config import Cell, StudyConfig, estimate_gpu_hours, load_study, parse_study
from densescale.study.prepare import prepare
from densescale.study.runner import StudyInterrupted, run_study
from densescale.study.store import ResultsStore

__all__ = [
    "Cell",
    "ResultsStore",
    "StudyConfig",
    "StudyInterrupted",
    "estimate_gpu_hours",
    "load_study",
    "parse_study",
    "prepare",
    "run_cell",
    "run_study",
]
