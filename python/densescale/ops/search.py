"""Exact top-k search and candidate scoring: public API, validation, backend dispatch, shard
streaming and the distributed merge.

For queries ``Q`` (M, D) and a corpus ``C`` (N, D)::

    score[m, j] = Q[m] . C[j]                          (metric="ip")
    score[m, j] = Q[m] . C[j] / (|Q[m]| |C[j]|)        (metric="cos"; a zero vector scores 0)

``search`` returns the k best ``j`` per query: scores (M, k) fp32 and ids (M, k) int64, sorted by
score descending, equal scores by smaller id. It equals ``torch.topk(Q @ C.T, k)`` up to the order
of ties, without materialising the (M, N) matrix: the corpus is scored shard by shard and the
per-shard top-k lists are merged.

Backends: ``"cpp"`` (CPU, register-tiled SIMD kernels in ``densescale._C``), ``"triton"`` (CUDA,
``densescale.ops._search_triton``), ``"torch"`` (chunked matmul + tie-exact top-k: the reference),
``"faiss"`` (``IndexFlatIP`` per shard; faiss orders ties its own way), ``"auto"`` (triton for CUDA
queries, cpp on the CPU, torch where those are missing).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from densescale._native import has_native, native
from densescale._validation import check_choice, check_finite

METRICS = ("ip", "cos")
SEARCH_BACKENDS = ("auto", "cpp", "torch", "faiss", "triton")
CANDIDATE_BACKENDS = ("auto", "cpp", "torch", "triton")
_CORPUS_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_CPP_TYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# Rows of a corpus chunk the torch / faiss / triton paths move or score at once (bounded memory).
_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class _Shard:
    """One piece of the corpus: rows ``offset .. offset + len(data)`` of the global id space."""

    data: torch.Tensor
    offset: int


# ---------------------------------------------------------------------------------------------
# validation


def _as_tensor(name: str, x: object) -> torch.Tensor:
    """A torch view of a tensor or numpy array (zero-copy, memmaps included)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float16, np.float64):
            raise TypeError(
                f"{name} must have dtype float32, float16 or float64 (numpy), got {x.dtype}"
            )
        with warnings.catch_warnings():  # read-only memmaps: we never write through the view
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_matrix(name: str, t: torch.Tensor, *, allow_empty: bool = False) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must have 2 dimensions (rows, dim), got shape {tuple(t.shape)}")
    if t.dtype not in _CORPUS_DTYPES:
        raise TypeError(
            f"{name} must be float32, float16 or bfloat16, got {str(t.dtype).replace('torch.', '')}"
        )
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")


def _check_queries(queries: object) -> torch.Tensor:
    q = _as_tensor("queries", queries)
    _check_matrix("queries", q)
    check_finite("queries", q)
    return q


def _to_shards(corpus: object, dim: int) -> list[_Shard]:
    """Tensor, array, memmap or a list of them -> shards with global offsets; shapes checked."""
    pieces = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
    if not pieces:
        raise ValueError("corpus must not be empty, got an empty list of shards")
    shards, offset = [], 0
    for s, piece in enumerate(pieces):
        name = (
            "corpus"
            if len(pieces) == 1 and not isinstance(corpus, (list, tuple))
            else f"corpus[{s}]"
        )
        t = _as_tensor(name, piece)
        _check_matrix(name, t, allow_empty=True)
        if t.shape[1] != dim:
            raise ValueError(
                f"{name} must have dim {dim} (the queries' dim), got shape {tuple(t.shape)}"
            )
        if t.shape[0]:
            shards.append(_Shard(t, offset))
        offset += t.shape[0]
    if offset == 0:
        raise ValueError(f"corpus must not be empty, got 0 rows of dim {dim}")
    return shards


def _row_chunks(t: torch.Tensor, rows: int):
    for r in range(0, t.shape[0], rows):
        yield r, t[r : r + rows]


