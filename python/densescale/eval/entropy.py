"""The paper's contrastive entropy (SPEC 1.1).

For each annotated test pair (q, p+), with s(q, p) = q . p (no temperature, no normalisation)::

    CE(q, p+) = E_{P- ~ U(pool), |P-| = K} [ log( e^{s(q,p+)} + sum_{p in P-} e^{s(q,p)} ) - s(q,p+) ]

estimated with R independent draws of K distinct passages from a fixed pool that excludes every
test positive, averaged; the reported value is the mean over all pairs (a query with two positives
counts twice). Chance level is ln(K + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._validation import (
    check_embeddings,
    check_same_device,
    first_nonfinite_row,
    nonfinite_row_error,
    raise_first_nonfinite,
)

# Negatives are drawn this many pairs at a time from one generator per draw, so the ids (and the
# result) do not depend on batch_size.
_SAMPLE_BLOCK = 8192
# Score the whole pool densely when it holds at most this many times R*K passages, in chunks of
# at most _DENSE_SCORES scores.
_DENSE_POOL_FACTOR = 8
_DENSE_SCORES = 1 << 24


@dataclass(frozen=True)
class CEResult:
    """``mean``: CE averaged over pairs; ``per_pair``: (P,) float64, each averaged over the R draws;
    ``stderr``: standard error of the mean over pairs (std with ddof=1 / sqrt(P); NaN when P = 1)."""

    mean: float
    per_pair: np.ndarray
    stderr: float
    num_negatives: int
    repeats: int

    @property
    def num_pairs(self) -> int:
        return int(self.per_pair.shape[0])


def _check_count(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _draw_generator(seed: int, repeat: int) -> torch.Generator:
    # SeedSequence mixes (seed, repeat) so draws of nearby seeds are unrelated streams.
    state = np.random.SeedSequence([seed, repeat]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _sample_distinct(rows: int, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, k) int64: each row k distinct ids drawn uniformly from range(n) (a uniform k-subset)."""
    if n <= 4 * k:
        # small pool: a random permutation prefix per row; O(rows * n) is cheap here
        keys = torch.rand(rows, n, generator=gen)
        return keys.argsort(dim=1)[:, :k].contiguous()
    # large pool: draw with replacement, then redraw duplicated slots until every row is distinct.
    # The procedure commutes with any relabelling of the pool, so the final set is a uniform k-subset.
    ids = torch.randint(0, n, (rows, k), generator=gen, dtype=torch.int64)
    while True:
        ids, _ = ids.sort(dim=1)
        dup = torch.zeros_like(ids, dtype=torch.bool)
        dup[:, 1:] = ids[:, 1:] == ids[:, :-1]
        count = int(dup.sum())
        if count == 0:
            return ids
        ids[dup] = torch.randint(0, n, (count,), generator=gen, dtype=torch.int64)


def sample_negatives(
    num_pairs: int, num_negatives: int, pool_size: int, *, repeats: int = 10, seed: int = 0
) -> torch.Tensor:
    """The negatives :func:`contrastive_entropy` uses: (R, P, K) int64 row indices into the pool,
    K distinct ids per (draw, pair), uniform, reproducible from ``seed``."""
    num_pairs = _check_count("num_pairs", num_pairs)
    k = _check_count("num_negatives", num_negatives)
    pool_size = _check_count("pool_size", pool_size)
    repeats = _check_count("repeats", repeats)
    seed = _check_count("seed", seed, minimum=0)
    if k > pool_size:
        raise ValueError(f"num_negatives ({k}) must be <= pool_size ({pool_size})")
    out = torch.empty(repeats, num_pairs, k, dtype=torch.int64)
    for r in range(repeats):
        gen = _draw_generator(seed, r)
        for b0 in range(0, num_pairs, _SAMPLE_BLOCK):
            b1 = min(num_pairs, b0 + _SAMPLE_BLOCK)
            out[r, b0:b1] = _sample_distinct(b1 - b0, k, pool_size, gen)
    return out


