"""Exact top-k search and candidate scoring: the public API, backend dispatch and the distributed
merge. The pieces live in ``_search_common`` (validation, shards, tie-exact top-k helpers),
``_search_screen`` (the C++ path: exact kernel and low-precision screen) and ``_search_backends``
(torch, faiss, Triton).

For queries ``Q`` (M, D) and a corpus ``C`` (N, D)::

    score[m, j] = Q[m] . C[j]                          (metric="ip")
    score[m, j] = Q[m] . C[j] / (|Q[m]| |C[j]|)        (metric="cos"; a zero vector scores 0)

``search`` returns the k best ``j`` per query: scores (M, k) fp32 and ids (M, k) int64, sorted by
score descending, equal scores by smaller id. It equals ``torch.topk(Q @ C.T, k)`` up to the order
of ties and of near-ties within fp32 rounding (each backend sums the products in its own order),
without materialising the (M, N) matrix: the corpus is scored shard by shard and the per-shard
top-k lists are merged.

Low-precision screening (``"cpp"`` on a CPU with AVX2 or AVX-512, csrc/screen.h; the engine is
chosen at run time: AMX (bf16) first, then AVX512-VNNI, AVX-512BW and AVX2 (int8);
``DENSESCALE_SCREEN=amx|avx512vnni|avx512bf16|avx512bw|avx2`` pins one, ``off`` turns it off, and
``search_engine()`` says which runs): the corpus is scored in bf16 or int8 against a copy made
once per corpus tensor (cached; +2 or +1 bytes per element), every
(query, row) pair gets a proven error bound from the measured rounding residuals and the norms
(Cauchy-Schwarz plus fp32 accumulation, derived in csrc/screen.h), the rows whose upper bound can
still reach the k-th largest lower bound are rescored with the exact fp32 kernel's own
arithmetic, and the top k of those is the exact kernel's result, bit for bit. The exact kernel
runs instead for: shards below ``_SCREEN["min_rows"]`` (16,384) rows; k above 1/16 of the shard,
or above 256 on the int8 engines; a plain tensor without a copy yet, searched with fewer than 256
queries; queries for which the bound keeps too many rows; zero queries; corpora with a nonzero
row norm outside [2^-40, 2^40] (a RuntimeWarning names the row); CPUs without AVX2,
``DENSESCALE_ISA=generic`` and ``DENSESCALE_SCREEN=off``. A NaN/Inf row is an error (below).

Backends: ``"cpp"`` (CPU, register-tiled SIMD kernels in ``densescale._C``), ``"triton"`` (CUDA,
``densescale.ops._search_triton``), ``"torch"`` (chunked matmul + tie-exact top-k: the reference),
``"faiss"`` (``IndexFlatIP`` per shard; faiss orders ties its own way), ``"auto"`` (triton for CUDA
queries, cpp on the CPU, torch where those are missing).

NaN / Inf inputs cost no pass over the data: a NaN/Inf element in a query or corpus row makes every
score of that row NaN or +-Inf, so each backend checks the scores it computes anyway (the C++
kernels record the smallest query / corpus row with a non-finite score, the Triton kernel a flag
per program, the torch path one min/max per score chunk). Only on that error path are the inputs
read to name the exact row (``ValueError: corpus row 17 holds NaN or Inf; ...``), or to say that
finite inputs overflowed float32. faiss drops non-finite scores, so that backend checks its input
chunks (one min/max pass) instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from densescale._native import has_native, native
from densescale._validation import (
    check_choice,
    first_nonfinite_row,
    nonfinite_row_error,
    row_is_finite,
)
from densescale.ops._search_backends import (
    _search_faiss,
    _search_torch,
    _search_triton,
    _triton_device_ok,
    _triton_module,
)
from densescale.ops._search_common import (  # noqa: F401  (re-exported for tests and tools)
    _CHUNK_BYTES,
    _CPP_TYPE,
    CANDIDATE_BACKENDS,
    METRICS,
    SEARCH_BACKENDS,
    _as_tensor,
    _check_k,
    _check_matrix,
    _check_queries,
    _finite_flag,
    _inverse_norms,
    _NonFinite,
    _normalize,
    _raise_nonfinite,
    _Shard,
    _threads,
    _to_shards,
    dim_mismatch,
    merge_topk,
    sort_pairs,
    topk_exact,
)
from densescale.ops._search_screen import (  # noqa: F401  (re-exported for tests and tools)
    _SCREEN,
    _make_screen_copy,
    _screen_copy,
    _screen_engine,
    _search_cpp,
    keep_screen_copy,
    screen_stats,
    search_engine,
)


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend != "auto":
        return backend
    if device.type == "cuda":
        try:
            _triton_module()
            return "triton"
        except ImportError:
            return "torch"
    return "cpp" if has_native() else "torch"


def _check_backend_inputs(backend: str, q: torch.Tensor, shards: list[_Shard]) -> None:
    """Device and availability checks that must pass before any shard is scored."""
    if backend == "cpp":
        native()  # raises the ImportError that says how to build the kernels when missing
        if q.device.type != "cpu":
            raise ValueError(f"backend='cpp' needs CPU queries, got queries on {q.device}")
        for shard in shards:
            if shard.data.device.type != "cpu":
                raise ValueError(
                    f"backend='cpp' needs a CPU corpus, got a shard on {shard.data.device}"
                )
    elif backend == "triton":
        _triton_module()
        if not _triton_device_ok(q.device):
            raise ValueError(f"backend='triton' needs CUDA queries, got queries on {q.device}")
    elif backend == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError as e:
            raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu)") from e


def _local_search(q, shards, k, metric, backend, threads, chunk_rows, *, distributed=False):
    """Search one process's shards; NaN/Inf found in the scores raises naming the row."""
    s, i, bad = _local_search_flagged(q, shards, k, metric, backend, threads, chunk_rows)
    if bad.any():
        _raise_nonfinite(q, shards, bad, distributed)
    return s, i


