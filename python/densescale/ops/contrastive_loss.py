"""Fused contrastive (InfoNCE) loss: public API, input checks, backend dispatch and the one autograd
Function shared by the fused backends. The math is defined once in ``_loss_spec``.

Backends (``backend=``):

- ``"torch"``: ``reference_loss_per_query`` (materialised scores, ordinary autograd); always there,
  and the only one that takes float64.
- ``"cpp"`` / ``"triton"``: modules ``densescale.ops._loss_cpp`` / ``densescale.ops._loss_triton``
  exposing ``loss_forward`` / ``loss_backward`` (the protocol in ``_loss_spec``), imported lazily
  and driven by ``_BackendLoss``.
- ``"auto"``: CUDA tensors -> triton if importable, else torch; CPU tensors -> cpp if the C++
  extension is built, else torch; float64 inputs -> torch.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from densescale import _validation as V
from densescale._native import has_native
from densescale.ops._loss_spec import LossOptions, reference_loss_per_query

__all__ = [
    "check_loss_inputs",
    "compute_loss",
    "contrastive_loss",
    "doc_id_padding_value",
    "load_backend",
    "pad_doc_ids",
    "resolve_backend",
]

REDUCTIONS = ("mean", "sum", "none")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_BACKEND_MODULES = {"cpp": "densescale.ops._loss_cpp", "triton": "densescale.ops._loss_triton"}
_INSTALL_HINTS = {
    "cpp": "build the C++ extension (`make dev` in a source checkout, or `pip install .`)",
    "triton": "install Triton (`pip install triton`, or the `densescale[gpu]` extra)",
}


# ----------------------------------------------------------------------------------------------
# Backend lookup
# ----------------------------------------------------------------------------------------------


@functools.cache
def _import_backend(name: str) -> ModuleType | str:
    """The backend module, or the reason it cannot be imported (cached: "auto" asks every call)."""
    if name == "cpp" and not has_native():
        return "densescale._C (the compiled CPU kernels) is not built"
    try:
        return importlib.import_module(_BACKEND_MODULES[name])
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"


def load_backend(name: str) -> ModuleType:
    """Import the fused backend ``name`` ("cpp" or "triton"), or raise an ImportError saying how to
    get it."""
    found = _import_backend(name)
    if isinstance(found, ModuleType):
        return found
    raise ImportError(
        f"backend={name!r} is not available ({found}); to get it, {_INSTALL_HINTS[name]}, "
        "or pass backend='torch' for the plain reference"
    )


def _available(name: str) -> bool:
    try:
        load_backend(name)
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """Map ``backend`` (one of ``BACKENDS``) to the one that will run: "torch", "cpp" or "triton".

    Raises before any work when an explicit choice cannot run on ``device``/``dtype`` or its module
    is missing.
    """
    V.check_choice("backend", backend, V.BACKENDS)
    if backend == "auto":
        if dtype == torch.float64:
            return "torch"
        if device.type == "cuda":
            return "triton" if _available("triton") else "torch"
        if device.type == "cpu":
            return "cpp" if _available("cpp") else "torch"
        return "torch"
    if backend == "torch":
        return "torch"
    if dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"backend={backend!r} takes float32, float16 or bfloat16 embeddings, got "
            f"{str(dtype).replace('torch.', '')}; float64 runs on backend='torch' only"
        )
    if backend == "cpp" and device.type != "cpu":
        raise ValueError(
            f"backend='cpp' runs on CPU tensors, got tensors on {device}; "
            "use backend='triton' or 'auto' for GPU tensors"
        )
    if backend == "triton" and device.type != "cuda":
        interpreted = device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
        if not interpreted:
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got tensors on {device}; on the CPU it runs "
                "only in Triton's interpreter (set TRITON_INTERPRET=1 before importing densescale); "
                "use backend='cpp' or 'auto' for CPU tensors"
            )
    load_backend(backend)
    return backend


# ----------------------------------------------------------------------------------------------
# Input checks (SPEC 5): everything is checked before any work starts
# ----------------------------------------------------------------------------------------------


def _check_scale(scale: object) -> float | torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if not scale.is_floating_point():
            raise TypeError(
                f"scale must be a float or a floating tensor, got a tensor of dtype {scale.dtype}"
            )
        if scale.numel() != 1 or scale.dim() > 1:
            raise ValueError(
                f"scale must be a 0-d (or one-element) tensor, got shape {tuple(scale.shape)}"
            )
        if not bool(torch.isfinite(scale.detach()).all()):
            raise ValueError(f"scale must be finite, got {scale.detach().item()}")
        return scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(
            f"scale must be a float or a 0-d floating tensor, got {type(scale).__name__}"
        )
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def _check_doc_ids(doc_ids: object, n_cands: int, n_neg: int, device: torch.device) -> torch.Tensor:
    if not isinstance(doc_ids, torch.Tensor):
        raise TypeError(f"doc_ids must be a torch.Tensor of int64, got {type(doc_ids).__name__}")
    if doc_ids.dtype != torch.int64:
        raise TypeError(
            f"doc_ids must have dtype int64, got {str(doc_ids.dtype).replace('torch.', '')}"
        )
    lengths = (n_cands,) if n_neg == 0 else (n_cands, n_cands + n_neg)
    if doc_ids.dim() != 1 or doc_ids.shape[0] not in lengths:
        expected = " or ".join(str(n) for n in lengths)
        raise ValueError(
            f"doc_ids must be 1-D with {expected} entries (B*G candidates"
            f"{', optionally + K negatives' if n_neg else ''}), got shape {tuple(doc_ids.shape)}"
        )
    if doc_ids.device != device:
        raise ValueError(
            f"doc_ids is on {doc_ids.device} but q is on {device}; all inputs must share one device"
        )
    return doc_ids.contiguous()


def check_loss_inputs(
    q: object,
    p: object,
    negatives: object,
    doc_ids: object,
    scale: object,
    in_batch: object,
    symmetric: object,
    reduction: object,
    backend: object,
    *,
    check_finite: bool = True,
) -> tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor | None,
    torch.Tensor | None,
    float | torch.Tensor,
    int,
    str,
]:
    """Validate every argument of ``contrastive_loss`` and return them ready for a backend.

    Returns ``(q, p, negatives, doc_ids, scale, group_size, backend)`` with contiguous tensors,
    ``doc_ids`` still unpadded (length B*G or B*G+K) and ``backend`` resolved to the one that runs.
    Raises ``TypeError``/``ValueError`` naming the argument; nothing is computed before that.
    ``check_finite=False`` leaves NaN/Inf to ``compute_loss(..., check_finite=True)``, which finds
    them from the loss instead of reading the inputs once more (what ``contrastive_loss`` does).
    """
    V.check_choice("reduction", reduction, REDUCTIONS)
    V.check_choice("backend", backend, V.BACKENDS)
    for name, flag in (("in_batch", in_batch), ("symmetric", symmetric)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if symmetric and not in_batch:
        raise ValueError(
            "symmetric=True needs in_batch=True (the passage->query direction scores every query)"
        )
    q = V.check_embeddings("q", q)
    p = V.check_embeddings("p", p)
    if negatives is not None:
        negatives = V.check_embeddings("negatives", negatives)
    V.check_same_dtype(q=q, p=p, negatives=negatives)
    device = V.check_same_device(q=q, p=p, negatives=negatives)
    B, D = q.shape
    if p.shape[1] != D:
        raise ValueError(f"p must have D={D} columns like q, got shape {tuple(p.shape)}")
    if negatives is not None and negatives.shape[1] != D:
        raise ValueError(
            f"negatives must have D={D} columns like q, got shape {tuple(negatives.shape)}"
        )
    if p.shape[0] % B != 0:
        raise ValueError(
            f"p must have a positive multiple of B={B} rows (B*G: each query's positive followed by "
            f"its G-1 hard negatives), got {p.shape[0]} rows"
        )
    G = p.shape[0] // B
    K = 0 if negatives is None else negatives.shape[0]
    if doc_ids is not None:
        doc_ids = _check_doc_ids(doc_ids, B * G, K, device)
    scale = _check_scale(scale)
    resolved = resolve_backend(backend, device, q.dtype)  # type: ignore[arg-type]
    if check_finite:
        V.check_all_finite(q=q, p=p, negatives=negatives)
    # Kernels index rows directly; a strided view costs one copy here and keeps gradients flowing.
    q, p = q.contiguous(), p.contiguous()
    if negatives is not None:
        negatives = negatives.contiguous()
    return q, p, negatives, doc_ids, scale, G, resolved


def doc_id_padding_value(lo: int, hi: int) -> int:
    """An id outside ``[lo, hi]`` (the range of the given ids), so padding never matches a real id."""
    if lo > _INT64_MIN:
        return lo - 1
    if hi < _INT64_MAX:
        return hi + 1
    raise ValueError(
        "doc_ids spans the whole int64 range, so no padding id is free; pass doc_ids with one id "
        "per candidate and per negative (length B*G+K)"
    )


def pad_doc_ids(doc_ids: torch.Tensor | None, n_total: int) -> torch.Tensor | None:
    """Extend ids of the B*G candidates to all ``n_total`` = B*G + K columns (negatives get an id
    no candidate has, so they are never masked as duplicates)."""
    if doc_ids is None or doc_ids.shape[0] == n_total:
        return doc_ids
    lo, hi = (int(v) for v in torch.aminmax(doc_ids))
    fill = doc_id_padding_value(lo, hi)
    pad = torch.full((n_total - doc_ids.shape[0],), fill, dtype=torch.int64, device=doc_ids.device)
    return torch.cat([doc_ids, pad])


# ----------------------------------------------------------------------------------------------
# Autograd plumbing for the fused backends
# ----------------------------------------------------------------------------------------------


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _split_saved(saved: Any) -> tuple[list[torch.Tensor | None], Callable[[list], Any]]:
    """Separate the tensors of a backend's ``saved`` (for ``save_for_backward``) from the rest."""
    if isinstance(saved, torch.Tensor):
        return [saved], lambda leaves: leaves[0]
    if isinstance(saved, (tuple, list)):
        items = list(saved)
        where = [i for i, x in enumerate(items) if isinstance(x, torch.Tensor)]

        def rebuild(leaves: list) -> Any:
            out = list(items)
            for i, t in zip(where, leaves):
                out[i] = t
            if hasattr(saved, "_fields"):  # namedtuple
                return type(saved)(*out)
            return type(saved)(out)

        return [items[i] for i in where], rebuild
    return [], lambda leaves: saved


