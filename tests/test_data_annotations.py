"""Annotation sources: human qrels (clean and with controlled label noise), ICT, random cropping,
doc2query and LLM queries from tiny local models; one pair format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densescale.data import (
    TrainingPair,
    TrainingPairs,
    annotation_pairs,
    load_beir,
    nested_subsets,
    parse_source,
)
from densescale.data.generate import DEFAULT_LLM_PROMPT, clean_generated

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
        annotation_pairs(collection, "gpt")
    with pytest.raises(ValueError, match="model_path"):
        annotation_pairs(collection, "llm")
    with pytest.raises(ValueError, match="prompt_template"):
        annotation_pairs(collection, "ict", prompt_template="{passage}")
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
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tok = _word_tokenizer([])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
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
    return _save_tiny(path, fast, T5ForConditionalGeneration(config))


def test_doc2query_with_a_tiny_local_model(collection, tmp_path: Path):
    model = _tiny_t5(tmp_path / "t5")
    kwargs = {"min_new_tokens": 2, "max_new_tokens": 6}

    def generate():  # called twice: the same seed must give the same queries
        return annotation_pairs(
            collection,
            "doc2query",
            model_path=str(model),
            seed=0,
            batch_size=3,
            queries_per_passage=2,
            generate_kwargs=kwargs,
        )

    pairs = generate()
    c = collection.corpus
    eligible = {"d1", "d2", "d3", "d4", "d5"}
    assert 0 < len(pairs) <= 2 * len(eligible)
    for p, src in zip(pairs, pairs.source_indices):
        assert p.positive_index == int(src) and c.id(p.positive_index) in eligible
        assert p.positive == c[p.positive_index]
        assert 1 <= len(p.query.split()) <= 6
    again = generate()
    assert list(again) == list(pairs)
    assert np.array_equal(again.positive_indices, pairs.positive_indices)


# ------------------------------------------------------------------ source strings and label noise
def test_parse_source():
    assert parse_source("human") == ("human", {})
    assert parse_source("llm") == ("llm", {})
    assert parse_source("doc2query") == ("doc2query", {})
    assert parse_source("human-noise0.25") == ("human", {"noise": 0.25})
    assert parse_source("human-noise1") == ("human", {"noise": 1.0})
    assert parse_source("human-noise.5") == ("human", {"noise": 0.5})
    assert parse_source("human-noise0") == ("human", {"noise": 0.0})
    for bad in (
        "noisy:0.25",
        "human-noise",
        "human-noise1.5",
        "human-noise-0.1",
        "Human",
        "ict-noise0.1",
    ):
        with pytest.raises(ValueError, match="human-noise<f>") as e:
            parse_source(bad)
        assert repr(bad) in str(e.value)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        parse_source("human-noise2")
    with pytest.raises(TypeError, match="source must be a str"):
        parse_source(0.25)


@pytest.fixture
def big_collection(tmp_path: Path):
    """60 train queries with one judged positive each (q0 has two), 8 dev and 8 test positives,
    40 unjudged passages: 118 passages."""
    root = tmp_path / "big"
    (root / "qrels").mkdir(parents=True)
    corpus = {f"p{i}": f"passage number {i} about topic {i % 7}." for i in range(118)}
    queries = {f"q{i}": f"query {i}" for i in range(76)}
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in corpus.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    head = "query-id\tcorpus-id\tscore\n"
    train = "".join(f"q{i}\tp{i}\t1\n" for i in range(60)) + "q0\tp100\t1\n"
    (root / "qrels" / "train.tsv").write_text(head + train)
    (root / "qrels" / "dev.tsv").write_text(
        head + "".join(f"q{60 + i}\tp{60 + i}\t1\n" for i in range(8))
    )
    (root / "qrels" / "test.tsv").write_text(
        head + "".join(f"q{68 + i}\tp{68 + i}\t1\n" for i in range(8))
    )
    return load_beir(root)


def test_label_noise_pairs(big_collection):
    c = big_collection
    clean = annotation_pairs(c, "human")
    n = len(clean)
    assert n == 61
    heldout = set(c.positive_rows("dev").tolist()) | set(c.positive_rows("test").tolist())
    judged = {(int(q), int(d)) for q, d in zip(clean.query_rows, clean.positive_rows)}
    noisy_sets = {}
    for f in (0.0, 0.25, 0.5, 1.0):
        pairs = annotation_pairs(c, f"human-noise{f}", seed=3)
        assert pairs.source == f"human-noise{f}" and len(pairs) == n
        # same order, same queries; only positives change
        assert np.array_equal(pairs.query_rows, clean.query_rows)
        changed = np.flatnonzero(pairs.positive_rows != clean.positive_rows)
        assert len(changed) == int(np.floor(f * n + 0.5))  # half rounds up: 30.5 -> 31
        noisy_sets[f] = set(changed.tolist())
        # positive_index / source_indices follow the replacement (false-negative masking uses them)
        assert np.array_equal(pairs.positive_indices, pairs.positive_rows)
        assert np.array_equal(pairs.source_indices, pairs.positive_rows)
        for i in changed.tolist():
            r, q = int(pairs.positive_rows[i]), int(pairs.query_rows[i])
            assert r not in heldout  # never a dev/test positive
            assert (q, r) not in judged  # never the pair's own (or its query's other) positive
            p = pairs[i]
            assert p.positive == c.corpus[r] and p.positive_index == r and p.query == clean[i].query
    # nested: the noisy pairs of a smaller fraction are a subset of a larger one, same replacements
    assert noisy_sets[0.0] == set()
    assert noisy_sets[0.25] <= noisy_sets[0.5] <= noisy_sets[1.0]
    a = annotation_pairs(c, "human-noise0.25", seed=3)
    b = annotation_pairs(c, "human-noise0.5", seed=3)
    idx = sorted(noisy_sets[0.25])
    assert np.array_equal(a.positive_rows[idx], b.positive_rows[idx])
    # deterministic with the seed, different across seeds
    again = annotation_pairs(c, "human-noise0.5", seed=3)
    assert list(again) == list(b)
    other = annotation_pairs(c, "human-noise0.5", seed=4)
    assert not np.array_equal(other.positive_rows, b.positive_rows)
    # nested data-size subsets stay nested (the pair order is the human order)
    small, large = nested_subsets(n, [10, 40], seed=0)
    assert set(b.subset(small).query_rows.tolist()) <= set(b.subset(large).query_rows.tolist())
    # exclude_splits=[] widens the replacement pool to the whole corpus (dev/test passages too)
    wide = annotation_pairs(c, "human-noise1", seed=3, exclude_splits=[])
    assert len(wide) == n and heldout & set(wide.positive_rows.tolist())


def test_label_noise_is_spread_over_every_data_size_subset(big_collection):
    """A study draws its data-size subsets with the same seed as the noise; the noisy pairs must
    not be the first pairs of every subset (a 25% source was 100% noise at small D)."""
    clean = annotation_pairs(big_collection, "human")
    n = len(clean)
    fractions = []
    for seed in range(20):
        noisy = annotation_pairs(big_collection, "human-noise0.25", seed=seed)
        (small,) = nested_subsets(n, [12], seed=seed)
        fractions.append(np.mean(noisy.positive_rows[small] != clean.positive_rows[small]))
    # 15 of 61 pairs noisy: about 3 of 12 per subset; all-noise subsets mean correlated draws
    assert 0.15 < np.mean(fractions) < 0.35 and max(fractions) < 1.0


def test_label_noise_needs_a_replacement(tmp_path: Path):
    # every training-eligible passage is a judged positive of q1: nothing can replace them
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(3))
    )
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "a"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "b"})
        + "\n"
    )
    head = "query-id\tcorpus-id\tscore\n"
    (root / "qrels" / "train.tsv").write_text(head + "q1\td0\t1\nq1\td1\t1\n")
    (root / "qrels" / "test.tsv").write_text(head + "q2\td2\t1\n")
    c = load_beir(root)
    with pytest.raises(ValueError, match="no training-eligible passage.*'q1'"):
        annotation_pairs(c, "human-noise0.5")
    assert len(annotation_pairs(c, "human-noise0")) == 2  # no pair noisy: nothing to replace


# ------------------------------------------------------------------ generated queries: tiny models
def _word_tokenizer(extra: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(list(PASSAGES.values()) + extra, trainer)
    return tok


def _tiny_gpt2(path: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = _word_tokenizer([DEFAULT_LLM_PROMPT, "Q: {passage} ->"])
    # no pad token (as GPT-2): the generator pads with eos; "\n" is a token so a query can end
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")
    fast.add_tokens(["\n"])
    config = GPT2Config(
        vocab_size=len(fast),
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    return _save_tiny(path, fast, model)


def _tiny_bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = _word_tokenizer([])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return _save_tiny(path, fast, BertModel(config))


def _save_tiny(path: Path, tokenizer, model) -> Path:
    """Save a tiny tokenizer and model under ``path`` as a local Hugging Face model folder."""
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def test_clean_generated():
    assert clean_generated(" what  is\ta cat\nsecond line") == "what is a cat"
    assert clean_generated("\n\n  leading newlines\nrest") == "leading newlines"
    assert clean_generated("  \n ") == ""


ELIGIBLE = {"d1", "d2", "d3", "d4", "d5"}  # the corpus minus the dev and test positives


def test_llm_queries_with_a_tiny_local_model(collection, tmp_path: Path, capsys):
    from transformers import AutoTokenizer

    model = _tiny_gpt2(tmp_path / "gpt2")
    newline = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("\n")
    # a newline is very likely from the second token on: the generated query is cut there
    kwargs = {"sequence_bias": {(newline,): 8.0}, "begin_suppress_tokens": [newline]}
    run = {"model_path": str(model), "seed": 0, "max_new_tokens": 5, "generate_kwargs": kwargs}
    pairs = annotation_pairs(collection, "llm", batch_size=3, progress=True, **run)
    assert "llm queries" in capsys.readouterr().err  # the progress bar
    c = collection.corpus
    assert pairs.source == "llm" and 0 < len(pairs) <= len(ELIGIBLE)
    lengths = []
    for p, src in zip(pairs, pairs.source_indices):
        assert p.positive_index == int(src) and c.id(p.positive_index) in ELIGIBLE
        assert p.positive == c[p.positive_index]
        assert p.query and "\n" not in p.query and p.query == " ".join(p.query.split())
        lengths.append(len(p.query.split()))
    assert max(lengths) <= 5 and min(lengths) < 5  # some query was cut at its newline
    # greedy decoding is deterministic, and left padding makes batches match single prompts
    assert list(annotation_pairs(collection, "llm", batch_size=3, **run)) == list(pairs)
    assert list(annotation_pairs(collection, "llm", batch_size=1, **run)) == list(pairs)
    # the prompt template reaches the model: another template, other queries
    other = annotation_pairs(collection, "llm", prompt_template="Q: {passage} ->", **run)
    assert [p.query for p in other] != [p.query for p in pairs]
    # seeded sampling, several queries per passage
    sample = dict(run, generate_kwargs={**kwargs, "do_sample": True}, queries_per_passage=2)
    s0 = annotation_pairs(collection, "llm", **sample)
    assert list(annotation_pairs(collection, "llm", **sample)) == list(s0)
    assert len(s0) > len(pairs) and len(set(s0.query_rows)) == len(s0)
    assert list(annotation_pairs(collection, "llm", **dict(sample, seed=1))) != list(s0)
    # max_pairs: a seeded subset of the eligible passages
    few = annotation_pairs(collection, "llm", max_pairs=2, **run)
    assert len(set(few.source_indices.tolist())) <= 2
    with pytest.raises(ValueError, match="prompt_template must be a str containing"):
        annotation_pairs(collection, "llm", prompt_template="no slot", **run)
    with pytest.raises(ValueError, match="needs sampling"):
        annotation_pairs(collection, "llm", queries_per_passage=2, **run)


def test_generator_folder_errors(collection, tmp_path: Path):
    with pytest.raises(ValueError, match="no such folder"):
        annotation_pairs(collection, "llm", model_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no such folder"):
        annotation_pairs(collection, "doc2query", model_path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        annotation_pairs(collection, "llm", model_path=str(tmp_path / "empty"))
    bert = str(_tiny_bert(tmp_path / "bert"))
    for source in ("llm", "doc2query"):
        with pytest.raises(ValueError, match="'bert' model.*not a"):
            annotation_pairs(collection, source, model_path=bert)
    with pytest.raises(ValueError, match="'gpt2' model.*not a seq2seq"):
        annotation_pairs(collection, "doc2query", model_path=str(_tiny_gpt2(tmp_path / "g")))
    with pytest.raises(ValueError, match="'t5' model.*not a causal LM"):
        annotation_pairs(collection, "llm", model_path=str(_tiny_t5(tmp_path / "t5")))
