"""Triton bodies for exact top-k search and candidate scoring (launchers: densescale.ops._search_triton).

Installed as ``densescale.kernels``, a namespace package: kernels/ has no ``__init__.py`` on
purpose, so it never shadows the ``kernels`` distribution when Python runs from the repo root.

Top-k keys. A (score, id) pair is packed into one signed 64-bit integer so that a single integer
comparison orders by score descending, then by smaller id:

    key = (ordered(score) << 32) | (0xFFFFFFFF - id)

where ``ordered`` maps fp32 bits to an int32 that is monotone in the float value (negative floats have
all bits but the sign flipped) and -0.0 is first folded into +0.0. Ids must be below 2**32 - 1.
``EMPTY_KEY`` (int64 min) is below every real key, so unfilled slots lose every comparison.

Running top-k. Each program keeps, per query row, the best ``K_PAD`` keys seen so far, sorted
descending, in registers. A score tile is merged only when some row has a key above its current
k-th (threshold test). The tile is reduced to its per-row top K_PAD (or only top FEW, when no row
has more than FEW qualifying keys) sorted ascending by a bitonic top-k network, then merged:
max(desc, asc) is a bitonic sequence holding the top K_PAD of the union, and one bitonic merge sorts
it. The network's compare-and-swap layers are min/max reductions over size-2 axes of the tile
reshaped to a 2 x ... x 2 cube (the approach of ``tl.sort``/``tl.topk``; min/max keep the Triton
interpreter vectorised, where ``tl.sort``'s xor reductions run element by element).

Corpus splits. With few queries, programs also split the corpus; each writes its sorted list and a
tree merge (``_topk_merge_kernel``, a group of lists per program per round) combines them.
"""

from __future__ import annotations

import triton
import triton.language as tl

EMPTY_KEY = tl.constexpr(-(2**63))


@triton.jit
def _pack_keys(scores, ids):
    """(scores fp32, ids int64) of one shape -> int64 keys ordered by score desc, then id asc."""
    scores = tl.where(scores == 0.0, 0.0, scores)  # -0.0 and +0.0 compare equal; give them one key
    bits = scores.to(tl.int32, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered.to(tl.int64) << 32) | (4294967295 - ids)


@triton.jit
def _unpack_keys(keys):
    """Inverse of ``_pack_keys``: int64 keys -> (scores fp32, ids int64)."""
    ordered = (keys >> 32).to(tl.int32)
    bits = tl.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered)
    scores = bits.to(tl.float32, bitcast=True)
    ids = 4294967295 - (keys & 4294967295)
    return scores, ids


@triton.constexpr_function
def _log2(n):
    return int(n).bit_length() - 1


@triton.constexpr_function
def _axis_shape(n_dims, j):
    return [1] * (n_dims - 1 - j) + [2] + [1] * j


@triton.jit
def _side(n_dims: tl.constexpr, j: tl.constexpr):
    """0 / 1 for the low / high half of axis j (counted from the innermost) of a 2 x ... x 2 cube."""
    return tl.reshape(tl.arange(0, 2), _axis_shape(n_dims, j))


@triton.jit
def _compare_swap(h, high_first, j: tl.constexpr):
    """One compare-and-swap layer of a bitonic network on hypercube axis j.

    Each pair along axis j becomes (min, max), or (max, min) where ``high_first`` is 1.
    The pair's min and max are size-2 reductions (cheap on GPU, vectorised in the interpreter).
    """
    n_dims: tl.constexpr = _log2(h.numel)
    axis: tl.constexpr = n_dims - 1 - j
    lo = tl.min(h, axis=axis, keep_dims=True)
    hi = tl.max(h, axis=axis, keep_dims=True)
    return tl.where((high_first ^ _side(n_dims, j)) != 0, hi, lo)


@triton.jit
def _merge_layers(h, stage: tl.constexpr, order: tl.constexpr):
    """Bitonic merge of runs of 2**stage: order 0 ascending, 1 descending, 2 alternating by run."""
    if order == 2:
        high_first = _side(_log2(h.numel), stage)
    else:
        high_first = order
    for i in tl.static_range(stage):
        h = _compare_swap(h, high_first, stage - 1 - i)
    return h


@triton.jit
def _topk_rows(x, K: tl.constexpr, DESCENDING: tl.constexpr):
    """The K largest of each row of x (R, NB), R, K, NB powers of two, K <= NB, sorted.

    Bitonic top-k: sort runs of K (alternating directions), then repeatedly take the elementwise
    max of neighbouring runs (a bitonic sequence holding their top K) and merge it, halving NB.
    """
    log_k: tl.constexpr = _log2(K)
    log_n: tl.constexpr = _log2(x.shape[1])
    if log_k == 0:
        out = tl.max(x, axis=1, keep_dims=True)
    else:
        h = tl.reshape(x, [2] * _log2(x.numel))
        for i in tl.static_range(1, log_k + 1):
            h = _merge_layers(h, i, 2 if i < log_n else DESCENDING)
        for i in tl.static_range(log_k + 1, log_n + 1):
            h = tl.max(h, axis=_log2(h.numel) - 1 - log_k)
            h = _merge_layers(h, log_k, 2 if i < log_n else DESCENDING)
        out = tl.reshape(h, [x.shape[0], K])
    return out