def _chunk_rows(dim: int, width: int = 1) -> int:
    return max(1, _CHUNK_BYTES // (4 * dim * max(1, width)))


def _check_corpus_finite(shards: list[_Shard]) -> None:
    for s, shard in enumerate(shards):
        for r, chunk in _row_chunks(shard.data, _chunk_rows(shard.data.shape[1])):
            if not bool(torch.isfinite(chunk).all()):
                raise ValueError(
                    f"corpus contains NaN or Inf values (rows from {shard.offset + r})"
                )


def _check_k(k: object, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= int(k) <= n:
        raise ValueError(f"k must be in [1, corpus size = {n}], got {k}")
    return int(k)


# ---------------------------------------------------------------------------------------------
# top-k helpers shared by the backends


def sort_pairs(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score descending, equal scores by smaller id (two stable sorts)."""
    order = torch.argsort(ids, dim=1, stable=True)
    scores, ids = scores.gather(1, order), ids.gather(1, order)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, order), ids.gather(1, order)


def merge_topk(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge per-shard top-k lists (ids already global and distinct) into the global top-k."""
    if len(parts) == 1:
        s, i = parts[0]
        return s[:, :k], i[:, :k]
    s, i = sort_pairs(torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1))
    return s[:, :k].contiguous(), i[:, :k].contiguous()


def topk_exact(scores: torch.Tensor, k: int, id_base: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of a score matrix (M, n) with the exact tie rule (torch.topk picks ties arbitrarily).

    Everything above the k-th value is kept, then the smallest columns among those equal to it.
    """
    M, n = scores.shape
    k = min(k, n)
    kth = torch.topk(scores, k, dim=1, sorted=True).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    need = k - above.sum(1, keepdim=True)
    keep = above | (tied & (torch.cumsum(tied.to(torch.int32), 1) <= need))
    cols = keep.nonzero()[:, 1].view(M, k)  # row-major, so each row is exactly k columns
    return sort_pairs(scores.gather(1, cols), cols + id_base)


def _inverse_norms(t: torch.Tensor) -> torch.Tensor:
    """1 / |row| in fp32 (0 for a zero row, so it scores 0 under cosine)."""
    n = torch.linalg.vector_norm(t.float(), dim=1)
    return torch.where(n > 0, 1.0 / n, torch.zeros_like(n))


def _normalize(q: torch.Tensor) -> torch.Tensor:
    return q.float() * _inverse_norms(q)[:, None]


def _threads(threads: int | None) -> int:
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return threads


# ---------------------------------------------------------------------------------------------
# backends: (fp32 queries (M, D), shards, k, cosine?) -> (scores, ids)


def _search_cpp(q, shards, k, cos, threads, isa=""):
    C = native()
    q = q.float().contiguous()
    parts = []
    for shard in shards:
        c = shard.data
        if c.device.type != "cpu":
            raise ValueError(f"backend='cpp' needs a CPU corpus, got a shard on {c.device}")
        if c.dtype not in _CPP_TYPE:
            c = c.float()
        if c.stride(1) != 1 or c.stride(0) < c.shape[1]:
            c = c.contiguous()
        n = c.shape[0]
        ks = min(k, n)
        scale = _shard_inverse_norms(c) if cos else None
        s = torch.empty(q.shape[0], ks, dtype=torch.float32)
        i = torch.empty(q.shape[0], ks, dtype=torch.int64)
        C.search_topk(
            q.data_ptr(), q.shape[0], q.shape[1], c.data_ptr(), n, c.stride(0), _CPP_TYPE[c.dtype],
            0 if scale is None else scale.data_ptr(), ks, shard.offset, s.data_ptr(), i.data_ptr(),
            threads, isa,
        )  # fmt: skip
        parts = [merge_topk(parts + [(s, i)], k)] if parts else [(s, i)]
    return parts[0]


def _shard_inverse_norms(c: torch.Tensor) -> torch.Tensor:
    rows = _chunk_rows(c.shape[1])
    return torch.cat([_inverse_norms(chunk) for _, chunk in _row_chunks(c, rows)]).contiguous()


def _search_torch(q, shards, k, cos, chunk_rows=None):
    q = q.float()
    rows = chunk_rows or _chunk_rows(q.shape[1], 1 + q.shape[0] // q.shape[1])
    best = None
    for shard in shards:
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.to(q.device, non_blocking=True).float()
            scores = q @ c.T
            if cos:
                scores *= _inverse_norms(c)[None, :]
            part = topk_exact(scores, k, shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return best


def _search_faiss(q, shards, k, cos, threads, chunk_rows=None):
    try:
        import faiss
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu)") from e
    faiss.omp_set_num_threads(threads)
    qn = np.ascontiguousarray(q.float().cpu().numpy())
    rows = chunk_rows or _chunk_rows(q.shape[1])
    best = None
    for shard in shards:
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.cpu().float()
            if cos:
                c = c * _inverse_norms(c)[:, None]
            index = faiss.IndexFlatIP(q.shape[1])
            index.add(np.ascontiguousarray(c.numpy()))
            ks = min(k, c.shape[0])
            dist, idx = index.search(qn, ks)
            part = sort_pairs(torch.from_numpy(dist), torch.from_numpy(idx) + shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return best[0].to(q.device), best[1].to(q.device)


def _triton_module():
    try:
        from densescale.ops import _search_triton
    except ImportError as e:
        raise ImportError(
            "backend='triton' needs triton and densescale.ops._search_triton; use backend='torch'"
        ) from e
    return _search_triton


def _triton_device_ok(device: torch.device) -> bool:
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _search_triton(q, shards, k, cos, chunk_rows=None):
    mod = _triton_module()
    if not _triton_device_ok(q.device):
        raise ValueError(f"backend='triton' needs CUDA queries, got queries on {q.device}")
    q = q.float().contiguous()
    best = None
    for shard in shards:
        # A shard already on the device is scored whole (the kernel never materialises scores);
        # others are streamed: copy a chunk, score it, keep only its top-k.
        on_device = shard.data.device == q.device
        rows = chunk_rows or (shard.data.shape[0] if on_device else _chunk_rows(q.shape[1]))
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.to(q.device, non_blocking=True)
            if c.dtype == torch.float64:
                c = c.float()
            if cos:
                c = (c.float() * _inverse_norms(c)[:, None]).to(c.dtype)
            s, i = mod.topk(
                q.to(c.dtype) if c.dtype != torch.float32 else q, c.contiguous(), min(k, c.shape[0])
            )
            part = (s.float(), i + (shard.offset + r))
            best = part if best is None else merge_topk([best, part], k)
    return best


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


def _local_search(q, shards, k, metric, backend, threads, chunk_rows):
    cos = metric == "cos"
    if cos:
        q = _normalize(q)
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
    check_corpus: bool = True,
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
        check_corpus: reject NaN/Inf in the corpus (a full read; FlatIndex checks on ``add``).

    Equivalent to ``torch.topk(queries @ corpus.T, k)`` computed in fp32, up to tie order.
    """
    check_choice("metric", metric, METRICS)
    check_choice("backend", backend, SEARCH_BACKENDS)
    threads = _threads(threads)
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    if distributed:
        return _search_distributed(
            queries, corpus, k, metric, backend, threads, chunk_rows, check_corpus
        )
    q = _check_queries(queries)
    shards = _to_shards(corpus, q.shape[1])
    k = _check_k(k, shards[-1].offset + shards[-1].data.shape[0])
    backend = _resolve_backend(backend, q.device)
    _check_backend_inputs(backend, q, shards)
    if check_corpus:
        _check_corpus_finite(shards)
    return _local_search(q, shards, k, metric, backend, threads, chunk_rows)


def _search_distributed(queries, corpus, k, metric, backend, threads, chunk_rows, check_corpus):
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
                raise ValueError(
                    f"corpus must have dim {q.shape[1]} (the queries' dim), got shape {tuple(t.shape)}"
                )
        n_local = sum(t.shape[0] for t in tensors)
        if check_corpus:
            _check_corpus_finite([_Shard(t, 0) for t in tensors if t.shape[0]])
        backend = _resolve_backend(backend, q.device)
        _check_backend_inputs(backend, q, [_Shard(t, 0) for t in tensors])
        comm_device = q.device if dist.get_backend() == "nccl" else torch.device("cpu")
    except (ValueError, TypeError) as e:
        error, comm_device = e, torch.device("cuda" if dist.get_backend() == "nccl" else "cpu")
    world, rank = dist.get_world_size(), dist.get_rank()
    info = torch.tensor([n_local, int(error is not None)], dtype=torch.int64, device=comm_device)
    gathered = [torch.empty_like(info) for _ in range(world)]
    dist.all_gather(gathered, info)
    if error is not None:
        raise error
    bad = [r for r, g in enumerate(gathered) if int(g[1])]
    if bad:
        raise ValueError(f"ranks {bad} rejected their search inputs (see their errors)")
    sizes = [int(g[0]) for g in gathered]
    k = _check_k(k, sum(sizes))
    offset = sum(sizes[:rank])
    M = q.shape[0]
    # Pad to k so every rank contributes the same shape; padding (-inf, -1) never wins since the
    # whole corpus holds at least k real rows.
    s = torch.full((M, k), float("-inf"), dtype=torch.float32, device=q.device)
    i = torch.full((M, k), -1, dtype=torch.int64, device=q.device)
    if n_local:
        shards, off = [], offset
        for t in tensors:
            if t.shape[0]:
                shards.append(_Shard(t, off))
            off += t.shape[0]
        ls, li = _local_search(q, shards, min(k, n_local), metric, backend, threads, chunk_rows)
        s[:, : ls.shape[1]] = ls.to(q.device)
        i[:, : li.shape[1]] = li.to(q.device)
    all_s = [torch.empty_like(s, device=comm_device) for _ in range(world)]
    all_i = [torch.empty_like(i, device=comm_device) for _ in range(world)]
    dist.all_gather(all_s, s.to(comm_device))
    dist.all_gather(all_i, i.to(comm_device))
    ms, mi = merge_topk(list(zip(all_s, all_i)), k)
    return ms.to(q.device), mi.to(q.device)


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
    ``einsum("md,mcd->mc", queries, corpus[candidate_ids])`` in fp32.
    """
    check_choice("backend", backend, CANDIDATE_BACKENDS)
    threads = _threads(threads)
    q = _check_queries(queries)
    c = _as_tensor("corpus", corpus)
    _check_matrix("corpus", c)
    if c.shape[1] != q.shape[1]:
        raise ValueError(
            f"corpus must have dim {q.shape[1]} (the queries' dim), got shape {tuple(c.shape)}"
        )
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
        native().score_candidates(
            qf.data_ptr(), M, q.shape[1], c.data_ptr(), N, c.stride(0), _CPP_TYPE[c.dtype],
            ids.data_ptr(), Cn, out.data_ptr(), threads, "",
        )  # fmt: skip
        return out
    if backend == "triton":
        if not _triton_device_ok(q.device):
            raise ValueError(f"backend='triton' needs CUDA queries, got queries on {q.device}")
        return _triton_module().score_candidates(q, c.to(q.device), ids.to(q.device)).float()
    return _score_candidates_torch(q, c, ids)


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
