"""MedQuAD (real BEIR collection beside the checkout); skipped when absent."""

from __future__ import annotations

from densescale.data import annotation_pairs, load_medquad, nested_subsets


def test_medquad_loads(medquad_path):
    c = load_medquad(medquad_path)
    assert c.name == "medquad" and c.splits == ("train", "dev", "test")
    assert len(c.corpus) == 15_809 and len(c.queries) == 14_980
    sizes = {s: (len(c.qrels(s)), sum(len(d) for d in c.qrels(s).values())) for s in c.splits}
    assert sizes == {"train": (11_993, 13_182), "dev": (1_489, 1_591), "test": (1_498, 1_586)}
    pairs = annotation_pairs(c, "human", split="train")
    assert len(pairs) == 13_182
    q, p, idx = pairs[0]
    assert q == c.queries[c.queries.index(pairs.query_id(0))] and p == c.corpus[idx]
    # split by topic: almost no test positive is also a training positive (15 shared answer texts)
    test_rows, train_rows = (
        set(c.positive_rows("test").tolist()),
        set(c.positive_rows("train").tolist()),
    )
    assert len(test_rows) == 1_534 and len(test_rows & train_rows) < 0.02 * len(test_rows)
    sub = nested_subsets(len(pairs), [100, 1000, 13_182], seed=0)
    assert len(pairs.subset(sub[1])) == 1000


def test_medquad_ict_subset(medquad_path):
    c = load_medquad(medquad_path)
    pairs = annotation_pairs(c, "ict", max_pairs=200, seed=0)
    assert len(pairs) == 200
    test_rows = set(c.positive_rows("test").tolist())
    assert not test_rows & set(pairs.source_indices.tolist())
