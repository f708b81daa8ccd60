"""A dev split for collections that ship none (many BEIR collections have only train and test).

The best checkpoint is chosen by dev contrastive entropy, so dev must look like test: its positives
must be passages the model never saw as training positives. :func:`carve_dev_split` therefore moves
whole groups of training queries to dev, a group being the queries connected through shared
positive passages, so no dev positive is a training positive. The carve-out is seeded and written
into a folder (``qrels/train.tsv``, ``qrels/dev.tsv``, ``dev_split.json``), and a rerun with the
same settings reads it back instead of drawing again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .collection import Collection
from .trec import atomic_write_text, write_qrels

SPLIT_RECORD = "dev_split.json"


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _groups(qrels: dict[str, dict[str, int]]) -> list[list[str]]:
    """Queries joined when they share a positive passage (union-find over passages)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for docs in qrels.values():
        pos = [d for d, r in docs.items() if r > 0]
        for d in pos[1:]:
            ra, rb = find(pos[0]), find(d)
            if ra != rb:
                parent[rb] = ra
    groups: dict[str, list[str]] = {}
    for qid, docs in qrels.items():
        pos = [d for d, r in docs.items() if r > 0]
        if pos:
            groups.setdefault(find(pos[0]), []).append(qid)
    return sorted(groups.values(), key=lambda g: g[0])


def carve_dev_split(
    collection: Collection,
    out_dir: str | os.PathLike,
    *,
    fraction: float = 0.1,
    max_queries: int = 2000,
    seed: int = 0,
) -> Collection:
    """Return ``collection`` with a ``dev`` split carved from its ``train`` qrels.

    About ``fraction`` of the training queries (at most ``max_queries``) move to dev, in whole
    groups of queries that share a positive passage, drawn with ``seed``; no dev positive is then
    a training positive. Writes ``out_dir/qrels/{train,dev}.tsv`` and ``out_dir/dev_split.json``
    (settings, the source file's fingerprint, counts) atomically; when they already match, they are
    reused, so reruns see the same split. Other splits (test) are kept as they are.

    Raises:
        ValueError: the collection has no ``train`` split or no training pair with relevance > 0,
            ``fraction`` is not in (0, 1), or ``max_queries`` < 1.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if not isinstance(max_queries, int) or max_queries < 1:
        raise ValueError(f"max_queries must be a positive int, got {max_queries!r}")
    if "train" not in collection.splits:
        raise ValueError(
            f"collection {collection.name!r} has no training pairs (no qrels/train.tsv; splits: "
            f"{list(collection.splits)}): a study needs annotated (query, passage) pairs to train on"
        )
    source = Path(collection._qrels_files["train"])
    out = Path(out_dir)
    settings = {
        "fraction": float(fraction),
        "max_queries": max_queries,
        "seed": seed,
        "source": str(source.resolve()),
        "source_sha256": _fingerprint(source),
        "grouping": "queries sharing a positive passage",
    }
    files = {"train": out / "qrels" / "train.tsv", "dev": out / "qrels" / "dev.tsv"}
    record = out / SPLIT_RECORD
    if record.is_file() and all(f.is_file() for f in files.values()):
        try:
            if json.loads(record.read_text()).get("settings") == settings:
                return collection.with_qrels_files(files)
        except (OSError, json.JSONDecodeError):
            pass  # unreadable record: carve again

    qrels = collection.qrels("train")
    groups = _groups(qrels)
    if not groups:
        raise ValueError(
            f"collection {collection.name!r}: qrels/train.tsv has no judgement with relevance > 0"
        )
    n_queries = sum(len(g) for g in groups)
    target = min(max_queries, max(1, round(fraction * n_queries)))
    if len(groups) < 2:
        raise ValueError(
            f"collection {collection.name!r}: all {n_queries} training queries share positive "
            "passages, so no dev split can be carved without leaking positives"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    dev_q: list[str] = []
    for gi in order:
        if len(dev_q) >= target:
            break
        if len(dev_q) + len(groups[gi]) > target and dev_q:
            continue  # a big group would overshoot; smaller ones fill the rest
        dev_q.extend(groups[gi])
    dev_set = set(dev_q)
    train_qrels = {q: d for q, d in qrels.items() if q not in dev_set}
    dev_qrels = {q: qrels[q] for q in sorted(dev_set)}
    if not train_qrels:
        raise ValueError(f"collection {collection.name!r}: carving dev left no training query")
    write_qrels(files["train"], train_qrels)
    write_qrels(files["dev"], dev_qrels)
    atomic_write_text(
        record,
        json.dumps(
            {
                "settings": settings,
                "train_queries": len(train_qrels),
                "dev_queries": len(dev_qrels),
                "files": {k: str(v) for k, v in files.items()},
            },
            indent=2,
        )
        + "\n",
    )
    return collection.with_qrels_files(files)
