"""Triton bodies of the fused contrastive (InfoNCE) loss; launchers in densescale.ops._loss_triton.

Installed as ``densescale.kernels``, a namespace package: kernels/ has no ``__init__.py`` on
purpose, so it never shadows the ``kernels`` distribution when Python runs from the repo root.

Notation as in ``densescale.ops._loss_spec``: queries q (B, D); candidate columns c = [p; negatives]
with p (NP = B_total*G, D) and the shared pool (K, D); a_ij = q_i . c_j, S_ij = s * a_ij; the target
of local row i is column t_i = (row_offset + i) * G. Masked entries (other groups when
``in_batch=False``, duplicates of the positive's doc id) are -inf; in the forward, a score that is
not finite is NaN, masked or not (NaN/Inf inputs must reach the loss, see ``_fwd_region``). Scores
are kept in base 2 inside the kernels (S2 = S * log2 e) so exp2/log2 map to the hardware
instructions.

Forward (one program per BLOCK_M rows, FlashAttention-style online max / sum-exp over column tiles)::

    lse_i = logsumexp_j S_ij,   tgt_i = S_{i, t_i},   loss_i = lse_i - tgt_i

With ``SYMMETRIC`` the same score tiles also give, for every positive column t_k, the partial
log-sum-exp over this program's rows; they are written to a (row blocks, B) buffer that the
launcher reduces (logsumexp over row blocks) into col_lse_k. Symmetric mode always has in_batch,
row_offset = 0, B_total = B, so the column mask equals the row mask restricted to positives.

Backward recomputes every score tile. With weights w (already divided by max|w| by the launcher so
that low-precision dS tiles stay in range)::

    dS_ij = h * w_i * (exp(S_ij - lse_i) - [j = t_i])
            + [SYMMETRIC and j = t_k] * 0.5 * w_k * (exp(S_ij - col_lse_k) - [i = k])

with h = 1/2 when symmetric, else 1, on every column (pool columns too: the pool only takes part
in the row direction, but that direction is still averaged). The backward kernels therefore get
``SYMMETRIC`` for the pool region as well; the column term is added on p's positives only.
Then dq = s * dS @ c (row-block kernel), dc = s * dS^T @ q (column-block kernel) and dscale = sum_ij dS_ij * a_ij (per-program partial sums). The (BLOCK, D)
gradient rows do not fit in registers for D = 768, so each program owns its output rows exclusively
and accumulates them chunk by chunk (BLOCK_K columns at a time) in an fp32 buffer: no atomics,
and no B x N buffer anywhere.
"""

from __future__ import annotations

import triton
import triton.language as tl

