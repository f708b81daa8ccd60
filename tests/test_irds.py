"""densescale.data.load_irds on datasets that the tests register with ir_datasets (offline)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from densescale.data import Collection
from densescale.data.irds import load_irds, split_ids

ir_datasets = pytest.importorskip("ir_datasets")
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
from ir_datasets.util import LocalDownload


class TitledDoc(NamedTuple):
    doc_id: str
    title: str
    text: str

    def default_text(self):
        return f"{self.title} {self.text}"


DOCS = [
    ("d1", "Aspirin", "Aspirin relieves headache."),
    ("d2", "", "Insulin lowers blood sugar."),
    ("d3", "Flu", "Influenza is a viral infection."),
    ("d 4", "Space", "An id with a space."),  # never judged: fine in the corpus
]
QUERIES = {
    "train": [("q1", "what relieves a headache"), ("q2", "what lowers blood sugar")],
    "test": [("q3", "what is the flu")],
    "dev": [("q4", "is influenza viral"), ("q1", "what relieves a headache")],
}
QRELS = {
    "train": "q1 0 d1 1\nq2 0 d2 1\nq2 0 d3 0\n",
    "test": "q3 0 d3 2\n",
    "dev": "q4 0 d3 1\nq1 0 d1 1\n",
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Register ``<base>`` (docs + all queries, no qrels), ``<base>/train``, ``<base>/test``, and
    ``<base>/dev/small`` from files written here; unregister afterwards."""
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds-home"))
    src = tmp_path / "src"
    src.mkdir()
    docs_file = _write(src / "docs.tsv", "".join(f"{i}\t{t}\t{x}\n" for i, t, x in DOCS))
    docs = TsvDocs(LocalDownload(docs_file), doc_cls=TitledDoc)
    base = f"densescale-toy-{uuid.uuid4().hex[:8]}"
    names = []

    def register(name, *parts):
        ir_datasets.registry.register(name, Dataset(*parts))
        names.append(name)

    all_queries = [q for split in ("train", "test", "dev") for q in QUERIES[split]]
    all_queries = list(dict.fromkeys(all_queries))
    qfile = _write(src / "queries.tsv", "".join(f"{i}\t{t}\n" for i, t in all_queries))
    register(base, docs, TsvQueries(LocalDownload(qfile)))
    for split, sub in (("train", "train"), ("test", "test"), ("dev", "dev/small")):
        qf = _write(src / f"queries.{split}.tsv", "".join(f"{i}\t{t}\n" for i, t in QUERIES[split]))
        rf = _write(src / f"qrels.{split}.txt", QRELS[split])
        register(
            f"{base}/{sub}",
            docs,
            TsvQueries(LocalDownload(qf)),
            TrecQrels(LocalDownload(rf), {0: "not relevant", 1: "relevant", 2: "very"}),
        )
    yield base, src, docs
    for name in names:
        ir_datasets.registry._registered.pop(name, None)


def test_split_ids_from_sub_datasets_and_single_ids(toy):
    base, _, _ = toy
    # dev/small is not a direct split child: only train and test are found from the base id
    assert split_ids(base) == {"train": f"{base}/train", "test": f"{base}/test"}
    assert split_ids(f"{base}/test") == {"test": f"{base}/test"}
    assert split_ids(f"{base}/dev/small") == {"dev": f"{base}/dev/small"}
    mapping = {"train": f"{base}/train", "dev": f"{base}/dev/small"}
    assert split_ids(mapping) == mapping


def test_split_ids_of_catalogue_ids_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))  # the catalogue is static: no download
    assert split_ids("beir/scifact") == {"train": "beir/scifact/train", "test": "beir/scifact/test"}
    assert split_ids("beir/nfcorpus") == {
        "train": "beir/nfcorpus/train",
        "dev": "beir/nfcorpus/dev",
        "test": "beir/nfcorpus/test",
    }
    assert split_ids("beir/trec-covid") == {"test": "beir/trec-covid"}
    ms = split_ids("msmarco-passage")
    assert ms["train"] == "msmarco-passage/train" and ms["dev"] == "msmarco-passage/dev/small"
    assert split_ids("msmarco-passage/dev/small") == {"dev": "msmarco-passage/dev/small"}
    assert split_ids("msmarco-passage/trec-dl-2019/judged") == {
        "test": "msmarco-passage/trec-dl-2019/judged"
    }


def test_load_irds_builds_the_collection(toy, tmp_path):
    base, _, _ = toy
    coll = load_irds(base, cache_dir=tmp_path / "cache")
    assert isinstance(coll, Collection)
    assert coll.name == base and coll.splits == ("train", "test")
    assert list(coll.corpus.ids) == ["d1", "d2", "d3", "d 4"]
    # "{title} {text}" when the title is non-empty, as load_beir
    assert coll.corpus[0] == "Aspirin Aspirin relieves headache."
    assert coll.corpus[1] == "Insulin lowers blood sugar."
    assert list(coll.queries.ids) == ["q1", "q2", "q3"]
    assert coll.queries[coll.queries.index("q3")] == "what is the flu"
    assert coll.qrels("train") == {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 0}}
    assert coll.qrels("test") == {"q3": {"d3": 2}}
    assert coll.positive_rows("train").tolist() == [0, 1]
    assert coll.path.parent == tmp_path / "cache"

    plain = load_irds(base, cache_dir=tmp_path / "cache", title=False)
    assert plain.corpus[0] == "Aspirin relieves headache."
    assert plain.path != coll.path  # another cache entry


