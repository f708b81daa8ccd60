"""The ``"cpp"`` backend of the contrastive loss: launcher for the fused C++ CPU kernel.

The kernel (csrc/contrastive_loss.cpp) processes query rows in blocks; a block holds its scores
for every candidate (R x N fp32, never B x N), threads split the candidate columns, and the
gradients are produced in the same pass as the forward (6*B*N*D FLOPs like eager torch; 8*B*N*D
with ``symmetric=True``, which needs a statistics pass first). Math: ``_loss_spec``. Large fp32
in-batch problems (the training case) run the same block schedule with the GEMMs on torch's BLAS
(``_run_blas_blocked``), which is faster than the kernel's own micro-kernels there; every other
layout (fp16/bf16 inputs, symmetric, duplicate masking, ``in_batch=False``) runs the C++ kernel.

Protocol (shared with the Triton backend, ``_loss_spec``)::

    loss, saved = loss_forward(inputs, need_grad)
    dq, dp, dneg, dscale = loss_backward(inputs, saved, weights, uniform)

With ``need_grad`` the forward already computes the gradients for unit weights; ``loss_backward``
scales them in place and hands them over when ``uniform`` (all weights equal; a later backward
recomputes) and otherwise runs the fused pass again with the given weights. Gradients are fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densescale._native import native
from densescale.ops._loss_spec import LossInputs

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
ISA_CODES = {"generic": 0, "avx2": 1, "avx512": 2}


@dataclass
class CppSaved:
    """What ``loss_backward`` needs: unit-weight gradients (when computed; handed over to the
    first uniform backward, then None) and, for the symmetric loss, the column log-sum-exp so a
    recompute skips the statistics pass."""

    dq: torch.Tensor | None
    dc: torch.Tensor | None
    dscale: float | None
    col_lse: torch.Tensor | None


def _check(inputs: LossInputs) -> None:
    """Last-line checks before raw pointers go to C++ (the public API validates user input)."""
    q, p, negatives, doc_ids, _, opts = inputs
    for name, t in (("q", q), ("p", p), ("negatives", negatives)):
        if t is None:
            continue
        if t.device.type != "cpu":
            raise ValueError(
                f"{name} must be a CPU tensor for backend='cpp', got device {t.device}"
            )
        if t.dtype not in _DTYPE_CODE:
            raise TypeError(
                f"{name} must be float32, float16 or bfloat16 for backend='cpp', got {t.dtype}"
            )
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
        if t.dim() != 2 or t.shape[1] != q.shape[1]:
            raise ValueError(f"{name} must have shape (*, {q.shape[1]}), got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    B, G = q.shape[0], opts.group_size
    if G < 1 or p.shape[0] % G or p.shape[0] < (opts.row_offset + B) * G:
        raise ValueError(
            f"p must have (row_offset + B) * group_size <= rows, a multiple of group_size={G}; "
            f"got {p.shape[0]} rows for B={B}, row_offset={opts.row_offset}"
        )
    n = inputs.n_columns
    if doc_ids is not None and (
        doc_ids.dtype != torch.int64 or doc_ids.shape != (n,) or not doc_ids.is_contiguous()
    ):
        raise ValueError(
            f"doc_ids must be contiguous int64 of shape ({n},), got {doc_ids.dtype} "
            f"{tuple(doc_ids.shape)}"
        )
    if opts.symmetric and (not opts.in_batch or opts.row_offset or p.shape[0] != B * G):
        raise ValueError(
            "symmetric=True needs in_batch=True, row_offset=0 and p of B * group_size rows"
        )


def run(
    inputs: LossInputs,
    *,
    need_loss: bool = True,
    need_grad: bool = False,
    weights: torch.Tensor | None = None,
    col_lse: torch.Tensor | None = None,
    threads: int | None = None,
    block_rows: int = 0,
    isa: str | None = None,
) -> dict:
    """One call of the fused kernel on ``inputs`` (``scale`` a float).

    Returns a dict with ``loss`` (B,) fp32 (if ``need_loss``), ``dq`` (B, D), ``dc`` (N, D) =
    gradients of ``sum_i w_i loss_i`` for candidates ``[p; negatives]`` and ``dscale`` (float)
    when ``need_grad`` (``weights`` None = unit weights), and ``col_lse`` (B,) when symmetric.
    ``threads`` defaults to ``torch.get_num_threads()`` (1 for tiny problems); ``block_rows`` > 0
    forces the row-block size (tests use it to run the block logic on small inputs); ``isa`` caps
    the SIMD path (``"generic"``, ``"avx2"``, ``"avx512"``; the CPU's best when None).
    """
    _check(inputs)
    q, p, negatives, doc_ids, scale, opts = inputs
    if col_lse is not None and need_loss:
        raise ValueError(
            "col_lse (a known column log-sum-exp) is only for gradient recomputation; "
            "pass need_loss=False with it"
        )
    if isa is not None and isa not in ISA_CODES:
        raise ValueError(f"isa must be one of {tuple(ISA_CODES)} or None, got {isa!r}")
    B, D = q.shape
    K, N = inputs.n_pool, inputs.n_columns
    if _blas_schedule_applies(q, doc_ids, opts, col_lse, threads, block_rows, isa, B * N * D):
        return _run_blas_blocked(q, p, negatives, scale, opts, need_loss, need_grad, weights)
    f32 = {"dtype": torch.float32, "device": q.device}
    loss = torch.empty(B, **f32) if need_loss else None
    dq = torch.empty(B, D, **f32) if need_grad else None
    dc = torch.zeros(N, D, **f32) if need_grad else None
    col_out = torch.empty(B, **f32) if opts.symmetric else None
    if weights is not None:
        weights = weights.detach().to(torch.float32).contiguous()
        if weights.shape != (B,):
            raise ValueError(f"weights must have shape ({B},), got {tuple(weights.shape)}")
    if col_lse is not None:
        col_lse = col_lse.to(torch.float32).contiguous()
    ptr = lambda t: 0 if t is None else t.data_ptr()
    dscale = native().contrastive_loss_cpu(
        ptr(q),
        ptr(p),
        ptr(negatives),
        ptr(doc_ids),
        _DTYPE_CODE[q.dtype],
        B,
        p.shape[0],
        K,
        D,
        opts.group_size,
        bool(opts.in_batch),
        bool(opts.symmetric),
        int(opts.row_offset),
        float(scale),
        ptr(weights),
        ptr(col_lse),
        ptr(loss),
        ptr(dq),
        ptr(dc),
        ptr(col_out),
        int(threads if threads is not None else _default_threads(B, N, D)),
        int(block_rows),
        -1 if isa is None else ISA_CODES[isa],
    )
    return _outputs(loss, dq, dc, dscale, col_out)


# From ~128M multiply-adds (B = N = 4096 at D = 8) the in-batch fp32 loss runs block by block on
# torch's BLAS: measured 1.28x faster than eager torch and 1.27x faster than the C++ kernel's own
# micro-kernels at B = N = 4096, D = 768, 2 threads (bench/bench_loss.py).
_BLAS_WORK = 1 << 27
# Block size of that schedule. Its only working memory is one block of scores (R x N fp32) and a
# few length-R vectors; eager torch holds >= 2 B x N fp32 matrices beyond the gradients (the
# scores and their gradient; 2.6 measured), so R <= B / 8 keeps the peak below 1/16 of eager's
# (SPEC 4 asks for 1/8; tests/test_loss_cpp.py measures it). Also at most 512 rows and 8 MiB of
# scores. Larger blocks gain little (B = N = 4096, D = 768, 2 threads, paired rounds: R = 1024
# 1.02x faster than 512 on a quiet machine, 1.11x at load 4, where fewer thread barriers help).
_BLAS_MAX_ROWS = 512
_BLAS_MAX_SCORE_BYTES = 8 << 20
_BLAS_ROW_FRACTION = 8


def _blas_schedule_applies(q, doc_ids, opts, col_lse, threads, block_rows, isa, work) -> bool:
    """The BLAS-blocked schedule covers the common training case: fp32, in-batch, one direction,
    no duplicate masking. ``threads`` / ``block_rows`` / ``isa`` pin the C++ kernel (tests)."""
    return (
        work >= _BLAS_WORK
        and q.dtype == torch.float32
        and opts.in_batch
        and not opts.symmetric
        and doc_ids is None
        and col_lse is None
        and threads is None
        and not block_rows
        and isa is None
    )


def _blas_block_rows(B: int, N: int) -> int:
    """Query rows per block of the BLAS schedule: at most ``B / _BLAS_ROW_FRACTION``,
    ``_BLAS_MAX_ROWS`` and ``_BLAS_MAX_SCORE_BYTES`` of scores, at least 16 (or B)."""
    rows = min(_BLAS_MAX_ROWS, _BLAS_MAX_SCORE_BYTES // (4 * N), -(-B // _BLAS_ROW_FRACTION))
    return min(B, max(16, rows))


def _run_blas_blocked(q, p, negatives, scale, opts, need_loss, need_grad, weights) -> dict:
    """The fused pass with the three GEMMs on torch's BLAS (MKL / oneDNN), one block of R query
    rows at a time (R = ``_blas_block_rows``): scores S = s Q_R C^T (R x N, the only score
    memory), L = log_softmax(S) in place, loss = -L_target, G = w (exp(L) - onehot) in place,
    then dQ_R = s G C and dC += s G^T Q_R. 6*B*N*D FLOPs like eager torch, without its B x N
    matrices. Every step writes into S (in place / ``out=``; the log-softmax kernel works row by
    row, reading a row before writing it), so the peak beyond the outputs is R x N fp32 + O(R)."""
    B, D = q.shape
    parts = [p] if negatives is None else [p, negatives]
    n_p = p.shape[0]
    N = n_p + (0 if negatives is None else negatives.shape[0])
    R = _blas_block_rows(B, N)
    S = torch.empty(R, N, dtype=torch.float32)
    loss = torch.empty(B, dtype=torch.float32) if need_loss else None
    dq = torch.empty(B, D, dtype=torch.float32) if need_grad else None
    dc = torch.zeros(N, D, dtype=torch.float32) if need_grad else None
    cols = [(0, n_p)] + ([(n_p, N)] if negatives is not None else [])
    dscale = 0.0
    for i0 in range(0, B, R):
        i1 = min(B, i0 + R)
        r, qb, Sb = i1 - i0, q[i0:i1], S[: i1 - i0]
        for (c0, c1), c in zip(cols, parts):
            Sb[:, c0:c1].addmm_(qb, c.T, beta=0, alpha=scale)  # beta=0: S's old values unread
        torch.log_softmax(Sb, dim=1, out=Sb)
        rows = torch.arange(r)
        targets = (torch.arange(i0, i1) + opts.row_offset) * opts.group_size
        if need_loss:
            torch.neg(Sb[rows, targets], out=loss[i0:i1])
            # A -inf score (non-finite input) drops out of the softmax but stays -inf in L:
            # its row's min makes the loss NaN, which the caller reports (NaN / +inf already do).
            loss[i0:i1] += Sb.amin(dim=1) * 0.0
        if not need_grad:
            continue
        Sb.exp_()  # softmax
        if weights is None:
            Sb[rows, targets] -= 1.0
        else:
            wb = weights[i0:i1]
            Sb.mul_(wb[:, None])
            Sb[rows, targets] -= wb
        dqb = dq[i0:i1]
        for j, ((c0, c1), c) in enumerate(zip(cols, parts)):
            if j == 0:
                torch.mm(Sb[:, c0:c1], c, out=dqb)
            else:
                dqb.addmm_(Sb[:, c0:c1], c)
            dc[c0:c1].addmm_(Sb[:, c0:c1].T, qb, alpha=scale)
        dscale += float(torch.vdot(dqb.reshape(-1), qb.reshape(-1)))
        dqb.mul_(scale)
    return _outputs(loss, dq, dc, dscale, None)


# Below ~16M multiply-adds (about a millisecond on one core) a second thread costs more in
# synchronisation (and in waiting for a descheduled thread on a busy machine) than it saves.
_SMALL_WORK = 1 << 24


def _outputs(loss, dq, dc, dscale, col_lse) -> dict:
    """The dict ``run`` returns (``dscale`` only alongside gradients)."""
    return {
        "loss": loss,
        "dq": dq,
        "dc": dc,
        "dscale": dscale if dq is not None else None,
        "col_lse": col_lse,
    }


def _default_threads(B: int, N: int, D: int) -> int:
    return 1 if B * N * D < _SMALL_WORK else torch.get_num_threads()


def _split(
    dc: torch.Tensor, n_p: int, negatives: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    return dc[:n_p], (None if negatives is None else dc[n_p:])


def loss_forward(inputs: LossInputs, need_grad: bool) -> tuple[torch.Tensor, CppSaved]:
    """Per-query loss (B,) fp32 and the saved state; with ``need_grad`` the unit-weight gradients
    come from the same pass."""
    out = run(inputs, need_grad=need_grad)
    saved = CppSaved(out["dq"], out["dc"], out["dscale"], out["col_lse"])
    return out["loss"], saved


def loss_backward(
    inputs: LossInputs, saved: CppSaved, weights: torch.Tensor, uniform: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of ``sum_i weights_i * loss_i``: dq (B, D), dp (rows of p, D), dneg (K, D) or None,
    dscale (0-d) — all fp32."""
    if uniform and saved.dq is not None:
        # Handed over, scaled in place: with no reference left here autograd adopts them as
        # .grad without a copy (a kept dq was copied: B x D more peak memory), and nothing
        # rescales a tensor the caller now owns; a second backward (retain_graph) recomputes.
        w = float(weights.reshape(-1)[0])
        dq, dc, dscale = saved.dq, saved.dc, saved.dscale
        saved.dq = saved.dc = saved.dscale = None
        if w != 1.0:
            dq.mul_(w)
            dc.mul_(w)
            dscale *= w
    else:
        out = run(
            inputs,
            need_loss=False,
            need_grad=True,
            weights=weights,
            col_lse=saved.col_lse,
        )
        dq, dc, dscale = out["dq"], out["dc"], out["dscale"]
    dp, dneg = _split(dc, inputs.p.shape[0], inputs.negatives)
    return dq, dp, dneg, torch.tensor(dscale, dtype=torch.float32)
