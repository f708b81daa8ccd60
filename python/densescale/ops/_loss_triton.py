"""Triton backend of the fused contrastive loss: checks, fp32 buffers, block sizes and grids.

Implements the loss backend protocol (``loss_forward`` / ``loss_backward``, see ``_loss_spec`` for
the math) on top of the kernel bodies in ``densescale.kernels.contrastive_loss``. Equivalent to
``reference_loss_per_query`` (materialised scores + log-sum-exp) and its autograd gradients, but
never builds the B x N score matrix: extra memory is O((N + B) * D) fp32 gradient buffers, O(B)
statistics and, in symmetric mode only, a (ceil(B / BLOCK_M), B) fp32 buffer of partial column
log-sum-exps (B^2 / BLOCK_M floats: 134 MB at B = 65,536, BLOCK_M = 128).

FLOPs: forward 2*B*N*D; backward recomputes the scores twice (row-block kernel for dq, column-block
kernel for dp / dnegatives), 8*B*N*D, so 10*B*N*D in all.

Kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``,
what the tests use without a GPU). Triton is imported lazily so the package imports without it.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch

from densescale.ops._loss_spec import LossInputs

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class TileConfig:
    """Block sizes (powers of two, >= 16 so every ``tl.dot`` compiles) and launch parameters."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2

    def launch(self) -> dict:
        """The block sizes and launch options, as keyword arguments of a kernel launch."""
        blocks = {f"BLOCK_{a}": getattr(self, f"block_{a.lower()}") for a in "MNK"}
        return {**blocks, "num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass(frozen=True)
class TritonLossSaved:
    """What the backward pass needs: row log-sum-exp (B,) and, when symmetric, column lse (B,)."""

    lse: torch.Tensor
    col_lse: torch.Tensor | None


def interpreter_active() -> bool:
    """True when Triton runs kernels in its CPU interpreter (read when the kernels are defined)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernels():
    try:
        from densescale.kernels import contrastive_loss
    except ImportError as exc:  # triton missing, or kernels/ not linked into the package
        raise ImportError(
            "backend='triton' needs the triton package and densescale.kernels "
            f"(pip install triton; from a source tree run `make dev`): {exc}"
        ) from exc
    return contrastive_loss


def default_configs(
    dtype: torch.dtype, in_batch: bool = True
) -> tuple[TileConfig, TileConfig, TileConfig]:
    """(forward, backward dq, backward dc) tiles for ``dtype``.

    Chosen by compiling every kernel variant for sm_90 and reading ptxas's register and spill
    report (no H100 at hand to time them): bf16/fp16 forward 128 x 128 score tiles, 64-wide D
    chunks, 8 warps, 3 stages (no spills; 128 x 64 without in-batch negatives, whose extra
    group mask otherwise spills); the backward keeps a dS tile live while it walks D, so its
    tiles are 128 x 64 (rows x columns) for dq and 64 x 128 for dc, 2 stages. fp32 inputs run
    IEEE FMA dots unless torch allows TF32, and only 64 x 32 tiles avoid spilling there. The
    interpreter runs numpy per tile, so small fixed tiles are fastest there.
    """
    if interpreter_active():
        small = TileConfig(32, 32, 32)
        return small, small, small
    if dtype == torch.float32:
        f32 = TileConfig(64, 32, 32, num_warps=4, num_stages=2)
        return f32, f32, f32
    fwd = TileConfig(128, 128 if in_batch else 64, 64, num_warps=8, num_stages=3 if in_batch else 2)
    bwd_dq = TileConfig(128, 64, 64, num_warps=8, num_stages=2)
    bwd_dc = TileConfig(64, 128, 64, num_warps=8, num_stages=2)
    return fwd, bwd_dq, bwd_dc


def _override(
    cfg: TileConfig, block_m: int | None, block_n: int | None, block_k: int | None
) -> TileConfig:
    vals = {"block_m": block_m, "block_n": block_n, "block_k": block_k}
    for name, v in vals.items():
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 16 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 16 (tl.dot tiles), got {v!r}")
    return TileConfig(
        block_m if block_m is not None else cfg.block_m,
        block_n if block_n is not None else cfg.block_n,
        block_k if block_k is not None else cfg.block_k,
        cfg.num_warps,
        cfg.num_stages,
    )


def _check_inputs(inputs: LossInputs) -> None:
    """Fail before any launch, naming the argument (the public API validates too; this backend
    is also called directly)."""
    q, p, negatives, doc_ids, scale, opts = inputs
    for name, t in (("q", q), ("p", p), ("negatives", negatives)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (rows, D), got shape {tuple(t.shape)}")
        if t.dtype not in _KERNEL_DTYPES:
            raise TypeError(
                f"{name} must be float32, float16 or bfloat16 for backend='triton', got {t.dtype}"
            )
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
        if t.shape[1] != q.shape[1]:
            raise ValueError(f"{name} must have D = {q.shape[1]} columns like q, got {t.shape[1]}")
    if q.device.type != "cuda" and not interpreter_active():
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got q on {q.device}"
        )
    B, G, r = q.shape[0], opts.group_size, opts.row_offset
    if B == 0 or q.shape[1] == 0:
        raise ValueError(f"q must be non-empty, got shape {tuple(q.shape)}")
    if not isinstance(G, int) or G < 1:
        raise ValueError(f"opts.group_size must be an int >= 1, got {G!r}")
    if not isinstance(r, int) or r < 0:
        raise ValueError(f"opts.row_offset must be an int >= 0, got {r!r}")
    if p.shape[0] % G != 0 or p.shape[0] < (r + B) * G:
        raise ValueError(
            f"p must hold B_total*G rows with B_total >= row_offset + B = {r + B} and G = {G}, "
            f"got {p.shape[0]} rows"
        )
    if opts.symmetric and (not opts.in_batch or r != 0 or p.shape[0] != B * G):
        raise ValueError(
            "opts.symmetric needs in_batch=True, row_offset=0 and p of B*G rows, got "
            f"in_batch={opts.in_batch}, row_offset={r}, p rows={p.shape[0]} (B*G={B * G})"
        )
    n = inputs.n_columns
    if doc_ids is not None:
        if not isinstance(doc_ids, torch.Tensor) or doc_ids.dtype != torch.int64:
            raise TypeError(
                f"doc_ids must be an int64 tensor, got {getattr(doc_ids, 'dtype', doc_ids)}"
            )
        if doc_ids.shape != (n,):
            raise ValueError(
                f"doc_ids must have shape ({n},) (one id per candidate), got {tuple(doc_ids.shape)}"
            )
        if doc_ids.device != q.device:
            raise ValueError(f"doc_ids is on {doc_ids.device} but q is on {q.device}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite Python float, got {scale!r}")


def _on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    # Triton launches on the current CUDA device; make it the inputs' device (cuda:1 etc.).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs follow torch's own matmul setting; half types ignore it (tensor cores anyway).
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _common(inputs: LossInputs):
    """Contiguous q / p / negatives (an empty pool as None), the doc ids (a dummy when None) and
    the kernels' dtype flags."""
    q, p, negatives, doc_ids, _, _ = inputs
    q = q.contiguous()
    p = p.contiguous()
    if negatives is not None and negatives.shape[0] == 0:
        negatives = None
    if negatives is not None:
        negatives = negatives.contiguous()
    ids = (
        doc_ids.contiguous()
        if doc_ids is not None
        else torch.zeros(1, dtype=torch.int64, device=q.device)
    )
    flags = {
        # Triton 3.9's interpreter returns garbage from bf16 tl.dot; compiled GPU code keeps bf16.
        "DOT_F32": interpreter_active() and q.dtype == torch.bfloat16,
        "PRECISION": _precision(q.dtype),
    }
    return q, p, negatives, ids, flags


def _row_problem(q, p, negatives, opts, scale: float) -> tuple:
    """The sizes and scalars the row-block kernels (forward, dq) take after their tensors:
    B, rows of p, K, D, G, row offset, scale."""
    K = 0 if negatives is None else negatives.shape[0]
    return (q.shape[0], p.shape[0], K, q.shape[1], opts.group_size, opts.row_offset, float(scale))


def loss_forward(
    inputs: LossInputs,
    need_grad: bool,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
) -> tuple[torch.Tensor, TritonLossSaved]:
    """Per-query loss (B,) fp32 and the row (and column) log-sum-exp for the backward pass.

    q (B, D), p (B_total*G, D), negatives (K, D) or None, doc_ids (B_total*G + K,) int64 or None.
    ``loss_i = logsumexp_j s*q_i.c_j - s*q_i.c_{t_i}`` over valid columns (symmetric: averaged with
    the passage->query direction, whose column statistics come from the same score tiles).
    ``need_grad`` changes nothing here: the saved statistics are O(B) and always kept.
    ``block_*`` force tile sizes (tests use 16 so the online merge spans many tiles).
    """
    del need_grad
    _check_inputs(inputs)
    kern = _kernels()
    q, p, negatives, ids, flags = _common(inputs)
    doc_ids, scale, opts = inputs.doc_ids, inputs.scale, inputs.opts
    cfg = _override(default_configs(q.dtype, opts.in_batch)[0], block_m, block_n, block_k)
    B = q.shape[0]
    f32 = {"dtype": torch.float32, "device": q.device}
    lse = torch.empty(B, **f32)
    tgt = torch.empty(B, **f32)
    loss = torch.empty(B, **f32)
    n_row_blocks = triton_cdiv(B, cfg.block_m)
    colstat = torch.empty((n_row_blocks, B), **f32) if opts.symmetric else lse
    with _on_device(q):
        kern._infonce_fwd_kernel[(n_row_blocks,)](
            q,
            p,
            negatives if negatives is not None else p,
            ids,
            lse,
            tgt,
            loss,
            colstat,
            *_row_problem(q, p, negatives, opts, scale),
            IN_BATCH=opts.in_batch,
            HAS_NEG=negatives is not None,
            HAS_IDS=doc_ids is not None,
            SYMMETRIC=opts.symmetric,
            **cfg.launch(),
            **flags,
        )
    col_lse = None
    if opts.symmetric:
        # Merge the per-row-block partial column statistics: O(B^2 / BLOCK_M) work.
        col_lse = torch.logsumexp(colstat, dim=0)
        loss = 0.5 * (loss + col_lse - tgt)
    return loss, TritonLossSaved(lse=lse, col_lse=col_lse)


def loss_backward(
    inputs: LossInputs,
    saved: TritonLossSaved,
    weights: torch.Tensor,
    uniform: bool,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of ``total = sum_i weights_i * loss_i``: dq (B, D), dp (B_total*G, D),
    dnegatives (K, D) or None, dscale (0-d), all fp32.

    ``dS_ij = w_i (softmax_ij - [j = t_i])`` (+ the column direction when symmetric), then
    dq = s * dS @ c, dc = s * dS^T @ q, dscale = sum dS * (q . c). Score tiles are recomputed;
    ``uniform`` is not needed (nothing is precomputed for unit weights). ``block_*`` force tiles
    for both backward kernels.
    """
    del uniform
    _check_inputs(inputs)
    if not isinstance(saved, TritonLossSaved):
        raise TypeError(
            f"saved must come from this backend's loss_forward, got {type(saved).__name__}"
        )
    B = inputs.q.shape[0]
    if not isinstance(weights, torch.Tensor) or weights.shape != (B,):
        raise ValueError(
            f"weights must be a tensor of shape ({B},), got "
            f"{getattr(weights, 'shape', type(weights).__name__)}"
        )
    kern = _kernels()
    empty_pool = inputs.negatives is not None and inputs.n_pool == 0
    q, p, negatives, ids, flags = _common(inputs)
    doc_ids, scale, opts = inputs.doc_ids, inputs.scale, inputs.opts
    _, cfg_dq, cfg_dc = default_configs(q.dtype, opts.in_batch)
    cfg_dq = _override(cfg_dq, block_m, block_n, block_k)
    cfg_dc = _override(cfg_dc, block_m, block_n, block_k)
    D = q.shape[1]
    NP = p.shape[0]
    K = 0 if negatives is None else negatives.shape[0]
    f32 = {"dtype": torch.float32, "device": q.device}
    w = weights.to(**f32).contiguous()
    # dS is rounded to the input dtype before the second GEMM; dividing by max|w| keeps it O(1)
    # so fp16 does not flush tiny softmax terms (w_i = 1/B scaled by 1/N) to zero. No host sync.
    w_max = w.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    w_norm = w / w_max
    clse = saved.col_lse if saved.col_lse is not None else saved.lse
    common = {"IN_BATCH": opts.in_batch, "HAS_IDS": doc_ids is not None, **flags}

    dq = torch.zeros((B, D), **f32)
    n_row_blocks = triton_cdiv(B, cfg_dq.block_m)
    dscale_part = torch.empty(n_row_blocks, **f32)
    with _on_device(q):
        kern._infonce_bwd_dq_kernel[(n_row_blocks,)](
            q,
            p,
            negatives if negatives is not None else p,
            ids,
            saved.lse,
            clse,
            w_norm,
            dq,
            dscale_part,
            *_row_problem(q, p, negatives, opts, scale),
            HAS_NEG=negatives is not None,
            SYMMETRIC=opts.symmetric,
            **cfg_dq.launch(),
            **common,
        )

    dc = torch.zeros((NP + K, D), **f32)
    # Pool columns get SYMMETRIC too: it halves their row-direction dS (the loss averages two
    # directions); the kernel adds the column direction to p's positive columns only.
    regions = [(p, dc[:NP], NP, 0, True)]
    if negatives is not None:
        regions.append((negatives, dc[NP:], K, NP, False))
    for cands, dcands, n_cols, col_start, is_p in regions:
        with _on_device(q):
            kern._infonce_bwd_dc_kernel[(triton_cdiv(n_cols, cfg_dc.block_n),)](
                q,
                cands,
                ids,
                saved.lse,
                clse,
                w_norm,
                dcands,
                B,
                n_cols,
                col_start,
                D,
                opts.group_size,
                opts.row_offset,
                float(scale),
                IS_P=is_p,
                SYMMETRIC=opts.symmetric,
                **cfg_dc.launch(),
                **common,
            )
    grad_mult = w_max * float(scale)
    dq.mul_(grad_mult)
    dc.mul_(grad_mult)
    dscale = dscale_part.sum() * w_max
    # An empty (0, D) pool still gets its (0, D) gradient, so callers can zip inputs and grads.
    dneg = dc[NP:] if negatives is not None or empty_pool else None
    return dq, dc[:NP], dneg, dscale


def triton_cdiv(a: int, b: int) -> int:
    """ceil(a / b) for grids (kept here so this module imports without triton)."""
    return -(-a // b)
