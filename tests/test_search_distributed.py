"""search(distributed=True): 2 gloo CPU processes, each holding part of the corpus, must return
exactly the single-process result (global ids numbered rank by rank)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import densescale

SIZES = (130, 77)  # uneven on purpose; rank 1 holds fewer rows than k = 100
D = 24


def _data():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(6, D, generator=g)
    c = torch.randn(sum(SIZES), D, generator=g)
    c[150:160] = c[0:10]  # exact ties across the two ranks
    return q, c


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        q, c = _data()
        lo = sum(SIZES[:rank])
        local = c[lo : lo + SIZES[rank]]
        results = {}
        for backend in ("cpp", "torch"):
            for k in (1, 7, 100, sum(SIZES)):
                # The second half of rank 0's shard arrives as a separate piece (list of shards).
                piece = [local[:50], local[50:]] if rank == 0 else local
                results[(backend, k)] = densescale.search(
                    q, piece, k, backend=backend, distributed=True, threads=1
                )
        results["cos"] = densescale.search(q, local, 9, metric="cos", distributed=True, threads=1)
        # Bad input on one rank: every rank raises instead of waiting forever.
        bad = local.clone()
        if rank == 1:
            bad[0, 0] = float("nan")
        try:
            densescale.search(q, bad, 5, distributed=True)
            results["error"] = None
        except ValueError as e:
            results["error"] = str(e)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_gloo_ranks_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    q, c = _data()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for backend in ("cpp", "torch"):
        for k in (1, 7, 100, sum(SIZES)):
            s, i = densescale.search(q, c, k, backend=backend)
            for res in ranks:
                rs, ri = res[(backend, k)]
                assert torch.equal(ri, i), (backend, k)
                torch.testing.assert_close(rs, s, atol=1e-5, rtol=0)
    s, i = densescale.search(q, c, 9, metric="cos")
    for res in ranks:
        assert torch.equal(res["cos"][1], i)
    assert "NaN" in ranks[1]["error"]
    assert "rank" in ranks[0]["error"] and "[1]" in ranks[0]["error"]
