"""Training: config validation, a short run that learns, and resume after a kill."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densescale import data
from densescale.models import build_encoder, train_tokenizer
from densescale.train import TrainConfig, train

TINY = {
    "protocol": "paper",
    "batch_size": 16,
    "num_negatives": 32,
    "lr": 2e-3,
    "max_steps": 12,
    "query_max_length": 12,
    "passage_max_length": 32,
    "eval_every": 6,
    "dev_pairs": 64,
    "dev_pool": 300,
    "dev_repeats": 1,
    "checkpoint_every": 3,
    "loss_backend": "torch",
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    path = data.synthetic(
        root / "col", num_passages=1500, num_train_queries=800, num_dev=100, num_test=100, seed=3
    )
    col = data.load_beir(path)
    tok = train_tokenizer([col.corpus[i] for i in range(len(col.corpus))], 600, root / "tok")
    pairs = data.annotation_pairs(col, source="human", split="train")[:400]
    dev = data.annotation_pairs(col, source="human", split="dev")
    return root, path, col, tok, pairs, dev


def _history_losses(run_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run_dir / "train_result.json").read_text())["history"]]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="protocol"):
        TrainConfig(protocol="nope")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"lrr": 1e-3})


def test_training_lowers_dev_ce_and_writes_files(tiny_setup, tmp_path):
    _, _, col, tok, pairs, dev = tiny_setup
    torch.manual_seed(0)
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    cfg = TrainConfig(**{**TINY, "max_steps": 30, "eval_every": 10})
    res = train(model, tok, pairs, col.corpus, tmp_path / "run", cfg, dev_pairs=dev, progress=False)
    assert res.steps == 30
    ces = [h["dev_ce"] for h in res.history if "dev_ce" in h]
    assert len(ces) == 3 and ces[-1] < ces[0]
    assert res.best_dev_ce == min(ces)
    for name in ("checkpoint.pt", "best_model.pt", "train_result.json"):
        assert (tmp_path / "run" / name).exists()
    again = train(
        model, tok, pairs, col.corpus, tmp_path / "run", cfg, dev_pairs=dev, progress=False
    )
    assert again.steps == res.steps and again.best_dev_ce == res.best_dev_ce


def test_batch_larger_than_data_is_a_clear_error(tiny_setup, tmp_path):
    _, _, col, tok, pairs, _ = tiny_setup
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    with pytest.raises(ValueError, match="batch_size"):
        train(
            model, tok, pairs[:4], col.corpus, tmp_path / "r", TrainConfig(**TINY), progress=False
        )


SCRIPT = """
import sys, torch
from densescale import data
from densescale.models import build_encoder, load_tokenizer
from densescale.train import TrainConfig, train
cfg = TrainConfig(**{cfg!r})
col = data.load_beir({col!r})
tok = load_tokenizer({tok!r})
pairs = data.annotation_pairs(col, source="human", split="train")[:400]
dev = data.annotation_pairs(col, source="human", split="dev")
torch.manual_seed(0)
model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
train(model, tok, pairs, col.corpus, {out!r}, cfg, dev_pairs=dev, progress=False)
"""


def test_killed_run_resumes_to_the_same_result(tiny_setup, tmp_path):
    root, path, *_ = tiny_setup
    cfg = dict(TINY)
    script = lambda out: SCRIPT.format(cfg=cfg, col=str(path), tok=str(root / "tok"), out=str(out))
    # uninterrupted reference
    subprocess.run([sys.executable, "-c", script(tmp_path / "a")], check=True, timeout=300)
    # killed as soon as its first checkpoint exists, then resumed
    proc = subprocess.Popen([sys.executable, "-c", script(tmp_path / "b")])
    deadline = time.time() + 240
    while not (tmp_path / "b" / "checkpoint.pt").exists():
        assert proc.poll() is None, "run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "b" / "train_result.json").exists()
    subprocess.run([sys.executable, "-c", script(tmp_path / "b")], check=True, timeout=300)
    a, b = _history_losses(tmp_path / "a"), _history_losses(tmp_path / "b")
    assert len(a) == len(b) == cfg["max_steps"]
    assert a == pytest.approx(b, rel=1e-5)


# ------------------------------------------------------------------ step inputs (batching.py)


def _reference_step(tok, pairs, corpus, doc_index, sampler, step, cfg):
    """The step inputs as the trainer built them before token caching: the tokenizer on every
    step, every batch padded to its longest member."""
    from densescale.train.trainer import tokenize

    idx, shared, group = sampler(step)
    batch = [pairs[int(i)] for i in idx]
    cpu = torch.device("cpu")
    q = tokenize(tok, [b.query for b in batch], cfg.query_max_length, cpu)
    passages = []
    for b, g in zip(batch, group):
        passages.append(b.positive)
        passages.extend(corpus[int(j)] for j in g)
    p = tokenize(tok, passages, cfg.passage_max_length, cpu)
    n = tokenize(tok, [corpus[int(j)] for j in shared], cfg.passage_max_length, cpu)
    doc_ids = []
    for i, g in zip(idx, group):
        doc_ids.append(int(doc_index[int(i)]))
        doc_ids.extend(int(j) for j in g)
    doc_ids += [int(j) for j in shared]
    return q, p, n, doc_ids


def _same(a: dict, b: dict) -> None:
    for key in ("input_ids", "attention_mask"):
        assert a[key].dtype == b[key].dtype == torch.int64
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("side", ["right", "left"])
def test_step_inputs_equal_tokenising_every_step(tiny_setup, side):
    from densescale.train.batching import StepBuilder
    from densescale.train.trainer import _Batches, pair_doc_ids

    _, _, col, tok, pairs, _ = tiny_setup
    tok.padding_side = side
    try:
        cfg = TrainConfig(
            **{**TINY, "protocol": "inbatch", "group_negatives": 2, "passage_max_length": 20}
        )
        sampler = _Batches(len(pairs), len(col.corpus), cfg, 0, 1)
        doc_index = pair_doc_ids(pairs)
        build = StepBuilder(
            sampler,
            tok,
            pairs,
            col.corpus,
            doc_index,
            query_max_length=cfg.query_max_length,
            passage_max_length=cfg.passage_max_length,
        )
        for step in (0, 1, 2, 30, 31):  # 25 steps per epoch: the second epoch reuses the cache
            got = build(step)
            q, p, n, doc_ids = _reference_step(
                tok, pairs, col.corpus, doc_index, sampler, step, cfg
            )
            _same(got.queries, q)
            _same(got.passages, p)
            _same(got.negatives, n)
            assert got.doc_ids.tolist() == doc_ids
            masks = (q["attention_mask"], p["attention_mask"], n["attention_mask"])
            assert got.tokens == sum(int(m.sum()) for m in masks)
        # the second epoch reads the cache: no query is tokenised twice
        assert build.queries.cache.tokenised <= len(set(pairs.query_rows.tolist()))
    finally:
        tok.padding_side = "right"


def test_token_caches_are_shared_by_runs_on_equal_texts(tiny_setup):
    """A collection loaded again (new objects, same content) reuses the ids tokenised before."""
    from densescale.train.batching import StepBuilder
    from densescale.train.trainer import _Batches, pair_doc_ids

    _, path, col, tok, pairs, _ = tiny_setup
    cfg = TrainConfig(**TINY)

    def build(collection, run_pairs, passage_max_length=cfg.passage_max_length):
        return StepBuilder(
            _Batches(len(run_pairs), len(collection.corpus), cfg, 0, 1),
            tok,
            run_pairs,
            collection.corpus,
            pair_doc_ids(run_pairs),
            query_max_length=cfg.query_max_length,
            passage_max_length=passage_max_length,
        )

    first, again = (
        build(c, data.annotation_pairs(c, source="human", split="train")[:400])
        for c in (col, data.load_beir(path))
    )
    assert again.corpus is first.corpus and again.queries.cache is first.queries.cache
    a = first(3)
    before = first.corpus.tokenised + first.queries.cache.tokenised
    b = again(3)
    assert first.corpus.tokenised + first.queries.cache.tokenised == before
    _same(a.queries, b.queries)
    _same(a.negatives, b.negatives)
    other = build(col, pairs, cfg.passage_max_length + 1)  # another max_length: another cache
    assert other.corpus is not first.corpus


def test_token_cache_checks_rows_and_tokenizer(tiny_setup):
    from densescale.train.batching import TokenCache

    _, _, col, tok, _, _ = tiny_setup
    cache = TokenCache(tok, 10, col.corpus.__getitem__, 8)
    with pytest.raises(IndexError, match="rows must lie in"):
        cache.batch([3, 10])
    with pytest.raises(ValueError, match="max_length"):
        TokenCache(tok, 10, col.corpus.__getitem__, 0)
    with pytest.raises(TypeError, match="str"):
        TokenCache(tok, 2, lambda i: 5, 8).batch([1])


def test_prefetched_steps_equal_built_steps():
    from densescale.train.batching import StepInputs, StepPrefetcher

    calls = []

    def build(step: int) -> StepInputs:
        calls.append(step)
        t = {"input_ids": torch.full((2, 3), step), "attention_mask": torch.ones(2, 3)}
        return StepInputs(step, t, t, None, torch.tensor([step]), 6)

    pre = StepPrefetcher(build)
    try:
        assert [pre.get(s).step for s in (0, 1, 2)] == [0, 1, 2]
        pre.wait()
        assert pre.get(7, prefetch_next=False).step == 7  # a jump rebuilds, no stale step
        assert calls == [0, 1, 2, 3, 7]
    finally:
        pre.close()


def test_training_losses_match_per_step_tokenisation(tiny_setup, tmp_path):
    """train() (cached, prefetched ids) gives the losses of a loop that tokenises every step."""
    from densescale.losses import ContrastiveLoss
    from densescale.train.trainer import _Batches, pair_doc_ids

    _, _, col, tok, pairs, _ = tiny_setup
    cfg = TrainConfig(**{**TINY, "max_steps": 5, "checkpoint_every": 100})
    torch.manual_seed(0)
    init = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    model.load_state_dict(init.state_dict())
    res = train(model, tok, pairs, col.corpus, tmp_path / "run", cfg, progress=False)

    ref = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    ref.load_state_dict(init.state_dict())
    sampler = _Batches(len(pairs), len(col.corpus), cfg, 0, 1)
    doc_index = pair_doc_ids(pairs)
    torch.manual_seed(cfg.seed)
    loss_fn = ContrastiveLoss(scale=cfg.scale, in_batch=False, backend=cfg.loss_backend)
    opt = torch.optim.AdamW(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ref.train()
    losses = []
    for step in range(cfg.max_steps):
        q, p, n, doc_ids = _reference_step(tok, pairs, col.corpus, doc_index, sampler, step, cfg)
        loss = loss_fn(ref(**q), ref(**p), negatives=ref(**n), doc_ids=torch.tensor(doc_ids))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    assert [h["loss"] for h in res.history] == losses


def test_convergence_says_what_a_stop_means():
    from densescale.train.trainer import convergence_of

    cfg = TrainConfig(eval_every=50, early_peak_evals=2)
    descent = [{"dev_ce": v} for v in (4.0, 3.0, 2.0, 1.5, 1.6, 1.7)]
    assert convergence_of("patience", 200, descent, cfg, 5.549) == "converged"
    assert convergence_of("max_steps", 200, descent, cfg, 5.549) == "not_converged"
    assert convergence_of("no_dev", 0, [], cfg, None) == "no_dev"
    # best at the second evaluation: the kept checkpoint has barely trained
    assert convergence_of("patience", 100, descent, cfg, 5.549) == "peaked_early"
    assert convergence_of("patience", 100, descent, TrainConfig(early_peak_evals=0), 5.5) == (
        "converged"
    )
    # dev CE ends above chance: memorising, whatever the best step
    climbing = [{"dev_ce": v} for v in (3.0, 2.5, 4.0, 5.0, 5.6)]
    assert convergence_of("patience", 100, climbing, cfg, 5.549) == "memorising"
    never = [{"dev_ce": v} for v in (8.0, 7.0, 6.0, 6.5)]
    assert convergence_of("patience", 150, never, cfg, 5.549) == "above_chance"
    with pytest.raises(ValueError, match="early_peak_evals"):
        TrainConfig(early_peak_evals=-1)


def test_a_run_that_never_beats_chance_is_not_converged(tiny_setup, tmp_path):
    _, _, col, tok, pairs, dev = tiny_setup
    model = build_encoder("L1-H32", vocab_size=tok.vocab_size)
    # raw dot products of a fresh encoder score far above chance; 12 steps do not bring dev CE
    # below ln(257), and a huge min_delta stops the run by patience after three evaluations
    cfg = TrainConfig(**{**TINY, "max_steps": 40, "eval_every": 4, "patience": 2, "min_delta": 100})
    res = train(model, tok, pairs, col.corpus, tmp_path / "run", cfg, dev_pairs=dev, progress=False)
    devs = [h["dev_ce"] for h in res.history if "dev_ce" in h]
    assert res.stop_reason == "patience" and res.best_step == 4 and len(devs) == 3
    assert res.dev_chance == pytest.approx(math.log(256 + 1)) and min(devs) > res.dev_chance
    assert res.convergence == "above_chance" and not res.converged
    stored = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert stored["convergence"] == "above_chance" and stored["converged"] is False


def test_dev_check_matches_a_plain_reference_and_tokenises_the_pool_once(tiny_setup):
    """DevCheck (drawn once per run) gives the dev CE of the plain recipe: encode the sampled dev
    queries and positives and the pool passages as texts, then SPEC 1.1 CE; the pool holds no dev
    positive, and a second check reuses the pool's token ids."""
    import numpy as np

    from densescale.eval import contrastive_entropy
    from densescale.models import encode_texts
    from densescale.train.dev import DEV_NEGATIVES, DevCheck, pair_doc_ids

    _, _, col, tok, _, dev = tiny_setup
    cfg = TrainConfig(**{**TINY, "dev_pairs": 40, "dev_pool": 200})
    torch.manual_seed(0)
    model = build_encoder("tiny", vocab_size=tok.vocab_size)
    check = DevCheck(tok, dev, col.corpus, cfg)
    positives = set(pair_doc_ids(dev)[pair_doc_ids(dev) >= 0].tolist())
    assert len(check.pool) == 200 and not positives & set(check.pool.tolist())
    assert len(set(check.pool.tolist())) == 200 and len(check.queries) == 40

    got = check(model, "cpu")
    tokenised = check.cache.tokenised
    assert check(model, "cpu") == pytest.approx(got, abs=1e-6)
    assert check.cache.tokenised == tokenised  # the pool is not tokenised again

    kw = {"device": "cpu"}
    q = encode_texts(model, tok, check.queries, max_length=cfg.query_max_length, **kw)
    p = encode_texts(model, tok, check.positives, max_length=cfg.passage_max_length, **kw)
    pool_texts = [col.corpus[int(i)] for i in check.pool]
    pool = encode_texts(model, tok, pool_texts, max_length=cfg.passage_max_length, **kw)
    ref = contrastive_entropy(
        q, p, pool, num_negatives=min(DEV_NEGATIVES, 200), repeats=cfg.dev_repeats, seed=cfg.seed
    ).mean
    assert got == pytest.approx(float(ref), abs=1e-4)
    assert np.isfinite(got)


def test_token_cache_capacity_stops_at_one_row_per_text(tiny_setup):
    """Filled a batch at a time, the cache doubles its id matrix but never past one row per text
    (an 8.8M-passage corpus cache is not rounded up to 16.8M rows); ids match the tokenizer."""
    import numpy as np

    from densescale.models.encode import token_ids
    from densescale.train.batching import TokenCache

    _, _, col, tok, _, _ = tiny_setup
    n = 1500
    cache = TokenCache(tok, n, col.corpus.__getitem__, 32)
    for a in range(0, n, 700):
        cache.batch(np.arange(a, min(n, a + 700)))
        assert len(cache._len) <= n
    assert len(cache._len) == n and cache.tokenised == n
    rows = np.array([3, 1499, 700])
    got = cache.batch(rows)
    want = token_ids(tok, [col.corpus[int(r)] for r in rows], 32)
    for i, ids in enumerate(want):
        assert got["input_ids"][i, : len(ids)].tolist() == ids
    assert cache.lengths(rows).tolist() == [len(ids) for ids in want]
