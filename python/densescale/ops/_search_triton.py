"""Triton launchers for exact top-k search and candidate scoring (kernel bodies: densescale.kernels.search).

``topk(queries, corpus, k)`` returns the k largest inner products per query, sorted by score
descending with ties broken by the smaller corpus id. For k up to ``MAX_KERNEL_K`` it runs the fused
kernel (score tiles + running top-k in registers; the (M, N) score matrix is never written); above
that it falls back to chunked matmul + ``torch.topk`` on the same packed (score, id) keys, so both
paths order ties identically.

``score_candidates(queries, corpus, candidate_ids)`` scores each query against its own candidate rows.

Both run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (tests). Cosine is the
caller's business (normalise first); id ranges are validated by the caller. NaN/Inf inputs are
detected from the scores: ``topk(..., return_nonfinite=True)`` also returns a 0-d bool tensor on
the device, True when some score was NaN/Inf (no extra read of the inputs, no host sync).
"""

from __future__ import annotations

import contextlib
import operator
import os

import torch

__all__ = ["MAX_KERNEL_K", "score_candidates", "topk", "topk_chunked"]

MAX_KERNEL_K = 256  # largest k (padded to a power of two) kept in registers by the fused kernel
MAX_CORPUS_ROWS = 2**32 - 1  # ids share a 64-bit key with the score: 32 bits each
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MERGE_GROUP = 16  # sorted lists merged by one program in one round of the split merge
_FALLBACK_ELEMENTS = 2**25  # score elements per fallback chunk (fp32 scores + int64 keys ~ 400 MB)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


def _check_pow2(name: str, value: int, minimum: int) -> None:
    if value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value}")


def _check_pair(queries: torch.Tensor, corpus: torch.Tensor) -> None:
    for name, t in (("queries", queries), ("corpus", corpus)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (rows, D), got {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if queries.dtype != corpus.dtype:
        raise TypeError(
            f"corpus has dtype {corpus.dtype} but queries have {queries.dtype}; they must match"
        )
    if queries.device != corpus.device:
        raise ValueError(f"corpus is on {corpus.device} but queries are on {queries.device}")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"corpus must have D = {queries.shape[1]} columns like queries, got {corpus.shape[1]}"
        )
    if queries.device.type != "cuda" and not _interpreting():
        raise ValueError(
            f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1), got {queries.device}"
        )