def contrastive_entropy(
    q_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    pool_emb: torch.Tensor,
    *,
    num_negatives: int = 256,
    repeats: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    pool_rows: torch.Tensor | None = None,
) -> CEResult:
    """Contrastive entropy of SPEC 1.1.

    q_emb, pos_emb: (P, D), row i = the query and positive of annotated pair i.
    pool_emb: (Np, D) the negative pool; it must already exclude every test positive. Or, with
    ``pool_rows`` (Npool,) int64, the pool is ``pool_emb[pool_rows]`` without copying it (e.g. the
    whole corpus as ``pool_emb`` and the rows that are not test positives).
    Each pair gets ``repeats`` draws of ``num_negatives`` distinct pool rows (see
    :func:`sample_negatives`); negatives are scored with ``densescale.score_candidates`` for
    ``batch_size`` pairs at a time; log-sum-exp in float64. The result does not depend on
    ``batch_size``.

    NaN/Inf embeddings raise ``ValueError`` naming the argument and row (``pool_emb row 17 holds
    NaN or Inf``). They are found from the scores computed anyway, so no pass over the pool is
    spent on checks: every q_emb / pos_emb row is scored; a pool row is checked whenever it is
    scored (always when the pool is scored densely; when drawn as a negative otherwise, which at
    the paper's sizes is every row). A pool row no draw touches cannot change the result.
    """
    q = check_embeddings("q_emb", q_emb)
    p = check_embeddings("pos_emb", pos_emb)
    pool = check_embeddings("pool_emb", pool_emb)
    if p.shape != q.shape:
        raise ValueError(
            f"pos_emb must have the shape of q_emb {tuple(q.shape)}, got {tuple(p.shape)}"
        )
    if pool.shape[1] != q.shape[1]:
        raise ValueError(
            f"pool_emb must have {q.shape[1]} columns like q_emb, got {tuple(pool.shape)}"
        )
    check_same_device(q_emb=q, pos_emb=p, pool_emb=pool)
    k = _check_count("num_negatives", num_negatives)
    repeats = _check_count("repeats", repeats)
    seed = _check_count("seed", seed, minimum=0)
    batch_size = _check_count("batch_size", batch_size)
    if pool_rows is not None:
        if (
            not isinstance(pool_rows, torch.Tensor)
            or pool_rows.dim() != 1
            or pool_rows.dtype != torch.int64
        ):
            raise TypeError(
                f"pool_rows must be a 1-D int64 tensor or None, got {_describe(pool_rows)}"
            )
        if pool_rows.numel() and (
            int(pool_rows.min()) < 0 or int(pool_rows.max()) >= pool.shape[0]
        ):
            raise ValueError(
                f"pool_rows must index rows of pool_emb (0..{pool.shape[0] - 1}), got values "
                f"in [{int(pool_rows.min())}, {int(pool_rows.max())}]"
            )
        if torch.unique(pool_rows).numel() != pool_rows.numel():
            raise ValueError(
                "pool_rows must not repeat a row (negatives are drawn without replacement)"
            )
    pool_size = pool.shape[0] if pool_rows is None else pool_rows.numel()
    if k > pool_size:
        raise ValueError(f"num_negatives ({k}) must be <= the pool size ({pool_size})")

    from ..ops.search import _finite_flag, _score_candidates

    num_pairs = q.shape[0]
    rows_map = None if pool_rows is None else pool_rows.to(q.device)
    pos_score = (q.double() * p.double()).sum(dim=1).cpu()  # (P,)
    if not bool(torch.isfinite(pos_score).all()):  # a NaN/Inf in q_emb or pos_emb row i shows here
        raise_first_nonfinite(q_emb=q, pos_emb=p)
    dense_checked = False
    total = torch.zeros(num_pairs, dtype=torch.float64)
    # Small pool: one dense (b, Npool) score block per chunk serves all R draws (BLAS, R times
    # fewer passes) and is cheaper than gathering R*K rows per pair. Large pool: score only the
    # drawn candidates. Same values either way (fp32 dot products).
    dense = pool.shape[0] <= _DENSE_POOL_FACTOR * repeats * k
    chunk = min(batch_size, max(1, _DENSE_SCORES // pool.shape[0])) if dense else batch_size
    gens = [_draw_generator(seed, r) for r in range(repeats)]
    for b0 in range(0, num_pairs, _SAMPLE_BLOCK):
        b1 = min(num_pairs, b0 + _SAMPLE_BLOCK)
        # each draw's generator is consumed block by block, so ids match sample_negatives
        ids = [_sample_distinct(b1 - b0, k, pool_size, g).to(q.device) for g in gens]
        if rows_map is not None:
            ids = [rows_map[i] for i in ids]
        for c0 in range(0, b1 - b0, chunk):
            c1 = min(b1 - b0, c0 + chunk)
            rows = slice(b0 + c0, b0 + c1)
            s_pos = pos_score[rows].unsqueeze(1)
            scores = q[rows].float() @ pool.float().T if dense else None  # (b, Npool)
            if dense and not dense_checked and not bool(_finite_flag(scores)):
                # q_emb is finite (pos_score), so a pool row is bad; the first chunk's scores
                # cover every pool row, so one check decides for all chunks.
                _raise_pool_nonfinite(pool, pool_rows)
            dense_checked = dense
            for r in range(repeats):
                if dense:
                    neg = scores.gather(1, ids[r][c0:c1])
                else:
                    neg = _score_candidates(
                        q[rows], pool, ids[r][c0:c1], "auto", None,
                        names=("q_emb", "pool_emb"), query_base=b0 + c0,
                    )  # fmt: skip
                logits = torch.cat([s_pos, neg.double().cpu()], dim=1)  # (b, 1 + K)
                total[rows] += torch.logsumexp(logits, dim=1) - s_pos.squeeze(1)
    per_pair = (total / repeats).numpy()
    mean = float(per_pair.mean())
    stderr = float(per_pair.std(ddof=1) / np.sqrt(num_pairs)) if num_pairs > 1 else float("nan")
    return CEResult(mean=mean, per_pair=per_pair, stderr=stderr, num_negatives=k, repeats=repeats)


def _raise_pool_nonfinite(pool: torch.Tensor, pool_rows: torch.Tensor | None) -> None:
    """Error path of the dense scoring: name the first bad pool row; rows outside ``pool_rows``
    (test positives) are never drawn, so a NaN there is not an error."""
    if pool_rows is None:
        row = first_nonfinite_row(pool)
        if row is None:
            raise ValueError(
                "scores overflow float32: q_emb and pool_emb are finite but some inner products "
                "are not; scale the embeddings down"
            )
        raise nonfinite_row_error("pool_emb", row)
    rows = torch.sort(pool_rows.to(pool.device)).values
    row = first_nonfinite_row(pool[rows])
    if row is not None:
        raise nonfinite_row_error("pool_emb", int(rows[row]))
