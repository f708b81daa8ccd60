"""Shared test fixtures and helpers."""

from __future__ import annotations

import os
from pathlib import Path

# Without a GPU, Triton kernels run in its interpreter on the CPU. The switch is read when a kernel
# is defined, so it is set before anything imports densescale.kernels.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch as _torch

        if not _torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:
        pass

import pytest
import torch

MEDQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medquad"


@pytest.fixture(autouse=True, scope="session")
def _query_cache(tmp_path_factory) -> None:
    """Generated queries are cached per user by default; tests (and the CLI subprocesses they start)
    get a fresh cache, so a test never passes on queries an earlier run left behind."""
    os.environ["DENSESCALE_QUERY_CACHE"] = str(tmp_path_factory.mktemp("query-cache"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def medquad_path() -> Path:
    """The real BEIR collection beside the checkout (../shared/data/medquad); skip when absent."""
    path = Path(os.environ.get("DENSESCALE_MEDQUAD", MEDQUAD))
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"MedQuAD not found at {path}")
    return path
