"""``Collection`` (corpus + queries + qrels per split) and the BEIR and MS MARCO loaders."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .readers import read_jsonl_texts, read_tsv_texts
from .texts import Texts, TextsBuilder
from .trec import add_judgement, iter_qrels

PathLike = str | os.PathLike


class Collection:
    """A retrieval collection: ``corpus`` and ``queries`` (``Texts``) and qrels per split.

    ``qrels(split) -> {qid: {docid: relevance}}`` is read on first use and cached; every query id
    must be in ``queries`` and every doc id in ``corpus`` (else ``ValueError("path:line: ...")``),
    unless the collection was loaded with ``strict=False``, which drops such judgements.
    ``splits`` lists the available split names; ``path`` is the source folder (or the corpus file);
    ``name`` a short label.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        corpus: Texts,
        queries: Texts,
        qrels_files: Mapping[str, Path],
        *,
        strict: bool = True,
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.corpus = corpus
        self.queries = queries
        self._qrels_files = dict(qrels_files)
        self._qrels: dict[str, dict[str, dict[str, int]]] = {}
        self.strict = strict

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._qrels_files)

    def __repr__(self) -> str:
        return (
            f"Collection(name={self.name!r}, corpus={len(self.corpus)}, queries={len(self.queries)}, "
            f"splits={self.splits})"
        )

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self._qrels_files:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        if split not in self._qrels:
            self._qrels[split] = self._load_qrels(self._qrels_files[split])
        return self._qrels[split]

    def _load_qrels(self, path: Path) -> dict[str, dict[str, int]]:
        rows = list(iter_qrels(path))
        if not rows:
            raise ValueError(f"{path}: qrels file has no judgements")
        qrow = self.queries.indices([r[1] for r in rows], missing=-1)
        drow = self.corpus.indices([r[2] for r in rows], missing=-1)
        qrels: dict[str, dict[str, int]] = {}
        for (no, qid, docid, rel), qr, dr in zip(rows, qrow.tolist(), drow.tolist()):
            if qr < 0 or dr < 0:
                if self.strict:
                    what = (
                        f"query id {qid!r} is not in the queries"
                        if qr < 0
                        else f"doc id {docid!r} is not in the corpus"
                    )
                    raise ValueError(f"{path}:{no}: {what}")
                continue
            add_judgement(qrels, path, no, qid, docid, rel)
        if not qrels:
            raise ValueError(f"{path}: no judgement refers to a known query and document")
        return qrels

    def with_qrels_files(self, files: Mapping[str, PathLike]) -> Collection:
        """A collection sharing this corpus and queries, with the qrels of ``files`` ({split: path})
        added or replacing those of the same split (e.g. a carved dev split)."""
        merged = {**self._qrels_files, **{str(k): Path(v) for k, v in files.items()}}
        for split, f in merged.items():
            if not Path(f).is_file():
                raise FileNotFoundError(f"qrels file for split {split!r} does not exist: {f}")
        order = {"train": 0, "dev": 1, "validation": 1, "test": 2}
        merged = dict(sorted(merged.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))
        return Collection(
            self.name, self.path, self.corpus, self.queries, merged, strict=self.strict
        )

    def positive_rows(self, split: str) -> np.ndarray:
        """Sorted unique corpus rows judged relevant (> 0) in ``split``, int64."""
        docids = {d for docs in self.qrels(split).values() for d, r in docs.items() if r > 0}
        return np.unique(self.corpus.indices(sorted(docids))) if docids else np.zeros(0, np.int64)


