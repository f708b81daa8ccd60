"""Annotation sources: human qrels, ICT, random cropping, doc2query; one pair format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densescale.data import TrainingPair, TrainingPairs, annotation_pairs, load_beir, nested_subsets

PASSAGES = {
    "d1": "The cat sat on the mat. It purred loudly! Then it slept?",
    "d2": " ".join(f"w{i}" for i in range(50)),  # one sentence, 50 words
    "d3": "Short one.",
    "d4": "Alpha beta gamma. Delta epsilon.",
    "d5": "Solo",  # one word: no ICT / crop pair
    "d6": "Dev passage here. Second sentence.",
    "d7": "Test passage here. Another sentence.",
}


@pytest.fixture
def collection(tmp_path: Path):
    root = tmp_path / "c"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in PASSAGES.items())
    )
    queries = {
        "q1": "cat on mat",
        "q2": "numbers",
        "q3": "not relevant",
        "q4": "dev q",
        "q5": "test q",
    }
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td4\t2\nq2\td2\t1\nq3\td3\t0\n"
    )
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td6\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq5\td7\t1\n")
    return load_beir(root)


def test_human_pairs(collection):
    pairs = annotation_pairs(collection, "human", split="train")
    assert (
        isinstance(pairs, TrainingPairs) and len(pairs) == 3
    )  # q1 twice, q2 once, q3 (rel 0) never
    got = sorted((p.query, p.positive, p.positive_index) for p in pairs)
    c = collection.corpus
    assert got == sorted(
        [
            ("cat on mat", PASSAGES["d1"], c.index("d1")),
            ("cat on mat", PASSAGES["d4"], c.index("d4")),
            ("numbers", PASSAGES["d2"], c.index("d2")),
        ]
    )
    assert isinstance(pairs[0], TrainingPair)
    assert pairs.query_id(0) == "q1"
    test = annotation_pairs(collection, "human", split="test")
    assert [tuple(p) for p in test] == [("test q", PASSAGES["d7"], c.index("d7"))]
    sub = pairs.subset(nested_subsets(len(pairs), [2], seed=0)[0])
    assert len(sub) == 2 and all(p in list(pairs) for p in sub)
    assert pairs.query_texts([1]) == [pairs[1].query] and pairs.positive_texts([1]) == [
        pairs[1].positive
    ]


def test_ict_pairs(collection):
    pairs = annotation_pairs(collection, "ict", split="train", seed=1)
    c = collection.corpus
    by_source = {c.id(int(s)): p for s, p in zip(pairs.source_indices, pairs)}
    # dev and test positives are excluded; the one-word passage gives no pair
    assert set(by_source) == {"d1", "d2", "d3", "d4"}
    assert all(p.positive_index == -1 for p in pairs)
    q, pos, _ = by_source["d1"]
    sentences = ["The cat sat on the mat.", "It purred loudly!", "Then it slept?"]
    assert q in sentences
    assert pos == " ".join(s for s in sentences if s != q)
    words = PASSAGES["d2"].split()
    assert by_source["d2"].query == " ".join(words[:20]) and by_source["d2"].positive == " ".join(
        words[-20:]
    )
    assert by_source["d3"][:2] == ("Short one.", "Short one.")  # <= 20 words: first 20 = last 20
    # seeded: the same seed picks the same sentences, and some seed picks another one for d1
    again = annotation_pairs(collection, "ict", split="train", seed=1)
    assert list(again) == list(pairs)
    picks = {annotation_pairs(collection, "ict", seed=s)[0].query for s in range(12)}
    assert picks == set(sentences)


def test_crop_pairs(collection):
    pairs = annotation_pairs(collection, "crop", seed=0, min_ratio=0.1, max_ratio=0.5)
    c = collection.corpus
    assert len(pairs) == 4
    for p, src in zip(pairs, pairs.source_indices):
        words = c[int(src)].split()
        n = len(words)
        for span in (p.query, p.positive):
            sw = span.split()
            assert 1 <= len(sw) <= max(1, round(0.5 * n))
            # a contiguous run of the passage's words
            assert any(words[s : s + len(sw)] == sw for s in range(n - len(sw) + 1))
        assert p.positive_index == -1
    d2 = next(p for p, s in zip(pairs, pairs.source_indices) if c.id(int(s)) == "d2")
    assert 5 <= len(d2.query.split()) <= 25 and 5 <= len(d2.positive.split()) <= 25
    assert list(annotation_pairs(collection, "crop", seed=0)) == list(pairs)
    assert list(annotation_pairs(collection, "crop", seed=1)) != list(pairs)


def test_max_pairs_and_exclusion(collection):
    pairs = annotation_pairs(collection, "ict", max_pairs=2, seed=0)
    assert len(pairs) <= 2
    every = annotation_pairs(collection, "ict", exclude_splits=[])
    assert {collection.corpus.id(int(s)) for s in every.source_indices} == {
        "d1",
        "d2",
        "d3",
        "d4",
        "d6",
        "d7",
    }


def test_bad_arguments(collection):
    with pytest.raises(ValueError, match="source must be one of"):
        annotation_pairs(collection, "llm")
    with pytest.raises(ValueError, match="model_path"):
        annotation_pairs(collection, "doc2query")
    with pytest.raises(ValueError, match="split must be one of"):
        annotation_pairs(collection, "human", split="validation")
    with pytest.raises(ValueError, match="max_pairs"):
        annotation_pairs(collection, "ict", max_pairs=0)
    with pytest.raises(ValueError, match="min_ratio"):
        annotation_pairs(collection, "crop", min_ratio=0.6, max_ratio=0.5)
    with pytest.raises(TypeError, match="collection"):
        annotation_pairs("not a collection")


def _tiny_t5(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(list(PASSAGES.values()), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)
    config = T5Config(
        vocab_size=tok.get_vocab_size(),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    return path


def test_doc2query_with_a_tiny_local_model(collection, tmp_path: Path):
    model = _tiny_t5(tmp_path / "t5")
    kwargs = {"min_new_tokens": 2, "max_new_tokens": 6}
    pairs = annotation_pairs(
        collection,
        "doc2query",
        model_path=str(model),
        seed=0,
        batch_size=3,
        queries_per_passage=2,
        generate_kwargs=kwargs,
    )
    c = collection.corpus
    eligible = {"d1", "d2", "d3", "d4", "d5"}
    assert 0 < len(pairs) <= 2 * len(eligible)
    for p, src in zip(pairs, pairs.source_indices):
        assert p.positive_index == int(src) and c.id(p.positive_index) in eligible
        assert p.positive == c[p.positive_index]
        assert 1 <= len(p.query.split()) <= 6
    again = annotation_pairs(
        collection,
        "doc2query",
        model_path=str(model),
        seed=0,
        batch_size=3,
        queries_per_passage=2,
        generate_kwargs=kwargs,
    )
    assert list(again) == list(pairs)
    assert np.array_equal(again.positive_indices, pairs.positive_indices)
