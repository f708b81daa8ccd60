"""Autograd plumbing of the fused contrastive-loss backends: one ``torch.autograd.Function`` that
drives any module following the backend protocol of ``_loss_spec`` (``loss_forward`` /
``loss_backward``), the reduction, and the NaN/Inf check read off the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from densescale import _validation as V
from densescale.ops._loss_spec import LossInputs, LossOptions


def reduce_loss(loss: torch.Tensor, reduction: str) -> torch.Tensor:
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


class BackendLoss(torch.autograd.Function):
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
        loss, saved = backend.loss_forward(
            LossInputs(q, p, negatives, doc_ids, scale, opts), need_grad
        )
        if loss.shape != (q.shape[0],):
            raise RuntimeError(
                f"backend {backend.__name__} returned a loss of shape {tuple(loss.shape)}, "
                f"expected ({q.shape[0]},)"
            )
        if check_finite:
            check_outputs_finite(loss, getattr(saved, "dscale", None), q, p, negatives)
        leaves, ctx.rebuild_saved = _split_saved(saved)
        ctx.save_for_backward(q, p, negatives, doc_ids, *leaves)
        ctx.scale, ctx.backend, ctx.opts, ctx.reduction = scale, backend, opts, reduction
        if scale_t is not None:
            ctx.scale_meta = (scale_t.shape, scale_t.dtype, scale_t.device)
        return reduce_loss(loss.float(), reduction)

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
        inputs = LossInputs(q, p, negatives, doc_ids, ctx.scale, ctx.opts)
        dq, dp, dneg, dscale = ctx.backend.loss_backward(inputs, saved, weights, uniform)
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


def check_outputs_finite(
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


def scale_value(scale: float | torch.Tensor) -> float:
    return (
        float(scale.detach().reshape(()).item())
        if isinstance(scale, torch.Tensor)
        else float(scale)
    )