def _pack_keys_torch(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Same packing as kernels.search._pack_keys: (score desc, id asc) -> one descending int64 key."""
    scores = torch.where(scores == 0, torch.zeros_like(scores), scores)
    bits = scores.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered.to(torch.int64) << 32) | (0xFFFFFFFF - ids)


def _unpack_keys_torch(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ordered = (keys >> 32).to(torch.int32)
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered)
    return bits.view(torch.float32), 0xFFFFFFFF - (keys & 0xFFFFFFFF)


def topk_chunked(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    *,
    query_chunk: int | None = None,
    corpus_chunk: int | None = None,
    return_nonfinite: bool = False,
):
    """Large-k path: per (query chunk, corpus chunk), S = Q C^T in fp32, then ``torch.topk`` (radix
    select on GPU) of packed keys, merged chunk by chunk into a running (chunk, k) list.

    Peak extra memory is about 12 bytes x query_chunk x (corpus_chunk + 2k).
    """
    M, N = queries.shape[0], corpus.shape[0]
    if corpus_chunk is None:
        corpus_chunk = max(k, min(N, 1 << 16))
    if query_chunk is None:
        query_chunk = max(1, min(M, _FALLBACK_ELEMENTS // (corpus_chunk + 2 * k)))
    scores_out = torch.empty((M, k), dtype=torch.float32, device=queries.device)
    ids_out = torch.empty((M, k), dtype=torch.int64, device=queries.device)
    bad = torch.zeros((), dtype=torch.bool, device=queries.device)
    for m0 in range(0, M, query_chunk):
        q = queries[m0 : m0 + query_chunk].float()
        best: torch.Tensor | None = None
        for n0 in range(0, N, corpus_chunk):
            c = corpus[n0 : n0 + corpus_chunk].float()
            ids = torch.arange(n0, n0 + c.shape[0], device=q.device, dtype=torch.int64)
            sc = q @ c.T
            if return_nonfinite:
                bad |= ~torch.isfinite(sc).all()
            keys = _pack_keys_torch(sc, ids)
            if best is not None:
                keys = torch.cat((best, keys), dim=1)
            best = torch.topk(keys, min(k, keys.shape[1]), dim=1, sorted=True).values
        assert best is not None and best.shape[1] == k
        s, i = _unpack_keys_torch(best)
        scores_out[m0 : m0 + q.shape[0]] = s
        ids_out[m0 : m0 + q.shape[0]] = i
    if return_nonfinite:
        return scores_out, ids_out, bad
    return scores_out, ids_out


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the inputs' one (cuda:1 etc.)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # interpreter: a few splits so the merge step runs


def _merge_splits(
    keys: torch.Tensor,
    scores: torch.Tensor,
    ids: torch.Tensor,
    k: int,
    k_pad: int,
    group: int = MERGE_GROUP,
) -> None:
    """Tree-merge keys (S, M, k_pad) of sorted per-split lists into scores / ids (M, k), ``group``
    lists per program per round, so hundreds of splits (few queries) still merge in parallel."""
    from densescale.kernels.search import _topk_merge_kernel

    num_lists, M = keys.shape[0], keys.shape[1]
    block_m = max(1, min(16, 4096 // k_pad))
    while True:
        groups = _cdiv(num_lists, group)
        out = (
            torch.empty((groups, M, k_pad), dtype=torch.int64, device=keys.device)
            if groups > 1
            else keys
        )
        _topk_merge_kernel[(_cdiv(M, block_m), groups)](
            keys, out, scores, ids, M, k, num_lists, group,
            BLOCK_M=block_m, K_PAD=k_pad, WRITE_KEYS=groups > 1, num_warps=4,
        )  # fmt: skip
        if groups == 1:
            return
        keys, num_lists = out, groups


def topk(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
    splits: int | None = None,
    few: int | None = None,
    return_nonfinite: bool = False,
):
    """Exact top-k inner products: queries (M, D), corpus (N, D) -> scores (M, k) fp32, ids (M, k) int64.

    scores[m, j] is the j-th largest of S[m, n] = sum_d Q[m, d] C[n, d] (fp32 accumulation) and
    ids[m, j] its row; ties go to the smaller row. Equivalent to a stable descending sort of Q C^T
    cut at k, without materialising Q C^T.

    The corpus is cut into ``splits`` contiguous ranges, each scanned by its own programs (grid =
    query blocks x splits) so that few queries still fill the GPU; the per-split sorted lists are
    then merged by a second small kernel. k > MAX_KERNEL_K goes to ``topk_chunked``.
    Once a row's list has filled, a tile rarely holds more than a handful of keys above the row's
    k-th, so such tiles select only ``few`` per row (a much shallower sorting network than K_PAD).
    The block/split/few keywords override the heuristics (tests force tiny tiles and many splits).
    ``return_nonfinite=True`` adds a third result: a 0-d bool tensor, True when some score was
    NaN/Inf (each program flags it from its score tiles; no extra pass, no host sync).
    """
    _check_pair(queries, corpus)
    M, D = queries.shape
    N = corpus.shape[0]
    if isinstance(k, bool):
        raise TypeError("k must be an int, got bool")
    try:
        k = operator.index(k)  # ints and numpy / torch integer scalars
    except TypeError:
        raise TypeError(f"k must be an int, got {type(k).__name__}") from None
    if not 1 <= k <= N:
        raise ValueError(f"k must be in [1, corpus rows = {N}], got {k}")
    if N > MAX_CORPUS_ROWS:
        raise ValueError(
            f"corpus must have fewer than 2**32 - 1 rows for the triton backend, got {N}"
        )
    k_pad = _next_pow2(k)
    if k_pad > MAX_KERNEL_K:
        return topk_chunked(queries, corpus, k, return_nonfinite=return_nonfinite)

    small = queries.element_size() == 2
    if block_n is None:
        block_n = max(64 if small else 32, k_pad)
    # Defaults checked with ptxas for sm_90 (tests/test_search_triton.py compiles a small variant):
    # no register spills at 8 warps for (block_m, block_n) = (64, 64) up to k_pad 64, (16, 128) at
    # 128 and (16, 256) at 256, where the select-few branch is left out (it would spill).
    if block_m is None:
        block_m = 64 if k_pad <= 64 else 16
        block_m = min(block_m, max(16, _next_pow2(M)))
    if block_d is None:
        # Narrower D steps at k_pad 256 keep the (16, 256) key tile and the running list in registers.
        block_d = min(64 if small and k_pad < 256 else 32, max(16, _next_pow2(D)))
    if few is None:
        few = min(16, k_pad // 4) if 32 <= k_pad <= 128 else k_pad
    _check_pow2("few", few, 1)
    if few > k_pad:
        raise ValueError(f"few must be <= the padded k ({k_pad}), got {few}")
    _check_pow2("block_m", block_m, 16)
    _check_pow2("block_n", block_n, max(16, k_pad))
    _check_pow2("block_d", block_d, 16)

    grid_m = _cdiv(M, block_m)
    n_tiles = _cdiv(N, block_n)
    if splits is None:
        # About 2 programs per SM (4 when M <= 128: bandwidth-bound, more loads in flight), but at
        # least 4 tiles per split: each split pays to fill its own list.
        waves = 4 if M <= 128 else 2
        want = _cdiv(waves * _num_sms(queries.device), grid_m)
        splits = max(1, min(want, n_tiles // 4))
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    tiles_per_split = _cdiv(n_tiles, min(splits, n_tiles))
    splits = _cdiv(n_tiles, tiles_per_split)

    device = queries.device
    scores = torch.empty((M, k), dtype=torch.float32, device=device)
    ids = torch.empty((M, k), dtype=torch.int64, device=device)
    keys = torch.empty((splits, M, k_pad), dtype=torch.int64, device=device) if splits > 1 else ids
    bad = torch.empty((grid_m, splits), dtype=torch.int32, device=device)
    with _on(device):
        _launch_topk(
            queries, corpus, keys, scores, ids, bad, k, k_pad, tiles_per_split, grid_m, splits,
            block_m=block_m, block_n=block_n, block_d=block_d, few=few,
        )  # fmt: skip
    if return_nonfinite:
        return scores, ids, bad.any()
    return scores, ids


def _launch_topk(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    keys: torch.Tensor,
    scores: torch.Tensor,
    ids: torch.Tensor,
    bad: torch.Tensor,
    k: int,
    k_pad: int,
    tiles_per_split: int,
    grid_m: int,
    splits: int,
    *,
    block_m: int,
    block_n: int,
    block_d: int,
    few: int,
) -> None:
    from densescale.kernels.search import _topk_tiles_kernel

    M, D = queries.shape
    N = corpus.shape[0]
    # fp32 inputs: tf32x3 keeps ~fp32 accuracy on tensor cores (plain tf32 would reorder near-ties).
    precision = "tf32x3" if queries.dtype == torch.float32 else "ieee"
    num_warps = 8 if block_m * block_n >= 2048 else 4  # 4 warps spill at 32 x 64 (ptxas, sm_90)
    _topk_tiles_kernel[(grid_m, splits)](
        queries,
        corpus,
        keys,
        scores,
        ids,
        bad,
        M,
        N,
        D,
        k,
        tiles_per_split,
        queries.stride(0),
        queries.stride(1),
        corpus.stride(0),
        corpus.stride(1),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        K_PAD=k_pad,
        FEW=few,
        WRITE_KEYS=splits > 1,
        UPCAST=_interpreting() and queries.dtype == torch.bfloat16,
        PRECISION=precision,
        num_warps=num_warps,
    )
    if splits > 1:
        _merge_splits(keys, scores, ids, k, k_pad)


def score_candidates(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    candidate_ids: torch.Tensor,
    *,
    block_c: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """Scores of given candidates: queries (M, D), corpus (N, D), candidate_ids (M, C) int64 -> (M, C) fp32.

    out[m, j] = sum_d Q[m, d] C[ids[m, j], d] (fp32 accumulation), -inf where ids[m, j] == -1.
    Equivalent to ``einsum("md,mcd->mc", Q, C[ids])`` without materialising the gathered (M, C, D).
    Ids are assumed validated by the caller (each -1 or in [0, N)).
    """
    _check_pair(queries, corpus)
    if not isinstance(candidate_ids, torch.Tensor):
        raise TypeError(f"candidate_ids must be a torch.Tensor, got {type(candidate_ids).__name__}")
    if candidate_ids.dtype != torch.int64:
        raise TypeError(f"candidate_ids must be int64, got {candidate_ids.dtype}")
    M, D = queries.shape
    if candidate_ids.dim() != 2 or candidate_ids.shape[0] != M:
        raise ValueError(
            f"candidate_ids must have shape ({M}, C), got {tuple(candidate_ids.shape)}"
        )
    if candidate_ids.device != queries.device:
        raise ValueError(
            f"candidate_ids is on {candidate_ids.device} but queries are on {queries.device}"
        )
    C = candidate_ids.shape[1]
    out = torch.empty((M, C), dtype=torch.float32, device=queries.device)
    if C == 0:
        return out

    from densescale.kernels.search import _score_candidates_kernel

    if block_c is None:
        block_c = min(32, max(16, _next_pow2(C)))
    if block_d is None:
        block_d = min(256 if queries.element_size() == 2 else 128, max(16, _next_pow2(D)))
    _check_pow2("block_c", block_c, 1)
    _check_pow2("block_d", block_d, 1)
    with _on(queries.device):
        _score_candidates_kernel[(M, _cdiv(C, block_c))](
            queries,
            corpus,
            candidate_ids,
            out,
            C,
            D,
            queries.stride(0),
            queries.stride(1),
            corpus.stride(0),
            corpus.stride(1),
            candidate_ids.stride(0),
            candidate_ids.stride(1),
            BLOCK_C=block_c,
            BLOCK_D=block_d,
            num_warps=4,
        )
    return out


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)
