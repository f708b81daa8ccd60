"""gather=True under torch.distributed: 2 CPU processes on gloo give the loss and gradients of one
process on the concatenated batch (reduction="sum": equal; "mean": the documented factor W)."""

from __future__ import annotations

import datetime
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _loss_helpers import make_reference_backend

import densescale
import densescale.ops.contrastive_loss as cl
from densescale.losses.distributed import gathered_contrastive_loss

WORLD = 2
B = 4  # queries per rank
D = 16

# name: (G, K, in_batch, symmetric, doc_ids)  doc_ids: None, "short" (B*G) or "full" (B*G+K)
CASES = {
    "in_batch_pairs": (1, 0, True, False, None),
    "grouped": (3, 0, True, False, None),
    "negatives_pool": (1, 5, True, False, None),
    "grouped_pool_own_group_only": (2, 3, False, False, None),
    "doc_ids_candidates": (2, 3, True, False, "short"),
    "doc_ids_with_pool": (2, 3, True, False, "full"),
    "symmetric": (1, 0, True, True, None),
    "symmetric_grouped_pool_doc_ids": (2, 3, True, True, "short"),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _full_batch(G, K, ids, dtype, seed):
    """The concatenated batch of all ranks (identical on every rank: same seed)."""
    gen = torch.Generator().manual_seed(seed)
    n = WORLD * B
    q = torch.nn.functional.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
    p = torch.nn.functional.normalize(
        torch.randn(n * G, D, generator=gen, dtype=torch.float64), dim=1
    )
    p[::G] += 0.5 * q
    neg = torch.randn(WORLD * K, D, generator=gen, dtype=torch.float64) if K else None
    # Few distinct ids, so duplicates occur within and across ranks.
    ids_p = torch.randint(0, n * G // 2, (n * G,), generator=gen) if ids else None
    ids_neg = (
        torch.randint(0, n * G // 2, (WORLD * K,), generator=gen) if ids == "full" and K else None
    )
    neg = None if neg is None else neg.to(dtype)
    return q.to(dtype), p.to(dtype), neg, ids_p, ids_neg


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_()


def _all_sum(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def _close(a, b, tol, what):
    err = (a.double() - b.double()).abs().max().item()
    ref = max(b.double().abs().max().item(), 1.0)
    assert err <= tol * ref, f"{what}: max error {err:.3e} (tol {tol * ref:.3e})"


def _check_case(rank, backend, dtype, tol, name, reduction):
    G, K, in_batch, symmetric, ids = CASES[name]
    q_all, p_all, neg_all, ids_p, ids_neg = _full_batch(G, K, ids, dtype, seed=len(name))
    rows, cand_rows, neg_rows = (
        slice(rank * B, (rank + 1) * B),
        slice(rank * B * G, (rank + 1) * B * G),
        slice(rank * K, (rank + 1) * K),
    )

    # This rank: its own slice of everything.
    q, p = _leaf(q_all[rows]), _leaf(p_all[cand_rows])
    neg = _leaf(neg_all[neg_rows]) if K else None
    local_ids = None
    if ids:
        local_ids = (
            ids_p[cand_rows]
            if ids_neg is None
            else torch.cat([ids_p[cand_rows], ids_neg[neg_rows]])
        )
    scale = torch.tensor(
        7.0, dtype=torch.float32 if dtype != torch.float64 else torch.float64, requires_grad=True
    )
    layout = {"in_batch": in_batch, "symmetric": symmetric, "reduction": reduction}
    loss = gathered_contrastive_loss(
        q, p, negatives=neg, doc_ids=local_ids, scale=scale, backend=backend, **layout
    )
    loss.backward()

    # One process on the concatenated batch (plain reference, float64).
    qf, pf, nf = (
        _leaf(q_all.double()),
        _leaf(p_all.double()),
        _leaf(None if neg_all is None else neg_all.double()),
    )
    full_ids = None
    if ids:
        full_ids = ids_p if ids_neg is None else torch.cat([ids_p, ids_neg])
    sf = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    single = densescale.contrastive_loss(
        qf, pf, negatives=nf, doc_ids=full_ids, scale=sf, backend="torch", **layout
    )
    single.backward()

    what = f"[{backend} {name} {reduction} rank {rank}]"
    total = _all_sum(loss)
    # sum: the ranks' losses add up to the single loss; mean: they average to it.
    _close(total if reduction == "sum" else total / WORLD, single.detach(), tol, f"{what} loss")
    factor = 1.0 if reduction == "sum" else float(WORLD)  # mean: W x the global-mean gradient
    _close(q.grad, factor * qf.grad[rows], tol, f"{what} dq")
    _close(p.grad, factor * pf.grad[cand_rows], tol, f"{what} dp")
    if K:
        _close(neg.grad, factor * nf.grad[neg_rows], tol, f"{what} dneg")
    _close(_all_sum(scale.grad), factor * sf.grad, tol, f"{what} dscale")


def _check_module(rank, backend, dtype, tol):
    """ContrastiveLoss(gather=True, learnable_scale=True): loss and log-scale gradient."""
    q_all, p_all, _, _, _ = _full_batch(2, 0, None, dtype, seed=99)
    rows, cand_rows = slice(rank * B, (rank + 1) * B), slice(rank * B * 2, (rank + 1) * B * 2)
    mod = densescale.ContrastiveLoss(5.0, learnable_scale=True, gather=True, backend=backend)
    if dtype == torch.float64:
        mod = mod.double()  # same precision of the scale on both sides
    q, p = _leaf(q_all[rows]), _leaf(p_all[cand_rows])
    loss = mod(q, p)
    loss.backward()
    ref_mod = densescale.ContrastiveLoss(5.0, learnable_scale=True, backend="torch").double()
    qf, pf = _leaf(q_all.double()), _leaf(p_all.double())
    single = ref_mod(qf, pf)
    single.backward()
    _close(_all_sum(loss) / WORLD, single.detach(), tol, f"[{backend} module] loss")
    _close(
        _all_sum(mod.log_scale.grad),
        WORLD * ref_mod.log_scale.grad,
        tol,
        f"[{backend} module] dlog_scale",
    )
    _close(p.grad, WORLD * pf.grad[cand_rows], tol, f"[{backend} module] dp")


def _check_layout_mismatch(rank):
    """Different B on the two ranks: the same clear ValueError on both, before any gather."""
    n = 4 if rank == 0 else 3
    q, p = torch.randn(n, D), torch.randn(n, D)
    with pytest.raises(ValueError, match=r"same B \(queries\) on every rank, got \[4, 3\]"):
        gathered_contrastive_loss(q, p, backend="torch")
    k = 2 + rank
    with pytest.raises(ValueError, match=r"same K \(negatives\)"):
        gathered_contrastive_loss(
            torch.randn(4, D), torch.randn(4, D), negatives=torch.randn(k, D), backend="torch"
        )


def _worker(rank: int, port: int, backends: list[str]) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    try:
        for name in backends:
            # "protocol": the reference backend behind the fused Function, run as backend="cpp".
            if name == "protocol":
                ref = make_reference_backend()
                cl.load_backend = lambda _n, ref=ref: ref
                backend = "cpp"
            else:
                backend = name
            dtype, tol = (torch.float64, 1e-10) if name == "torch" else (torch.float32, 2e-5)
            for case in CASES:
                for reduction in ("sum", "mean"):
                    _check_case(rank, backend, dtype, tol, case, reduction)
            _check_module(rank, backend, dtype, tol)
        _check_layout_mismatch(rank)
    finally:
        dist.destroy_process_group()


def _available_backends() -> list[str]:
    names = ["torch", "protocol"]
    for name in ("cpp", "triton"):
        try:
            cl.load_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_gather_equals_single_process_on_concatenated_batch():
    mp.spawn(_worker, args=(_free_port(), _available_backends()), nprocs=WORLD, join=True)


def test_gather_without_process_group_is_the_local_loss():
    assert not dist.is_initialized()
    q, p = torch.randn(5, 8), torch.randn(10, 8)
    got = densescale.ContrastiveLoss(3.0, gather=True, backend="torch")(q, p)
    want = densescale.contrastive_loss(q, p, scale=3.0, backend="torch")
    assert torch.equal(got, want)
    assert math.isfinite(got.item())
