"""fp64 brute-force reference and tie-aware comparison for the search tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import densescale
from densescale._native import native
from densescale.ops import search as S


def reference_scores(queries, corpus, metric: str = "ip") -> torch.Tensor:
    """(M, N) fp64 scores from the values actually stored (fp16/bf16 rounding included)."""
    q = torch.as_tensor(
        np.asarray(queries) if isinstance(queries, np.ndarray) else queries
    ).double()
    c = torch.as_tensor(np.asarray(corpus) if isinstance(corpus, np.ndarray) else corpus).double()
    if metric == "cos":
        qn, cn = q.norm(dim=1, keepdim=True), c.norm(dim=1, keepdim=True)
        q = torch.where(qn > 0, q / qn, torch.zeros_like(q))
        c = torch.where(cn > 0, c / cn, torch.zeros_like(c))
    return q @ c.T


def reference_topk(ref: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact order: score descending, ties by smaller id (stable sort over ids 0..N-1)."""
    s, i = torch.sort(ref, dim=1, descending=True, stable=True)
    return s[:, :k], i[:, :k]


def assert_topk_matches(scores, ids, ref: torch.Tensor, k: int, tol: float) -> None:
    """Tie-aware check against fp64 reference scores ``ref`` (M, N).

    - shapes, dtypes, ids distinct and in range, rows sorted (score desc, then id asc);
    - each returned score is the reference score of its id, within tol;
    - the returned values equal the reference top-k values within tol;
    - every id scoring clearly above the k-th reference value (by > 2 tol) is returned, and every
      returned id scores no less than the k-th value - 2 tol (ids agree where scores are distinct).
    """
    M, N = ref.shape
    assert scores.shape == (M, k) and ids.shape == (M, k)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    scores, ids = scores.cpu(), ids.cpu()
    assert bool(((ids >= 0) & (ids < N)).all())
    for m in range(M):
        assert len(set(ids[m].tolist())) == k, "duplicate ids in a row"
    s64 = scores.double()
    assert bool((s64[:, :-1] >= s64[:, 1:]).all()), "scores not sorted descending"
    same = s64[:, :-1] == s64[:, 1:]
    assert bool((~same | (ids[:, :-1] < ids[:, 1:])).all()), "equal scores not ordered by id"
    own = ref.gather(1, ids)
    torch.testing.assert_close(s64, own, atol=tol, rtol=0)
    rs, _ = reference_topk(ref, k)
    torch.testing.assert_close(s64, rs, atol=tol, rtol=0)
    kth = rs[:, -1:]
    must = ref > kth + 2 * tol
    got = torch.zeros_like(must)
    got.scatter_(1, ids, True)
    assert bool((~must | got).all()), "an id clearly inside the top-k is missing"
    assert bool((own >= kth - 2 * tol).all()), "an id clearly outside the top-k was returned"


def tolerance(dim: int, dtype: torch.dtype, scale: float = 1.0) -> float:
    """fp32 accumulation error bound for dot products of roughly unit-variance entries."""
    return 1e-5 * scale * max(1.0, dim**0.5) * 4


def exact_kernel(q, corpus, k: int, metric: str = "ip", isa: str | None = None, threads: int = 2):
    """The exact C++ kernel of one ISA (default: the active one) through the launcher; an
    explicit ISA never screens, so this is the result the screen must reproduce bit for bit."""
    qt = S._check_queries(q)
    shards = S._to_shards(corpus, qt.shape[1])
    if metric == "cos":
        qt = S._normalize(qt)
    s, i, bad = S._search_cpp(qt, shards, k, metric == "cos", threads, isa or native().isa())
    assert not bad.any()
    return s, i


def run_with_isa(code: str, isa: str, timeout: int = 120, **env) -> subprocess.CompletedProcess:
    """Python ``code`` in a fresh process with ``DENSESCALE_ISA=isa`` (the ISA is fixed per process)
    and the tree's densescale and these helpers importable; extra environment from ``env``."""
    path = os.pathsep.join([str(Path(densescale.__file__).parents[1]), str(Path(__file__).parent)])
    env = dict(os.environ, DENSESCALE_ISA=isa, PYTHONPATH=path, **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