def _local_search_flagged(q, shards, k, metric, backend, threads, chunk_rows):
    cos = metric == "cos"
    if cos:
        q = _normalize(q)  # a NaN/Inf query stays non-finite (its norm gives 0 * NaN)
    if backend == "cpp":
        if q.device.type != "cpu":
            raise ValueError(f"backend='cpp' needs CPU queries, got queries on {q.device}")
        return _search_cpp(q, shards, k, cos, threads)
    if backend == "torch":
        return _search_torch(q, shards, k, cos, chunk_rows)
    if backend == "faiss":
        return _search_faiss(q, shards, k, cos, threads, chunk_rows)
    return _search_triton(q, shards, k, cos, chunk_rows)


# ---------------------------------------------------------------------------------------------
# public API


def search(
    queries: torch.Tensor | np.ndarray,
    corpus: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    k: int,
    *,
    metric: str = "ip",
    backend: str = "auto",
    distributed: bool = False,
    threads: int | None = None,
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k: ``(scores (M, k) fp32, ids (M, k) int64)``, best first, ties by smaller id.

    Args:
        queries: (M, D) fp32 / fp16 / bf16 tensor or numpy array.
        corpus: (N, D) tensor or array (a numpy memmap is read in place), or a list of such shards
            whose ids continue one after the other (shard s starts at the sum of earlier lengths).
        k: 1 <= k <= N.
        metric: "ip" (inner product) or "cos" (cosine; zero vectors score 0).
        backend: "auto", "cpp", "torch", "faiss" or "triton" (see the module docstring).
        distributed: with ``torch.distributed`` initialised, ``corpus`` is this rank's shard; ids
            are numbered rank by rank, every rank gets the global top-k of the same queries.
        threads: CPU threads for "cpp" / "faiss" (default ``torch.get_num_threads()``).
        chunk_rows: corpus rows scored at once by the torch / faiss / triton paths (default: about
            256 MiB of work per chunk), the unit of streaming for corpora larger than memory.

    Equivalent to ``torch.topk(queries @ corpus.T, k)`` computed in fp32, up to the order of ties
    and of near-ties within fp32 rounding (another summation order). On a
    CPU with AVX2 or AVX-512 the "cpp" path screens a cached bf16 / int8 copy of each corpus
    tensor (made on the first call with >= 256 queries, or by ``FlatIndex``) and rescores
    exactly: same result, see the module docstring. float64 inputs are converted to fp32 on
    every call (and their copy is never cached): convert a float64 corpus once.
    A NaN/Inf in a query or corpus row raises ``ValueError`` naming the argument and the row
    (``corpus row 17 holds NaN or Inf``), detected from the scores without a pass over the data.
    """
    check_choice("metric", metric, METRICS)
    check_choice("backend", backend, SEARCH_BACKENDS)
    threads = _threads(threads)
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    if distributed:
        return _search_distributed(queries, corpus, k, metric, backend, threads, chunk_rows)
    q = _check_queries(queries)
    shards = _to_shards(corpus, q.shape[1])
    k = _check_k(k, shards[-1].offset + shards[-1].data.shape[0])
    backend = _resolve_backend(backend, q.device)
    _check_backend_inputs(backend, q, shards)
    return _local_search(q, shards, k, metric, backend, threads, chunk_rows)


def _search_distributed(queries, corpus, k, metric, backend, threads, chunk_rows):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "distributed=True needs torch.distributed to be initialised (init_process_group)"
        )
    # Validate locally, then agree: a rank that raised alone would leave the others waiting.
    error: Exception | None = None
    n_local = 0
    try:
        q = _check_queries(queries)
        pieces = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
        tensors = [_as_tensor("corpus", p) for p in pieces]
        for t in tensors:
            _check_matrix("corpus", t, allow_empty=True)
            if t.shape[1] != q.shape[1]:
                raise dim_mismatch("corpus", t, q.shape[1])
        n_local = sum(t.shape[0] for t in tensors)
        backend = _resolve_backend(backend, q.device)
        _check_backend_inputs(backend, q, [_Shard(t, 0) for t in tensors])
        comm_device = q.device if dist.get_backend() == "nccl" else torch.device("cpu")
    except (ValueError, TypeError) as e:
        error, comm_device = e, torch.device("cuda" if dist.get_backend() == "nccl" else "cpu")
    world, rank = dist.get_world_size(), dist.get_rank()
    gathered = _agree([n_local], error, comm_device, "rejected their search inputs")
    sizes = [int(g[0]) for g in gathered]
    k = _check_k(k, sum(sizes))
    offset = sum(sizes[:rank])
    M = q.shape[0]
    # Pad to k so every rank contributes the same shape; padding (-inf, -1) never wins since the
    # whole corpus holds at least k real rows.
    s = torch.full((M, k), float("-inf"), dtype=torch.float32, device=q.device)
    i = torch.full((M, k), -1, dtype=torch.int64, device=q.device)
    error = None
    if n_local:
        shards, off = [], offset
        for p_i, t in enumerate(tensors):
            if t.shape[0]:
                shards.append(_Shard(t, off, "corpus" if len(tensors) == 1 else f"corpus[{p_i}]"))
            off += t.shape[0]
        try:  # NaN/Inf shows in the scores; the ranks agree on it before exchanging results
            ls, li = _local_search(
                q, shards, min(k, n_local), metric, backend, threads, chunk_rows, distributed=True
            )
            s[:, : ls.shape[1]] = ls.to(q.device)
            i[:, : li.shape[1]] = li.to(q.device)
        except ValueError as e:
            error = e
    _agree([], error, comm_device, "found NaN or Inf in their search inputs")
    all_s = [torch.empty_like(s, device=comm_device) for _ in range(world)]
    all_i = [torch.empty_like(i, device=comm_device) for _ in range(world)]
    dist.all_gather(all_s, s.to(comm_device))
    dist.all_gather(all_i, i.to(comm_device))
    ms, mi = merge_topk(list(zip(all_s, all_i)), k)
    return ms.to(q.device), mi.to(q.device)


def _agree(values: list[int], error, comm_device, failed: str) -> list[torch.Tensor]:
    """All-gather this rank's ``values`` and whether it failed, so that every rank raises together
    (a rank raising alone would leave the others waiting): its own ``error``, or one naming the
    ranks that ``failed``. Returns the gathered (values..., flag) tensors, rank by rank."""
    import torch.distributed as dist

    mine = torch.tensor([*values, int(error is not None)], dtype=torch.int64, device=comm_device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    if error is not None:
        raise error
    bad = [r for r, g in enumerate(gathered) if int(g[-1])]
    if bad:
        raise ValueError(f"ranks {bad} {failed} (see their errors)")
    return gathered


def score_candidates(
    queries: torch.Tensor | np.ndarray,
    corpus: torch.Tensor | np.ndarray,
    candidate_ids: torch.Tensor | np.ndarray,
    *,
    backend: str = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """Scores of given candidates: ``out[m, c] = queries[m] . corpus[candidate_ids[m, c]]``.

    Args:
        queries: (M, D) fp32 / fp16 / bf16.
        corpus: (N, D) fp32 / fp16 / bf16 tensor or array (memmap read in place).
        candidate_ids: (M, C) integer ids in [0, N), -1 for padding.
        backend: "auto", "cpp", "torch" or "triton".

    Returns (M, C) fp32 with -inf at padding; equivalent to
    ``einsum("md,mcd->mc", queries, corpus[candidate_ids])`` in fp32. A NaN/Inf in a query or in
    a candidate row raises ``ValueError`` naming it (``corpus row 17 holds NaN or Inf``), found
    from the scores; rows that no candidate id points at are not read.
    """
    return _score_candidates(queries, corpus, candidate_ids, backend, threads)


def _score_candidates(
    queries, corpus, candidate_ids, backend, threads, names=("queries", "corpus"), query_base=0
):
    """``score_candidates`` with the names errors use (``contrastive_entropy`` passes its own
    argument names, and the offset of this block of queries among all of them)."""
    check_choice("backend", backend, CANDIDATE_BACKENDS)
    threads = _threads(threads)
    q = _check_queries(queries)
    c = _as_tensor("corpus", corpus)
    _check_matrix("corpus", c)
    if c.shape[1] != q.shape[1]:
        raise dim_mismatch("corpus", c, q.shape[1])
    if isinstance(candidate_ids, np.ndarray):
        candidate_ids = torch.from_numpy(candidate_ids)
    if not isinstance(candidate_ids, torch.Tensor):
        raise TypeError(
            f"candidate_ids must be a torch.Tensor or numpy.ndarray, got {type(candidate_ids).__name__}"
        )
    if (
        candidate_ids.dtype.is_floating_point
        or candidate_ids.dtype == torch.bool
        or candidate_ids.is_complex()
    ):
        raise TypeError(f"candidate_ids must be an integer tensor, got {candidate_ids.dtype}")
    if candidate_ids.dim() != 2 or candidate_ids.shape[0] != q.shape[0]:
        raise ValueError(
            f"candidate_ids must have shape (M={q.shape[0]}, C), got {tuple(candidate_ids.shape)}"
        )
    ids = candidate_ids.to(torch.int64)
    N = c.shape[0]
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < -1 or hi >= N:
            bad = lo if lo < -1 else hi
            raise ValueError(f"candidate_ids must be in [0, {N}) or -1 for padding, got {bad}")
    backend = _resolve_backend(backend, q.device)
    M, Cn = ids.shape
    if backend == "cpp":
        if q.device.type != "cpu" or c.device.type != "cpu":
            raise ValueError("backend='cpp' needs CPU queries and corpus")
        if c.dtype not in _CPP_TYPE:
            c = c.float()
        if c.stride(1) != 1 or c.stride(0) < c.shape[1]:
            c = c.contiguous()
        qf, ids = q.float().contiguous(), ids.contiguous()
        out = torch.empty(M, Cn, dtype=torch.float32)
        _, bad_row = native().score_candidates(
            qf.data_ptr(), M, q.shape[1], c.data_ptr(), N, c.stride(0), _CPP_TYPE[c.dtype],
            ids.data_ptr(), Cn, out.data_ptr(), threads, "",
        )  # fmt: skip
        if bad_row >= 0:
            _raise_candidates_nonfinite(q, c, ids, names, query_base, hint=bad_row)
        return out
    if backend == "triton":
        if not _triton_device_ok(q.device):
            raise ValueError(f"backend='triton' needs CUDA queries, got queries on {q.device}")
        ids = ids.to(q.device)
        out = _triton_module().score_candidates(q, c.to(q.device), ids).float()
    else:
        out = _score_candidates_torch(q, c, ids)
    # Padding is -inf by definition: look at the real candidates only (one pass over (M, C)).
    if ids.numel() and not bool(_finite_flag(out.masked_fill(ids.to(out.device) < 0, 0.0))):
        _raise_candidates_nonfinite(q, c, ids, names, query_base)
    return out


def _raise_candidates_nonfinite(q, c, ids, names, query_base, hint=None):
    """Error path of score_candidates: the first bad query row, else the smallest bad candidate
    row (only rows some id points at were scored), else an overflow of finite inputs."""
    q_name, c_name = names
    row = first_nonfinite_row(q)
    if row is not None:
        raise nonfinite_row_error(q_name, query_base + row)
    if hint is not None and not row_is_finite(c, hint):
        raise nonfinite_row_error(c_name, hint)  # the kernel reports the smallest flagged id
    used = torch.unique(ids[ids >= 0].cpu())
    row = first_nonfinite_row(c[used.to(c.device)] if c.device.type != "cpu" else c[used])
    if row is not None:
        raise nonfinite_row_error(c_name, int(used[row]))
    raise ValueError(
        f"scores overflow float32: {q_name} and the scored {c_name} rows are finite but some "
        "inner products are not; scale the embeddings down"
    )


def _score_candidates_torch(q: torch.Tensor, c: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Reference: gather + batched dot in fp32, a block of queries at a time (bounded memory)."""
    M, Cn = ids.shape
    ids = ids.to(q.device)
    out = torch.empty(M, Cn, dtype=torch.float32, device=q.device)
    rows = max(1, _CHUNK_BYTES // (4 * q.shape[1] * max(1, Cn)))
    for m0 in range(0, M, rows):
        blk = ids[m0 : m0 + rows]
        pad = blk < 0
        g = (
            c[blk.clamp_min(0).cpu()].to(q.device).float()
            if c.device != q.device
            else c[blk.clamp_min(0)].float()
        )
        s = torch.einsum("md,mcd->mc", q[m0 : m0 + rows].float(), g)
        out[m0 : m0 + rows] = s.masked_fill(pad, float("-inf"))
    return out
