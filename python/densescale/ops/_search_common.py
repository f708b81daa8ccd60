"""Shared pieces of exact top-k search (densescale.ops.search): input validation, shards, the
NaN/Inf error path, the tie-exact top-k helpers every backend uses, norms and thread counts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from densescale._validation import first_nonfinite_row, nonfinite_row_error, row_is_finite

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
            f"{name} must be float32, float16 or bfloat16 (float64 is converted to float32), got "
            f"{str(t.dtype).replace('torch.', '')}"
        )
    if not allow_empty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")


def _check_queries(queries: object) -> torch.Tensor:
    """Type / shape / dtype checks; NaN/Inf is detected from the scores (module docstring)."""
    q = _as_tensor("queries", queries)
    _check_matrix("queries", q)
    return q


def dim_mismatch(name: str, t: torch.Tensor, dim: int) -> ValueError:
    """The error for a corpus whose width is not the queries' (either side may be the wrong one)."""
    return ValueError(
        f"{name} and queries must have the same dim: the queries have dim {dim}, {name} has "
        f"shape {tuple(t.shape)}"
    )


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
            raise dim_mismatch(name, t, dim)
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


def _shard_inverse_norms(c: torch.Tensor) -> torch.Tensor:
    rows = _chunk_rows(c.shape[1])
    return torch.cat([_inverse_norms(chunk) for _, chunk in _row_chunks(c, rows)]).contiguous()


def _finite_flag(scores: torch.Tensor) -> torch.Tensor:
    """0-d bool on the scores' device: False when some score is NaN/Inf (one min/max pass)."""
    return torch.isfinite(torch.stack(torch.aminmax(scores))).all()