# Compiled kernels may only read module globals that are tl.constexpr (the interpreter reads any).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# Finite "minus infinity" for the running max so exp2(m_old - m_new) never sees inf - inf.
NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _load_rows(ptr, idx, ok, kk, k_ok, D, DOT_F32: tl.constexpr):
    """Columns ``kk`` of rows ``idx`` of a (rows, D) matrix, 0 outside ``ok`` / ``k_ok``; fp32
    under ``DOT_F32`` (the interpreter's bf16 dot is wrong)."""
    x = tl.load(ptr + idx[:, None] * D + kk[None, :], mask=ok[:, None] & k_ok[None, :], other=0.0)
    if DOT_F32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _score_tile(
    q_ptr,
    c_ptr,
    rows,
    cols,
    n_rows,
    n_cols,
    D,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """a = q[rows] @ c[cols]^T, (BLOCK_M, BLOCK_N) fp32, accumulated over D in BLOCK_K chunks."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < D
        a = _load_rows(q_ptr, rows, row_ok, kk, k_ok, D, DOT_F32)
        b = tl.load(
            c_ptr + cols[None, :] * D + kk[:, None],
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        if DOT_F32:
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _valid_tile(
    ids_ptr,
    rows,
    cols,
    tcol,
    pos_ids,
    B,
    n_cols,
    col_start,
    G,
    row_offset,
    IS_P: tl.constexpr,
    IN_BATCH: tl.constexpr,
    HAS_IDS: tl.constexpr,
):
    """Which (row, column) pairs take part: in range, own group when not in_batch, no duplicates.

    ``cols`` index the region (p or pool) starting at global column ``col_start``.
    """
    col_ok = cols < n_cols
    valid = (rows < B)[:, None] & col_ok[None, :]
    if IS_P and not IN_BATCH:
        valid = valid & ((cols // G)[None, :] == (rows + row_offset)[:, None])
    if HAS_IDS:
        cid = tl.load(ids_ptr + col_start + cols, mask=col_ok, other=0)
        dup = cid[None, :] == pos_ids[:, None]
        if IS_P:
            dup = dup & (cols[None, :] != tcol[:, None])
        valid = valid & (dup == 0)
    return valid


@triton.jit
def _masked_scores(
    q_ptr, c_ptr, ids_ptr, rows, cols, tcol, pos_ids,
    B, n_cols, col_start, D, G, row_offset, scale,
    IS_P: tl.constexpr, IN_BATCH: tl.constexpr, HAS_IDS: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Raw scores a = q . c and base-2 scores s2 = a * s * log2(e), -inf where masked, of one tile;
    both (BLOCK_M, BLOCK_N) fp32 (the forward and both backward kernels start from these)."""
    a = _score_tile(
        q_ptr, c_ptr, rows, cols, B, n_cols, D, BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION
    )
    valid = _valid_tile(
        ids_ptr, rows, cols, tcol, pos_ids, B, n_cols, col_start, G, row_offset,
        IS_P, IN_BATCH, HAS_IDS,
    )  # fmt: skip
    return a, tl.where(valid, a * (scale * LOG2E), float("-inf"))


@triton.jit
def _row_targets(ids_ptr, rows, B, G, row_offset, HAS_IDS: tl.constexpr):
    """Per row: in range, its target column t_i = (row_offset + i) * G, and the doc id of its
    positive (t_i itself without ids, which then never equals a column's id)."""
    row_ok = rows < B
    tcol = (rows + row_offset) * G
    if HAS_IDS:
        pos_ids = tl.load(ids_ptr + tcol, mask=row_ok, other=0)
    else:
        pos_ids = tcol
    return row_ok, tcol, pos_ids


@triton.jit
def _row_block(ids_ptr, B, G, row_offset, HAS_IDS: tl.constexpr, BLOCK_M: tl.constexpr):
    """This program's BLOCK_M query rows (row-block kernels) and their targets (_row_targets)."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok, tcol, pos_ids = _row_targets(ids_ptr, rows, B, G, row_offset, HAS_IDS)
    return pid, rows, row_ok, tcol, pos_ids


@triton.jit
def _row_weights(lse_ptr, w_ptr, rows, row_ok):
    """The rows' log-sum-exp in base 2 and their loss weights, for the backward kernels."""
    lse2_i = tl.load(lse_ptr + rows, mask=row_ok, other=0.0) * LOG2E
    w_i = tl.load(w_ptr + rows, mask=row_ok, other=0.0)
    return lse2_i, w_i


@triton.jit
def _region(
    r: tl.constexpr, p_ptr, neg_ptr, pid, NP, K, G, row_offset,
    IN_BATCH: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Region ``r`` of the columns a row block scores (0: p, 1: the pool): its rows' pointer,
    the column range [lo, hi) it visits, its length and its first global column."""
    if r == 0:
        c_ptr = p_ptr
        n_cols = NP
        col_start = 0
        if IN_BATCH:
            lo = 0
            hi = NP
        else:
            # Without in-batch negatives a row block only sees its own groups' columns.
            lo = (pid * BLOCK_M + row_offset) * G
            hi = tl.minimum((pid * BLOCK_M + BLOCK_M + row_offset) * G, NP)
    else:
        c_ptr = neg_ptr
        lo = 0
        hi = K
        n_cols = K
        col_start = NP
    return c_ptr, lo, hi, n_cols, col_start


@triton.jit
def _add_dot_rows(
    out_ptr, out_idx, out_ok, src_ptr, src_idx, src_ok, lhs, D,
    BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """out[out_idx] += lhs @ src[src_idx] (rows of D values), BLOCK_K columns at a time; the
    program owns those output rows, so no atomics. (BLOCK, D) rows do not fit in registers."""
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < D
        sb = _load_rows(src_ptr, src_idx, src_ok, kk, k_ok, D, DOT_F32)
        out = out_ptr + out_idx[:, None] * D + kk[None, :]
        o_mask = out_ok[:, None] & k_ok[None, :]
        acc = tl.load(out, mask=o_mask, other=0.0)
        acc = tl.dot(lhs, sb, acc, input_precision=PRECISION)
        tl.store(out, acc, mask=o_mask)


@triton.jit
def _fwd_region(
    q_ptr, c_ptr, ids_ptr, colstat_ptr,
    pid, rows, tcol, pos_ids, m_i, l_i, tgt_i,
    col_lo, col_hi, n_cols, col_start, B, D, G, row_offset, scale,
    IS_P: tl.constexpr, IN_BATCH: tl.constexpr, HAS_IDS: tl.constexpr, SYMMETRIC: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Online max / sum-exp of rows over columns [col_lo, col_hi) of one region (p or pool)."""
    for n0 in range(col_lo, col_hi, BLOCK_N):
        cols = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        a, s2 = _masked_scores(
            q_ptr, c_ptr, ids_ptr, rows, cols, tcol, pos_ids,
            B, n_cols, col_start, D, G, row_offset, scale,
            IS_P, IN_BATCH, HAS_IDS, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        # a - a is 0 for a finite score and NaN for NaN / +-inf: a non-finite input row makes its
        # scores NaN even where masked or -inf (which a log-sum-exp would drop), so the row's lse
        # and loss come out NaN and the launcher reports the row without reading the inputs.
        s2 = s2 + (a - a)
        m_new = tl.maximum(m_i, tl.max(s2, axis=1))
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(tl.exp2(s2 - m_new[:, None]), axis=1)
        m_i = m_new
        if IS_P:
            is_t = cols[None, :] == tcol[:, None]
            tgt_i += tl.sum(tl.where(is_t, a * scale, 0.0), axis=1)
            if SYMMETRIC:
                # Partial column log-sum-exp over this block's rows, for positive columns only.
                cm = tl.max(s2, axis=0)
                cm_safe = tl.where(cm > NEG_BIG, cm, 0.0)
                cs = tl.sum(tl.exp2(s2 - cm_safe[None, :]), axis=0)
                part = tl.where(
                    cs > 0.0, (cm_safe + tl.log2(tl.where(cs > 0.0, cs, 1.0))) * LN2, float("-inf")
                )
                is_pos = ((cols % G) == 0) & (cols < n_cols)
                tl.store(colstat_ptr + pid * B + cols // G, part, mask=is_pos)
    return m_i, l_i, tgt_i


@triton.jit
def _infonce_fwd_kernel(
    q_ptr, p_ptr, neg_ptr, ids_ptr, lse_ptr, tgt_ptr, loss_ptr, colstat_ptr,
    B, NP, K, D, G, row_offset, scale,
    IN_BATCH: tl.constexpr, HAS_NEG: tl.constexpr, HAS_IDS: tl.constexpr,
    SYMMETRIC: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Row log-sum-exp, target score and loss of BLOCK_M queries: lse (B,), tgt (B,), loss (B,)."""
    pid, rows, row_ok, tcol, pos_ids = _row_block(ids_ptr, B, G, row_offset, HAS_IDS, BLOCK_M)
    m_i = tl.full((BLOCK_M,), NEG_BIG, dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    tgt_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for r in tl.static_range(2):  # p, then the pool (when there is one)
        if r == 0 or HAS_NEG:
            c_ptr, col_lo, col_hi, n_cols, col_start = _region(
                r, p_ptr, neg_ptr, pid, NP, K, G, row_offset, IN_BATCH, BLOCK_M
            )
            m_i, l_i, tgt_i = _fwd_region(
                q_ptr, c_ptr, ids_ptr, colstat_ptr, pid, rows, tcol, pos_ids, m_i, l_i, tgt_i,
                col_lo, col_hi, n_cols, col_start, B, D, G, row_offset, scale,
                r == 0, IN_BATCH, HAS_IDS, SYMMETRIC, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    # The target column is always valid, so l_i >= its own term > 0 for every real row.
    lse = (m_i + tl.log2(tl.where(row_ok, l_i, 1.0))) * LN2
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(tgt_ptr + rows, tgt_i, mask=row_ok)
    tl.store(loss_ptr + rows, lse - tgt_i, mask=row_ok)


@triton.jit
def _ds_tile(
    q_ptr, c_ptr, ids_ptr, clse_ptr, w_ptr,
    rows, cols, tcol, pos_ids, lse2_i, w_i,
    n_cols, col_start, B, D, G, row_offset, scale,
    IS_P: tl.constexpr, IN_BATCH: tl.constexpr, HAS_IDS: tl.constexpr, SYMMETRIC: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Recomputed raw scores a and dL/dS of one tile, both (BLOCK_M, BLOCK_N) fp32."""
    a, s2 = _masked_scores(
        q_ptr, c_ptr, ids_ptr, rows, cols, tcol, pos_ids,
        B, n_cols, col_start, D, G, row_offset, scale,
        IS_P, IN_BATCH, HAS_IDS, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    prob = tl.exp2(s2 - lse2_i[:, None])
    if IS_P:
        prob = prob - tl.where(cols[None, :] == tcol[:, None], 1.0, 0.0)
    if SYMMETRIC:
        # The loss averages two directions, so the row term of every column carries 1/2, pool
        # columns included; only p's positive columns also have a column direction.
        ds = (0.5 * w_i)[:, None] * prob
        if IS_P:
            # Column direction: positive column t_k = k*G of query k (symmetric implies r = 0).
            is_pos = ((cols % G) == 0) & (cols < n_cols)
            k = cols // G
            clse2 = tl.load(clse_ptr + k, mask=is_pos, other=0.0) * LOG2E
            w_k = tl.load(w_ptr + k, mask=is_pos, other=0.0)
            pc = tl.exp2(s2 - clse2[None, :]) - tl.where(k[None, :] == rows[:, None], 1.0, 0.0)
            ds += tl.where(is_pos[None, :], (0.5 * w_k)[None, :] * pc, 0.0)
    else:
        ds = w_i[:, None] * prob
    return a, ds


@triton.jit
def _bwd_dq_region(
    q_ptr, c_ptr, ids_ptr, clse_ptr, w_ptr, dq_ptr,
    rows, tcol, pos_ids, lse2_i, w_i, dsc,
    col_lo, col_hi, n_cols, col_start, B, D, G, row_offset, scale,
    IS_P: tl.constexpr, IN_BATCH: tl.constexpr, HAS_IDS: tl.constexpr, SYMMETRIC: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """dq[rows] += dS @ c[cols] over columns [col_lo, col_hi) of one region; dsc += dS * a."""
    row_ok = rows < B
    for n0 in range(col_lo, col_hi, BLOCK_N):
        cols = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        a, ds = _ds_tile(
            q_ptr, c_ptr, ids_ptr, clse_ptr, w_ptr, rows, cols, tcol, pos_ids, lse2_i, w_i,
            n_cols, col_start, B, D, G, row_offset, scale,
            IS_P, IN_BATCH, HAS_IDS, SYMMETRIC, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        dsc += tl.sum(ds * a, axis=1)
        # Round dS to the input dtype like FlashAttention does, so the second GEMM is a
        # tensor-core one on GPU (fp32 interpreter copy only where the interpreter needs it).
        ds_lo = ds.to(c_ptr.dtype.element_ty)
        if DOT_F32:
            ds_lo = ds_lo.to(tl.float32)
        _add_dot_rows(
            dq_ptr, rows, row_ok, c_ptr, cols, cols < n_cols, ds_lo, D, BLOCK_K, DOT_F32, PRECISION
        )
    return dsc


@triton.jit
def _infonce_bwd_dq_kernel(
    q_ptr, p_ptr, neg_ptr, ids_ptr, lse_ptr, clse_ptr, w_ptr, dq_ptr, dscale_ptr,
    B, NP, K, D, G, row_offset, scale,
    IN_BATCH: tl.constexpr, HAS_NEG: tl.constexpr, HAS_IDS: tl.constexpr,
    SYMMETRIC: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Row-block backward: dq (B, D) fp32 += dS @ c (unscaled), dscale partial (row blocks,)."""
    pid, rows, row_ok, tcol, pos_ids = _row_block(ids_ptr, B, G, row_offset, HAS_IDS, BLOCK_M)
    lse2_i, w_i = _row_weights(lse_ptr, w_ptr, rows, row_ok)
    dsc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for r in tl.static_range(2):  # p, then the pool (when there is one)
        if r == 0 or HAS_NEG:
            c_ptr, col_lo, col_hi, n_cols, col_start = _region(
                r, p_ptr, neg_ptr, pid, NP, K, G, row_offset, IN_BATCH, BLOCK_M
            )
            dsc = _bwd_dq_region(
                q_ptr, c_ptr, ids_ptr, clse_ptr, w_ptr, dq_ptr,
                rows, tcol, pos_ids, lse2_i, w_i, dsc,
                col_lo, col_hi, n_cols, col_start, B, D, G, row_offset, scale,
                r == 0, IN_BATCH, HAS_IDS, SYMMETRIC, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
    tl.store(dscale_ptr + pid, tl.sum(dsc, axis=0))


@triton.jit
def _infonce_bwd_dc_kernel(
    q_ptr, c_ptr, ids_ptr, lse_ptr, clse_ptr, w_ptr, dc_ptr,
    B, n_cols, col_start, D, G, row_offset, scale,
    IS_P: tl.constexpr, IN_BATCH: tl.constexpr, HAS_IDS: tl.constexpr,
    SYMMETRIC: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Column-block backward over one region (p or pool): dc (n_cols, D) fp32 += dS^T @ q."""
    pid = tl.program_id(0).to(tl.int64)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    row_lo = 0
    row_hi = B
    if IS_P and not IN_BATCH:
        # Only the queries whose group lies in these columns score them.
        row_lo = tl.maximum(pid * BLOCK_N // G - row_offset, 0)
        row_hi = tl.minimum((pid * BLOCK_N + BLOCK_N - 1) // G - row_offset + 1, B)
    for m0 in range(row_lo, row_hi, BLOCK_M):
        rows = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_ok, tcol, pos_ids = _row_targets(ids_ptr, rows, B, G, row_offset, HAS_IDS)
        lse2_i, w_i = _row_weights(lse_ptr, w_ptr, rows, row_ok)
        _, ds = _ds_tile(
            q_ptr, c_ptr, ids_ptr, clse_ptr, w_ptr, rows, cols, tcol, pos_ids, lse2_i, w_i,
            n_cols, col_start, B, D, G, row_offset, scale,
            IS_P, IN_BATCH, HAS_IDS, SYMMETRIC, DOT_F32, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        ds_t = tl.trans(ds.to(q_ptr.dtype.element_ty))
        if DOT_F32:
            ds_t = ds_t.to(tl.float32)
        _add_dot_rows(
            dc_ptr, cols, col_ok, q_ptr, rows, row_ok, ds_t, D, BLOCK_K, DOT_F32, PRECISION
        )