def test_load_irds_mapping_merges_queries_and_caches(toy, tmp_path):
    base, src, _ = toy
    mapping = {"train": f"{base}/train", "dev": f"{base}/dev/small", "test": f"{base}/test"}
    coll = load_irds(mapping, cache_dir=tmp_path / "c", name="toy")
    assert coll.name == "toy" and coll.splits == ("train", "dev", "test")
    # q1 is in train and dev with one text: listed once
    assert sorted(coll.queries.ids) == ["q1", "q2", "q3", "q4"]
    assert coll.qrels("dev") == {"q4": {"d3": 1}, "q1": {"d1": 1}}

    # a second load reads the saved copy, not the source files
    (src / "qrels.dev.txt").write_text("q4 0 d2 1\n")
    again = load_irds(mapping, cache_dir=tmp_path / "c")
    assert again.path == coll.path and again.qrels("dev") == {"q4": {"d3": 1}, "q1": {"d1": 1}}
    fresh = load_irds(mapping, cache_dir=tmp_path / "c", refresh=True)
    assert fresh.qrels("dev") == {"q4": {"d2": 1}}
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]  # no temp dirs


def test_load_irds_default_cache_is_under_the_ir_datasets_home(toy, tmp_path):
    base, _, _ = toy
    coll = load_irds(f"{base}/test")
    assert coll.splits == ("test",)
    assert coll.path.parent == tmp_path / "irds-home" / "densescale"


def test_load_irds_bad_input(toy, tmp_path):
    base, src, docs = toy
    cache = tmp_path / "c"
    with pytest.raises(ValueError, match=r"dataset_id: ir-datasets has no dataset.*close matches"):
        load_irds(f"{base}/tset", cache_dir=cache)
    with pytest.raises(ValueError, match=r"dataset_id\['train'\]: ir-datasets has no dataset"):
        load_irds({"train": "no-such-dataset/xyz"}, cache_dir=cache)
    with pytest.raises(ValueError, match="dataset_id must map at least one split"):
        load_irds({}, cache_dir=cache)
    with pytest.raises(ValueError, match="split names"):
        load_irds({"dev/small": f"{base}/dev/small"}, cache_dir=cache)
    with pytest.raises(TypeError, match="dataset_id"):
        load_irds(None, cache_dir=cache)

    # a dataset with no qrels and no split sub-datasets: the message lists what has qrels
    other = f"{base}-bare"
    ir_datasets.registry.register(
        other, Dataset(docs, TsvQueries(LocalDownload(src / "queries.tsv")))
    )
    qf = _write(src / "q.conflict.tsv", "q1\ta different text for q1\n")
    rf = _write(src / "r.conflict.txt", "q1 0 d2 1\n")
    conflict = TrecQrels(LocalDownload(rf), {1: "relevant"})
    ir_datasets.registry.register(
        f"{other}/odd", Dataset(docs, TsvQueries(LocalDownload(qf)), conflict)
    )
    other_docs = TsvDocs(LocalDownload(_write(src / "docs2.tsv", "d1\tt\tx\n")), doc_cls=TitledDoc)
    ir_datasets.registry.register(
        f"{other}/elsewhere", Dataset(other_docs, TsvQueries(LocalDownload(qf)), conflict)
    )
    try:
        with pytest.raises(ValueError, match=rf"no qrels and no train.*{other}/odd"):
            load_irds(other, cache_dir=cache)
        with pytest.raises(ValueError, match=r"split 'x' .* has no qrels"):
            load_irds({"x": other}, cache_dir=cache)
        with pytest.raises(ValueError, match="query 'q1' has two texts"):
            load_irds({"train": f"{base}/train", "test": f"{other}/odd"}, cache_dir=cache)
        with pytest.raises(ValueError, match="share one document collection"):
            load_irds({"train": f"{base}/train", "test": f"{other}/elsewhere"}, cache_dir=cache)
        assert not cache.exists() or not list(cache.iterdir())  # nothing half-built left
    finally:
        for name in (other, f"{other}/odd", f"{other}/elsewhere"):
            ir_datasets.registry._registered.pop(name, None)


def test_load_irds_judgement_on_an_unknown_document(toy, tmp_path):
    base, src, _ = toy
    (src / "qrels.test.txt").write_text("q3 0 d3 2\nq3 0 nowhere 1\n")
    coll = load_irds(f"{base}/test", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="doc id 'nowhere' is not in the corpus"):
        coll.qrels("test")
    lenient = load_irds(f"{base}/test", cache_dir=tmp_path / "c", strict=False)
    assert lenient.qrels("test") == {"q3": {"d3": 2}}
