"""Exact top-k search and candidate scoring: public API, validation, backend dispatch, shard
streaming and the distributed merge.

For queries ``Q`` (M, D) and a corpus ``C`` (N, D)::

    score[m, j] = Q[m] . C[j]                          (metric="ip")
    score[m, j] = Q[m] . C[j] / (|Q[m]| |C[j]|)        (metric="cos"; a zero vector scores 0)

``search`` returns the k best ``j`` per query: scores (M, k) fp32 and ids (M, k) int64, sorted by
score descending, equal scores by smaller id. It equals ``torch.topk(Q @ C.T, k)`` up to the order
of ties, without materialising the (M, N) matrix: the corpus is scored shard by shard and the
per-shard top-k lists are merged.

Low-precision screening (``"cpp"`` on a CPU with AMX-BF16, csrc/screen.h): the corpus is scored in
bf16 against a copy made once per corpus tensor (cached; +2 bytes per element), every (query, row)
pair gets a proven error bound from the measured rounding residuals and the norms (Cauchy-Schwarz
plus fp32 accumulation, derived in csrc/screen.h), the rows whose upper bound can still reach the
k-th largest lower bound are rescored with the exact fp32 kernel's own arithmetic, and the top k
of those is the exact kernel's result, bit for bit. Queries for which the bound keeps too many
rows, zero queries, and corpora with NaN/Inf or norms outside [2^-40, 2^40] run the exact kernel;
so do CPUs without AMX, ``DENSESCALE_ISA`` below avx512 and ``DENSESCALE_SCREEN=off``.

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

import os
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from densescale._native import has_native, native
from densescale._validation import (
    check_choice,
    first_nonfinite_row,
    nonfinite_row_error,
    row_is_finite,
)

METRICS = ("ip", "cos")
SEARCH_BACKENDS = ("auto", "cpp", "torch", "faiss", "triton")
CANDIDATE_BACKENDS = ("auto", "cpp", "torch", "triton")
_CORPUS_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_CPP_TYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# Rows of a corpus chunk the torch / faiss / triton paths move or score at once (bounded memory).
_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class _Shard:
    """One piece of the corpus: rows ``offset .. offset + len(data)`` of the global id space;
    ``name`` is how errors call it (``corpus`` or ``corpus[s]``)."""

    data: torch.Tensor
    offset: int
    name: str = "corpus"


@dataclass
class _NonFinite:
    """What a backend saw of non-finite scores: ``flag`` (a 0-d bool tensor, possibly on the
    device, or None) and/or ``hints``: shard index -> smallest local row the C++ kernel flagged."""

    flag: torch.Tensor | None = None
    hints: dict[int, int] | None = None
    query: int = -1

    def any(self) -> bool:
        if self.hints is not None:
            return bool(self.hints) or self.query >= 0
        return self.flag is not None and bool(self.flag)


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
    """Type / shape / dtype checks; NaN/Inf is detected from the scores (module docstring)."""
    q = _as_tensor("queries", queries)
    _check_matrix("queries", q)
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
            shards.append(_Shard(t, offset, name))
        offset += t.shape[0]
    if offset == 0:
        raise ValueError(f"corpus must not be empty, got 0 rows of dim {dim}")
    return shards


def _row_chunks(t: torch.Tensor, rows: int):
    for r in range(0, t.shape[0], rows):
        yield r, t[r : r + rows]


def _chunk_rows(dim: int, width: int = 1) -> int:
    return max(1, _CHUNK_BYTES // (4 * dim * max(1, width)))


def _shard_row_error(shard: _Shard, row: int, distributed: bool = False) -> ValueError:
    if shard.name != "corpus" or distributed:
        return nonfinite_row_error(shard.name, row, where=f" (id {shard.offset + row})")
    return nonfinite_row_error("corpus", row)


def _raise_nonfinite(
    q: torch.Tensor, shards: list[_Shard], bad: _NonFinite, distributed: bool = False
) -> None:
    """Error path of the score checks: name the first bad query row, else the smallest bad corpus
    row (exact, not the start of a chunk), else say that finite inputs overflowed float32."""
    row = first_nonfinite_row(q)
    if row is not None:
        raise nonfinite_row_error("queries", row)
    for s, shard in enumerate(shards):
        hint = None
        if bad.hints is not None:
            if s not in bad.hints:
                continue  # every bad row flags its scores: this shard has none
            hint = bad.hints[s]
        # The kernel's smallest flagged row is the smallest bad row unless an overflow came first.
        if hint is not None and not row_is_finite(shard.data, hint):
            raise _shard_row_error(shard, hint, distributed)
        row = first_nonfinite_row(shard.data)
        if row is not None:
            raise _shard_row_error(shard, row, distributed)
    where = ""
    if bad.hints:
        s, j = min(bad.hints.items())
        where = f" (e.g. {shards[s].name} row {j})"
    raise ValueError(
        "scores overflow float32: queries and corpus are finite but some inner products are not"
        f"{where}; scale the embeddings down"
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
    bad = _NonFinite(hints={})
    screen_stats.update(candidates=0, queries=0, fallbacks=0)
    for si, shard in enumerate(shards):
        c = shard.data
        if c.device.type != "cpu":
            raise ValueError(f"backend='cpp' needs a CPU corpus, got a shard on {c.device}")
        if c.dtype not in _CPP_TYPE:
            c = c.float()
        if c.stride(1) != 1 or c.stride(0) < c.shape[1]:
            c = c.contiguous()
        n = c.shape[0]
        ks = min(k, n)
        # The screen runs on the public path only (isa="": the active ISA, whose arithmetic its
        # rescoring reproduces); an explicit isa pins the exact kernel of that ISA.
        screen = _screen_copy(c, c is shard.data, q.shape[0], ks, cos, threads) if not isa else None
        scale = screen.scale if screen is not None else (_shard_inverse_norms(c) if cos else None)
        s = torch.empty(q.shape[0], ks, dtype=torch.float32)
        i = torch.empty(q.shape[0], ks, dtype=torch.int64)
        bad_q = bad_row = -1
        if screen is not None:
            bad_q, bad_row = _search_screened(C, q, c, screen, ks, shard.offset, s, i, threads)
        if screen is None or bad_row >= 0:  # NaN/Inf scores: the exact kernel names the row
            bad_q, bad_row = C.search_topk(
                q.data_ptr(), q.shape[0], q.shape[1], c.data_ptr(), n, c.stride(0),
                _CPP_TYPE[c.dtype], 0 if scale is None else scale.data_ptr(), ks, shard.offset,
                s.data_ptr(), i.data_ptr(), threads, isa,
            )  # fmt: skip
        if bad_row >= 0:
            bad.hints[si] = bad_row
            bad.query = bad_q if bad.query < 0 else min(bad.query, bad_q)
            break  # the call raises: the remaining shards need not be scored
        parts = [merge_topk(parts + [(s, i)], k)] if parts else [(s, i)]
    return (*parts[0], bad) if parts else (None, None, bad)


# ---- low-precision screen (csrc/screen.h: the bound, its derivation and the exactness proof) ----
#
# On a CPU with AMX-BF16 the C++ path screens the whole corpus in bf16 against a copy made once
# per corpus tensor (cached below, 2 bytes per element plus 16 bytes per row), keeps the rows
# whose upper bound reaches the k-th largest lower bound, and rescores only those with the exact
# fp32 kernel: the result is search_topk's, bit for bit. Queries for which the bound keeps too
# many rows (more than ``cand_frac`` of the shard) run the exact kernel instead. A copy is keyed
# on the tensor object and torch's version counter (in-place torch ops invalidate it; inference
# tensors have none and are never cached); writes that bypass torch, such as through a numpy
# view of the same memory, are not seen: make a new tensor (or FlatIndex) after such writes.

_SCREEN = {
    "min_rows": 16384,  # smaller shards: the exact kernel (the screen would not pay off)
    "max_k_frac": 1 / 16,  # k above this fraction of the shard: exact kernel
    "cand_frac": 1 / 64,  # per query, more candidates than this fraction: exact kernel
    "pack_min_queries": 256,  # a copy is made on first sight only for batches this large
    "engine": None,  # None: the CPU's ("amx" or none); "off"; tests set "emulated" (portable, slow)
    "bound_scale": 1.0,  # tests only: a wrong (shrunk) bound must be caught by them
    "cache_size": 4,  # corpus tensors whose copies are kept (least recently used dropped)
}
# Counters of the last screened call (for the benchmark and tests): candidates rescored,
# queries screened, queries sent to the exact kernel.
screen_stats = {"candidates": 0, "queries": 0, "fallbacks": 0}


@dataclass
class _ScreenCopy:
    """bf16 copy of one corpus tensor in AMX tile layout plus the per-row bound factors."""

    cpack: torch.Tensor  # (Np * Dp,) int16 (bf16 bits)
    meta: torch.Tensor  # (4 * Np,) fp32
    Np: int
    Dp: int
    scale: torch.Tensor | None  # fp32 inverse norms (cosine) the copy and the rescoring use
    key: tuple
    ok: bool  # False: some row is NaN/Inf or out of the screen's range -> exact kernel

    @property
    def nbytes(self) -> int:
        return self.cpack.numel() * 2 + self.meta.numel() * 4


_screen_cache: dict[tuple[int, bool], tuple[weakref.ref, _ScreenCopy]] = {}


def _screen_engine() -> str | None:
    if _SCREEN["engine"] == "off":
        return None
    if _SCREEN["engine"] is not None:
        return _SCREEN["engine"]
    if os.environ.get("DENSESCALE_SCREEN", "").lower() in ("0", "off", "none"):
        return None
    C = native()
    return "amx" if getattr(C, "screen_engine", lambda: "none")() == "amx" else None


def _screen_copy(c, cacheable, M, k, cos, threads) -> _ScreenCopy | None:
    """The cached screening copy of corpus tensor ``c`` (made now if it pays off), or None when
    the exact kernel should run: no screen on this CPU, a small shard, a large k, or a corpus
    the screen does not take (NaN/Inf or norms outside [2^-40, 2^40])."""
    engine = _screen_engine()
    n = c.shape[0]
    if engine is None or n < _SCREEN["min_rows"] or k > n * _SCREEN["max_k_frac"] or n >= 2**31:
        return None
    if c.is_inference():  # no version counter: in-place changes could not be seen, no caching
        cacheable = False
    key = (c.data_ptr(), tuple(c.shape), tuple(c.stride()), c.dtype, cos)
    key += (c._version,) if cacheable else ()
    ident = (id(c), cos)
    hit = _screen_cache.get(ident) if cacheable else None
    if hit is not None and hit[0]() is c and hit[1].key == key:
        _screen_cache[ident] = _screen_cache.pop(ident)  # most recently used last
        return hit[1] if hit[1].ok else None
    if M < _SCREEN["pack_min_queries"] and not (cacheable and _is_long_lived(c)):
        return None  # a copy for a small batch costs more than the screen saves
    copy = _make_screen_copy(c, key, cos, threads)
    if cacheable:
        _screen_cache.pop(ident, None)
        while len(_screen_cache) >= _SCREEN["cache_size"]:
            _screen_cache.pop(next(iter(_screen_cache)))
        ref = weakref.ref(c, lambda _r, ident=ident: _drop_screen_copy(ident, _r))
        _screen_cache[ident] = (ref, copy)
    return copy if copy.ok else None


_long_lived: dict[int, weakref.ref] = {}


def keep_screen_copy(t: torch.Tensor) -> None:
    """Mark a corpus tensor as long-lived (a ``FlatIndex`` shard): its screening copy is made on
    the first search whatever the batch size, since later searches reuse it."""
    ident = id(t)
    _long_lived[ident] = weakref.ref(t, lambda _r, ident=ident: _long_lived.pop(ident, None))


def _is_long_lived(t: torch.Tensor) -> bool:
    ref = _long_lived.get(id(t))
    return ref is not None and ref() is t


def _drop_screen_copy(ident: tuple[int, bool], ref: weakref.ref) -> None:
    hit = _screen_cache.get(ident)
    if hit is not None and hit[0] is ref:
        del _screen_cache[ident]


def _make_screen_copy(c, key, cos, threads) -> _ScreenCopy:
    n, d = c.shape
    Np, Dp = -(-n // 32) * 32, -(-d // 32) * 32
    scale = _shard_inverse_norms(c) if cos else None
    cpack = torch.empty(Np * Dp, dtype=torch.int16)
    meta = torch.empty(4 * Np, dtype=torch.float32)
    ok = native().screen_pack(
        c.data_ptr(), n, d, c.stride(0), _CPP_TYPE[c.dtype],
        0 if scale is None else scale.data_ptr(), cpack.data_ptr(), meta.data_ptr(), Np, Dp,
        threads,
    )  # fmt: skip
    return _ScreenCopy(cpack, meta, Np, Dp, scale, key, bool(ok))


def _search_screened(C, q, c, copy, k, offset, s, i, threads):
    """Screened top-k of one shard into (s, i); queries the screen gives up on run the exact
    kernel. Returns (bad_query, bad_row) as search_topk (>= 0: NaN/Inf scores were seen)."""
    M, D = q.shape
    n = c.shape[0]
    limit = max(2 * k, int(n * _SCREEN["cand_frac"]))
    fb = torch.zeros(M, dtype=torch.uint8)
    scale = copy.scale
    bad_q, bad_row, cands, n_fb = C.search_topk_screened(
        q.data_ptr(), M, D, copy.cpack.data_ptr(), copy.meta.data_ptr(), copy.Np, copy.Dp,
        c.data_ptr(), n, c.stride(0), _CPP_TYPE[c.dtype], 0 if scale is None else scale.data_ptr(),
        k, offset, s.data_ptr(), i.data_ptr(), fb.data_ptr(), threads,
        _screen_engine(), float(_SCREEN["bound_scale"]), limit,
    )  # fmt: skip
    screen_stats["candidates"] += cands
    screen_stats["queries"] += M - n_fb
    screen_stats["fallbacks"] += n_fb
    if bad_row >= 0 or not n_fb:
        return bad_q, bad_row
    rows = fb.nonzero()[:, 0]
    qf = q[rows].contiguous()
    sf = torch.empty(len(rows), k, dtype=torch.float32)
    i_f = torch.empty(len(rows), k, dtype=torch.int64)
    bad_q, bad_row = C.search_topk(
        qf.data_ptr(), len(rows), D, c.data_ptr(), n, c.stride(0), _CPP_TYPE[c.dtype],
        0 if scale is None else scale.data_ptr(), k, offset, sf.data_ptr(), i_f.data_ptr(),
        threads, "",
    )  # fmt: skip
    s[rows], i[rows] = sf, i_f
    return (int(rows[bad_q]) if bad_q >= 0 else -1), bad_row


def _shard_inverse_norms(c: torch.Tensor) -> torch.Tensor:
    rows = _chunk_rows(c.shape[1])
    return torch.cat([_inverse_norms(chunk) for _, chunk in _row_chunks(c, rows)]).contiguous()


def _finite_flag(scores: torch.Tensor) -> torch.Tensor:
    """0-d bool on the scores' device: False when some score is NaN/Inf (one min/max pass)."""
    return torch.isfinite(torch.stack(torch.aminmax(scores))).all()


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
            # One sync per chunk (~256 MiB of work): NaN scores would break the exact top-k.
            bad = ~_finite_flag(scores)
            if bool(bad):
                return None, None, _NonFinite(flag=bad)
            part = topk_exact(scores, k, shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return (*best, _NonFinite())


def _search_faiss(q, shards, k, cos, threads, chunk_rows=None):
    try:
        import faiss
    except ImportError as e:
        raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu)") from e
    faiss.omp_set_num_threads(threads)
    qn = np.ascontiguousarray(q.float().cpu().numpy())
    rows = chunk_rows or _chunk_rows(q.shape[1])
    best = None
    ok = _finite_flag(q)
    for shard in shards:
        for r, chunk in _row_chunks(shard.data, rows):
            c = chunk.cpu().float()
            # faiss drops NaN scores (they never beat the heap), so its inputs are checked instead.
            ok &= _finite_flag(c)
            if cos:
                c = c * _inverse_norms(c)[:, None]
            index = faiss.IndexFlatIP(q.shape[1])
            index.add(np.ascontiguousarray(c.numpy()))
            ks = min(k, c.shape[0])
            dist, idx = index.search(qn, ks)
            part = sort_pairs(torch.from_numpy(dist), torch.from_numpy(idx) + shard.offset + r)
            best = part if best is None else merge_topk([best, part], k)
    return best[0].to(q.device), best[1].to(q.device), _NonFinite(flag=~ok)


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
    bad = torch.zeros((), dtype=torch.bool, device=q.device)
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
            s, i, b = mod.topk(
                q.to(c.dtype) if c.dtype != torch.float32 else q,
                c.contiguous(),
                min(k, c.shape[0]),
                return_nonfinite=True,
            )
            bad |= b
            part = (s.float(), i + (shard.offset + r))
            best = part if best is None else merge_topk([best, part], k)
    return (*best, _NonFinite(flag=bad))


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

    Equivalent to ``torch.topk(queries @ corpus.T, k)`` computed in fp32, up to tie order. On a
    CPU with AMX the "cpp" path screens a cached bf16 copy of each corpus tensor (made on the
    first call with >= 256 queries, or by ``FlatIndex``) and rescores exactly: same result, see
    the module docstring.
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
                raise ValueError(
                    f"corpus must have dim {q.shape[1]} (the queries' dim), got shape {tuple(t.shape)}"
                )
        n_local = sum(t.shape[0] for t in tensors)
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
    flag = torch.tensor([int(error is not None)], dtype=torch.int64, device=comm_device)
    flags = [torch.empty_like(flag) for _ in range(world)]
    dist.all_gather(flags, flag)
    if error is not None:
        raise error
    bad = [r for r, g in enumerate(flags) if int(g[0])]
    if bad:
        raise ValueError(f"ranks {bad} found NaN or Inf in their search inputs (see their errors)")
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
