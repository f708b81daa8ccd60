"""BEIR and MS MARCO readers, Collection, malformed lines reported as path:line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densescale.data import (
    Collection,
    Texts,
    load_beir,
    load_msmarco,
    read_jsonl_texts,
    read_tsv_texts,
)


def write_beir(
    root: Path, corpus: list[dict], queries: list[dict], qrels: dict[str, list[tuple]]
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8"
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8"
    )
    (root / "qrels").mkdir(exist_ok=True)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore\n"] + [f"{q}\t{d}\t{r}\n" for q, d, r in rows]
        (root / "qrels" / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    return root


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr."},
        {"_id": "d2", "title": "", "text": "Dogs bark. Loudly!"},
        {"_id": 3, "text": "Birds sing."},
    ]
    queries = [
        {"_id": "q1", "text": "what purrs"},
        {"_id": "q2", "text": "who barks"},
        {"_id": "q3", "text": "x"},
    ]
    qrels = {"train": [("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d2", 2)], "test": [("q3", "3", 1)]}
    return write_beir(tmp_path / "tiny", corpus, queries, qrels)


def test_load_beir(beir: Path):
    c = load_beir(beir)
    assert isinstance(c, Collection) and c.name == "tiny" and c.path == beir
    assert c.splits == ("train", "test")
    assert list(c.corpus) == ["Cats Cats purr.", "Dogs bark. Loudly!", "Birds sing."]
    assert list(c.corpus.ids) == ["d1", "d2", "3"]
    assert list(c.queries) == ["what purrs", "who barks", "x"]
    assert c.qrels("train") == {"q1": {"d1": 1, "d2": 0}, "q2": {"d2": 2}}
    assert c.qrels("test") == {"q3": {"3": 1}}
    np.testing.assert_array_equal(c.positive_rows("train"), [0, 1])
    assert next(iter(load_beir(beir, title=False).corpus)) == "Cats purr."
    with pytest.raises(ValueError, match="split must be one of"):
        c.qrels("dev")


def test_beir_unknown_ids_name_file_and_line(beir: Path):
    with open(beir / "qrels" / "train.tsv", "a", encoding="utf-8") as f:
        f.write("q2\tnope\t1\n")
    with pytest.raises(ValueError, match=r"train\.tsv:5: doc id 'nope' is not in the corpus"):
        load_beir(beir).qrels("train")
    assert "nope" not in load_beir(beir, strict=False).qrels("train")["q2"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"text": "no id"}', "'_id' must be a non-empty string"),
        ('{"_id": "d9", "text": 5}', "'text' must be a string"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_beir_malformed_corpus_line(beir: Path, line: str, message: str):
    with open(beir / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")  # a blank line first: line numbers count it
    with pytest.raises(ValueError, match=rf"corpus\.jsonl:5: {message}"):
        load_beir(beir)


def test_beir_missing_parts(tmp_path: Path, beir: Path):
    with pytest.raises(FileNotFoundError):
        load_beir(tmp_path / "absent")
    (beir / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        load_beir(beir)


def test_jsonl_metadata(tmp_path: Path):
    p = tmp_path / "q.jsonl"
    p.write_text(
        '{"_id": "a", "text": "t", "metadata": {"split": "dev"}}\n{"_id": "b", "text": "u"}\n'
    )
    texts, meta = read_jsonl_texts(p, meta_field="split")
    assert list(texts) == ["t", "u"] and meta == ["dev", ""]


def _msmarco(tmp_path: Path) -> tuple[Path, Path, Path, Path, Path]:
    col = tmp_path / "collection.tsv"
    col.write_bytes(
        "".join(
            f"{i}\tpassage {i} with ünïcode {'y' * (i % 5)}\r\n"
            if i % 3 == 0
            else f"{i}\tpassage {i}\n"
            for i in range(40)
        ).encode()
    )
    qtrain = tmp_path / "queries.train.tsv"
    qtrain.write_text("100\tfirst query\n101\tsecond query\n")
    qdev = tmp_path / "queries.dev.tsv"
    qdev.write_text("200\tdev query\n")
    rtrain = tmp_path / "qrels.train.tsv"
    rtrain.write_text("100 0 3 1\n101 0 7 1\n101 0 8 1\n")
    rdev = tmp_path / "qrels.dev.small.tsv"
    rdev.write_text("200\t0\t39\t1\n")
    return col, qtrain, qdev, rtrain, rdev


def test_load_msmarco(tmp_path: Path):
    col, qtrain, qdev, rtrain, rdev = _msmarco(tmp_path)
    c = load_msmarco(col, [qtrain, qdev], {"train": rtrain, "dev": rdev})
    assert (
        len(c.corpus) == 40
        and c.corpus[3] == "passage 3 with ünïcode yyy"
        and c.corpus[4] == "passage 4"
    )
    assert c.corpus.index("39") == 39
    assert list(c.queries.ids) == ["100", "101", "200"] and c.queries[2] == "dev query"
    assert c.qrels("train") == {"100": {"3": 1}, "101": {"7": 1, "8": 1}}
    assert c.qrels("dev") == {"200": {"39": 1}}
    single = load_msmarco(col, qtrain, rtrain)
    assert single.splits == ("train",)
    assert load_msmarco(col, qdev, rdev).splits == ("dev",)


def test_msmarco_cache_is_memory_mapped_and_refreshed(tmp_path: Path):
    col, qtrain, _, rtrain, _ = _msmarco(tmp_path)
    fresh = load_msmarco(col, qtrain, rtrain)
    first = load_msmarco(col, qtrain, rtrain, cache_dir=tmp_path / "cache")
    second = load_msmarco(col, qtrain, rtrain, cache_dir=tmp_path / "cache")
    assert isinstance(second.corpus.text_buffer, np.memmap)
    assert list(second.corpus) == list(first.corpus) == list(fresh.corpus)
    assert list(second.corpus.ids) == list(fresh.corpus.ids) and second.corpus.index("17") == 17
    assert second.qrels("train") == fresh.qrels("train")
    col.write_text("1\tchanged passage\n3\tx\n7\ty\n8\tz\n")
    third = load_msmarco(col, qtrain, rtrain, cache_dir=tmp_path / "cache")
    assert third.corpus[0] == "changed passage"


def test_texts_save_load_round_trip(tmp_path: Path):
    t = read_tsv_texts(_msmarco(tmp_path)[0])
    saved = t.save(tmp_path / "saved")
    for mmap in (True, False):
        back = Texts.load(saved, mmap=mmap)
        assert list(back) == list(t) and list(back.ids) == list(t.ids) and back.name == t.name
    t.select([1, 2]).save(saved)  # replacing an older save
    assert list(Texts.load(saved)) == [t[1], t[2]]
    empty = Texts.from_pairs([], []).save(tmp_path / "empty")
    assert len(Texts.load(empty)) == 0
    with pytest.raises(FileNotFoundError, match="not a saved Texts folder"):
        Texts.load(tmp_path)


@pytest.mark.parametrize("block", [7, 16, 64, 1 << 20])
def test_tsv_blocks_agree_with_a_plain_parse(tmp_path: Path, block: int):
    col = _msmarco(tmp_path)[0]
    t = read_tsv_texts(col, block_bytes=block)
    expected = [
        line.rstrip("\r").split("\t") for line in col.read_text(encoding="utf-8").splitlines()
    ]
    assert list(t.ids) == [e[0] for e in expected]
    assert list(t) == [e[1] for e in expected]


def test_tsv_no_trailing_newline_and_blank_lines(tmp_path: Path):
    p = tmp_path / "c.tsv"
    p.write_text("a\tx\n\nb\t\nc\tz")
    t = read_tsv_texts(p, block_bytes=4)
    assert list(t.ids) == ["a", "b", "c"] and list(t) == ["x", "", "z"]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("1\tok\n2 no tab here\n", 2, "expected 2 tab-separated fields"),
        ("1\tok\n2\tok\n3\ttoo\tmany\n", 3, "expected 2 tab-separated fields"),
        ("1\tok\n\n\tmissing id\n", 3, "empty id"),
    ],
)
@pytest.mark.parametrize("block", [5, 1 << 20])
def test_tsv_malformed_lines(tmp_path: Path, content: str, line: int, message: str, block: int):
    p = tmp_path / "collection.tsv"
    p.write_text(content)
    with pytest.raises(ValueError, match=rf"collection\.tsv:{line}: {message}"):
        read_tsv_texts(p, block_bytes=block)


def test_tsv_invalid_utf8_names_line(tmp_path: Path):
    p = tmp_path / "collection.tsv"
    p.write_bytes(b"1\tok\n2\tok\n3\tbad \xff byte\n")
    with pytest.raises(ValueError, match=r"collection\.tsv:3: not valid UTF-8"):
        read_tsv_texts(p)


def test_msmarco_qrels_unknown_query(tmp_path: Path):
    col, qtrain, _, rtrain, _ = _msmarco(tmp_path)
    rtrain.write_text("100 0 3 1\n999 0 7 1\n")
    with pytest.raises(
        ValueError, match=r"qrels\.train\.tsv:2: query id '999' is not in the queries"
    ):
        load_msmarco(col, qtrain, rtrain).qrels("train")