def load_beir(
    path: PathLike, *, title: bool = True, strict: bool = True, name: str | None = None
) -> Collection:
    """Load a BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
    (``_id``, ``text``), ``qrels/<split>.tsv`` (header, then query-id, corpus-id, score).

    Passages are ``"{title} {text}"`` when ``title`` and the title is non-empty.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder {root} does not exist")
    for f in ("corpus.jsonl", "queries.jsonl"):
        if not (root / f).is_file():
            raise FileNotFoundError(f"BEIR folder {root} has no {f}")
    qdir = root / "qrels"
    files = sorted(qdir.glob("*.tsv")) if qdir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"BEIR folder {root} has no qrels/<split>.tsv")
    order = {"train": 0, "dev": 1, "validation": 1, "test": 2}
    files.sort(key=lambda f: (order.get(f.stem, 3), f.stem))
    corpus, _ = read_jsonl_texts(root / "corpus.jsonl", name="corpus", title=title)
    queries, _ = read_jsonl_texts(root / "queries.jsonl", name="queries", title=False)
    return Collection(
        name or root.name, root, corpus, queries, {f.stem: f for f in files}, strict=strict
    )


def _split_of(path: Path) -> str:
    for split in ("train", "dev", "test", "eval"):
        if re.search(rf"(^|[^a-z]){split}([^a-z]|$)", path.name.lower()):
            return split
    return "train"


def _read_tsv_cached(path: PathLike, name: str, cache_dir: PathLike | None) -> Texts:
    """``read_tsv_texts``, or a memory-mapped copy saved under ``cache_dir`` keyed by the file's
    absolute path, size and modification time (a changed file is parsed again)."""
    if cache_dir is None:
        return read_tsv_texts(path, name=name)
    p = Path(path)
    st = p.stat()
    key = hashlib.sha1(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"{p.name}-{key}"
    if (folder / "meta.json").is_file():
        return Texts.load(folder)
    texts = read_tsv_texts(p, name=name)
    texts.save(folder)
    return texts


def load_msmarco(
    collection_tsv: PathLike,
    queries_tsv: PathLike | Sequence[PathLike],
    qrels_path: PathLike | Mapping[str, PathLike],
    *,
    strict: bool = True,
    name: str = "msmarco-passage",
    cache_dir: PathLike | None = None,
) -> Collection:
    """Load MS MARCO passage files: ``collection.tsv`` (pid<TAB>passage), one or more query files
    (qid<TAB>query; e.g. queries.train.tsv and queries.dev.tsv, concatenated), and qrels in TREC
    4-column form (``qid 0 pid rel``).

    ``qrels_path`` is one file or ``{split: file}``; a single file's split is read from its name
    (``qrels.train.tsv`` -> "train", ``qrels.dev.small.tsv`` -> "dev"; "train" when none matches).
    Streaming and memory-lean: the 8.8M-passage collection takes its ~3 GiB of text plus 16 bytes
    per passage. With ``cache_dir`` the parsed files are saved there and memory-mapped on later
    loads (milliseconds instead of a parse).
    """
    corpus = _read_tsv_cached(collection_tsv, "corpus", cache_dir)
    qfiles = [queries_tsv] if isinstance(queries_tsv, (str, os.PathLike)) else list(queries_tsv)
    if not qfiles:
        raise ValueError("queries_tsv must name at least one file, got an empty sequence")
    if len(qfiles) == 1:
        queries = _read_tsv_cached(qfiles[0], "queries", cache_dir)
    else:
        parts = [_read_tsv_cached(q, "queries", cache_dir) for q in qfiles]
        builder = TextsBuilder("queries")
        for t in parts:
            builder.extend(
                t.id_buffer, np.diff(t.id_offsets), t.text_buffer, np.diff(t.text_offsets)
            )
        queries = builder.build()
    if isinstance(qrels_path, Mapping):
        if not qrels_path:
            raise ValueError(
                "qrels_path must map at least one split to a file, got an empty mapping"
            )
        files = {str(k): Path(v) for k, v in qrels_path.items()}
    else:
        files = {_split_of(Path(qrels_path)): Path(qrels_path)}
    for split, f in files.items():
        if not f.is_file():
            raise FileNotFoundError(f"qrels file for split {split!r} does not exist: {f}")
    return Collection(name, Path(collection_tsv), corpus, queries, files, strict=strict)
