"""Helpers shared by the loss tests: input builders, an eager loss in the input dtype, the
dtype-aware comparison, and a protocol-conformant backend built on the reference.

The reference backend lets the tests run the real ``_BackendLoss`` autograd plumbing before (and
independently of) the C++ and Triton kernels: its forward is ``reference_loss_per_query`` and its
backward is ``torch.autograd.grad`` of ``sum(weights * loss)``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest
import torch

import densescale.ops.contrastive_loss as cl
from densescale.ops._loss_spec import LossOptions, reference_loss_per_query

# Names of the backends the tests parametrize over; "protocol" is the reference backend below,
# run through the fused-backend Function (selected as backend="cpp" with the lookup patched).
BACKENDS = ["torch", "protocol", "cpp", "triton"]
FUSED = ("cpp", "triton")


def make_reference_backend() -> types.ModuleType:
    """A module following the loss backend protocol, with a call log in ``.calls``."""
    mod = types.ModuleType("reference_protocol_backend")
    mod.calls = []

    def loss_forward(inputs, need_grad):
        q, p, negatives, doc_ids, scale, opts = inputs
        assert isinstance(scale, float) and isinstance(opts, LossOptions)
        assert q.is_contiguous() and p.is_contiguous()
        assert negatives is None or negatives.is_contiguous()
        if doc_ids is not None:
            n = p.shape[0] + (0 if negatives is None else negatives.shape[0])
            assert doc_ids.dtype == torch.int64 and doc_ids.shape == (n,)
        with torch.no_grad():
            loss = reference_loss_per_query(q, p, negatives, doc_ids, scale, opts).float()
        mod.calls.append({"op": "forward", "need_grad": need_grad, "opts": opts})
        # A tensor and a non-tensor in `saved`, so the Function's save/rebuild path is exercised.
        return loss, (loss.clone(), "saved-tag")

    def loss_backward(inputs, saved, weights, uniform):
        q, p, negatives, doc_ids, scale, opts = inputs
        assert saved[1] == "saved-tag" and saved[0].shape == (q.shape[0],)
        assert weights.dtype == torch.float32 and weights.shape == (q.shape[0],)
        if uniform:
            assert bool((weights == weights[0]).all())
        mod.calls.append({"op": "backward", "uniform": uniform, "weights": weights.clone()})
        with torch.enable_grad():
            leaves = [t.detach().float().requires_grad_() for t in (q, p)]
            neg = None if negatives is None else negatives.detach().float().requires_grad_()
            s = torch.tensor(scale, dtype=torch.float32, requires_grad=True)
            loss = reference_loss_per_query(leaves[0], leaves[1], neg, doc_ids, s, opts)
            wanted = leaves + ([neg] if neg is not None else []) + [s]
            grads = torch.autograd.grad((loss * weights).sum(), wanted)
        dq, dp = grads[0], grads[1]
        dneg = grads[2] if neg is not None else None
        return dq, dp, dneg, grads[-1]  # fp32 on purpose: the API casts to the input dtype

    mod.loss_forward = loss_forward
    mod.loss_backward = loss_backward
    return mod


def select_backend(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, types.ModuleType | None]:
    """Return the ``backend=`` value that runs ``name`` (skipping when it is not importable) and,
    for "protocol", the reference backend module that now stands behind backend="cpp"."""
    if name == "protocol":
        ref = make_reference_backend()
        monkeypatch.setattr(cl, "load_backend", lambda _name: ref)
        return "cpp", ref
    if name in FUSED:
        try:
            cl.load_backend(name)
        except ImportError as exc:
            pytest.skip(f"backend {name!r} not importable here: {exc}")
    return name, None


@dataclass
class Case:
    """Inputs of one loss call: leaves that require grad, plus the options."""

    q: torch.Tensor
    p: torch.Tensor
    negatives: torch.Tensor | None
    doc_ids: torch.Tensor | None
    scale: torch.Tensor
    in_batch: bool
    symmetric: bool

    def kwargs(self) -> dict:
        """The keyword arguments of ``contrastive_loss`` this case sets."""
        return {
            k: getattr(self, k) for k in ("negatives", "doc_ids", "scale", "in_batch", "symmetric")
        }

    def leaves(self) -> list[torch.Tensor]:
        out = [self.q, self.p] + ([self.negatives] if self.negatives is not None else [])
        return out + [self.scale]

    def cast(self, dtype: torch.dtype) -> Case:
        """Fresh leaves with the same values in ``dtype`` (scale stays float32, or float64)."""

        def leaf(t, dt):
            return None if t is None else t.detach().to(dt).requires_grad_()

        sdt = torch.float64 if dtype == torch.float64 else torch.float32
        return Case(
            leaf(self.q, dtype),
            leaf(self.p, dtype),
            leaf(self.negatives, dtype),
            self.doc_ids,
            leaf(self.scale, sdt),
            self.in_batch,
            self.symmetric,
        )


def make_case(
    B: int,
    G: int = 1,
    K: int = 0,
    D: int = 32,
    *,
    in_batch: bool = True,
    symmetric: bool = False,
    doc_ids: str | None = None,
    scale: float = 20.0,
    normalize: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Case:
    """Random embeddings (unit-norm rows by default, like cosine training); ``doc_ids`` None,
    "short" (B*G ids with duplicates) or "full" (B*G+K ids, duplicates in the pool too)."""
    gen = torch.Generator().manual_seed(seed)

    def emb(n):
        x = torch.randn(n, D, generator=gen, dtype=torch.float64)
        return torch.nn.functional.normalize(x, dim=1) if normalize else x

    q, p = emb(B), emb(B * G)
    # Make positives correlate with their queries, as in training, so the loss is not uniform.
    p[::G] = p[::G] + 0.5 * q
    neg = emb(K) if K else None
    ids = None
    if doc_ids is not None:
        n = B * G + (K if doc_ids == "full" else 0)
        ids = torch.randint(0, max(2, (B * G) // 2), (n,), generator=gen, dtype=torch.int64)
    return Case(
        q.to(dtype).requires_grad_(),
        p.to(dtype).requires_grad_(),
        None if neg is None else neg.to(dtype).requires_grad_(),
        ids,
        torch.tensor(scale, dtype=torch.float32, requires_grad=True),
        in_batch,
        symmetric,
    )


def eager_loss_in_dtype(case: Case) -> torch.Tensor:
    """Per-query loss computed eagerly in the inputs' own dtype (scores, log-sum-exp and autograd
    all in that dtype): the bar a kernel's error is measured against. Independent of the reference
    in _loss_spec (its own masking code)."""
    q, p, neg = case.q, case.p, case.negatives
    B, G = q.shape[0], p.shape[0] // q.shape[0]
    scale = case.scale.to(q.dtype)
    cands = p if neg is None else torch.cat([p, neg])
    scores = (q @ cands.T) * scale
    target = torch.arange(B) * G
    keep = torch.ones(scores.shape, dtype=torch.bool)
    if not case.in_batch:
        owner = torch.arange(p.shape[0]) // G
        keep[:, : p.shape[0]] = owner[None, :] == torch.arange(B)[:, None]
    ids = case.doc_ids
    if ids is not None:
        full = cl.pad_doc_ids(ids, cands.shape[0])
        same = full[None, :] == full[target][:, None]
        same[torch.arange(B), target] = False
        keep &= ~same
    scores = scores.masked_fill(~keep, float("-inf"))
    loss = torch.logsumexp(scores, 1) - scores[torch.arange(B), target]
    if case.symmetric:
        pos = p[target]
        s2 = (pos @ q.T) * scale
        if ids is not None:
            pid = ids[target]
            dup = pid[:, None] == pid[None, :]
            dup.fill_diagonal_(False)
            s2 = s2.masked_fill(dup, float("-inf"))
        loss = 0.5 * (loss + torch.logsumexp(s2, 1) - s2.diagonal())
    return loss


_EPS = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Kernels compute in fp32 whatever the input dtype: rounding a logit of size |s| moves the softmax
# by about u32 * |s| (forward and a recomputing backward may round differently).
U32 = 2.0**-24


def assert_no_worse_than_eager(
    got: torch.Tensor | None,
    ref64: torch.Tensor,
    eager: torch.Tensor,
    dtype: torch.dtype,
    what: str,
    fp32_noise: float = 0.0,
) -> None:
    """|got - ref64| <= |eager - ref64| + eps(dtype) * max|ref64| + fp32_noise (maxima).

    ``fp32_noise`` is the rounding an fp32 computation of this quantity cannot avoid (see
    ``fp32_noise_scales``)."""
    assert got is not None, f"{what}: no value/gradient"
    assert got.shape == ref64.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref64.shape)}"
    assert bool(torch.isfinite(got).all()), f"{what}: non-finite values"
    ref = ref64.double()
    err = (got.double() - ref).abs().max().item()
    bar = (eager.double() - ref).abs().max().item()
    tol = bar + _EPS[dtype] * max(ref.abs().max().item(), 1e-3) + fp32_noise
    assert err <= tol, (
        f"{what}: max error {err:.3e} > eager {dtype} error {bar:.3e} + eps ({tol:.3e})"
    )


def fp32_noise_scales(case: Case, weights: torch.Tensor) -> tuple[float, float]:
    """(relative noise of loss and embedding gradients, absolute noise of dscale) for fp32 math.

    Loss and gradients: 4 * u32 * max|logit| relative to their size. dscale sums one term of size
    up to max|q.c| per weighted row, with cancellation (8 * u32 * sum|w_i| * max|q.c|), and each
    term carries the softmax noise above (4 * u32 * max|logit| * max|q.c|, random over rows).
    """
    q = case.q.detach().double()
    cands = case.p.detach().double()
    if case.negatives is not None:
        cands = torch.cat([cands, case.negatives.detach().double()])
    raw = (q @ cands.T).abs().max().item()
    rel = 4 * U32 * abs(case.scale.item()) * raw
    w = weights.double()
    dscale = (8 * U32 * w.abs().sum().item() + rel * w.square().sum().sqrt().item()) * raw
    return rel, dscale


def run(case: Case, backend: str, reduction: str, grad_out: torch.Tensor | None = None):
    """Loss and gradients of every leaf for one call (grad_out defaults to random weights)."""
    for t in case.leaves():
        t.grad = None
    loss = cl.contrastive_loss(
        case.q, case.p, reduction=reduction, backend=backend, **case.kwargs()
    )
    if grad_out is None:
        grad_out = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    loss.backward(grad_out.to(loss.dtype))
    return loss.detach(), [t.grad for t in case.leaves()]
