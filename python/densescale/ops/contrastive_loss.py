"""Fused contrastive (InfoNCE) loss: public API, input checks and backend dispatch. The math is
defined once in ``_loss_spec``; the autograd Function shared by the fused backends lives in
``_loss_autograd``, the checks of scale and doc ids in ``_loss_inputs``.

Backends (``backend=``):

- ``"torch"``: ``reference_loss_per_query`` (materialised scores, ordinary autograd); always there,
  and the only one that takes float64.
- ``"cpp"`` / ``"triton"``: modules ``densescale.ops._loss_cpp`` / ``densescale.ops._loss_triton``
  exposing ``loss_forward`` / ``loss_backward`` (the protocol in ``_loss_spec``), imported lazily
  and driven by ``_loss_autograd.BackendLoss``.
- ``"auto"``: CUDA tensors -> triton if importable, else torch; CPU tensors -> cpp if the C++
  extension is built, else torch; float64 inputs -> torch.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

from densescale import _validation as V
from densescale._native import has_native
from densescale.ops._loss_autograd import (
    BackendLoss,
    check_outputs_finite,
    reduce_loss,
    scale_value,
)
from densescale.ops._loss_inputs import (
    check_doc_ids,
    check_scale,
    doc_id_padding_value,
    pad_doc_ids,
)
from densescale.ops._loss_spec import LossInputs, LossOptions, reference_loss_per_query

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
        doc_ids = check_doc_ids(doc_ids, B * G, K, device)
    scale = check_scale(scale)
    resolved = resolve_backend(backend, device, q.dtype)  # type: ignore[arg-type]
    if check_finite:
        V.check_all_finite(q=q, p=p, negatives=negatives)
    # Kernels index rows directly; a strided view costs one copy here and keeps gradients flowing.
    q, p = q.contiguous(), p.contiguous()
    if negatives is not None:
        negatives = negatives.contiguous()
    return q, p, negatives, doc_ids, scale, G, resolved


def compute_loss(
    inputs: LossInputs, reduction: str, backend: str, *, check_finite: bool = False
) -> torch.Tensor:
    """Run an already resolved backend on already checked ``inputs`` (``doc_ids`` padded to N;
    ``scale`` a float or a 0-d tensor, which gets a gradient when it requires one).

    The building block under ``contrastive_loss`` and the gathered (multi-rank) loss; no input
    checks. ``check_finite=True``: NaN/Inf in q / p / negatives is detected from the per-query
    loss (and the fused pass's d/dscale) and raised naming the argument and row; the names are
    those of ``contrastive_loss``.
    """
    q, p, negatives, doc_ids, scale, opts = inputs
    if backend == "torch":
        if isinstance(scale, torch.Tensor):
            scale = scale.reshape(()).to(q.device)
        loss = reference_loss_per_query(q, p, negatives, doc_ids, scale, opts)
        if check_finite:
            check_outputs_finite(loss.detach(), None, q, p, negatives)
        return reduce_loss(loss, reduction)
    module = load_backend(backend)
    scale_t = scale if isinstance(scale, torch.Tensor) and scale.requires_grad else None
    # needs_input_grad ignores no_grad(), so the backend's hint is decided out here.
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, p, negatives, scale_t)
    )
    return BackendLoss.apply(
        q, p, negatives, doc_ids, scale_t, scale_value(scale), module, opts, reduction, need_grad,
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
    inputs = LossInputs(q, p, negatives, doc_ids, scale, opts)
    return compute_loss(inputs, reduction, resolved, check_finite=True)
