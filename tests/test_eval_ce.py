"""densescale.eval.contrastive_entropy: analytic cases, a float64 reference, the sampler, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from densescale.eval import CEResult, contrastive_entropy, sample_negatives


def _reference(q, pos, pool, ids) -> np.ndarray:
    """float64 numpy CE per pair from given negative ids (R, P, K)."""
    q, pos, pool = (t.double().numpy() for t in (q, pos, pool))
    s_pos = (q * pos).sum(1)
    out = np.zeros(q.shape[0])
    for r in range(ids.shape[0]):
        neg = np.einsum("pd,pkd->pk", q, pool[ids[r].numpy()])
        logits = np.concatenate([s_pos[:, None], neg], axis=1)
        m = logits.max(1, keepdims=True)
        out += (m[:, 0] + np.log(np.exp(logits - m).sum(1))) - s_pos
    return out / ids.shape[0]


def test_all_scores_equal_gives_ln_k_plus_1():
    q = torch.zeros(7, 16)
    pos = torch.randn(7, 16)
    pool = torch.randn(500, 16)
    res = contrastive_entropy(q, pos, pool, num_negatives=256, repeats=3)
    assert isinstance(res, CEResult) and res.num_pairs == 7
    np.testing.assert_allclose(res.per_pair, math.log(257), rtol=1e-12)
    assert res.mean == pytest.approx(math.log(257), rel=1e-12)
    assert res.stderr == pytest.approx(0.0, abs=1e-12)


def test_known_margin_closed_form():
    # negatives score exactly 0 (orthogonal to the query), the positive scores m:
    # CE = log(e^m + K) - m = log(1 + K e^{-m}) whatever negatives are drawn
    margins = torch.tensor([0.0, 0.5, 2.0, 7.5, -1.0])
    q = torch.zeros(5, 3)
    q[:, 0] = 1.0
    pos = torch.zeros(5, 3)
    pos[:, 0] = margins
    pool = torch.zeros(1000, 3)
    pool[:, 1:] = torch.randn(1000, 2)
    k = 16
    res = contrastive_entropy(q, pos, pool, num_negatives=k, repeats=4, seed=3)
    expected = np.log1p(k * np.exp(-margins.double().numpy()))
    np.testing.assert_allclose(res.per_pair, expected, rtol=1e-6)
    np.testing.assert_allclose(res.mean, expected.mean(), rtol=1e-6)


def test_pool_equal_to_k_uses_every_passage():
    # |pool| = K: every draw holds the whole pool, so CE = logsumexp([s+, s_1..s_K]) - s+ exactly
    torch.manual_seed(2)
    q, pos, pool = torch.randn(6, 8), torch.randn(6, 8), torch.randn(9, 8)
    res = contrastive_entropy(q, pos, pool, num_negatives=9, repeats=2, seed=11)
    s_pos = (q.double() * pos.double()).sum(1, keepdim=True)
    logits = torch.cat([s_pos, q.double() @ pool.double().T], dim=1)
    np.testing.assert_allclose(
        res.per_pair, (torch.logsumexp(logits, 1) - s_pos[:, 0]).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("pool_size,k", [(40, 16), (3000, 64)])  # permutation path, rejection path
def test_matches_float64_reference_and_independent_of_batch_size(pool_size, k):
    torch.manual_seed(3)
    P, D = 37, 12
    q, pos, pool = torch.randn(P, D), torch.randn(P, D), torch.randn(pool_size, D)
    res = contrastive_entropy(q, pos, pool, num_negatives=k, repeats=3, seed=5, batch_size=8)
    ids = sample_negatives(P, k, pool_size, repeats=3, seed=5)
    assert ids.shape == (3, P, k)
    np.testing.assert_allclose(res.per_pair, _reference(q, pos, pool, ids), rtol=1e-5, atol=1e-6)
    again = contrastive_entropy(q, pos, pool, num_negatives=k, repeats=3, seed=5, batch_size=1000)
    np.testing.assert_allclose(again.per_pair, res.per_pair, rtol=1e-6, atol=1e-7)
    sd = res.per_pair.std(ddof=1) / math.sqrt(P)
    assert res.stderr == pytest.approx(sd)
    # half-precision embeddings are accepted and give nearly the same value
    half = contrastive_entropy(
        q.bfloat16(), pos.bfloat16(), pool.bfloat16(), num_negatives=k, repeats=3, seed=5
    )
    assert half.mean == pytest.approx(res.mean, rel=0.05)


def test_seeded():
    torch.manual_seed(4)
    q, pos, pool = torch.randn(20, 6), torch.randn(20, 6), torch.randn(300, 6)
    a = contrastive_entropy(q, pos, pool, num_negatives=32, repeats=2, seed=1)
    b = contrastive_entropy(q, pos, pool, num_negatives=32, repeats=2, seed=1)
    c = contrastive_entropy(q, pos, pool, num_negatives=32, repeats=2, seed=2)
    np.testing.assert_array_equal(a.per_pair, b.per_pair)
    assert not np.allclose(a.per_pair, c.per_pair)
    torch.manual_seed(999)  # the global RNG plays no part
    np.testing.assert_array_equal(
        contrastive_entropy(q, pos, pool, num_negatives=32, repeats=2, seed=1).per_pair, a.per_pair
    )
    assert torch.equal(
        sample_negatives(20, 32, 300, repeats=2, seed=1),
        sample_negatives(20, 32, 300, repeats=2, seed=1),
    )
    # more draws average out: R = 1 and R = 10 differ per pair
    one = contrastive_entropy(q, pos, pool, num_negatives=32, repeats=1, seed=1)
    assert not np.allclose(
        one.per_pair,
        contrastive_entropy(q, pos, pool, num_negatives=32, repeats=10, seed=1).per_pair,
    )


@pytest.mark.parametrize(
    "n,k", [(6, 2), (9, 2), (7, 3)]
)  # (6,2),(7,3): permutation path; (9,2): rejection
def test_sampler_draws_uniform_distinct_subsets(n, k):
    ids = sample_negatives(30000, k, n, repeats=1, seed=7)[0]
    assert ids.min() >= 0 and ids.max() < n
    srt = ids.sort(dim=1).values
    assert bool((srt[:, 1:] != srt[:, :-1]).all())  # distinct within a draw
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(n), k))}
    counts = np.zeros(len(subsets))
    for row in srt.tolist():
        counts[subsets[tuple(row)]] += 1
    assert chisquare(counts).pvalue > 1e-4  # every k-subset equally likely


def test_sampler_large_pool_distinct_and_covering():
    ids = sample_negatives(3000, 256, 20000, repeats=2, seed=0)
    srt = ids.sort(dim=2).values
    assert bool((srt[..., 1:] != srt[..., :-1]).all())
    counts = np.bincount(ids.flatten().numpy(), minlength=20000)
    # 1.536M draws over 20k ids: every id's count within ~6 sigma of its mean 76.8
    assert counts.min() > 76.8 - 6 * math.sqrt(76.8) and counts.max() < 76.8 + 6 * math.sqrt(76.8)
    assert not torch.equal(ids[0], ids[1])


def test_pool_rows_select_the_pool_without_copy():
    torch.manual_seed(5)
    q, pos, corpus = torch.randn(9, 6), torch.randn(9, 6), torch.randn(200, 6)
    rows = torch.randperm(200)[:120]
    a = contrastive_entropy(q, pos, corpus, pool_rows=rows, num_negatives=32, repeats=2, seed=3)
    b = contrastive_entropy(q, pos, corpus[rows], num_negatives=32, repeats=2, seed=3)
    np.testing.assert_allclose(a.per_pair, b.per_pair, rtol=1e-6)
    with pytest.raises(ValueError, match="num_negatives"):
        contrastive_entropy(q, pos, corpus, pool_rows=rows[:10], num_negatives=32)
    with pytest.raises(ValueError, match="pool_rows"):
        contrastive_entropy(q, pos, corpus, pool_rows=torch.tensor([0, 200]), num_negatives=1)
    with pytest.raises(ValueError, match="pool_rows"):
        contrastive_entropy(q, pos, corpus, pool_rows=torch.tensor([3, 3]), num_negatives=1)
    with pytest.raises(TypeError, match="pool_rows"):
        contrastive_entropy(q, pos, corpus, pool_rows=[1, 2], num_negatives=1)


def test_dense_and_candidate_scoring_paths_agree(monkeypatch):
    import densescale.eval.entropy as ce_mod

    torch.manual_seed(6)
    q, pos, corpus = torch.randn(30, 10), torch.randn(30, 10), torch.randn(400, 10)
    rows = torch.randperm(400)[:300]
    results = []
    for factor, dense_scores in ((0, 1 << 24), (10**9, 1 << 24), (10**9, 700)):
        monkeypatch.setattr(ce_mod, "_DENSE_POOL_FACTOR", factor)
        monkeypatch.setattr(ce_mod, "_DENSE_SCORES", dense_scores)  # 700: one pair per chunk
        results.append(
            contrastive_entropy(q, pos, corpus, pool_rows=rows, num_negatives=20, repeats=3, seed=2)
        )
    ids = sample_negatives(30, 20, 300, repeats=3, seed=2)
    expected = _reference(q, pos, corpus[rows], ids)
    for res in results:
        np.testing.assert_allclose(res.per_pair, expected, rtol=1e-5, atol=1e-6)


def test_bad_input():
    q, pos, pool = torch.randn(4, 8), torch.randn(4, 8), torch.randn(50, 8)
    with pytest.raises(ValueError, match="pos_emb"):
        contrastive_entropy(q, pos[:3], pool)
    with pytest.raises(ValueError, match="pool_emb"):
        contrastive_entropy(q, pos, torch.randn(50, 7), num_negatives=8)
    with pytest.raises(ValueError, match="num_negatives"):
        contrastive_entropy(q, pos, pool, num_negatives=51)
    with pytest.raises(ValueError, match="num_negatives"):
        contrastive_entropy(q, pos, pool, num_negatives=0)
    with pytest.raises(ValueError, match="repeats"):
        contrastive_entropy(q, pos, pool, num_negatives=8, repeats=0)
    with pytest.raises(ValueError, match="seed"):
        contrastive_entropy(q, pos, pool, num_negatives=8, seed=-1)
    bad = pool.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="pool_emb"):
        contrastive_entropy(q, pos, bad, num_negatives=8)
    with pytest.raises(ValueError, match="q_emb"):
        contrastive_entropy(q[0], pos, pool, num_negatives=8)
    with pytest.raises(ValueError, match="q_emb"):
        contrastive_entropy(q[:0], pos[:0], pool, num_negatives=8)
    with pytest.raises(TypeError, match="pos_emb"):
        contrastive_entropy(q, pos.numpy(), pool, num_negatives=8)
    with pytest.raises(TypeError, match="q_emb"):
        contrastive_entropy(q.long(), pos, pool, num_negatives=8)
    with pytest.raises(ValueError, match="num_negatives"):
        sample_negatives(3, 10, 5)


# ---- NaN / Inf: named from the scores (issue 10, issue 11 item 3) ----


@pytest.mark.parametrize("pool_size", [60, 1000])  # dense scoring / drawn candidates only
def test_nan_rows_are_named_exactly(pool_size):
    g = torch.Generator().manual_seed(0)
    q, pos = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    pool = torch.randn(pool_size, 16, generator=g)
    # 1000 > 8 * repeats * K: only drawn rows are scored (200 x 100 draws touch every row here)
    kw = (
        {"num_negatives": 8, "repeats": 2}
        if pool_size == 60
        else {"num_negatives": 100, "repeats": 1}
    )
    for name, t in (("q_emb", q), ("pos_emb", pos), ("pool_emb", pool)):
        bad = t.clone()
        bad[17, 3] = float("nan")
        bad[25, 0] = float("inf")
        args = {"q_emb": q, "pos_emb": pos, "pool_emb": pool, name: bad}
        with pytest.raises(ValueError, match=rf"^{name} row 17 holds NaN or Inf"):
            contrastive_entropy(args["q_emb"], args["pos_emb"], args["pool_emb"], **kw)


def test_nan_outside_pool_rows_is_not_an_error():
    g = torch.Generator().manual_seed(0)
    q, pos = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    pool = torch.randn(40, 16, generator=g)
    pool[3] = float("nan")  # a test positive, excluded from the pool by pool_rows
    rows = torch.tensor([r for r in range(40) if r != 3])
    res = contrastive_entropy(q, pos, pool, num_negatives=8, repeats=2, pool_rows=rows)
    assert np.isfinite(res.mean)
    pool[20, 1] = float("inf")
    with pytest.raises(ValueError, match="pool_emb row 20 holds NaN or Inf"):
        contrastive_entropy(q, pos, pool, num_negatives=8, repeats=2, pool_rows=rows)
