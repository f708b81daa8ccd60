"""The synthetic collection's quality knob (``query_quality = q``): a share ~q of the training
queries is drawn from its positive, the rest from another training-eligible passage; which is
which is written down, dev/test and the oracle stay as they were, and the known answer (D pairs
at quality q are worth qD clean pairs when a wrong pair teaches nothing) comes back out of the
exchange-rate fit, falling monotonically as q falls."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from densescale.data import read_oracle, synthetic
from densescale.report import fit_study
from densescale.scaling import DataSizeLaw

SMALL = {
    "num_passages": 3000,
    "num_train_queries": 1500,
    "num_dev": 100,
    "num_test": 200,
    "vocab_size": 2000,
    "num_topics": 50,
    "rare_start": 500,
    "repeats": 2,
}
QUALITIES = (1.0, 0.7, 0.4)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("quality")
    return {q: synthetic(root / f"q{q}", query_quality=q, **SMALL) for q in QUALITIES}


def _tsv(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    return {r[0]: r[1] for r in rows}


def test_a_share_q_of_training_pairs_is_right_and_written_down(folders):
    clean = folders[1.0]
    assert not (clean / "train_query_source.tsv").exists()
    assert "query_quality" not in read_oracle(clean)["config"]  # old folders still match
    qrels_dev_test = {**_tsv(clean / "qrels/dev.tsv"), **_tsv(clean / "qrels/test.tsv")}
    for q in QUALITIES[1:]:
        folder = folders[q]
        meta = read_oracle(folder)["query_quality"]
        n = SMALL["num_train_queries"]
        assert meta["q"] == q and meta["train_pairs"] == n
        assert abs(meta["right_share"] - q) < 4 * np.sqrt(q * (1 - q) / n)  # binomial, 4 sd
        qrels = _tsv(folder / "qrels/train.tsv")
        sources = _tsv(folder / meta["sources"])
        assert set(sources) == set(qrels)
        right = sum(sources[k] == qrels[k] for k in qrels)
        assert right == meta["right_pairs"]
        # a wrong query's words come from a passage that is no dev or test positive
        assert not set(sources.values()) & set(qrels_dev_test.values())
        # dev and test are untouched: same qrels, same queries, same oracle CE
        for split in ("dev", "test"):
            assert (folder / f"qrels/{split}.tsv").read_bytes() == (
                clean / f"qrels/{split}.tsv"
            ).read_bytes()
        assert read_oracle(folder)["splits"] == read_oracle(clean)["splits"]
        assert (folder / "corpus.jsonl").read_bytes() == (clean / "corpus.jsonl").read_bytes()


def test_wrong_queries_are_about_their_source_not_their_positive(folders):
    """A wrong training query shares more words with the passage it was drawn from than with the
    positive its qrels name (the words are right, the label is not)."""
    folder = folders[0.4]
    qrels = _tsv(folder / "qrels/train.tsv")
    sources = _tsv(folder / "train_query_source.tsv")
    queries = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        r = json.loads(line)
        queries[r["_id"]] = set(r["text"].split())
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        r = json.loads(line)
        corpus[r["_id"]] = set(r["text"].replace(".", "").split())
    wrong = [k for k in qrels if sources[k] != qrels[k]]
    closer = [
        len(queries[k] & corpus[sources[k]]) > len(queries[k] & corpus[qrels[k]]) for k in wrong
    ]
    assert len(wrong) > 500 and np.mean(closer) > 0.8


def test_quality_one_is_the_collection_made_without_the_knob(folders, tmp_path):
    plain = synthetic(tmp_path / "plain", **SMALL)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "oracle.json"):
        assert (plain / name).read_bytes() == (folders[1.0] / name).read_bytes()
    with pytest.raises(ValueError, match="query_quality must be in"):
        synthetic(tmp_path / "bad", query_quality=1.5, **SMALL)


def test_the_known_exchange_rate_comes_back_and_falls_with_q(folders):
    """Records that follow one clean data-size law at the effective data ``right_share * D``
    (the knob's known answer) give, through fit_study, an effective human data of
    ``right_share * D`` with an interval that holds it, falling monotonically as q falls."""
    law = DataSizeLaw(B=2000.0, beta=0.8, delta=0.3)
    sizes = [1000, 2000, 4000, 8000, 16000, 32000]
    rng = np.random.default_rng(0)
    records, share = [], {}
    for q in QUALITIES:
        meta = read_oracle(folders[q]).get("query_quality")
        share[q] = 1.0 if meta is None else meta["right_share"]
        source = "human" if q == 1.0 else f"synthetic-q{q}"
        for d in sizes:
            ce = law.predict(share[q] * d) * np.exp(0.005 * rng.standard_normal())
            records.append(
                {"model": "L1-H32", "N": 17984, "D": d, "source": source, "ce": float(ce),
                 "chance_ce": float(np.log(257))}
            )  # fmt: skip
    fits = fit_study(records, n_boot=60, seed=0)
    effective = []
    for q in QUALITIES[1:]:
        ex = fits[f"synthetic-q{q}"].exchange
        assert ex.answered, ex.note
        # effective human data of D pairs at quality q: the rate read the other way
        rate = ex.quoted.rate  # pairs of the source per human pair
        np.testing.assert_allclose(rate, 1 / share[q], rtol=0.1)
        truth = ex.quoted.D / share[q]
        assert np.all((ex.quoted.lower <= truth * 1.02) & (truth * 0.98 <= ex.quoted.upper))
        effective.append(1 / float(np.mean(rate)))
    assert effective[0] > effective[1]  # q = 0.7 is worth more per pair than q = 0.4
    assert 1.0 > effective[0]