class _BackendLoss(torch.autograd.Function):
    """Per-query loss through a protocol backend; saves only the inputs and the backend's ``saved``.

    Non-tensor arguments: ``scale`` (float value), ``backend`` (module), ``opts`` (LossOptions),
    ``reduction``, ``need_grad`` (hint passed to ``loss_forward``). ``scale_t`` is the scale tensor
    when its gradient is wanted, else None.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: torch.Tensor,
        p: torch.Tensor,
        negatives: torch.Tensor | None,
        doc_ids: torch.Tensor | None,
        scale_t: torch.Tensor | None,
        scale: float,
        backend: ModuleType,
        opts: LossOptions,
        reduction: str,
        need_grad: bool,
        check_finite: bool = False,
    ) -> torch.Tensor:
        loss, saved = backend.loss_forward(q, p, negatives, doc_ids, scale, opts, need_grad)
        if loss.shape != (q.shape[0],):
            raise RuntimeError(
                f"backend {backend.__name__} returned a loss of shape {tuple(loss.shape)}, "
                f"expected ({q.shape[0]},)"
            )
        if check_finite:
            _check_outputs_finite(loss, getattr(saved, "dscale", None), q, p, negatives)
        leaves, ctx.rebuild_saved = _split_saved(saved)
        ctx.save_for_backward(q, p, negatives, doc_ids, *leaves)
        ctx.scale, ctx.backend, ctx.opts, ctx.reduction = scale, backend, opts, reduction
        if scale_t is not None:
            ctx.scale_meta = (scale_t.shape, scale_t.dtype, scale_t.device)
        return _reduce(loss.float(), reduction)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, p, negatives, doc_ids, *leaves = ctx.saved_tensors
        saved = ctx.rebuild_saved(leaves)
        B = q.shape[0]
        grad = grad.float()
        if ctx.reduction == "none":
            weights, uniform = grad.contiguous(), False
        else:
            # dL/dloss_i is the same for every row: grad (sum) or grad / B (mean).
            w = grad / B if ctx.reduction == "mean" else grad
            weights, uniform = w.reshape(1).expand(B).contiguous(), True
        dq, dp, dneg, dscale = ctx.backend.loss_backward(
            q, p, negatives, doc_ids, ctx.scale, ctx.opts, saved, weights, uniform
        )
        need = ctx.needs_input_grad
        out_dscale = None
        if need[4]:
            shape, dtype, device = ctx.scale_meta
            out_dscale = torch.as_tensor(dscale, dtype=dtype, device=device).reshape(shape)
        return (
            dq.to(q.dtype) if need[0] else None,
            dp.to(p.dtype) if need[1] else None,
            dneg.to(negatives.dtype) if need[2] and dneg is not None else None,
            None,
            out_dscale,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def _check_outputs_finite(
    loss: torch.Tensor,
    dscale: float | None,
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None,
) -> None:
    """NaN/Inf inputs from the outputs, without reading the inputs: a NaN/Inf in a row of q or of
    a candidate makes every score it enters NaN or +-Inf, and every backend carries such a score
    into the per-query loss, also where it is masked or -Inf (a plain max or log-sum-exp would
    drop it: the C++ row max turns NaN, the Triton tile adds ``a - a``, the torch paths add a
    row reduction times 0). ``dscale`` = sum_i q_i . dL/dq_i is checked too where the fused pass
    computed it. Only on that error path are the inputs read, to name the row."""
    ok = bool(torch.isfinite(loss).all())
    if ok and dscale is not None and not math.isfinite(float(dscale)):
        ok = False
    if ok:
        return
    V.raise_first_nonfinite(q=q, p=p, negatives=negatives)
    raise ValueError(
        "the loss is not finite although q, p and negatives are: scale * q . c overflows "
        "float32; lower scale or normalise the embeddings"
    )


def _scale_value(scale: float | torch.Tensor) -> float:
    return (
        float(scale.detach().reshape(()).item())
        if isinstance(scale, torch.Tensor)
        else float(scale)
    )


def compute_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    negatives: torch.Tensor | None,
    doc_ids: torch.Tensor | None,
    scale: float | torch.Tensor,
    opts: LossOptions,
    reduction: str,
    backend: str,
    *,
    check_finite: bool = False,
) -> torch.Tensor:
    """Run an already resolved backend on already checked inputs (``doc_ids`` padded to N).

    The building block under ``contrastive_loss`` and the gathered (multi-rank) loss; no input
    checks. ``check_finite=True``: NaN/Inf in q / p / negatives is detected from the per-query
    loss (and the fused pass's d/dscale) and raised naming the argument and row; the names are
    those of ``contrastive_loss``.
    """
    if backend == "torch":
        if isinstance(scale, torch.Tensor):
            scale = scale.reshape(()).to(q.device)
        loss = reference_loss_per_query(q, p, negatives, doc_ids, scale, opts)
        if check_finite:
            _check_outputs_finite(loss.detach(), None, q, p, negatives)
        return _reduce(loss, reduction)
    module = load_backend(backend)
    scale_t = scale if isinstance(scale, torch.Tensor) and scale.requires_grad else None
    # needs_input_grad ignores no_grad(), so the backend's hint is decided out here.
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, p, negatives, scale_t)
    )
    return _BackendLoss.apply(
        q, p, negatives, doc_ids, scale_t, _scale_value(scale), module, opts, reduction, need_grad,
        check_finite,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def contrastive_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    *,
    negatives: torch.Tensor | None = None,
    in_batch: bool = True,
    scale: float | torch.Tensor = 1.0,
    symmetric: bool = False,
    doc_ids: torch.Tensor | None = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """InfoNCE over queries and grouped candidates, without a B x N score matrix (fused backends).

    Args:
        q: (B, D) query embeddings.
        p: (B*G, D) candidates grouped per query: row ``i*G`` is the positive of query i, rows
            ``i*G+1 .. i*G+G-1`` its hard negatives (G = 1: plain pairs).
        negatives: optional (K, D) pool of negatives shared by every query.
        in_batch: True: every candidate of every query is a negative for each query (the
            sentence-transformers / Tevatron layout). False: query i sees its own group and the
            pool only (the protocol of Fang et al.).
        scale: multiplies every score (1/temperature); a float, or a 0-d floating tensor that gets
            a gradient when it requires one (learnable temperature).
        symmetric: also the passage->query direction over the positives, averaged (CLIP style);
            needs ``in_batch=True``.
        doc_ids: optional int64 ids, (B*G,) for the candidates or (B*G+K,) for candidates and
            pool; a column with the same id as query i's positive (other than that positive) is
            masked out for query i (duplicates, false negatives).
        reduction: "mean", "sum" or "none" (per-query loss, shape (B,)).
        backend: "auto", "triton", "cpp" or "torch" (see the module docstring).

    With scores ``s_ij = scale * q_i . c_j`` over columns ``c = [p; negatives]`` and valid columns
    V_i (layout and doc-id masking), the per-query loss is::

        loss_i = logsumexp_{j in V_i} s_ij - s_{i, i*G}

    equal to ``F.cross_entropy(masked scores, targets=i*G)``; with ``symmetric`` it is averaged
    with ``logsumexp_k (scale * p_{i*G} . q_k) - scale * p_{i*G} . q_i``.

    Returns the reduced loss (0-d) or (B,) for ``reduction="none"``; float32 (float64 for float64
    inputs on the torch backend) whatever the input dtype, accumulated in float32 or better.
    Gradients flow to q, p, negatives (in their dtypes) and to a tensor ``scale``.

    Inputs must share one dtype (float32, float16, bfloat16; float64 on backend="torch" only) and
    one device, be non-empty and finite. Non-contiguous inputs are copied to contiguous memory
    first (gradients still flow to the original tensors). Every check runs before any work, except
    NaN/Inf: those are found from the loss the kernel computes anyway (no extra pass over the
    embeddings) and raise ``ValueError`` naming the argument and row (``p row 17 holds NaN or
    Inf``) before anything is returned.
    """
    q, p, negatives, doc_ids, scale, G, resolved = check_loss_inputs(
        q, p, negatives, doc_ids, scale, in_batch, symmetric, reduction, backend, check_finite=False
    )
    K = 0 if negatives is None else negatives.shape[0]
    doc_ids = pad_doc_ids(doc_ids, p.shape[0] + K)
    opts = LossOptions(group_size=G, in_batch=in_batch, symmetric=symmetric)
    return compute_loss(
        q, p, negatives, doc_ids, scale, opts, reduction, resolved, check_finite=True
    )
