"""Collections from the ``ir-datasets`` package (MacAvaney et al., "Simplified Data Wrangling with
ir_datasets", SIGIR 2021): MS MARCO passage, BEIR, TREC DL and the rest of its catalogue.

``load_irds(dataset_id)`` reads a dataset's documents, queries and qrels into a ``Collection``
(``corpus`` and ``queries`` as ``Texts``, qrels per split). ir-datasets names each split as its
own dataset id; how an id maps to splits (``split_ids``):

- a ``{split: dataset id}`` mapping is used as given, e.g.
  ``{"train": "msmarco-passage/train", "dev": "msmarco-passage/dev/small"}``;
- ``msmarco-passage`` -> train ``msmarco-passage/train``, dev ``msmarco-passage/dev/small`` (the
  6,980-query dev set of the papers), ``trec-dl-2019`` / ``trec-dl-2020`` the judged TREC DL
  passage queries;
- an id whose direct sub-datasets are named ``train`` / ``dev`` / ``validation`` / ``test`` and
  have qrels -> those (``beir/scifact`` -> ``beir/scifact/train``, ``beir/scifact/test``);
- an id that has qrels itself -> one split, named after the last of its path segments that is a
  split name (``beir/scifact/test`` -> test, ``msmarco-passage/dev/small`` -> dev), else ``test``
  (``beir/trec-covid``, ``msmarco-passage/trec-dl-2019/judged``).

Every split must share one document collection (ir-datasets' docs handler). ``queries`` is the
union of the splits' queries (a query id in two splits must have one text). Documents are
``"{title} {text}"`` when ``title`` and the title is non-empty (as ``load_beir``), else ``text``;
queries are their ``text`` (TREC topics: ``default_text()``, the title).

The parsed collection is saved under ``cache_dir`` (default: ``<ir_datasets home>/densescale``,
i.e. ``$IR_DATASETS_HOME`` or ``~/.ir_datasets``) as memory-mapped ``Texts`` plus BEIR qrels
files, keyed by the split mapping, so a later load takes milliseconds. Downloads are
ir-datasets' own (into its home); offline, only datasets whose files are present load.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .collection import Collection
from .texts import Texts, TextsBuilder
from .trec import write_qrels

PathLike = str | os.PathLike

SPLIT_NAMES = ("train", "dev", "validation", "test")
PRESETS: dict[str, dict[str, str]] = {
    "msmarco-passage": {
        "train": "msmarco-passage/train",
        "dev": "msmarco-passage/dev/small",
        "trec-dl-2019": "msmarco-passage/trec-dl-2019/judged",
        "trec-dl-2020": "msmarco-passage/trec-dl-2020/judged",
    },
}
_CACHE_VERSION = 1


def _ir_datasets():
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImportError(
            "densescale.data.load_irds needs the ir-datasets package: pip install ir-datasets"
        ) from None
    return ir_datasets


def _load(dataset_id: str, arg: str = "dataset_id") -> Any:
    ir_datasets = _ir_datasets()
    if not isinstance(dataset_id, str) or not dataset_id:
        raise TypeError(f"{arg} must be a non-empty str, got {dataset_id!r}")
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        close = difflib.get_close_matches(dataset_id, list(ir_datasets.registry), n=5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"{arg}: ir-datasets has no dataset {dataset_id!r}{hint}") from None


def _split_name(dataset_id: str) -> str:
    for segment in reversed(dataset_id.split("/")[1:]):
        if segment in SPLIT_NAMES:
            return segment
    return "test"


def split_ids(dataset_id: str | Mapping[str, str]) -> dict[str, str]:
    """The ``{split: ir-datasets id}`` that ``dataset_id`` stands for (rules in the module
    docstring). Raises ``ValueError`` naming ``dataset_id`` for an unknown id, an empty mapping, or
    an id with neither qrels nor split sub-datasets (the message lists its sub-datasets that have
    qrels, to pass as a mapping)."""
    if isinstance(dataset_id, Mapping):
        if not dataset_id:
            raise ValueError("dataset_id must map at least one split to a dataset id, got {}")
        out = {}
        for split, ds_id in dataset_id.items():
            if not isinstance(split, str) or not split or split.split() != [split] or "/" in split:
                raise ValueError(
                    f"dataset_id: split names must be non-empty strings without whitespace or "
                    f"'/', got {split!r}"
                )
            _load(ds_id, f"dataset_id[{split!r}]")
            out[split] = ds_id
        return out
    if dataset_id in PRESETS:
        return dict(PRESETS[dataset_id])
    ds = _load(dataset_id)
    ir_datasets = _ir_datasets()
    prefix = dataset_id + "/"
    children = sorted(n for n in ir_datasets.registry if n.startswith(prefix))
    splits = {}
    for name in SPLIT_NAMES:
        child = prefix + name
        if child in children and _load(child).has_qrels():
            splits[name] = child
    if splits:
        return splits
    if ds.has_qrels():
        return {_split_name(dataset_id): dataset_id}
    with_qrels = [c for c in children if _load(c).has_qrels()]
    listed = ", ".join(with_qrels[:12]) + (" ..." if len(with_qrels) > 12 else "")
    raise ValueError(
        f"dataset_id: {dataset_id!r} has no qrels and no train/dev/validation/test sub-datasets"
        + (
            f"; pass {{split: id}} with some of: {listed}"
            if with_qrels
            else "; pass {split: id} naming datasets that have qrels"
        )
    )


def _doc_text(doc: Any, title: bool) -> str:
    text = getattr(doc, "text", None)
    if not isinstance(text, str):
        return doc.default_text()
    head = getattr(doc, "title", None) if title else None
    return f"{head} {text}" if isinstance(head, str) and head.strip() else text


def _query_text(query: Any) -> str:
    text = getattr(query, "text", None)
    return text if isinstance(text, str) else query.default_text()


def _cache_key(splits: Mapping[str, str], title: bool) -> str:
    spec = json.dumps(
        {"splits": dict(splits), "title": title, "version": _CACHE_VERSION}, sort_keys=True
    )
    return hashlib.sha1(spec.encode()).hexdigest()[:16]


def _build(splits: Mapping[str, str], datasets: Mapping[str, Any], title: bool, out: Path) -> None:
    """Parse every split into ``out`` (corpus/, queries/, qrels/<split>.tsv, meta.json)."""
    first = next(iter(splits))
    docs_ds = datasets[first]
    corpus = TextsBuilder("corpus")
    for doc in docs_ds.docs_iter():
        corpus.add(doc.doc_id.encode("utf-8"), _doc_text(doc, title).encode("utf-8"))
    corpus.build().save(out / "corpus")

    queries = TextsBuilder("queries")
    seen: dict[str, str] = {}
    for split, ds in datasets.items():
        for q in ds.queries_iter():
            text = _query_text(q)
            old = seen.get(q.query_id)
            if old is None:
                seen[q.query_id] = text
                queries.add(q.query_id.encode("utf-8"), text.encode("utf-8"))
            elif old != text:
                raise ValueError(
                    f"dataset_id: query {q.query_id!r} has two texts ({split!r}: {text[:60]!r}, "
                    f"earlier: {old[:60]!r}); pass splits whose queries agree"
                )
    queries.build().save(out / "queries")

    for split, ds in datasets.items():
        qrels: dict[str, dict[str, int]] = {}
        for r in ds.qrels_iter():
            docs = qrels.setdefault(r.query_id, {})
            if r.doc_id in docs and docs[r.doc_id] != r.relevance:
                raise ValueError(
                    f"{splits[split]}: ({r.query_id}, {r.doc_id}) judged twice with relevance "
                    f"{r.relevance} != {docs[r.doc_id]}"
                )
            docs[r.doc_id] = int(r.relevance)
        if not qrels:
            raise ValueError(f"dataset_id: split {split!r} ({splits[split]}) has no judgements")
        try:
            write_qrels(out / "qrels" / f"{split}.tsv", qrels, format="beir")
        except ValueError as e:
            raise ValueError(
                f"{splits[split]}: cannot keep its qrels as a TREC-style file: {e}"
            ) from None
    meta = {"splits": dict(splits), "title": title, "version": _CACHE_VERSION}
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _same_docs(a: Any, b: Any) -> bool:
    """One document collection: the same ir-datasets docs handler, or handlers over one file."""
    if a is b or a == b:
        return True
    try:
        return os.path.realpath(a.docs_path(force=False)) == os.path.realpath(
            b.docs_path(force=False)
        )
    except (AttributeError, TypeError, NotImplementedError, OSError):
        return False


def _check_datasets(splits: Mapping[str, str]) -> dict[str, Any]:
    datasets = {split: _load(ds_id, f"dataset_id[{split!r}]") for split, ds_id in splits.items()}
    for split, ds in datasets.items():
        for what in ("docs", "queries", "qrels"):
            if not getattr(ds, f"has_{what}")():
                raise ValueError(
                    f"dataset_id: split {split!r} ({splits[split]}) has no {what} in ir-datasets"
                )
    first = next(iter(datasets))
    handler = datasets[first].docs_handler()
    for split, ds in datasets.items():
        if not _same_docs(ds.docs_handler(), handler):
            raise ValueError(
                f"dataset_id: splits must share one document collection; {splits[split]!r} "
                f"({split}) has other documents than {splits[first]!r} ({first})"
            )
    return datasets


def load_irds(
    dataset_id: str | Mapping[str, str],
    cache_dir: PathLike | None = None,
    *,
    title: bool = True,
    strict: bool = True,
    name: str | None = None,
    refresh: bool = False,
) -> Collection:
    """Load an ir-datasets dataset as a ``Collection``.

    dataset_id: an ir-datasets id (``"beir/scifact"``, ``"msmarco-passage"``,
    ``"beir/scifact/test"``) or ``{split: id}``; see ``split_ids`` for how an id maps to splits.
    cache_dir: folder for the parsed copy (default ``<ir_datasets home>/densescale``); a copy made
    for the same split mapping and ``title`` is reused unless ``refresh``.
    title, strict: as ``load_beir`` (``strict=False`` drops judgements whose query or document is
    missing). name: the collection's label (default: the id, or the ids joined by ``+``).

    Returns a ``Collection`` whose ``splits`` are the mapping's keys and whose ``path`` is the
    cache folder. Raises ``ValueError`` naming ``dataset_id`` for unknown ids, splits without
    docs/queries/qrels or with different corpora, queries whose text differs between splits, or
    ids that a qrels file cannot hold (whitespace); errors of ir-datasets itself (a download that
    fails offline) pass through.
    """
    ir_datasets = _ir_datasets()
    splits = split_ids(dataset_id)
    datasets = _check_datasets(splits)
    root = Path(cache_dir) if cache_dir is not None else ir_datasets.util.home_path() / "densescale"
    label = dataset_id if isinstance(dataset_id, str) else "+".join(dict.fromkeys(splits.values()))
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
    folder = root / f"{slug}-{_cache_key(splits, title)}"
    if refresh and folder.exists():
        shutil.rmtree(folder)
    if not (folder / "meta.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.tmp-"))
        try:
            _build(splits, datasets, title, tmp)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished first: keep its copy
                if not (folder / "meta.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    corpus = Texts.load(folder / "corpus")
    queries = Texts.load(folder / "queries")
    files = {split: folder / "qrels" / f"{split}.tsv" for split in splits}
    return Collection(name or label, folder, corpus, queries, files, strict=strict)