@triton.jit
def _pad_front(asc, K: tl.constexpr):
    """(R, F) rows sorted ascending -> (R, K) rows sorted ascending, EMPTY_KEY in the first K - F."""
    R: tl.constexpr = asc.shape[0]
    F: tl.constexpr = asc.shape[1]
    x = tl.broadcast_to(tl.reshape(asc, [R, 1, F]), [R, K // F, F])
    group = tl.arange(0, K // F)[None, :, None]
    x = tl.where(group == K // F - 1, x, EMPTY_KEY)
    return tl.reshape(x, [R, K])


@triton.jit
def _merge_sorted(desc, asc):
    """Top K of the union of (R, K) rows sorted descending and (R, K) rows sorted ascending,
    sorted descending: max(desc, asc) is bitonic and holds the top K; one merge sorts it."""
    x = tl.maximum(desc, asc)
    K: tl.constexpr = x.shape[1]
    if K > 1:
        h = _merge_layers(tl.reshape(x, [2] * _log2(x.numel)), _log2(K), 1)
        x = tl.reshape(h, x.shape)
    return x


@triton.jit
def _store_topk(
    best, keys_out, rows, row_ok, offs_k, k, scores_ptr, ids_ptr, WRITE_KEYS: tl.constexpr
):
    """Store a block's sorted key lists: whole, to the pointers ``keys_out`` (WRITE_KEYS), or, as
    the final result, their first k (score, id) pairs to scores[m, :k], ids[m, :k]."""
    if WRITE_KEYS:
        tl.store(keys_out, best, mask=row_ok[:, None])
    else:
        scores, ids = _unpack_keys(best)
        out = rows[:, None] * k + offs_k[None, :]
        mask = row_ok[:, None] & (offs_k[None, :] < k)
        tl.store(scores_ptr + out, scores, mask=mask)
        tl.store(ids_ptr + out, ids, mask=mask)


@triton.jit
def _topk_tiles_kernel(
    q_ptr,
    c_ptr,
    keys_ptr,
    scores_ptr,
    ids_ptr,
    bad_ptr,
    M,
    N,
    D,
    k,
    tiles_per_split,
    stride_qm,
    stride_qd,
    stride_cn,
    stride_cd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    K_PAD: tl.constexpr,
    FEW: tl.constexpr,
    WRITE_KEYS: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Running top-k of S = Q C^T over one corpus split for BLOCK_M queries.

    Program (i, s) scans corpus rows [s * tiles_per_split * BLOCK_N, ...) of at most tiles_per_split
    tiles. S[m, n] = sum_d Q[m, d] C[n, d], accumulated in fp32 by ``tl.dot`` over BLOCK_D chunks.
    FEW (power of two <= K_PAD): size of the cheap selection used when few keys of a tile qualify.
    WRITE_KEYS: store the K_PAD sorted keys to keys[s, m, :] for a later merge across splits;
    otherwise store the first k (score, id) pairs to scores[m, :k], ids[m, :k].
    bad[i, s] = 1 when some valid score of the program came out NaN/Inf (a NaN/Inf in a query or
    corpus row makes all its scores non-finite: the input check, from scores already in registers).
    UPCAST: bf16 operands go through fp32 (the Triton 3.9 interpreter mis-computes bf16 dots).
    """
    pid_m = tl.program_id(0).to(tl.int64)
    pid_s = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    row_ok = rows < M
    offs_n = tl.arange(0, BLOCK_N).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    n_begin = pid_s * tiles_per_split * BLOCK_N
    n_end = tl.minimum(n_begin + tiles_per_split * BLOCK_N, N)

    best = tl.full((BLOCK_M, K_PAD), EMPTY_KEY, tl.int64)
    any_bad = tl.zeros((), dtype=tl.int32)
    for n0 in range(n_begin, n_end, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < n_end
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + offs_d
            d_ok = d < D
            q = tl.load(
                q_ptr + rows[:, None] * stride_qm + d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            c = tl.load(
                c_ptr + cols[:, None] * stride_cn + d[None, :] * stride_cd,
                mask=col_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            if UPCAST:
                q = q.to(tl.float32)
                c = c.to(tl.float32)
            acc = tl.dot(q, tl.trans(c), acc, input_precision=PRECISION)
        # x - x is 0 for finite x and NaN for NaN / +-Inf
        nonfinite = ((acc - acc) != 0.0) & row_ok[:, None] & col_ok[None, :]
        any_bad = tl.maximum(any_bad, tl.max(tl.max(nonfinite.to(tl.int32), axis=1), axis=0))
        keys = _pack_keys(acc, cols[None, :])
        keys = tl.where(col_ok[None, :], keys, EMPTY_KEY)
        # Threshold test: merge only when some row of the tile has a key above its current k-th,
        # and select just FEW per row when no row has more than FEW such keys (the usual case
        # once the lists have filled); only those can enter the row's top K_PAD.
        kth = tl.min(best, axis=1)
        n_above = tl.max(tl.sum((keys > kth[:, None]).to(tl.int32), axis=1), axis=0)
        if n_above > 0:
            if FEW < K_PAD:
                if n_above <= FEW:
                    cand = _pad_front(_topk_rows(keys, FEW, 0), K_PAD)
                else:
                    cand = _topk_rows(keys, K_PAD, 0)
            else:
                cand = _topk_rows(keys, K_PAD, 0)
            best = _merge_sorted(best, cand)

    tl.store(bad_ptr + pid_m * tl.num_programs(1) + pid_s, any_bad)
    offs_k = tl.arange(0, K_PAD).to(tl.int64)
    keys_out = keys_ptr + (pid_s * M + rows[:, None]) * K_PAD + offs_k[None, :]
    _store_topk(best, keys_out, rows, row_ok, offs_k, k, scores_ptr, ids_ptr, WRITE_KEYS)


@triton.jit
def _topk_merge_kernel(
    keys_ptr,
    out_keys_ptr,
    scores_ptr,
    ids_ptr,
    M,
    k,
    num_lists,
    group,
    BLOCK_M: tl.constexpr,
    K_PAD: tl.constexpr,
    WRITE_KEYS: tl.constexpr,
):
    """One round of a tree merge of per-split sorted key lists keys[s, m, :K_PAD].

    Program (i, g) merges lists s in [g * group, min((g + 1) * group, num_lists)) for BLOCK_M rows.
    WRITE_KEYS: store the merged sorted list to out_keys[g, m, :]; otherwise (last round, one
    group) store the first k (score, id) pairs to scores[m, :k], ids[m, :k].
    """
    pid_m = tl.program_id(0).to(tl.int64)
    pid_g = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    row_ok = rows < M
    offs_k = tl.arange(0, K_PAD).to(tl.int64)
    first = pid_g * group
    last = tl.minimum(first + group, num_lists)
    list_stride = tl.cast(M, tl.int64) * K_PAD
    best = tl.load(
        keys_ptr + first * list_stride + rows[:, None] * K_PAD + offs_k[None, :],
        mask=row_ok[:, None],
        other=EMPTY_KEY,
    )
    # Later lists are read back to front (ascending), the order _merge_sorted takes.
    rev = keys_ptr + rows[:, None] * K_PAD + (K_PAD - 1 - offs_k)[None, :]
    for s in range(first + 1, last):
        part = tl.load(rev + s * list_stride, mask=row_ok[:, None], other=EMPTY_KEY)
        best = _merge_sorted(best, part)
    keys_out = out_keys_ptr + pid_g * list_stride + rows[:, None] * K_PAD + offs_k[None, :]
    _store_topk(best, keys_out, rows, row_ok, offs_k, k, scores_ptr, ids_ptr, WRITE_KEYS)


@triton.jit
def _score_candidates_kernel(
    q_ptr,
    c_ptr,
    cand_ptr,
    out_ptr,
    C,
    D,
    stride_qm,
    stride_qd,
    stride_cn,
    stride_cd,
    stride_im,
    stride_ic,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[m, j] = sum_d Q[m, d] * corpus[ids[m, j], d] in fp32, or -inf where ids[m, j] == -1.

    Program (m, b) gathers candidate rows b*BLOCK_C .. b*BLOCK_C+BLOCK_C-1 of query m; a gathered
    row is used by one query only, so this is a batched gather + GEMV, bounded by memory traffic.
    """
    m = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    j = pid_c * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    j_ok = j < C
    ids = tl.load(cand_ptr + m * stride_im + j * stride_ic, mask=j_ok, other=-1)
    valid = j_ok & (ids >= 0)
    rows = tl.where(valid, ids, 0)
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + offs_d
        d_ok = d < D
        q = tl.load(q_ptr + m * stride_qm + d * stride_qd, mask=d_ok, other=0.0).to(tl.float32)
        c = tl.load(
            c_ptr + rows[:, None] * stride_cn + d[None, :] * stride_cd,
            mask=valid[:, None] & d_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(c * q[None, :], axis=1)
    acc = tl.where(valid, acc, float("-inf"))
    tl.store(out_ptr + m * C + j, acc, mask=j_ok)
